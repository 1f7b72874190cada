"""`dlbc-ray chain`: show the blocks and re-verify the whole chain from genesis."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlbc_ray.cli._app import new_app, out, print_json, resolve_home
from dlbc_ray.consensus import compute_block_hash
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import DLBCError
from dlbc_ray.runtime.home import Home, read_ledger
from dlbc_ray.runtime.keystore import list_keys
from dlbc_ray.ledger import Chain, verify_chain
from dlbc_ray.schema import Block

app = new_app("Inspect and verify the chain.")

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Home directory (default $DLBC_HOME or ~/.dlbc-ray).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def known_names(home: Home) -> dict[str, str]:
    """Public key -> local name, for display; unreadable key files are simply not named."""
    try:
        return {k.public_key: k.name for k in list_keys(home)}
    except DLBCError:
        return {}


def block_row(block: Block) -> dict[str, Any]:
    h = block.header
    return {"height": h.height, "hash": compute_block_hash(h), "prev_hash": h.prev_hash, "timestamp": h.timestamp_ms,
            "task_id": h.task_id, "winner": h.winner, "model_hash": h.model_hash,
            "score": None if h.score is None else h.score / SCORE_SCALE,
            "difficulty": None if h.difficulty is None else h.difficulty / SCORE_SCALE,
            "submissions": len(block.submissions), "votes": sum(len(b.message.votes) for b in block.ballots),
            "ballots": len(block.ballots), "txs": len(block.txs), "evidence": len(block.evidence)}


def open_ledger(home: Home) -> Chain:
    return read_ledger(home, "run `dlbc-ray demo` first")


@app.command("show")
def show(home: HomeOpt = None, json: JsonOpt = False) -> None:
    """The blocks, newest last."""
    h = resolve_home(home, create=False)
    chain = open_ledger(h)
    rows = [block_row(b) for b in chain.blocks()]
    chain.close()
    if json:
        print_json(rows)
        return
    names = known_names(h)
    table = Table("height", "hash", "time (UTC)", "task", "winner", "score", "subs", "votes", "txs")
    for r in rows:
        when = dt.datetime.fromtimestamp(r["timestamp"] / 1e3, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        winner = names.get(r["winner"], (r["winner"] or "-")[:12])
        score = "-" if r["score"] is None else f"{r['score']:.4f}"
        task = (r["task_id"] or "")[:12] or ("genesis" if r["height"] == 0 else "(transfers)")
        table.add_row(str(r["height"]), r["hash"][:12], when, task, winner, score,
                      str(r["submissions"]), str(r["votes"]), str(r["txs"]))
    out.print(table)


@app.command("verify")
def verify(home: HomeOpt = None, workers: Annotated[int | None, typer.Option(
        help="Processes that check blocks in parallel (default: one per core).", min=1, max=256)] = None) -> None:
    """Re-validate every block from genesis: links, heights, times, signatures, quorum, roots, balances.

    Every state checkpoint in the ledger is checked against the state its blocks imply.
    """
    h = resolve_home(home, create=False)
    read_ledger(h, "run `dlbc-ray demo` first").close()  # refuses a missing or half-made ledger without writing
    started = time.perf_counter()
    state = verify_chain(h.ledger, workers=workers)
    out.print(f"chain valid: {state.height + 1} blocks, head {state.head_hash[:16]} at height {state.height}, "
              f"supply {state.total_supply} (checked in {time.perf_counter() - started:.1f} s)")
