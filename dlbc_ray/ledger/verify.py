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
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from dlbc_ray.consensus import ChainState
from dlbc_ray.errors import CorruptLedger, DLBCError, InvalidBlock
from dlbc_ray.ledger.chain import half_made, replay
from dlbc_ray.ledger.snapshot import load_checkpoint, make_checkpoint
from dlbc_ray.ledger.store import LedgerStore


# A block replayed on a larger state costs more (checkpoint loads and dumps, a larger heap): about one block's
# own cost again for every this many bytes of encoded state it runs on (1.38 vs 1.59 ms CPU a block at
# 0-5,000 vs 5,000-10,000 blocks of 800 state bytes each, measured under load, states handed over, not copied).
STATE_BYTES_PER_BLOCK_COST = 24 * 2**20
# A worker process starts (spawn, imports) about this many blocks' work after the calling process begins its stretch.
WORKER_START_BLOCKS = 400


def compute_stretches(checkpoints: list[int], head: int, workers: int,
                      state_bytes: Mapping[int, int] | None = None) -> list[tuple[int, int]]:
    """(start, end) height pairs: at most ``workers`` stretches, each cut at the checkpoint nearest an even share.

    The share is of estimated work, so that all stretches end together: the first ones run in
    worker processes that start late, and, given each checkpoint's ``state_bytes``, later blocks
    run on a larger state and cost more. The estimate steers only where the cuts fall; every
    block is still verified, whatever the sizes say.
    """
    cuts = sorted(h for h in checkpoints if 0 < h < head)
    work = _cumulative_work(cuts, head, state_bytes or {})
    n = max(1, workers)
    worker_share = (work[head] + (n - 1) * WORKER_START_BLOCKS) / n - WORKER_START_BLOCKS
    bounds = [0]
    for i in range(1, n):
        later = [h for h in cuts if h > bounds[-1]]
        if not later:
            break
        bounds.append(min(later, key=lambda h: abs(work[h] - i * worker_share)))
    return [(a, b) for a, b in zip(bounds, [*bounds[1:], head])]


def _cumulative_work(cuts: list[int], head: int, state_bytes: Mapping[int, int]) -> dict[int, float]:
    """Estimated work of replaying blocks 1..h, at each cut and the head: a block costs 1, plus its state's share."""
    work, done, size = {0: 0.0}, 0, 0
    for h in [*cuts, head]:
        work[h] = work[done] + (h - done) * (1 + size / STATE_BYTES_PER_BLOCK_COST)
        done, size = h, max(0, state_bytes.get(h, size))
    return work


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
        sizes = store.checkpoint_sizes()
    finally:
        store.close()
    if last is None:
        raise half_made(path)
    stretches = compute_stretches(checkpoints, last.height, workers or os.cpu_count() or 1, sizes)
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
