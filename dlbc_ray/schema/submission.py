"""A miner's signed claim to have trained a model, and a validator's signed ballot on a round of them."""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

from pydantic import Field

from dlbc_ray.constants import BALLOT_DOMAIN, FUSION_VOTE_DOMAIN, MAX_SUBMISSIONS, REVEAL_DOMAIN, SUBMISSION_DOMAIN
from dlbc_ray.schema.base import MAX_NONCE, FrozenModel, Hash, Millis, PublicKey, Score
from dlbc_ray.schema.task import FusionMode


class Submission(FrozenModel):
    """Commits to weights by hash, bound to the miner and the task (SN9's commit)."""

    DOMAIN: ClassVar[bytes] = SUBMISSION_DOMAIN

    task_id: Hash
    miner: PublicKey
    model_hash: Hash
    commit: Hash = Field(description="H(model_hash | miner | task_id); also the submission's id")
    num_params: int = Field(ge=0, le=MAX_NONCE)
    claimed_score: Score = Field(description="the miner's own validation score; informative, never trusted")
    epochs: int = Field(ge=0, le=1_000_000)
    train_ms: Millis
    examples: int = Field(ge=0, le=MAX_NONCE, description="training examples used (weights FedAvg)")
    sml_commitment: Hash | None = Field(default=None, description="H(seed) of the miner's Secure Mapping Layer")
    transcript_root: Hash | None = Field(default=None, description="root of the miner's training transcript: its "
                                         "header and checkpoints (consensus/transcript.py), audited after the reveal")


class Reveal(FrozenModel):
    """Sent after the submission window closes: the seed behind ``sml_commitment``."""

    DOMAIN: ClassVar[bytes] = REVEAL_DOMAIN

    task_id: Hash
    commit: Hash
    sml_seed: str = Field(pattern=r"^[0-9a-f]{64}$")


class Verdict(str, Enum):
    """A validator's judgement of one submission; everything but VALID is a named rejection."""

    VALID = "valid"
    BAD_SIGNATURE = "bad_signature"
    WRONG_CHAIN = "wrong_chain"
    HASH_MISMATCH = "hash_mismatch"
    BAD_COMMIT = "bad_commit"
    WRONG_TASK = "wrong_task"
    LATE = "late"
    WRONG_ARCHITECTURE = "wrong_architecture"
    DUPLICATE = "duplicate"
    COPY = "copy"
    REPLAY = "replay"
    STOLEN = "stolen"
    DERIVED = "derived"  # computes what an earlier or a rival model computes (a disguised replay or copy)
    BAD_REVEAL = "bad_reveal"
    BAD_TRANSCRIPT = "bad_transcript"


class Vote(FrozenModel):
    """One line of a ballot: a validator's verdict and score for one submission (signed only as part of it)."""

    commit: Hash
    verdict: Verdict
    score: Score
    detail: str = Field(default="", max_length=200)


class Ballot(FrozenModel):
    """One validator's signed judgement of a whole round: one vote per submission, in arrival order.

    Bound to the round (not to a height), so several rounds can run at once and each
    block is proposed on whatever the head is when its round ends. It also binds the
    round's whole submission set, its base block and its window: a proposer can neither
    drop a submission the validators saw nor reuse a ballot from another or a stale round.
    One signature per validator and round, whatever the number of submissions; two
    different ballots of one validator for one round are equivocation.
    """

    DOMAIN: ClassVar[bytes] = BALLOT_DOMAIN

    task_id: Hash
    round_id: Hash = Field(description="the round this ballot judges; the block header names it")
    submissions_root: Hash = Field(description="Merkle root of the round's submission commits, in arrival order")
    base_hash: Hash = Field(description="the chain head when the round started")
    close_ms: Millis = Field(description="when the round's submission window closed")
    validator: PublicKey
    votes: tuple[Vote, ...] = Field(min_length=1, max_length=MAX_SUBMISSIONS,
                                    description="one per submission of the round, in arrival order")


class FusionVote(FrozenModel):
    """BaaS: one validator's scores of the accepted models fused, and fused without each contributor.

    Every validator fuses the same accepted submissions itself (each miner's mapping
    layer folded in first), so honest validators sign the same ``fused_hash``; the
    leave-one-out scores measure what each contributor added, which is how it is paid.
    """

    DOMAIN: ClassVar[bytes] = FUSION_VOTE_DOMAIN

    task_id: Hash
    round_id: Hash
    validator: PublicKey
    rule: FusionMode = Field(description="the task's fusion rule (a registered one: its task passed admission)")
    contributors: tuple[Hash, ...] = Field(min_length=2, max_length=MAX_SUBMISSIONS,
                                           description="commits fused, in arrival order")
    fused_hash: Hash
    score: Score
    without: tuple[Score, ...] = Field(max_length=MAX_SUBMISSIONS, description="score of the fusion without contributor i, aligned")
