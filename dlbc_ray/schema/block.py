"""Blocks, their header, the transactions they carry and the chain's genesis parameters."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dlbc_ray.constants import (
    BLOCK_DOMAIN,
    BPS,
    CHAIN_DOMAIN,
    MAX_ACCOUNTS,
    MAX_ROUND_HORIZON,
    MAX_SUBMISSIONS,
    MAX_TXS,
    MAX_VALIDATORS,
    SCORE_SCALE,
    TRANSFER_DOMAIN,
)
from dlbc_ray.errors import ConfigError
from dlbc_ray.schema.base import Amount, FrozenModel, Hash, Millis, Nonce, PublicKey, Score, SignatureHex
from dlbc_ray.schema.signed import Signed
from dlbc_ray.schema.submission import Ballot, FusionVote, Submission
from dlbc_ray.schema.task import Task


class RetargetParams(BaseModel):
    """How the accuracy target is retuned; fixed for a chain, so every node computes the same schedule.

    Building it with bad values raises a one-line ``ConfigError`` naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    target_interval_s: float = Field(gt=0, description="wanted mean time between mined blocks")
    window: int = Field(default=10, ge=1, description="retarget every this many blocks, from their intervals")
    initial: int = Field(ge=0, le=SCORE_SCALE, description="accuracy target of blocks 1..window (score units)")
    max_step: int = Field(default=100, ge=1, le=SCORE_SCALE, description="largest change per retarget (score units)")
    floor: int = Field(default=0, ge=0, le=SCORE_SCALE, description="lowest target (score units)")
    ceiling: int = Field(default=SCORE_SCALE, ge=0, le=SCORE_SCALE,
                         description="highest target: below what the model can reach (score units)")
    gain_bps: int = Field(default=2_500, ge=1, le=BPS, description="controller gain in basis points (0.25)")
    interval_cap: int = Field(default=4, ge=1, description="an interval counts at most this many target intervals "
                              "(a network restart or an outage must not slam the difficulty)")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            first = e.errors()[0]
            where = "".join(f"{p}: " for p in first["loc"][:1])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"retarget params: {where}{message}", reason="config") from None

    @model_validator(mode="after")
    def _consistent(self) -> RetargetParams:
        if self.target_interval_ms < 1:
            raise ValueError(f"target_interval_s {self.target_interval_s} is under one millisecond")
        if not self.floor <= self.initial <= self.ceiling:
            raise ValueError(f"need floor <= initial <= ceiling, got {self.floor}, {self.initial}, {self.ceiling}")
        return self

    @property
    def target_interval_ms(self) -> int:
        """The target in whole milliseconds: the unit every computation uses."""
        return round(self.target_interval_s * 1000)



class Allocation(FrozenModel):
    account: PublicKey
    amount: Amount


class ChainParams(FrozenModel):
    """Fixed at genesis; its hash is the chain id every header carries."""

    DOMAIN: ClassVar[bytes] = CHAIN_DOMAIN

    name: str = Field(default="dlbc-local", max_length=64)
    proposer: PublicKey = Field(description="the consensus identity that signs blocks")
    validators: tuple[PublicKey, ...] = Field(min_length=1, max_length=MAX_VALIDATORS)
    max_faulty: int = Field(default=1, ge=0, description="f: lying validators tolerated; needs n >= 3f + 1")
    validator_fee_bps: int = Field(default=1_000, ge=0, le=10_000, description="share of a reward paid to voters")
    theft_penalty: Amount = Field(default=0, description="taken from a miner caught submitting a stolen model")
    retarget: RetargetParams | None = Field(default=None, description="PoLe difficulty control of standing tasks")
    treasury: PublicKey | None = Field(default=None, description="funds standing tasks (PoLe block rewards)")
    block_reward: Amount = Field(default=0, description="reward of one standing-task block")
    allocations: tuple[Allocation, ...] = Field(default=(), max_length=MAX_ACCOUNTS)
    created_ms: Millis = 0
    max_clock_drift_ms: int = Field(default=15_000, ge=0, le=86_400_000,
                                    description="how far in the future a block's timestamp may be")
    round_horizon: int = Field(default=256, ge=1, le=MAX_ROUND_HORIZON,
                               description="a round's base must be one of the chain's last this many blocks")
    round_ttl_ms: int = Field(default=600_000, ge=1, le=86_400_000,
                              description="a round's votes expire this long after its window closed")
    settle_grace_ms: int = Field(default=600_000, ge=0, le=86_400_000,
                                 description="a winner may be paid at most this long after the task's deadline")


