"""What the explorer reads from a home's ledger, opened read-only (SQLite ``mode=ro``).

Each function returns plain JSON-ready data; rows of blocks have the shape of
``dlbc-ray chain show --json`` and balances that of ``dlbc-ray balance --json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dlbc_ray.cli.chain import block_row, known_names
from dlbc_ray.consensus import ChainState, validate_block
from dlbc_ray.consensus.ballot import votes_by_commit
from dlbc_ray.consensus.escrow import find_posting
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import message_hash
from dlbc_ray.errors import ConfigError, DLBCError, InvalidBlock, InvalidTask
from dlbc_ray.runtime.home import Home
from dlbc_ray.ledger import ArtifactStore, Chain, LedgerStore
from dlbc_ray.ledger.chain import latest_state, replay
from dlbc_ray.schema import Block


class Ledger:
    """One read-only view of the ledger: its chain, the store under it and the home's key names."""

    def __init__(self, home: Home, store: LedgerStore, chain: Chain) -> None:
        self.home, self.store, self.chain = home, store, chain
        self.names = known_names(home)

    def name(self, key: str | None) -> str | None:
        return self.names.get(key or "")


@contextmanager
def open_ledger(home: Home) -> Iterator[Ledger]:
    """The home's ledger, read-only; ConfigError if missing, CorruptLedger if it cannot be read."""
    if not home.ledger.exists():
        raise ConfigError("no ledger in this home yet; run `dlbc-ray demo` or `dlbc-ray up` first",
                          reason="missing_ledger")
    store = LedgerStore(home.ledger, read_only=True)
    try:
        chain = Chain(store, verify=False)
        chain.state  # noqa: B018 -- a ledger without genesis is refused here, by name
        yield Ledger(home, store, chain)
    finally:
        store.close()


def _score(value: int | None) -> float | None:
    return None if value is None else value / SCORE_SCALE


def chain_rows(ledger: Ledger) -> list[dict[str, Any]]:
    """Every block as ``chain show --json`` prints it, plus the interval since its parent and names."""
    rows, previous = [], None
    for block in ledger.chain.blocks():
        row = block_row(block)
        row["interval_s"] = None if previous is None else (row["timestamp"] - previous) / 1e3
        row["winner_name"] = ledger.name(row["winner"])
        previous = row["timestamp"]
        rows.append(row)
    return rows


def state_before(ledger: Ledger, height: int) -> ChainState | None:
    """The chain state after block ``height - 1`` (None before genesis), from the nearest checkpoint."""
    if height == 0:
        return None
    state, start = latest_state(ledger.store, height - 1)
    state, _ = replay(ledger.store, state, start, height, verify=False)
    return state


def reverify(ledger: Ledger, block: Block) -> tuple[bool, str | None]:
    """Whether the stored block passes every rule again on the state before it."""
    try:
        validate_block(block, state_before(ledger, block.height))
    except DLBCError as e:
        return False, f"{e.reason}: {e}" if getattr(e, "reason", None) else str(e)
    return True, None


def block_detail(ledger: Ledger, height: int) -> dict[str, Any]:
    block = ledger.chain.block(height)
    row = block_row(block)
    row["winner_name"] = ledger.name(row["winner"])
    votes = {commit: [{"validator": validator, "validator_name": ledger.name(validator), "verdict": v.verdict.value,
                       "score": _score(v.score), "detail": v.detail} for validator, v in judged]
             for commit, judged in votes_by_commit(b.message for b in block.ballots).items()}
    submissions = [{"commit": s.message.commit, "miner": s.message.miner, "miner_name": ledger.name(s.message.miner),
                    "model_hash": s.message.model_hash, "claimed_score": _score(s.message.claimed_score),
                    "epochs": s.message.epochs, "train_ms": s.message.train_ms, "num_params": s.message.num_params,
                    "votes": votes.get(s.message.commit, [])} for s in block.submissions]
    ok, error = reverify(ledger, block)
    txs = [tx.model_dump(mode="json") for tx in block.txs]
    return {"block": row, "header": block.header.model_dump(mode="json"), "signature": block.signature,
            "txs": txs, "submissions": submissions,
            "payouts": [{**tx, "recipient_name": ledger.name(tx["recipient"])} for tx in txs if tx["kind"] == "payout"],
            "evidence": [e.model_dump(mode="json") for e in block.evidence],
            "fusion_votes": [f.message.model_dump(mode="json") for f in block.fusion_votes],
            "verifies": ok, "verify_error": error}


def task_summary(ledger: Ledger, task_id: str) -> dict[str, Any]:
    record = ledger.chain.state.tasks[task_id]
    task = record.task
    return {"task_id": task_id, "status": record.status, "kind": task.kind, "requester": task.requester,
            "requester_name": ledger.name(task.requester), "reward": task.reward, "model": task.model.name,
            "dataset": task.dataset.name, "target": _score(task.target), "fusion": task.fusion,
            "posted_height": record.posted_height, "closed_height": record.closed_height}


