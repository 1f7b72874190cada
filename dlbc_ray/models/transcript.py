"""Recording and replaying training transcripts: a Lightning callback, a derived data order, a replay.

The miner's trainer runs with ``DerivedOrder`` as its sampler and ``TranscriptRecorder`` as a
callback; the recorder reseeds torch before every step (so dropout is a function of the
seed) and keeps a ``Checkpoint`` (weights plus optimizer state) every ``k`` steps in a
``CheckpointStore``: in memory, or one ``.npz`` per checkpoint in a folder. The number of
checkpoints is bounded by ``AuditParams.max_checkpoints``, so a run keeps at most that many
copies of its weights and optimizer moments (about 3x the model's size each with Adam).

``replay`` runs the same ``ClassifierSystem.training_step`` and ``configure_optimizers`` as
Lightning, on CPU with deterministic algorithms and the header's thread count, so an honest
segment lands on its next checkpoint bit for bit.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Sampler

from dlbc_ray import crypto
from dlbc_ray.consensus.transcript import (
    AuditFailure,
    AuditOutcome,
    AuditParams,
    HYPERPARAMETERS,
    AuditReport,
    CheckpointLeaf,
    Expected,
    MerkleProof,
    SegmentResult,
    TranscriptHeader,
    check_header,
    checkpoint_steps,
    compute_audit_segments,
    compute_checkpoints_root,
    compute_header_hash,
    compute_interval,
    compute_merkle_proof,
    compute_state_hash,
    compute_step_seed,
    compute_steps_per_epoch,
    compute_training_seed,
    compute_transcript_root,
    is_valid_proof,
    judge_audit,
)
from dlbc_ray.errors import DLBCError, InvalidModelFile
from dlbc_ray.models.data import Split
from dlbc_ray.models.system import ClassifierSystem
from dlbc_ray.models.weights import load_into, to_numpy


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the fit examples in ``epoch``: a permutation fixed by ``seed`` alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class DerivedOrder(Sampler[int]):
    """A sampler whose epoch ``e`` yields ``epoch_order(seed, e, n)``; Lightning calls ``set_epoch``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.seed, self.epoch, self.n).tolist())

    def __len__(self) -> int:
        return self.n


# ------------------------------------------------------------------ checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """The trainable state after ``step`` optimizer steps: weights and flattened optimizer state."""

    step: int
    weights: dict[str, np.ndarray] = field(repr=False)
    optimizer: dict[str, np.ndarray] = field(repr=False)

    def leaf(self, index: int) -> CheckpointLeaf:
        return CheckpointLeaf(index=index, step=self.step, weights_hash=crypto.hash_weights(self.weights),
                              optimizer_hash=crypto.hash_weights(self.optimizer))


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """``state.<param index>.<name>`` -> exact numpy copy; the hyperparameters are the header's, not stored."""
    flat = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            flat[f"state.{index}.{name}"] = tensor.detach().cpu().clone().numpy()
    return flat


def load_optimizer(optimizer: torch.optim.Optimizer, flat: Mapping[str, np.ndarray]) -> None:
    """Restore ``flatten_optimizer``'s output; a malformed state raises InvalidModelFile."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    try:
        for key, array in flat.items():
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = torch.from_numpy(np.array(array, copy=True))
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise InvalidModelFile(f"optimizer state does not fit: {str(e)[:120]}", reason="malformed_checkpoint") from None


class CheckpointStore:
    """Checkpoints by index: in memory, or in ``folder`` as ``<index>.npz`` (no pickles)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[int, Checkpoint] = {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def put(self, index: int, checkpoint: Checkpoint) -> None:
        if self.folder is None:
            self._memory[index] = checkpoint
            return
        arrays = {f"w/{k}": v for k, v in checkpoint.weights.items()} | {f"o/{k}": v for k, v in checkpoint.optimizer.items()}
        np.savez(self.folder / f"{index}.npz", step=np.int64(checkpoint.step), **arrays)

    def get(self, index: int) -> Checkpoint | None:
        if self.folder is None:
            return self._memory.get(index)
        path = self.folder / f"{index}.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            return Checkpoint(step=int(z["step"]), weights={k[2:]: z[k] for k in z.files if k.startswith("w/")},
                              optimizer={k[2:]: z[k] for k in z.files if k.startswith("o/")})

    def nbytes(self) -> int:
        if self.folder is not None:
            return sum(p.stat().st_size for p in self.folder.glob("*.npz"))
        return sum(a.nbytes for c in self._memory.values() for a in (*c.weights.values(), *c.optimizer.values()))


