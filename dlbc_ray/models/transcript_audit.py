"""Replaying training transcripts and auditing them: the part of ``models.replay`` that needs no task.

``replay`` runs the same ``StepSystem.training_step`` and ``configure_optimizers`` as
Lightning, on CPU with deterministic algorithms and the header's thread count, so an honest
segment lands on its next checkpoint bit for bit. ``audit`` fetches only the checkpoints the
sampled segments need, each proven against the committed root, replays them, and hands what
it saw to the pure rule ``consensus.transcript.judge_audit``. A data-parallel run's header names
its workers: each step is replayed shard by shard as their all-reduce left it (``models.distributed``),
bit for bit up to 2 workers; beyond, the transport's summation order makes it a tolerance match.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch

from dlbc_ray import crypto
from dlbc_ray.consensus.transcript import (
    AuditFailure,
    AuditOutcome,
    AuditParams,
    AuditReport,
    CheckpointLeaf,
    Expected,
    MerkleProof,
    SegmentResult,
    TranscriptHeader,
    check_header,
    checkpoint_steps,
    compute_audit_segments,
    compute_header_hash,
    compute_state_hash,
    compute_step_seed,
    compute_transcript_root,
    is_valid_proof,
    judge_audit,
)
from dlbc_ray.errors import DLBCError, InvalidModelFile
from dlbc_ray.models.data import Split
from dlbc_ray.models.step import StepSystem, use_deterministic_algorithms
from dlbc_ray.models.transcript import (Checkpoint, Opening, Transcript, epoch_order, flatten_optimizer, load_optimizer,
                                        seed_step)
from dlbc_ray.models.weights import load_into, to_numpy
from dlbc_ray.schema.base import revalidated

# ------------------------------------------------------------------ replay


@contextmanager
def deterministic_cpu(threads: int) -> Iterator[None]:
    """Deterministic algorithms and ``threads`` torch threads for the block; both restored after."""
    was_threads, was_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    use_deterministic_algorithms(True)  # torch's own imports torch._dynamo (~1.3 s CPU a validator)
    try:
        yield
    finally:
        torch.set_num_threads(was_threads)
        use_deterministic_algorithms(was_det)


def replay(make_system: Callable[[], StepSystem], fit: Split, header: TranscriptHeader, start: Checkpoint,
           end_step: int, *, on_step: Callable[[int, StepSystem, torch.optim.Optimizer], None] | None = None) -> Checkpoint:
    """Train from ``start`` to ``end_step`` with the derived order and seeds, as the miner's trainer did."""
    system = make_system()
    load_into(system.net, start.weights)
    optimizer = system.configure_optimizers()
    load_optimizer(optimizer, start.optimizer)
    system.train()
    x, y = torch.from_numpy(fit.x), torch.from_numpy(fit.y)
    order, order_epoch = np.arange(0), -1
    params = [p for p in system.net.parameters() if p.requires_grad]
    with deterministic_cpu(header.threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer here: logging is a no-op
        for step in range(start.step, end_step):
            epoch, batch = divmod(step, header.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(header.seed, epoch, header.examples), epoch
            index = torch.from_numpy(order[batch * header.batch_size:(batch + 1) * header.batch_size])
            optimizer.zero_grad(set_to_none=True)
            try:
                if header.workers > 1:  # W workers' DDP step, shard by shard (models.distributed)
                    from dlbc_ray.models.distributed import sharded_backward  # Lightning: only for W > 1

                    sharded_backward(system.training_step, params, x, y, index.numpy(), header.workers,
                                     compute_step_seed(header.seed, step), batch)
                else:
                    seed_step(compute_step_seed(header.seed, step))
                    system.training_step((x[index], y[index]), batch).backward()
                optimizer.step()
            except RuntimeError as e:  # an optimizer state of the wrong shape: committed, but unreplayable
                raise InvalidModelFile(f"segment cannot be replayed: {str(e)[:120]}", reason="malformed_checkpoint") from None
            if on_step is not None:
                on_step(step + 1, system, optimizer)
    return Checkpoint(step=end_step, weights=to_numpy(system.net), optimizer=flatten_optimizer(optimizer))


def step_hashes(make_system: Callable[[], StepSystem], fit: Split, header: TranscriptHeader,
                start: Checkpoint, end_step: int) -> dict[int, str]:
    """The state hash after every step of a segment: what each side of a dispute commits to before bisecting."""
    hashes: dict[int, str] = {}

    def keep(step: int, system: StepSystem, optimizer: torch.optim.Optimizer) -> None:
        hashes[step] = compute_state_hash(Checkpoint(step, to_numpy(system.net), flatten_optimizer(optimizer)).leaf(0))

    replay(make_system, fit, header, start, end_step, on_step=keep)
    return hashes


def relative_distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """||a - b|| / ||b|| over all floating tensors; inf when the tensors do not line up."""
    if a.keys() != b.keys() or any(np.shape(a[k]) != np.shape(b[k]) for k in a):
        return float("inf")
    num = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a)
    den = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in a)
    return float(np.sqrt(num / max(den, 1e-30)))


