"""Training transcripts: a derived data order, checkpoints, bounded storage, the miner's Merkle tree.

The miner's trainer runs with ``DerivedOrder`` as its sampler and ``TranscriptRecorder``
(models/recorder.py, the one Lightning part) as a callback; the recorder reseeds torch before
every step (so dropout is a function of the seed) and keeps a ``Checkpoint`` (weights plus
optimizer state) every ``k`` steps in a ``CheckpointStore``: in memory, or one ``.npz`` per
checkpoint in a folder. The number of checkpoints is bounded by ``AuditParams.max_checkpoints``,
so a run keeps at most that many copies of its weights and optimizer moments (about 3x the
model's size each with Adam). Nothing here imports Lightning: validators replaying a transcript
(``models/replay.py``) need only torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Sampler

from dlbc_ray import crypto
from dlbc_ray.consensus.transcript import (
    HYPERPARAMETERS,
    AuditParams,
    CheckpointLeaf,
    MerkleProof,
    TranscriptHeader,
    checkpoint_steps,
    compute_checkpoints_root,
    compute_header_hash,
    compute_interval,
    compute_merkle_levels,
    compute_merkle_proof,
    compute_steps_per_epoch,
    compute_training_seed,
    compute_transcript_root,
)
from dlbc_ray.errors import InvalidModelFile
from dlbc_ray.models.data import Split, holdout

if TYPE_CHECKING:
    from dlbc_ray.models.recorder import TranscriptRecorder


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


Opening = tuple[CheckpointLeaf, MerkleProof, Checkpoint]  # what a miner serves an auditor for one checkpoint


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """``state.<param index>.<name>`` -> exact numpy copy; the hyperparameters are the header's, not stored."""
    flat = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            flat[f"state.{index}.{name}"] = exact_copy(tensor)
    return flat


def exact_copy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's values in a numpy array of its own, its dtype kept: one copy (a CPU tensor's numpy view,
    copied; a device tensor's ``.cpu()`` copy), about half the cost of ``.cpu().clone().numpy()`` per tensor,
    paid for every tensor of every checkpoint a transcript records."""
    array = tensor.detach().cpu().numpy()
    return array.copy() if tensor.is_cpu else array


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
    """Checkpoints by step: in memory, or in ``folder`` as ``<step>.npz`` (no pickles)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[int, Checkpoint] = {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def put(self, checkpoint: Checkpoint) -> None:
        if self.folder is None:
            self._memory[checkpoint.step] = checkpoint
            return
        arrays = {f"w/{k}": v for k, v in checkpoint.weights.items()} | {f"o/{k}": v for k, v in checkpoint.optimizer.items()}
        np.savez(self.folder / f"{checkpoint.step}.npz", step=np.int64(checkpoint.step), **arrays)

    def get(self, step: int) -> Checkpoint | None:
        if self.folder is None:
            return self._memory.get(step)
        path = self.folder / f"{step}.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            return Checkpoint(step=int(z["step"]), weights={k[2:]: z[k] for k in z.files if k.startswith("w/")},
                              optimizer={k[2:]: z[k] for k in z.files if k.startswith("o/")})

    def drop(self, step: int) -> None:
        if self.folder is None:
            self._memory.pop(step, None)
        else:
            (self.folder / f"{step}.npz").unlink(missing_ok=True)

    def nbytes(self) -> int:
        if self.folder is not None:
            return sum(p.stat().st_size for p in self.folder.glob("*.npz"))
        return sum(a.nbytes for c in self._memory.values() for a in (*c.weights.values(), *c.optimizer.values()))


def seed_step(seed: int) -> None:
    """Seed one training step's randomness (dropout): the CPU generator, and CUDA's only if it is in use.

    ``torch.manual_seed`` also walks CUDA's lazy seeding queue: about 65 us a call against 1 us for
    the CPU generator alone, paid on every step of every miner.
    """
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


# ------------------------------------------------------------------ the miner's transcript


