"""The state a chain implies (balances, escrow, tasks) and the transitions that change it.

``process_block`` is the only way state moves: py-evm's and consensus-specs' habit
of one pure transition per block. Supply is created at genesis and only moves after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from dlbc_ray import crypto
from dlbc_ray.errors import InvalidBlock
from dlbc_ray.schema import (
    Block,
    ChainParams,
    MintTx,
    PayoutTx,
    PenaltyTx,
    PostTaskTx,
    Task,
    Transaction,
    TransferTx,
)

TaskStatus = Literal["open", "done", "refunded"]


@dataclass(frozen=True)
class TaskRecord:
    task: Task
    status: TaskStatus
    posted_height: int
    closed_height: int | None = None


@dataclass(frozen=True)
class PoleState:
    """PoLe's running difficulty: standing blocks so far, the last one's target, recent intervals."""

    height: int = 0
    difficulty: int | None = None
    intervals_ms: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChainState:
    """Everything the chain implies after its head block.

    Treat as immutable: ``process_block`` returns a new state with new dicts. Plain dicts
    (not read-only proxies) so that snapshots pickle across Ray actors.
    """

    params: ChainParams
    chain_id: str
    height: int
    head_hash: str
    timestamp_ms: int
    balances: Mapping[str, int] = field(default_factory=dict)
    escrow: Mapping[str, int] = field(default_factory=dict)
    nonces: Mapping[str, int] = field(default_factory=dict)
    tasks: Mapping[str, TaskRecord] = field(default_factory=dict)
    won_models: Mapping[str, int] = field(default_factory=dict)  # model hash -> height it won
    pole: PoleState = PoleState()
    recent_hashes: tuple[str, ...] = ()  # the last ``params.round_horizon`` block hashes, head last

    def balance(self, account: str) -> int:
        return self.balances.get(account, 0)

    @property
    def total_supply(self) -> int:
        return sum(self.balances.values()) + sum(self.escrow.values())

    def open_tasks(self) -> list[TaskRecord]:
        return [r for r in self.tasks.values() if r.status == "open"]


@dataclass
class _Draft:
    """Mutable copy used while one block is applied; frozen again at the end."""

    chain_id: str
    balances: dict[str, int]
    escrow: dict[str, int]
    nonces: dict[str, int]
    tasks: dict[str, TaskRecord]
    won_models: dict[str, int]


def _fail(reason: str, message: str, height: int) -> InvalidBlock:
    return InvalidBlock(f"block {height}: {message}", reason=reason, height=height)


def process_mint(d: _Draft, tx: MintTx, height: int) -> None:
    if height != 0:
        raise _fail("mint", "mint transactions are allowed only in genesis", height)
    d.balances[tx.recipient] = d.balances.get(tx.recipient, 0) + tx.amount


def process_transfer(d: _Draft, tx: TransferTx, height: int) -> None:
    transfer = tx.transfer.message
    if tx.transfer.chain_id != d.chain_id:
        raise _fail("transfer_chain", f"transfer from {transfer.sender[:12]}... is signed for another chain", height)
    if tx.transfer.signer != transfer.sender or not crypto.is_valid_signature(tx.transfer):
        raise _fail("transfer_signature", f"transfer from {transfer.sender[:12]}... is not signed by its sender", height)
    expected = d.nonces.get(transfer.sender, 0)
    if transfer.nonce != expected:
        raise _fail("nonce", f"transfer nonce {transfer.nonce}, expected {expected}", height)
    _debit(d, transfer.sender, transfer.amount, height)
    d.balances[transfer.recipient] = d.balances.get(transfer.recipient, 0) + transfer.amount
    d.nonces[transfer.sender] = expected + 1


def process_post_task(d: _Draft, tx: PostTaskTx, height: int, timestamp_ms: int) -> None:
    task = tx.task.message
    if tx.task.chain_id != d.chain_id:
        raise _fail("task_chain", "task is signed for another chain", height)
    if tx.task.signer != task.requester or not crypto.is_valid_signature(tx.task):
        raise _fail("task_signature", "task is not signed by its requester", height)
    task_id = crypto.message_hash(task)
    if task_id in d.tasks:
        raise _fail("task_replay", f"task {task_id[:12]} was already posted", height)
    if task.deadline_ms <= timestamp_ms:
        raise _fail("deadline", f"task {task_id[:12]} is posted after its deadline", height)
    _debit(d, task.requester, task.reward, height)
    d.escrow[task_id] = task.reward
    d.tasks[task_id] = TaskRecord(task=task, status="open", posted_height=height)


def process_penalty(d: _Draft, tx: PenaltyTx, height: int) -> None:
    if tx.task_id not in d.escrow:
        raise _fail("penalty", f"penalty for task {tx.task_id[:12]} which holds no escrow", height)
    _debit(d, tx.account, tx.amount, height)
    d.escrow[tx.task_id] += tx.amount


def process_payout(d: _Draft, tx: PayoutTx, height: int) -> None:
    held = d.escrow.get(tx.task_id, 0)
    if tx.amount > held:
        raise _fail("escrow", f"payout of {tx.amount} exceeds the {held} held for task {tx.task_id[:12]}", height)
    d.escrow[tx.task_id] = held - tx.amount
    d.balances[tx.recipient] = d.balances.get(tx.recipient, 0) + tx.amount


def _debit(d: _Draft, account: str, amount: int, height: int) -> None:
    have = d.balances.get(account, 0)
    if amount > have:
        raise _fail("balance", f"account {account[:12]}... has {have}, needs {amount}", height)
    d.balances[account] = have - amount


def process_tx(d: _Draft, tx: Transaction, height: int, timestamp_ms: int) -> None:
    match tx:
        case MintTx():
            process_mint(d, tx, height)
        case TransferTx():
            process_transfer(d, tx, height)
        case PostTaskTx():
            process_post_task(d, tx, height, timestamp_ms)
        case PenaltyTx():
            process_penalty(d, tx, height)
        case PayoutTx():
            process_payout(d, tx, height)


def process_task_close(d: _Draft, block: Block) -> None:
    """A task block empties the task's escrow and closes it; the winning model is remembered."""
    header = block.header
    if header.task_id is None:
        return
    record = d.tasks.get(header.task_id)
    if record is None or record.status != "open":
        raise _fail("task", f"task {header.task_id[:12]} is not open on this chain", header.height)
    if d.escrow.get(header.task_id, 0) != 0:
        raise _fail("escrow", f"task {header.task_id[:12]} escrow is not fully paid out", header.height)
    del d.escrow[header.task_id]
    status: TaskStatus = "done" if header.model_hash else "refunded"
    d.tasks[header.task_id] = replace(record, status=status, closed_height=header.height)
    if header.model_hash:
        d.won_models[header.model_hash] = header.height


