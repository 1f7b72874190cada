"""Training transcripts (Proof-of-Learning, Jia et al. 2021) as pure rules: derive, commit, sample, judge.

A miner checkpoints every ``k`` optimizer steps and commits
``H(domain | H(header) | merkle_root(leaves))`` in its signed submission. Everything a replay
needs is derived here from values fixed before training (task id, miner key, round id, and
the network's training policy), so a miner chooses neither its data order, its dropout
masks nor its hyperparameters: the freedom the spoofing attacks of Zhang et al. (S&P'22)
and Fang et al. (EuroS&P'23) rely on. After the reveal, validators replay segments sampled
from a seed nobody controlled at commit time and ``judge_audit`` turns what they saw into
one outcome with a named reason.

Exactness: replays run on CPU with deterministic algorithms and the thread count the
header records, so a replay matches bit for bit and the tolerance is zero. A relative
L2 tolerance (measured by ``benchmarks/transcript.py``) applies only to a validator on
another device class than the header's.

Pure: no torch, no Ray, no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dlbc_ray import crypto
from dlbc_ray.consensus.checkpoints import (  # noqa: F401 - re-exported: checkpoints, proofs, audit sampling
    CheckpointLeaf,
    MerkleProof,
    compute_audit_seed,
    compute_audit_segments,
    compute_checkpoints_root,
    compute_merkle_levels,
    compute_merkle_proof,
    compute_root_from_proof,
    escape_probability,
    is_valid_proof,
    sample_segments,
)
from dlbc_ray.schema.base import FrozenModel, Hash, PublicKey


TRANSCRIPT_DOMAIN = b"dlbc/transcript/v1"
_SEED_DOMAIN = b"dlbc/transcript-seed/v1"
_STEP_DOMAIN = b"dlbc/transcript-step/v1"
HYPERPARAMETERS = ("batch_size", "lr", "optimizer", "weight_decay", "val_fraction")


class AuditParams(BaseModel):
    """How transcripts are made and audited; every miner and validator of a network must agree."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # an inf tolerance passes any replay

    max_checkpoints: int = Field(default=96, ge=3, le=4096, description="checkpoints kept per run, at most "
                                 "(k is the smallest power of two that fits the run's steps into this many)")
    segments: int = Field(default=1, ge=1, description="Q, segments each validator samples and replays, "
                          "besides the last one, which every audit replays (it binds the submitted model)")
    tolerance: float = Field(default=0.0, ge=0.0, le=1.0, description="relative L2 distance a replay on another "
                             "device class may land from its checkpoint; 0 on the header's own class (bitwise)")


class TranscriptHeader(FrozenModel):
    """What a replay needs besides data and the revealed secrets; hashed into the committed root."""

    task_id: Hash
    miner: PublicKey
    round_id: Hash
    seed: int = Field(ge=0, lt=2**63, description="data order and per-step randomness: compute_training_seed")
    interval: int = Field(ge=1, description="k: a checkpoint every k optimizer steps, plus the last step")
    steps: int = Field(ge=0, description="optimizer steps taken")
    steps_per_epoch: int = Field(ge=1)
    examples: int = Field(ge=1, description="examples in the fit part (after the validation holdout)")
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    optimizer: Literal["adam", "sgd"]
    weight_decay: float = Field(ge=0)
    val_fraction: float = Field(ge=0, lt=1)
    threads: int = Field(ge=1, le=1024, description="torch threads training used; replays use the same")
    device: Literal["cpu", "gpu"]
    workers: int = Field(default=1, ge=1, le=1024, description="data-parallel workers: each batch is split into this "
                         "many contiguous shards (models.distributed); a replay shards alike")


# ------------------------------------------------------------------ derivation


