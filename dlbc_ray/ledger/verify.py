"""Full verification of a stored chain: every block against every rule, spread over the cores.

The chain is cut at state checkpoints into one contiguous stretch per worker. Each
worker starts from genesis or a checkpoint, re-validates its blocks (signatures,
quorum, roots, money) and checks every checkpoint it passes against the state it
computed. The first stretch starts from genesis and each later one from a checkpoint
the stretch before it proved, so by induction every block is checked against the true
state. The first failure by height is reported.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from dlbc_ray.consensus import ChainState
from dlbc_ray.errors import CorruptLedger, DLBCError, InvalidBlock
from dlbc_ray.ledger.chain import half_made, replay
from dlbc_ray.ledger.snapshot import load_checkpoint, make_checkpoint
from dlbc_ray.ledger.store import LedgerStore


def compute_stretches(checkpoints: list[int], head: int, workers: int) -> list[tuple[int, int]]:
    """(start, end) height pairs: at most ``workers`` stretches, each cut at the checkpoint nearest an even share."""
    cuts = sorted(h for h in checkpoints if 0 < h < head)
    bounds = [0]
    for i in range(1, max(1, workers)):
        later = [h for h in cuts if h > bounds[-1]]
        if not later:
            break
        bounds.append(min(later, key=lambda h: abs(h - i * head / workers)))
    return [(a, b) for a, b in zip(bounds, [*bounds[1:], head])]


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: reference counting still frees every block and state.

    A replay keeps a growing state (every task ever posted) alive, and the cyclic collector
    rescans all of it on each full pass while finding nothing to free: about 15% of a
    stretch's CPU at 10,000 blocks. The collector's previous setting is restored on exit.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def verify_stretch(path: str, start: int, end: int) -> ChainState:
    """Re-validate blocks start+1..end (0..end from genesis) and every checkpoint up to ``end``."""
    store = LedgerStore(path, create=False)
    try:
        with cyclic_gc_paused():
            return _replay_stretch(store, start, end)
    finally:
        store.close()


def _replay_stretch(store: LedgerStore, start: int, end: int) -> ChainState:
    state = None
    if start > 0:
        cp = store.checkpoint(start)
        if cp is None:
            raise CorruptLedger(f"checkpoint {start} vanished during verification", reason="checkpoint",
                                height=start)
        state = load_checkpoint(cp, store.get(start))
    marks = [h for h in store.checkpoints(start + 1) if h <= end]
    first = 0 if start == 0 else start + 1
    for stop in sorted({*marks, end}):
        state, _ = replay(store, state, first, stop + 1, verify=True)
        first = stop + 1
        if stop in marks:
            check_checkpoint(store, state, stop)
    if state is None or state.height != end:
        raise CorruptLedger(f"block {0 if state is None else state.height + 1}: missing from the ledger",
                            reason="missing", height=0 if state is None else state.height + 1)
    return state


def _verify_stretch(path: str, start: int, end: int) -> None:
    verify_stretch(path, start, end)  # a worker's state stays there: only the head's is returned


def check_checkpoint(store: LedgerStore, state: ChainState | None, height: int) -> None:
    cp = store.checkpoint(height)
    if cp is None or state is None:
        return
    mine = make_checkpoint(state)
    if mine.state == cp.state and mine.state_hash == cp.state_hash:  # equal bytes: one hash says both match
        return
    if load_checkpoint(cp, store.get(height)) != state:  # same state in another byte order is still the same
        raise CorruptLedger(f"checkpoint {height}: differs from the state its blocks imply", reason="checkpoint",
                            height=height)


def verify_chain(path: Path | str, *, workers: int | None = None) -> ChainState:
    """Re-validate every stored block from genesis; raises at the first bad height."""
    store = LedgerStore(path, create=False)
    try:
        last = store.last()
        checkpoints = store.checkpoints()
    finally:
        store.close()
    if last is None:
        raise half_made(path)
    stretches = compute_stretches(checkpoints, last.height, workers or os.cpu_count() or 1)
    if len(stretches) == 1:
        return verify_stretch(str(path), *stretches[0])
    ctx = multiprocessing.get_context("spawn")  # no fork: callers may hold Ray's or SQLite's threads
    with ProcessPoolExecutor(len(stretches) - 1, mp_context=ctx) as pool:
        futures = [pool.submit(_verify_stretch, str(path), a, b) for a, b in stretches[:-1]]
        state, mine = None, None
        try:  # the head's stretch runs here, beside the workers: one process fewer to start, no state to send back
            state = verify_stretch(str(path), *stretches[-1])
        except DLBCError as e:
            mine = e
        errors = [f.exception() for f in futures]
    failures = [e for e in [*errors, mine] if e is not None]
    if failures:
        raise min(failures, key=lambda e: e.height if isinstance(e, InvalidBlock) and e.height is not None else -1)
    assert state is not None
    return state