# ------------------------------------------------------------------ audit

@dataclass(frozen=True)
class Committed:
    """What the miner committed (``root``, in its signed submission) and served after the reveal."""

    root: str | None
    header: TranscriptHeader | None
    checkpoints_root: str | None
    fetch: Callable[[int], Opening | None]  # checkpoint i with its proof; None when the miner does not answer


@dataclass(frozen=True)
class Derived:
    """What the validator derives itself: the system to replay (``replay`` loads its weights and a new optimizer's
    state each time, so ``derive_for`` hands out one system for all segments), the fit split, the initial
    weights, how the miner finishes its last checkpoint (the watermark settle), and the submitted model's hash."""

    make_system: Callable[[], StepSystem]
    fit: Split
    initial: dict[str, np.ndarray]
    finish: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    model_hash: str
    expected: Expected
    device: str = "cpu"


def committed(transcript: Transcript) -> Committed:
    """An honest miner's commitment and openings (tests and benchmarks; the miner serves these over Ray)."""
    return Committed(transcript.root, transcript.header, transcript.checkpoints_root, transcript.opening)


@dataclass(frozen=True)
class AuditCost:
    segments: tuple[int, ...] = ()
    replayed_steps: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0


def audit(committed: Committed, derived: Derived, params: AuditParams, seed: bytes,
          sample: tuple[int, ...] | None = None) -> tuple[AuditOutcome, AuditCost]:
    """Replay the segments ``seed`` picks (or ``sample``'s, plus the last: tests force a validator's sample) and
    judge what was seen with ``judge_audit``; never raises on bad input."""
    started = time.perf_counter()
    header, croot = _parsed(committed.header), committed.checkpoints_root
    croot = croot if isinstance(croot, str) and len(croot) == 64 and set(croot) <= set("0123456789abcdef") else None
    committed = replace(committed, checkpoints_root=croot)
    report = AuditReport(committed.root, header, croot,
                         check_header(header, derived.expected, params) if header else None,
                         exact=header is None or (header.device == derived.device and header.workers <= 2))
    early = judge_audit(report, params)
    if header is None or croot is None or early.reason in (AuditFailure.ROOT_MISMATCH, AuditFailure.WRONG_HEADER):
        return early, AuditCost(seconds=time.perf_counter() - started)
    steps = checkpoint_steps(header.steps, header.interval)
    segments = compute_audit_segments(seed, len(steps) - 1, params.segments) if sample is None else \
        tuple(sorted({*(s for s in sample if 0 <= s < len(steps) - 2), len(steps) - 2})) if len(steps) > 1 else ()
    wanted = sorted({0, *segments, *(s + 1 for s in segments)})
    opened, proven, problems, fetched = {}, {}, [], 0
    for index in wanted:
        found, problem = _open(committed, index, steps)
        if problem is not None:
            problems.append((index, *problem))
        elif found is not None:  # its tensors hash to its proven leaf (``_open``): no need to hash them again
            opened[index], proven[index] = found[0], compute_state_hash(found[1])
            fetched += _nbytes(found[0])
    report = replace(report, fetch_problems=tuple(problems))
    if problems:
        return judge_audit(report, params), AuditCost(segments, 0, fetched, time.perf_counter() - started)
    results, replayed = [], 0
    for s in segments:
        result = _replay_segment(derived, header, opened[s], opened[s + 1], s, proven[s + 1])
        results.append(result)
        replayed += opened[s + 1].step - opened[s].step
        if result.replayed != result.expected and report.exact:
            break  # the first mismatch is the verdict: replaying on would only cost more
    init = (proven[0], compute_state_hash(Checkpoint(0, derived.initial, {}).leaf(0)))
    final = _finished_hash(derived, opened[len(steps) - 1])
    report = replace(report, init=init, segments=tuple(results), final=(final, derived.model_hash))
    return judge_audit(report, params), AuditCost(segments, replayed, fetched, time.perf_counter() - started)


@dataclass(frozen=True)
class Refereed:
    """What a referee saw of one challenged segment: the committed (proven) state hash of its end, its own
    replayed one, or the problem that kept it from opening or replaying the segment."""

    expected: str | None
    replayed: str | None
    problem: str | None
    exact: bool


