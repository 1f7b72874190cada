"""Escrow obligations read from the chain alone: what a coordinator must settle, and an audit of it.

A task's reward is escrowed by its posting and released only by its task block. The
coordinator's pool is a cache of the chain: these rules say how the two agree, which
open tasks are owed a refund, and whether a run conserved every unit and every task.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from dlbc_ray import crypto
from dlbc_ray.consensus.state import ChainState, TaskRecord
from dlbc_ray.consensus.validation import compute_block_hash
from dlbc_ray.schema import Block, PostTaskTx, Signed, Task, Transfer, TransferTx

Posting = Literal["new", "open", "done", "refunded"]


def get_posting(state: ChainState, task_id: str) -> Posting:
    """Where a task stands on chain: never posted, open (escrowed), or closed."""
    record = state.tasks.get(task_id)
    return "new" if record is None else record.status


def is_refundable(record: TaskRecord, now_ms: int) -> bool:
    """Open and strictly past its deadline, so a block stamped at ``now_ms`` or later is after it."""
    return record.status == "open" and record.task.deadline_ms < now_ms


def compute_refunds(state: ChainState, now_ms: int, busy: Collection[str] = ()) -> list[str]:
    """Every open task past its deadline and not in a live round, earliest posting first."""
    due = [(r.posted_height, tid) for tid, r in state.tasks.items()
           if tid not in busy and is_refundable(r, now_ms)]
    return [tid for _, tid in sorted(due)]


@dataclass(frozen=True)
class Reconciliation:
    """How a pool differs from the chain it caches."""

    closed: Mapping[str, Literal["done", "refunded"]]  # pooled tasks the chain has settled
    unknown: tuple[str, ...]  # pooled tasks the chain never saw
    missing: tuple[str, ...]  # tasks open on chain that the pool does not hold


def reconcile(pooled: Iterable[str], state: ChainState) -> Reconciliation:
    """Compare pool ids with the chain; the pool must be listed before ``state`` was read."""
    pooled = set(pooled)
    closed: dict[str, Literal["done", "refunded"]] = {}
    unknown: list[str] = []
    for task_id in sorted(pooled):
        record = state.tasks.get(task_id)
        if record is None:
            unknown.append(task_id)
        elif record.status != "open":
            closed[task_id] = record.status
    missing = tuple(sorted(t for t, r in state.tasks.items() if r.status == "open" and t not in pooled))
    return Reconciliation(closed, tuple(unknown), missing)


def find_posting(block: Block, task_id: str) -> Signed[Task] | None:
    """The requester's signed task as ``block`` posted it, or None."""
    for tx in block.txs:
        if isinstance(tx, PostTaskTx) and crypto.message_hash(tx.task.message) == task_id:
            return tx.task
    return None


TRANSFER_LOOKBACK = 64  # blocks a retried transfer is looked for in (a retry comes within seconds)


def find_transfer(blocks: Iterable[Block], signed: Signed[Transfer]) -> Block | None:
    """The block among ``blocks`` that holds exactly this signed transfer, or None."""
    for block in blocks:
        if any(isinstance(tx, TransferTx) and tx.transfer == signed for tx in block.txs):
            return block
    return None


@dataclass(frozen=True)
class EscrowAudit:
    """What a run left behind; ``ok`` when nothing was lost, stuck, duplicated or unsettled."""

    supply: int
    genesis_supply: int
    stuck: tuple[str, ...]  # open past their deadline
    unsettled: tuple[str, ...]  # submitted, still open (within their deadline)
    unposted: tuple[str, ...]  # submitted, never escrowed
    extra: tuple[str, ...]  # escrowed for these requesters but never submitted (a double escrow)
    lost_heights: tuple[int, ...]  # seen committed, now missing or different

    @property
    def ok(self) -> bool:
        return (self.supply == self.genesis_supply and not self.stuck and not self.unsettled and not self.unposted
                and not self.extra and not self.lost_heights)


def audit_escrow(state: ChainState, blocks: Iterable[Block], submitted: Collection[str],
                 requesters: Collection[str], seen: Mapping[int, str], now_ms: int) -> EscrowAudit:
    """Check a finished run: supply, settlement of every submitted task, single escrow, no lost block.

    ``seen`` maps heights to the block hashes observed committed during the run.
    """
    hashes: dict[int, str] = {}
    posted: list[str] = []
    for block in blocks:
        hashes[block.header.height] = compute_block_hash(block.header)
        posted += [crypto.message_hash(tx.task.message) for tx in block.txs
                   if isinstance(tx, PostTaskTx) and tx.task.message.requester in requesters]
    genesis = sum(a.amount for a in state.params.allocations)
    return EscrowAudit(
        supply=state.total_supply, genesis_supply=genesis,
        stuck=tuple(compute_refunds(state, now_ms)),
        unsettled=tuple(sorted(t for t in submitted if t in state.tasks and state.tasks[t].status == "open")),
        unposted=tuple(sorted(t for t in submitted if t not in state.tasks)),
        extra=tuple(sorted({t for t in posted if t not in submitted} | {t for t in posted if posted.count(t) > 1})),
        lost_heights=tuple(sorted(h for h, digest in seen.items() if hashes.get(h) != digest)),
    )
