"""Blocks, their header, the transactions they carry and the chain's genesis parameters."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from dlbc_ray.constants import BLOCK_DOMAIN, CHAIN_DOMAIN, TRANSFER_DOMAIN
from dlbc_ray.schema.base import Amount, FrozenModel, Hash, Millis, PublicKey, Score, SignatureHex
from dlbc_ray.schema.signed import Signed
from dlbc_ray.schema.submission import Submission, Vote
from dlbc_ray.schema.task import Task


class Allocation(FrozenModel):
    account: PublicKey
    amount: Amount


class ChainParams(FrozenModel):
    """Fixed at genesis; its hash is the chain id every header carries."""

    DOMAIN: ClassVar[bytes] = CHAIN_DOMAIN

    name: str = "dlbc-local"
    proposer: PublicKey = Field(description="the consensus identity that signs blocks")
    validators: tuple[PublicKey, ...] = Field(min_length=1)
    max_faulty: int = Field(default=1, ge=0, description="f: lying validators tolerated; needs n >= 3f + 1")
    validator_fee_bps: int = Field(default=1_000, ge=0, le=10_000, description="share of a reward paid to voters")
    theft_penalty: int = Field(default=0, ge=0, description="taken from a miner caught submitting a stolen model")
    allocations: tuple[Allocation, ...] = ()
    created_ms: Millis = 0


class Transfer(FrozenModel):
    """An ordinary payment, signed by the sender; ``nonce`` stops replays."""

    DOMAIN: ClassVar[bytes] = TRANSFER_DOMAIN

    sender: PublicKey
    recipient: PublicKey
    amount: Amount = Field(gt=0)
    nonce: int = Field(ge=0)


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
    """Two conflicting votes signed by one validator for one submission."""

    kind: Literal["equivocation"] = "equivocation"
    first: Signed[Vote]
    second: Signed[Vote]


Evidence = Annotated[EquivocationEvidence, Field(discriminator="kind")]


class BlockHeader(FrozenModel):
    """What the proposer signs; the block hash is the hash of this header."""

    DOMAIN: ClassVar[bytes] = BLOCK_DOMAIN

    chain_id: Hash
    height: int = Field(ge=0)
    prev_hash: Hash
    timestamp_ms: Millis
    proposer: PublicKey
    task_id: Hash | None = None
    round_id: Hash | None = Field(default=None, description="the round whose votes this block carries")
    winner: PublicKey | None = None
    model_hash: Hash | None = None
    score: Score | None = None
    difficulty: Score | None = Field(default=None, description="the accuracy target in force (PoLe)")
    submissions_root: Hash
    votes_root: Hash
    txs_root: Hash
    evidence_root: Hash


class Block(FrozenModel):
    """A signed header and the body its roots commit to."""

    header: BlockHeader
    signature: SignatureHex
    submissions: tuple[Signed[Submission], ...] = ()
    votes: tuple[Signed[Vote], ...] = ()
    txs: tuple[Transaction, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    params: ChainParams | None = Field(default=None, description="genesis only")

    @property
    def height(self) -> int:
        return self.header.height