class TranscriptRecorder(pl.Callback):
    """Reseeds torch before each optimizer step and keeps a checkpoint at every step of ``checkpoint_steps``."""

    def __init__(self, seed: int, interval: int, store: CheckpointStore | None = None) -> None:
        self.seed, self.interval = seed, interval
        self.store = store if store is not None else CheckpointStore()
        self.leaves: list[CheckpointLeaf] = []
        self._deterministic = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        self._record(0, pl_module, trainer.optimizers[0])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        torch.manual_seed(compute_step_seed(self.seed, trainer.global_step))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        if trainer.global_step % self.interval == 0:
            self._record(trainer.global_step, pl_module, trainer.optimizers[0])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer.global_step, pl_module, trainer.optimizers[0])
        torch.use_deterministic_algorithms(self._deterministic)

    def _record(self, step: int, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if self.leaves and self.leaves[-1].step == step:
            return
        checkpoint = Checkpoint(step=step, weights=to_numpy(pl_module.net), optimizer=flatten_optimizer(optimizer))
        self.store.put(len(self.leaves), checkpoint)
        self.leaves.append(checkpoint.leaf(len(self.leaves)))


# ------------------------------------------------------------------ the miner's transcript


@dataclass
class Transcript:
    """A finished run's header, committed leaves and stored checkpoints; serves proofs to auditors."""

    header: TranscriptHeader
    leaves: list[CheckpointLeaf]
    store: CheckpointStore

    @property
    def checkpoints_root(self) -> str:
        return compute_checkpoints_root(self.leaves)

    @property
    def root(self) -> str:
        return compute_transcript_root(compute_header_hash(self.header), self.checkpoints_root)

    def opening(self, index: int) -> tuple[CheckpointLeaf, MerkleProof, Checkpoint] | None:
        """Checkpoint ``index`` with its leaf and proof; None when there is no such checkpoint."""
        checkpoint = self.store.get(index) if 0 <= index < len(self.leaves) else None
        if checkpoint is None:
            return None
        return self.leaves[index], compute_merkle_proof(self.leaves, index), checkpoint


def plan(task_id: str, miner: str, round_id: str, *, examples: int, max_epochs: int, hyper: Mapping[str, object],
         threads: int, device: str, params: AuditParams) -> TranscriptHeader:
    """The header a run will have, fixed before it starts; ``steps`` is the budget until ``finish``."""
    per_epoch = compute_steps_per_epoch(examples, int(hyper["batch_size"]))  # type: ignore[call-overload]
    return TranscriptHeader.model_validate({
        "task_id": task_id, "miner": miner, "round_id": round_id, "seed": compute_training_seed(task_id, miner, round_id),
        "interval": compute_interval(per_epoch * max_epochs, params.max_checkpoints), "steps": per_epoch * max_epochs,
        "steps_per_epoch": per_epoch, "examples": examples, "threads": threads, "device": device,
        **{k: hyper[k] for k in HYPERPARAMETERS}})


def recorder_for(header: TranscriptHeader, store: CheckpointStore | None = None) -> TranscriptRecorder:
    return TranscriptRecorder(header.seed, header.interval, store)


def finish(header: TranscriptHeader, recorder: TranscriptRecorder) -> Transcript:
    """The run's transcript: its header with the steps taken, checked against what was recorded."""
    if not recorder.leaves:
        raise InvalidModelFile("training recorded no checkpoint", reason="transcript")
    header = header.model_copy(update={"steps": recorder.leaves[-1].step})
    if tuple(leaf.step for leaf in recorder.leaves) != checkpoint_steps(header.steps, header.interval):
        raise InvalidModelFile("recorded checkpoints do not match the header's interval", reason="transcript")
    return Transcript(header, list(recorder.leaves), recorder.store)


def committed(transcript: Transcript) -> Committed:
    """An honest miner's commitment and openings (tests and benchmarks; the miner serves these over Ray)."""
    return Committed(transcript.root, transcript.header, transcript.checkpoints_root, transcript.opening)


# ------------------------------------------------------------------ replay


@contextmanager
def deterministic_cpu(threads: int) -> Iterator[None]:
    """Deterministic algorithms and ``threads`` torch threads for the block; both restored after."""
    was_threads, was_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(was_threads)
        torch.use_deterministic_algorithms(was_det)


def replay(make_system: Callable[[], ClassifierSystem], fit: Split, header: TranscriptHeader, start: Checkpoint,
           end_step: int, *, on_step: Callable[[int, ClassifierSystem], None] | None = None) -> Checkpoint:
    """Train from ``start`` to ``end_step`` with the derived order and seeds, as the miner's trainer did."""
    system = make_system()
    load_into(system.net, start.weights)
    optimizer = system.configure_optimizers()
    load_optimizer(optimizer, start.optimizer)
    system.train()
    x, y = torch.from_numpy(fit.x), torch.from_numpy(fit.y)
    order, order_epoch = np.arange(0), -1
    with deterministic_cpu(header.threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer here: logging is a no-op
        for step in range(start.step, end_step):
            epoch, batch = divmod(step, header.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(header.seed, epoch, header.examples), epoch
            index = torch.from_numpy(order[batch * header.batch_size:(batch + 1) * header.batch_size])
            torch.manual_seed(compute_step_seed(header.seed, step))
            optimizer.zero_grad(set_to_none=True)
            try:
                system.training_step((x[index], y[index]), batch).backward()
                optimizer.step()
            except RuntimeError as e:  # an optimizer state of the wrong shape: committed, but unreplayable
                raise InvalidModelFile(f"segment cannot be replayed: {str(e)[:120]}", reason="malformed_checkpoint") from None
            if on_step is not None:
                on_step(step + 1, system)
    return Checkpoint(step=end_step, weights=to_numpy(system.net), optimizer=flatten_optimizer(optimizer))


def relative_distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """||a - b|| / ||b|| over all floating tensors; inf when the tensors do not line up."""
    if a.keys() != b.keys() or any(np.shape(a[k]) != np.shape(b[k]) for k in a):
        return float("inf")
    num = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a)
    den = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in a)
    return float(np.sqrt(num / max(den, 1e-30)))


# ------------------------------------------------------------------ audit

Opening = tuple[CheckpointLeaf, MerkleProof, Checkpoint]


@dataclass(frozen=True)
class Committed:
    """What the miner committed (``root``, in its signed submission) and served after the reveal."""

    root: str | None
    header: TranscriptHeader | None
    checkpoints_root: str | None
    fetch: Callable[[int], Opening | None]  # checkpoint i with its proof; None when the miner does not answer


@dataclass(frozen=True)
class Derived:
    """What the validator derives itself: the system to replay, the fit split, the initial weights,
    how the miner finishes its last checkpoint (the watermark settle), and the submitted model's hash."""

    make_system: Callable[[], ClassifierSystem]
    fit: Split
    initial: dict[str, np.ndarray]
    finish: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    model_hash: str
    expected: Expected
    device: str = "cpu"


@dataclass(frozen=True)
class AuditCost:
    segments: tuple[int, ...] = ()
    replayed_steps: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0


def audit(committed: Committed, derived: Derived, params: AuditParams, seed: bytes) -> tuple[AuditOutcome, AuditCost]:
    """Replay the segments ``seed`` picks and judge what was seen with ``judge_audit``; never raises on bad input."""
    started = time.perf_counter()
    header = committed.header
    report = AuditReport(committed.root, header, committed.checkpoints_root,
                         check_header(header, derived.expected, params) if header else None,
                         exact=header is None or header.device == derived.device)
    early = judge_audit(report, params)
    if early.reason in (AuditFailure.NO_TRANSCRIPT, AuditFailure.ROOT_MISMATCH, AuditFailure.WRONG_HEADER):
        return early, AuditCost(seconds=time.perf_counter() - started)
    assert header is not None and committed.checkpoints_root is not None
    steps = checkpoint_steps(header.steps, header.interval)
    segments = compute_audit_segments(seed, len(steps) - 1, params.segments)
    wanted = sorted({0, *segments, *(s + 1 for s in segments)})
    opened, problems, fetched = {}, [], 0
    for index in wanted:
        checkpoint, problem = _open(committed, index, steps)
        if problem is not None:
            problems.append((index, *problem))
        else:
            opened[index], fetched = checkpoint, fetched + _nbytes(checkpoint)
    report = replace(report, fetch_problems=tuple(problems))
    if problems:
        return judge_audit(report, params), AuditCost(segments, 0, fetched, time.perf_counter() - started)
    results, replayed = [], 0
    for s in segments:
        result = _replay_segment(derived, header, opened[s], opened[s + 1], s)
        results.append(result)
        replayed += opened[s + 1].step - opened[s].step
        if result.replayed != result.expected and report.exact:
            break  # the first mismatch is the verdict: replaying on would only cost more
    init = (_state(opened[0]), compute_state_hash(Checkpoint(0, derived.initial, {}).leaf(0)))
    final = _finished_hash(derived, opened[len(steps) - 1])
    report = replace(report, init=init, segments=tuple(results), final=(final, derived.model_hash))
    return judge_audit(report, params), AuditCost(segments, replayed, fetched, time.perf_counter() - started)


def _open(committed: Committed, index: int, steps: tuple[int, ...]) -> tuple[Checkpoint | None, tuple[AuditFailure, str] | None]:
    """Checkpoint ``index`` proven against the committed checkpoints root, or the named reason it is not."""
    try:
        opening = committed.fetch(index)
    except DLBCError as e:
        return None, (AuditFailure.MISSING_CHECKPOINT, f"the miner did not serve it ({e.reason})")
    if opening is None:
        return None, (AuditFailure.MISSING_CHECKPOINT, "the miner did not serve it")
    if not (isinstance(opening, tuple) and len(opening) == 3):
        return None, (AuditFailure.MALFORMED_CHECKPOINT, "the miner served something that is not an opening")
    leaf, proof, checkpoint = opening
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
    return checkpoint, None


def _replay_segment(derived: Derived, header: TranscriptHeader, start: Checkpoint, end: Checkpoint,
                    index: int) -> SegmentResult:
    expected = compute_state_hash(end.leaf(index + 1))
    try:
        replayed = replay(derived.make_system, derived.fit, header, start, end.step)
    except DLBCError as e:  # a checkpoint of another architecture, or an optimizer state that does not fit
        return SegmentResult(index, expected, f"unreplayable: {e.reason}", float("inf"))
    return SegmentResult(index, expected, compute_state_hash(replayed.leaf(index + 1)),
                         relative_distance(replayed.weights, end.weights))


def _state(checkpoint: Checkpoint) -> str:
    return compute_state_hash(checkpoint.leaf(0))


def _finished_hash(derived: Derived, last: Checkpoint) -> str:
    try:
        return crypto.hash_weights(derived.finish(last.weights))
    except DLBCError as e:
        return f"unfinishable: {e.reason}"


def _nbytes(checkpoint: Checkpoint) -> int:
    return sum(int(a.nbytes) for a in (*checkpoint.weights.values(), *checkpoint.optimizer.values()))
