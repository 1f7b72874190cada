"""Messages between actors during a round: context, progress, per-actor stats and the report.

None of these is stored in blocks; they carry what the user sees and what the benchmarks
measure. Two are signed by the proposer: the ``RoundContext`` (miners train and validators judge
only for a round it signed) and the ``WindowClose``, the only key to a miner's reveal.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from dlbc_ray.constants import MAX_SUBMISSIONS, ROUND_CONTEXT_DOMAIN, WINDOW_CLOSE_DOMAIN
from dlbc_ray.schema.base import FrozenModel, Hash, Millis, PublicKey
from dlbc_ray.schema.signed import Signed
from dlbc_ray.schema.submission import Ballot, Reveal, Submission, Verdict


class RoundContext(FrozenModel):
    """What every participant of one round agrees on before it starts, signed by the proposer
    (``consensus.round_context``): a miner trains, and a validator reads marks and scores, for no other round."""

    DOMAIN: ClassVar[bytes] = ROUND_CONTEXT_DOMAIN

    chain_id: Hash = Field(description="the chain every message of this round is signed for")
    round_id: Hash
    task_id: Hash
    base_height: int = Field(ge=0, description="the chain head when the round started")
    base_hash: Hash
    eval_seed: int = Field(ge=0, description="derived from base_hash: validators evaluate identically")
    submit_deadline_ms: Millis
    shards: dict[PublicKey, tuple[int, int]] = Field(
        default_factory=dict, description="BaaS: each miner's private shard (index, examples), fixed by the protocol")


class WindowClose(FrozenModel):
    """The proposer's word that a round's submission window is closed: a miner reveals its seed against it only.

    A standing round reopens its window after a refuted claim, so one close does not open
    the whole round: it names the commits whose seeds it opens (that wave's), and only the
    ``final`` close, after which the window never reopens, stops miners still training.
    """

    DOMAIN: ClassVar[bytes] = WINDOW_CLOSE_DOMAIN

    task_id: Hash
    round_id: Hash
    closed_ms: Millis
    opens: tuple[Hash, ...] = Field(default=(), max_length=MAX_SUBMISSIONS,
                                    description="the commits whose mapping seeds this close lets their miners reveal")
    final: bool = Field(default=False, description="the window is closed for good: miners still training stop")


class MinerStats(FrozenModel):
    train_s: float
    epochs: int
    hash_ms: float
    sign_ms: float
    put_ms: float
    device: str


class MinedSubmission(FrozenModel):
    """A miner's answer: the signed submission (its weights travel separately by object ref)."""

    signed: Signed[Submission]
    stats: MinerStats


class SubmissionArrival(FrozenModel):
    """A submission as the consensus received it: arrival order and time are the commit order."""

    signed: Signed[Submission]
    arrived_ms: Millis
    reveal: Signed[Reveal] | None = None


class ValidatorStats(FrozenModel):
    """Milliseconds one validator spent per kind of work on one round's submissions."""

    fetch_ms: float  # object store -> validator
    hash_ms: float  # canonical weight hashes
    verify_ms: float  # signatures and envelope rules
    checks_ms: float  # architecture, reveal, watermarks, near copies
    eval_ms: float  # scoring on the test split
    sign_ms: float  # signing the ballot


class Challenge(FrozenModel):
    """One validator's finding that a submission's transcript segment does not replay to its committed checkpoint
    (``consensus.dispute``): every other validator that voted the submission valid replays that one segment."""

    commit: Hash
    segment: int = Field(ge=0, le=4096, description="checkpoint segment -> segment + 1")
    expected: Hash | None = Field(description="state hash of the committed checkpoint segment + 1 (None: the miner "
                                  "did not open the segment to the challenger)")
    replayed: str = Field(min_length=1, max_length=120, description="the challenger's replayed state hash (or why "
                          "the segment could not be opened or replayed)")
    challenger: PublicKey


class BallotReply(FrozenModel):
    """A validator's answer to a round: its signed ballot (an honest one signs exactly one), its stats, and the
    exact-replay mismatches its audits found (challenges the round's other validators referee)."""

    ballots: tuple[Signed[Ballot], ...]
    stats: ValidatorStats
    challenges: tuple[Challenge, ...] = Field(default=(), max_length=MAX_SUBMISSIONS)


class ProgressEvent(FrozenModel):
    """A miner's or validator's live progress, shown by the CLI."""

    actor: str
    public_key: PublicKey
    task_id: Hash
    stage: str  # "training", "epoch", "submitted", "validating", "voted", "failed"
    epoch: int = 0
    epochs: int = 0
    val_accuracy: float | None = None
    detail: str = ""


class SubmissionOutcome(FrozenModel):
    miner: PublicKey
    commit: Hash | None
    verdict: Verdict | str
    score: int | None
    detail: str = ""


class RoundReport(FrozenModel):
    """What a round did, where its time went, and what became of every submission."""

    height: int | None
    block_hash: Hash | None
    prev_hash: Hash | None = None
    task_id: Hash
    winner: PublicKey | None
    score: int | None
    committed: bool
    failure: str = ""
    outcomes: tuple[SubmissionOutcome, ...] = ()
    timings: dict[str, float] = Field(default_factory=dict)
    started_ms: Millis = 0
    round_seconds: float = 0.0


class ActorProgress(FrozenModel):
    name: str
    stage: str = "idle"
    epoch: int = 0
    epochs: int = 0
    val_accuracy: float | None = None


class RoundStatus(FrozenModel):
    """A snapshot of the round in progress, polled by the CLI for its live display."""

    phase: str
    height: int | None = None
    task_id: Hash | None = None
    started_ms: Millis = 0
    actors: dict[str, ActorProgress] = Field(default_factory=dict)
    rounds_done: int = 0