def task_list(ledger: Ledger) -> list[dict[str, Any]]:
    tasks = [task_summary(ledger, t) for t in ledger.chain.state.tasks]
    return sorted(tasks, key=lambda t: (-t["posted_height"], t["task_id"]))


def find_task(ledger: Ledger, task_id: str) -> str:
    """A full task id from a unique prefix of at least 8 characters; InvalidTask otherwise."""
    tasks = ledger.chain.state.tasks
    matches = [t for t in tasks if t.startswith(task_id)] if len(task_id) >= 8 else []
    if len(matches) != 1:
        raise InvalidTask(f"no task {task_id[:80]} on this chain" if not matches else
                          f"task id {task_id[:80]} is ambiguous", reason="unknown_task")
    return matches[0]


def task_detail(ledger: Ledger, task_id: str) -> dict[str, Any]:
    """``result --json``'s fields (without writing a model file), the signed spec and the round's block."""
    full = find_task(ledger, task_id)
    record = ledger.chain.state.tasks[full]
    info = {**task_summary(ledger, full), "spec": record.task.model_dump(mode="json"), "submissions": [],
            "model_available": False}
    posting = find_posting(ledger.chain.block(record.posted_height), full)
    info["signer"] = posting.signer if posting is not None else None
    if record.closed_height is None:
        return info
    closing = block_detail(ledger, record.closed_height)
    header = closing["header"]
    info.update(height=header["height"], winner=header["winner"], winner_name=ledger.name(header["winner"]),
                model_hash=header["model_hash"], score=_score(header["score"]), block_hash=closing["block"]["hash"],
                submissions=closing["submissions"])
    info["model_available"] = bool(header["model_hash"]) and ArtifactStore(ledger.home.artifacts).has(
        header["model_hash"])
    return info


def balances(ledger: Ledger) -> dict[str, Any]:
    """``balance --json``'s shape, plus each open task's escrow."""
    state = ledger.chain.state
    return {"height": state.height, "supply": state.total_supply, "escrow": sum(state.escrow.values()),
            "accounts": [{"account": k, "name": ledger.name(k), "balance": v}
                         for k, v in sorted(state.balances.items(), key=lambda kv: (-kv[1], kv[0]))],
            "escrow_by_task": dict(state.escrow)}


def _entries(block: Block, account: str) -> Iterator[dict[str, Any]]:
    """Every change a block's transactions made to ``account``'s balance."""
    for tx in block.txs:
        kind, change, other, task_id = tx.kind, 0, None, None
        if tx.kind == "mint" and tx.recipient == account:
            change = tx.amount
        elif tx.kind == "transfer":
            t = tx.transfer.message
            change = t.amount if t.recipient == account else -t.amount if t.sender == account else 0
            other = t.sender if t.recipient == account else t.recipient
        elif tx.kind == "post_task" and tx.task.message.requester == account:
            change, kind, task_id = -tx.task.message.reward, "escrow", message_hash(tx.task.message)
        elif tx.kind == "payout" and tx.recipient == account:
            change, kind, task_id = tx.amount, f"payout ({tx.role})", tx.task_id
        elif tx.kind == "penalty" and tx.account == account:
            change, task_id = -tx.amount, tx.task_id
        if change:
            yield {"height": block.height, "timestamp": block.header.timestamp_ms, "kind": kind, "change": change,
                   "counterparty": other, "task_id": task_id}


def account_history(ledger: Ledger, account: str) -> dict[str, Any]:
    state = ledger.chain.state
    matches = [k for k in state.balances if k == account or ledger.name(k) == account]
    if not matches:
        raise InvalidBlock(f"no account {account[:80]} on this chain", reason="unknown_account")
    key = matches[0]
    history = [e for block in ledger.chain.blocks() for e in _entries(block, key)]
    return {"account": key, "name": ledger.name(key), "balance": state.balance(key),
            "nonce": state.nonces.get(key, 0), "history": history[::-1]}


def charts(ledger: Ledger) -> dict[str, Any]:
    """Accuracy per block, intervals and difficulty over height, BaaS contribution shares."""
    rows = chain_rows(ledger)
    mined = [r for r in rows if r["task_id"]]
    standing = {t for t, r in ledger.chain.state.tasks.items() if r.task.kind == "standing"}
    shares = []
    for block in ledger.chain.blocks():
        paid = [tx for tx in block.txs if tx.kind == "payout" and tx.role in ("winner", "contributor")]
        if block.header.fused and paid:
            total = sum(tx.amount for tx in paid) or 1
            shares.append({"height": block.height, "task_id": block.header.task_id,
                           "shares": [{"account": tx.recipient, "name": ledger.name(tx.recipient),
                                       "share": tx.amount / total} for tx in paid]})
    return {"accuracy": [{"height": r["height"], "score": r["score"]} for r in mined if r["score"] is not None],
            "intervals": [{"height": r["height"], "interval_s": r["interval_s"]} for r in mined
                          if r["interval_s"] is not None],
            "difficulty": [{"height": r["height"], "difficulty": r["difficulty"]} for r in rows
                           if r["task_id"] in standing and r["difficulty"] is not None],
            "contributions": shares}