def referee_segment(committed: Committed, derived: Derived, index: int) -> Refereed:
    """Open checkpoints ``index`` and ``index + 1`` (each proven against the committed root) and replay between
    them: a dispute's one segment. A header that does not bind to the committed root, or a segment the miner
    cannot open, is a problem (the challenge stands); never raises on bad input."""
    header = _parsed(committed.header)
    croot = committed.checkpoints_root
    if header is None or not isinstance(croot, str) or compute_transcript_root(compute_header_hash(header), croot) \
            != committed.root:
        return Refereed(None, None, "the transcript does not bind to its committed root", True)
    exact = header.device == derived.device and header.workers <= 2
    steps = checkpoint_steps(header.steps, header.interval)
    if not 0 <= index < len(steps) - 1:
        return Refereed(None, None, None, exact)  # no such segment: nothing to confirm
    opened = []
    for i in (index, index + 1):
        found, problem = _open(committed, i, steps)
        if problem is not None or found is None:
            return Refereed(None, None, f"{problem[0].value if problem else 'missing_checkpoint'}: checkpoint {i}", exact)
        opened.append(found)
    (start, _), (end, leaf) = opened
    result = _replay_segment(derived, header, start, end, index, compute_state_hash(leaf))
    return Refereed(result.expected, result.replayed, None, exact)


def _parsed(header: object) -> TranscriptHeader | None:
    try:
        return revalidated(header) if isinstance(header, TranscriptHeader) else None  # type: ignore[arg-type]
    except DLBCError:
        return None


def _open(committed: Committed, index: int,
          steps: tuple[int, ...]) -> tuple[tuple[Checkpoint, CheckpointLeaf] | None, tuple[AuditFailure, str] | None]:
    """Checkpoint ``index`` and its leaf, proven against the committed checkpoints root (its tensors hashed
    once, here), or the named reason it is not."""
    try:
        opening = committed.fetch(index)
    except DLBCError as e:
        return None, (AuditFailure.MISSING_CHECKPOINT, f"the miner did not serve it ({e.reason})")
    if opening is None:
        return None, (AuditFailure.MISSING_CHECKPOINT, "the miner did not serve it")
    if not (isinstance(opening, tuple) and len(opening) == 3):
        return None, (AuditFailure.MALFORMED_CHECKPOINT, "the miner served something that is not an opening")
    leaf, proof, checkpoint = opening
    try:  # Ray unpickles pydantic models without running their validators
        leaf, proof = revalidated(leaf), revalidated(proof)
    except (DLBCError, AttributeError, TypeError):
        leaf = proof = None
    if not (isinstance(leaf, CheckpointLeaf) and isinstance(proof, MerkleProof)) or proof.index != index \
            or proof.size != len(steps) or not is_valid_proof(leaf, proof, committed.checkpoints_root or ""):
        return None, (AuditFailure.BAD_PROOF, "its leaf does not prove against the committed root")
    if leaf.step != steps[index] or not isinstance(checkpoint, Checkpoint) or checkpoint.step != leaf.step:
        return None, (AuditFailure.MALFORMED_CHECKPOINT, f"it is not the checkpoint of step {steps[index]}")
    try:
        same = checkpoint.leaf(index) == leaf
    except (DLBCError, AttributeError, TypeError, ValueError):
        same = False
    if not same:
        return None, (AuditFailure.MALFORMED_CHECKPOINT, "its tensors do not hash to its committed leaf")
    return (checkpoint, leaf), None


def _replay_segment(derived: Derived, header: TranscriptHeader, start: Checkpoint, end: Checkpoint,
                    index: int, expected: str) -> SegmentResult:
    """Replay ``start`` -> ``end`` and compare with ``expected``, the state hash of ``end`` (already proven)."""
    try:
        replayed = replay(derived.make_system, derived.fit, header, start, end.step)
    except DLBCError as e:  # a checkpoint of another architecture, or an optimizer state that does not fit
        return SegmentResult(index, expected, f"unreplayable: {e.reason}", float("inf"))
    return SegmentResult(index, expected, compute_state_hash(replayed.leaf(index + 1)),
                         relative_distance(replayed.weights, end.weights))


def _finished_hash(derived: Derived, last: Checkpoint) -> str:
    try:
        return crypto.hash_weights(derived.finish(last.weights))
    except DLBCError as e:
        return f"unfinishable: {e.reason}"


def _nbytes(checkpoint: Checkpoint) -> int:
    return sum(int(a.nbytes) for a in (*checkpoint.weights.values(), *checkpoint.optimizer.values()))