def compute_training_seed(task_id: str, miner: str, round_id: str) -> int:
    """The seed of a run's data order and randomness: fixed by the round, the same for anyone who derives it."""
    digest = hashlib.sha256(_SEED_DOMAIN + f"|{task_id}|{miner}|{round_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def compute_step_seed(seed: int, step: int) -> int:
    """The global torch seed set before optimizer step ``step`` (dropout masks cannot be chosen)."""
    return int.from_bytes(hashlib.sha256(_STEP_DOMAIN + f"|{seed}|{step}".encode()).digest()[:8], "big") >> 1


def compute_hyperparameters(batch_size: int, lr: float, optimizer: str, val_fraction: float) -> dict[str, object]:
    """The network's training hyperparameters (``MinerConfig``) as a header must carry them."""
    return {"batch_size": batch_size, "lr": lr, "optimizer": optimizer, "weight_decay": 0.0, "val_fraction": val_fraction}


def compute_steps_per_epoch(examples: int, batch_size: int) -> int:
    return max(1, math.ceil(examples / batch_size))


def compute_interval(steps: int, max_checkpoints: int) -> int:
    """k: the smallest power of two that keeps a run of ``steps`` within ``max_checkpoints`` checkpoints
    (step 0, every k-th, and the last); the recorder reaches the same k by doubling as it goes."""
    k = 1
    while steps // k + 1 > max_checkpoints - 1:
        k *= 2
    return k


def checkpoint_steps(steps: int, interval: int) -> tuple[int, ...]:
    """Steps at which checkpoints are taken: 0, k, 2k, ... and always the last step."""
    marks = list(range(0, steps + 1, interval))
    return tuple(marks if marks[-1] == steps else [*marks, steps])


def compute_header_hash(header: TranscriptHeader) -> str:
    return crypto.sha256_hex(TRANSCRIPT_DOMAIN, b"|header|", crypto.canonical_bytes(header))


def compute_state_hash(leaf: CheckpointLeaf) -> str:
    """One hash for a checkpoint's whole state (weights and optimizer), as audit evidence quotes it."""
    return crypto.sha256_hex(TRANSCRIPT_DOMAIN, b"|state|", leaf.weights_hash.encode(), b"|", leaf.optimizer_hash.encode())


def compute_transcript_root(header_hash: str, checkpoints_root: str) -> str:
    """The value a submission commits to: header and checkpoints, bound together."""
    return crypto.sha256_hex(TRANSCRIPT_DOMAIN, b"|", header_hash.encode(), b"|", checkpoints_root.encode())


# ------------------------------------------------------------------ disputes (Verde's refereed bisection)


def find_divergence(lo: int, hi: int, agree_at: Callable[[int], bool]) -> int:
    """The first step in ``(lo, hi]`` at which two parties' state hashes differ, given that they agree at
    ``lo`` and differ at ``hi``: log2(hi - lo) comparisons, after which a referee recomputes one step."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if agree_at(mid) else (lo, mid)
    return hi


# ------------------------------------------------------------------ judging


class AuditFailure(str, Enum):
    """Why a transcript failed its audit; each is its own reason, checked in this order."""

    NO_TRANSCRIPT = "no_transcript"
    ROOT_MISMATCH = "root_mismatch"
    WRONG_HEADER = "wrong_header"
    MISSING_CHECKPOINT = "missing_checkpoint"
    BAD_PROOF = "bad_proof"
    MALFORMED_CHECKPOINT = "malformed_checkpoint"
    WRONG_INIT = "wrong_init"
    REPLAY_MISMATCH = "replay_mismatch"
    FINAL_MISMATCH = "final_mismatch"


@dataclass(frozen=True)
class Expected:
    """What the validator derives on its own for a submission's header."""

    task_id: str
    miner: str
    round_id: str
    examples: int
    max_epochs: int
    epochs: int  # the submission's own claim
    hyperparameters: Mapping[str, object]  # the network's training policy: HYPERPARAMETERS -> value


def check_header(header: TranscriptHeader, expected: Expected, params: AuditParams) -> str | None:
    """None when the header is what the round, the data and the policy fix; else what differs."""
    binding = {"task_id": expected.task_id, "miner": expected.miner, "round_id": expected.round_id,
               "examples": expected.examples,
               "seed": compute_training_seed(expected.task_id, expected.miner, expected.round_id),
               **{k: v for k, v in expected.hyperparameters.items() if k in HYPERPARAMETERS}}
    for name, value in binding.items():
        if getattr(header, name) != value:
            return f"{name} is {getattr(header, name)!r}, the round fixes {value!r}"
    per_epoch = compute_steps_per_epoch(header.examples, header.batch_size)
    if header.steps_per_epoch != per_epoch:
        return f"steps_per_epoch is {header.steps_per_epoch}, {header.examples} examples make {per_epoch}"
    last = header.examples % header.batch_size or header.batch_size  # data-parallel: every worker a shard of it
    if header.workers > last:
        return f"{header.workers} workers cannot each get a shard of the last batch of {last}"
    if header.interval != compute_interval(header.steps, params.max_checkpoints):
        return f"interval {header.interval} is not the one {header.steps} steps fix"
    # the epochs a run began: PoLe may stop right after a validation inside an epoch (TrainSettings.checks_per_epoch)
    if header.steps > per_epoch * expected.max_epochs \
            or not per_epoch * (expected.epochs - 1) < header.steps <= per_epoch * expected.epochs:
        return f"{header.steps} steps are not within the {expected.epochs} epochs the submission claims"
    return None


@dataclass(frozen=True)
class SegmentResult:
    """One replayed segment: checkpoint ``index`` -> ``index + 1``."""

    index: int
    expected: str  # compute_state_hash of the committed leaf at index + 1
    replayed: str
    distance: float  # relative L2 between replayed and committed weights; 0.0 when bitwise equal


@dataclass(frozen=True)
class AuditReport:
    """What a validator saw, in the order it looked; ``judge_audit`` decides from this alone."""

    committed_root: str | None
    header: TranscriptHeader | None = None
    checkpoints_root: str | None = None
    header_problem: str | None = None
    fetch_problems: tuple[tuple[int, AuditFailure, str], ...] = ()  # (index, MISSING/BAD_PROOF/MALFORMED, detail)
    init: tuple[str, str] | None = None  # (committed leaf 0 weights hash, derived initial weights hash)
    segments: tuple[SegmentResult, ...] = ()
    final: tuple[str, str] | None = None  # (hash of the last checkpoint finished as the miner does, model_hash)
    exact: bool = True  # the validator replayed on the header's device class


@dataclass(frozen=True)
class AuditOutcome:
    passed: bool
    reason: AuditFailure | None = None
    detail: str = ""
    segment: int | None = None
    expected: str | None = None
    replayed: str | None = None


def judge_audit(report: AuditReport, params: AuditParams) -> AuditOutcome:
    """Pass, or the first failure with its evidence (segment, expected hash, replayed hash)."""
    if report.committed_root is None or report.header is None or report.checkpoints_root is None:
        return AuditOutcome(False, AuditFailure.NO_TRANSCRIPT, "no transcript was committed or served")
    root = compute_transcript_root(compute_header_hash(report.header), report.checkpoints_root)
    if root != report.committed_root:
        return AuditOutcome(False, AuditFailure.ROOT_MISMATCH, "header and checkpoints do not hash to the committed root")
    if report.header_problem:
        return AuditOutcome(False, AuditFailure.WRONG_HEADER, report.header_problem)
    for order in (AuditFailure.MISSING_CHECKPOINT, AuditFailure.BAD_PROOF, AuditFailure.MALFORMED_CHECKPOINT):
        for index, reason, detail in report.fetch_problems:
            if reason is order:
                return AuditOutcome(False, reason, f"checkpoint {index}: {detail}", segment=index)
    if report.init is None or report.init[0] != report.init[1]:
        return AuditOutcome(False, AuditFailure.WRONG_INIT, "checkpoint 0 is not the initialisation the task fixes",
                            segment=0, expected=report.init[1] if report.init else None,
                            replayed=report.init[0] if report.init else None)
    for seg in report.segments:
        if not is_segment_match(seg, report.exact, params.tolerance):
            return AuditOutcome(False, AuditFailure.REPLAY_MISMATCH,
                                f"segment {seg.index} replays {seg.distance:.3g} away from its checkpoint",
                                segment=seg.index, expected=seg.expected, replayed=seg.replayed)
    if report.final is None or report.final[0] != report.final[1]:
        return AuditOutcome(False, AuditFailure.FINAL_MISMATCH, "the last checkpoint does not lead to the submitted model",
                            expected=report.final[1] if report.final else None,
                            replayed=report.final[0] if report.final else None)
    return AuditOutcome(True)


def is_segment_match(seg: SegmentResult, exact: bool, tolerance: float) -> bool:
    """Bitwise on the header's device class; within ``tolerance`` only across device classes."""
    if seg.replayed == seg.expected:
        return True
    return not exact and math.isfinite(seg.distance) and seg.distance <= tolerance
