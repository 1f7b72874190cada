"""Wire types: every message that crosses an actor boundary or reaches disk.

Frozen pydantic models with ``extra="forbid"``; no behaviour beyond derived
properties. Signed data travels in a ``Signed[T]`` envelope.
"""

from dlbc_ray.schema.base import Amount, FrozenModel, Hash, Millis, PublicKey, Score, SignatureHex
from dlbc_ray.schema.block import (
    Allocation,
    Block,
    BlockHeader,
    ChainParams,
    EquivocationEvidence,
    Evidence,
    FusionEquivocationEvidence,
    MintTx,
    PayoutRole,
    PayoutTx,
    PenaltyTx,
    PostTaskTx,
    RetargetParams,
    Transaction,
    Transfer,
    TransferTx,
)
from dlbc_ray.schema.signed import Signed
from dlbc_ray.schema.submission import Ballot, FusionVote, Reveal, Submission, Verdict, Vote
from dlbc_ray.schema.task import DatasetSpec, FusionMode, ModelSpec, ParamValue, Partition, Task

__all__ = [
    "Allocation", "Amount", "Ballot", "Block", "BlockHeader", "ChainParams", "DatasetSpec", "EquivocationEvidence", "FusionVote",
    "Evidence", "FrozenModel", "FusionEquivocationEvidence", "FusionMode", "Hash", "Millis", "MintTx", "ModelSpec", "ParamValue", "Partition",
    "PayoutRole", "PayoutTx", "PenaltyTx", "PostTaskTx", "PublicKey", "RetargetParams", "Reveal", "Score", "SignatureHex", "Signed",
    "Submission", "Task", "Transaction", "Transfer", "TransferTx", "Verdict", "Vote",
]