def process_block(state: ChainState | None, block: Block, block_hash: str, *, consume: bool = False) -> ChainState:
    """Apply a block's transactions; raises InvalidBlock naming the first broken money rule.

    ``consume``: the caller hands ``state`` over and never reads it again (a replay, or the
    blocks of a batch after its first), so its maps are updated in place instead of copied:
    copying ``tasks`` and ``won_models``, which grow with the chain, made each block cost
    more than the last (two dicts of 7,500 entries are ~0.2 ms, more than the block's rules).
    A refused block leaves a consumed state half-applied; only a copy survives a refusal.
    """
    header = block.header
    src = state or _empty(block)
    own = consume and state is not None
    d = _Draft(src.chain_id, *(m if own and isinstance(m, dict) else dict(m)
                               for m in (src.balances, src.escrow, src.nonces, src.tasks, src.won_models)))
    for tx in block.txs:
        process_tx(d, tx, header.height, header.timestamp_ms)
    process_task_close(d, block)
    pole = process_pole(src, block, d)
    return replace(
        src,
        height=header.height,
        head_hash=block_hash,
        timestamp_ms=header.timestamp_ms,
        balances=d.balances,
        escrow=d.escrow,
        nonces=d.nonces,
        tasks=d.tasks,
        won_models=d.won_models,
        pole=pole,
        recent_hashes=(*src.recent_hashes, block_hash)[-src.params.round_horizon:],
    )


def process_pole(state: ChainState, block: Block, d: _Draft) -> PoleState:
    """A standing-task block advances PoLe's difficulty state; any other block leaves it alone."""
    header = block.header
    record = d.tasks.get(header.task_id or "")
    if record is None or record.task.kind != "standing" or state.height < 0:
        return state.pole
    keep = state.params.retarget.window if state.params.retarget else 1
    # A block right after genesis measures the network's start-up, not mining: it anchors, uncounted.
    new = () if state.height == 0 else (header.timestamp_ms - state.timestamp_ms,)
    intervals = (*state.pole.intervals_ms, *new)[-keep:]
    return PoleState(height=state.pole.height + 1, difficulty=header.difficulty, intervals_ms=intervals)


def _empty(genesis: Block) -> ChainState:
    if genesis.params is None:
        raise _fail("genesis", "the first block carries no chain parameters", genesis.header.height)
    return ChainState(
        params=genesis.params, chain_id=genesis.header.chain_id, height=-1, head_hash="", timestamp_ms=0
    )