@dataclass
class Transcript:
    """A finished run's header, committed leaves and stored checkpoints; serves proofs to auditors.
    Never changed once made: its roots and Merkle levels are computed once."""

    header: TranscriptHeader
    leaves: list[CheckpointLeaf]
    store: CheckpointStore

    @cached_property
    def checkpoints_root(self) -> str:
        """Hashed once: every validator's every opening asks for it (about 0.2 ms for 54 leaves, each time)."""
        return compute_checkpoints_root(self.leaves)

    @cached_property
    def root(self) -> str:
        return compute_transcript_root(compute_header_hash(self.header), self.checkpoints_root)

    def checkpoint(self, index: int) -> Checkpoint | None:
        return self.store.get(self.leaves[index].step) if 0 <= index < len(self.leaves) else None

    def opening(self, index: int) -> Opening | None:
        """Checkpoint ``index`` with its leaf and proof; None when there is no such checkpoint."""
        checkpoint = self.checkpoint(index)
        if checkpoint is None:
            return None
        return self.leaves[index], compute_merkle_proof(self.leaves, index, self._levels), checkpoint

    @cached_property
    def _levels(self) -> tuple[tuple[bytes, ...], ...]:
        """The tree, hashed once: every validator asks for about three openings of each submission."""
        return compute_merkle_levels(self.leaves)


def plan(task_id: str, miner: str, round_id: str, *, examples: int, max_epochs: int, hyper: Mapping[str, object],
         threads: int, device: str, params: AuditParams) -> TranscriptHeader:
    """The header a run will have, fixed before it starts; ``steps`` and ``interval`` are the budget's until
    ``finish`` writes what the run took."""
    per_epoch = compute_steps_per_epoch(examples, int(hyper["batch_size"]))  # type: ignore[call-overload]
    return TranscriptHeader.model_validate({
        "task_id": task_id, "miner": miner, "round_id": round_id, "seed": compute_training_seed(task_id, miner, round_id),
        "interval": compute_interval(per_epoch * max_epochs, params.max_checkpoints), "steps": per_epoch * max_epochs,
        "steps_per_epoch": per_epoch, "examples": examples, "threads": threads, "device": device,
        **{k: hyper[k] for k in HYPERPARAMETERS}})


def start(task_id: str, miner: str, round_id: str, data: Split, *, max_epochs: int, hyper: Mapping[str, object],
          threads: int, device: str, params: AuditParams,
          store: CheckpointStore | None = None) -> tuple[TranscriptHeader, TranscriptRecorder]:
    """A miner's header (its fit split derived from ``data`` as ``train`` will hold it out) and recorder."""
    seed = compute_training_seed(task_id, miner, round_id)
    fit, _ = holdout(data, float(hyper["val_fraction"]), seed)  # type: ignore[arg-type]
    header = plan(task_id, miner, round_id, examples=len(fit), max_epochs=max_epochs, hyper=hyper, threads=threads,
                  device=device, params=params)
    return header, recorder_for(header, params, store)


class Kept:
    """A miner's transcripts of its last submissions, by commit, in memory: at most ``size`` of them and
    ``max_bytes`` in all (the newest is always kept); the oldest go first. One transcript holds at most
    ``AuditParams.max_checkpoints`` checkpoints of weights plus optimizer state (about 3x the model with Adam)."""

    def __init__(self, size: int = 8, max_bytes: int = 2 << 30) -> None:
        self.size, self.max_bytes = size, max_bytes
        self._by_commit: dict[str, Transcript] = {}

    def put(self, commit: str, transcript: Transcript) -> None:
        self._by_commit[commit] = transcript
        while len(self._by_commit) > 1 and (len(self._by_commit) > self.size or self.nbytes() > self.max_bytes):
            del self._by_commit[next(iter(self._by_commit))]

    def get(self, commit: str) -> Transcript | None:
        return self._by_commit.get(commit)

    def nbytes(self) -> int:
        return sum(t.store.nbytes() for t in self._by_commit.values())


def recorder_for(header: TranscriptHeader, params: AuditParams,
                 store: CheckpointStore | None = None) -> TranscriptRecorder:
    from dlbc_ray.models.recorder import TranscriptRecorder  # Lightning: only a miner's process records

    return TranscriptRecorder(header.seed, params.max_checkpoints, store)


def finish(header: TranscriptHeader, recorder: TranscriptRecorder) -> Transcript:
    """The run's transcript: its header with the steps and interval taken, checked against what was kept."""
    leaves = recorder.leaves
    if not leaves:
        raise InvalidModelFile("training recorded no checkpoint", reason="transcript")
    header = header.model_copy(update={"steps": leaves[-1].step, "interval": recorder.interval})
    if tuple(leaf.step for leaf in leaves) != checkpoint_steps(header.steps, header.interval) \
            or header.interval != compute_interval(header.steps, recorder.cap):
        raise InvalidModelFile("recorded checkpoints do not match the header's interval", reason="transcript")
    return Transcript(header, leaves, recorder.store)