class Transfer(FrozenModel):
    """An ordinary payment, signed by the sender; ``nonce`` stops replays."""

    DOMAIN: ClassVar[bytes] = TRANSFER_DOMAIN

    sender: PublicKey
    recipient: PublicKey
    amount: Amount = Field(gt=0)
    nonce: Nonce


class MintTx(FrozenModel):
    """Genesis only: creates the initial supply."""

    kind: Literal["mint"] = "mint"
    recipient: PublicKey
    amount: Amount


class TransferTx(FrozenModel):
    kind: Literal["transfer"] = "transfer"
    transfer: Signed[Transfer]


class PostTaskTx(FrozenModel):
    """Moves the task's reward from the requester into the task's escrow."""

    kind: Literal["post_task"] = "post_task"
    task: Signed[Task]


PayoutRole = Literal["winner", "contributor", "validator", "refund"]


class PayoutTx(FrozenModel):
    """Pays out of a task's escrow; derived by the consensus rules, recomputed by the ledger."""

    kind: Literal["payout"] = "payout"
    task_id: Hash
    recipient: PublicKey
    amount: Amount
    role: PayoutRole


class PenaltyTx(FrozenModel):
    """Moves a provable cheater's stake into the task's escrow, to be paid out to honest parties."""

    kind: Literal["penalty"] = "penalty"
    task_id: Hash
    account: PublicKey
    amount: Amount
    reason: str = Field(max_length=64)


Transaction = Annotated[MintTx | TransferTx | PostTaskTx | PayoutTx | PenaltyTx, Field(discriminator="kind")]


class EquivocationEvidence(FrozenModel):
    """Two different ballots signed by one validator for one round."""

    kind: Literal["equivocation"] = "equivocation"
    first: Signed[Ballot]
    second: Signed[Ballot]


class FusionEquivocationEvidence(FrozenModel):
    """BaaS: two different fusion votes signed by one validator for one round."""

    kind: Literal["fusion_equivocation"] = "fusion_equivocation"
    first: Signed[FusionVote]
    second: Signed[FusionVote]


Evidence = Annotated[EquivocationEvidence | FusionEquivocationEvidence, Field(discriminator="kind")]


class BlockHeader(FrozenModel):
    """What the proposer signs; the block hash is the hash of this header."""

    DOMAIN: ClassVar[bytes] = BLOCK_DOMAIN

    chain_id: Hash
    height: int = Field(ge=0)
    prev_hash: Hash
    timestamp_ms: Millis
    proposer: PublicKey
    task_id: Hash | None = None
    round_id: Hash | None = Field(default=None, description="the round whose ballots this block carries")
    winner: PublicKey | None = None
    model_hash: Hash | None = None
    score: Score | None = None
    difficulty: Score | None = Field(default=None, description="the accuracy target in force (PoLe)")
    fused: bool = Field(default=False, description="BaaS: the delivered model is the fusion, not one submission")
    submissions_root: Hash
    ballots_root: Hash
    fusion_root: Hash
    txs_root: Hash
    evidence_root: Hash


class Block(FrozenModel):
    """A signed header and the body its roots commit to."""

    header: BlockHeader
    signature: SignatureHex
    submissions: tuple[Signed[Submission], ...] = Field(default=(), max_length=MAX_SUBMISSIONS)
    ballots: tuple[Signed[Ballot], ...] = Field(default=(), max_length=MAX_VALIDATORS,
                                                description="one per validator, sorted by validator")
    fusion_votes: tuple[Signed[FusionVote], ...] = Field(default=(), max_length=MAX_VALIDATORS)
    txs: tuple[Transaction, ...] = Field(default=(), max_length=MAX_TXS)
    evidence: tuple[Evidence, ...] = Field(default=(), max_length=MAX_VALIDATORS)
    params: ChainParams | None = Field(default=None, description="genesis only")

    @property
    def height(self) -> int:
        return self.header.height
