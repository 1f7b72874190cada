"""What a committed round leaves behind: the delivered model for the artifact store, and each submission's outcome.

The winner's weights go from the object store to the ledger's artifact folder as they
are. A delivered fusion is not fused again here: the validators fused it, and the block
names the fused model's hash their votes agreed on, so the coordinator takes the copy of
a validator that voted for that hash and keeps it only if its bytes hash to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from dlbc_ray.actors.round_runner import RoundResult
from dlbc_ray.consensus.decision import Decision
from dlbc_ray.crypto import hash_weights
from dlbc_ray.errors import ConsensusError, DLBCError
from dlbc_ray.schema import Block, Task
from dlbc_ray.schema.round_messages import SubmissionArrival, SubmissionOutcome

log = logging.getLogger(__name__)
Artifact = tuple[Any, str, dict[str, str]]  # (weights or their object ref, model hash, metadata)


def winner_artifact(decision: Decision, arrivals: Sequence[SubmissionArrival], refs: dict[str, Any]) -> Artifact | None:
    """The winner's weights ref, hash and metadata (its revealed mapping seed too), or None without a winner."""
    winner = decision.winner
    if winner is None:
        return None
    arrival = next(a for a in arrivals if a.signed.message.commit == winner.commit)
    metadata = {"task_id": winner.task_id, "miner": winner.miner}
    if arrival.reveal is not None:
        metadata["sml_seed"] = arrival.reveal.message.sml_seed
    return refs[winner.commit], winner.model_hash, metadata


def fused_artifact(task: Task, block: Block, result: RoundResult, fetch: Callable[[Any], Any]) -> Artifact:
    """BaaS: the fused model the block delivers, as a validator whose vote names its hash made it.

    ``fetch`` reads a weights ref. Validators are tried in the block's order; a copy that is
    missing, unreadable or hashes otherwise (a validator that lied or failed) is passed over,
    so what is stored is the model the chain names, or the round fails by name.
    """
    want = block.header.model_hash or ""
    votes = [v.message for v in block.fusion_votes]
    contributors = votes[0].contributors if votes else ()
    miners = {a.signed.message.commit: a.signed.message.miner for a in result.arrivals}
    metadata = {"task_id": block.header.task_id or "", "fusion": task.fusion, "members": str(len(contributors)),
                "contributors": ",".join(miners.get(c, "?") for c in contributors)}
    for vote in votes:
        ref = result.fused_refs.get(vote.validator) if vote.fused_hash == want else None
        if ref is None:
            continue
        try:
            weights = fetch(ref)
            if isinstance(weights, dict) and hash_weights(weights) == want:
                return weights, want, metadata
        except (DLBCError, TypeError, ValueError) as e:  # unavailable, or a lying validator's junk (odd keys)
            log.warning("fused model of validator %s unavailable: %s", vote.validator[:12], str(e)[:200])
            continue
        log.warning("fused model of validator %s does not hash to the block's %s", vote.validator[:12], want[:12])
    raise ConsensusError(f"no validator that voted for fused model {want[:12]} delivered it", reason="delivery")


def outcomes(decision: Decision, arrivals: Sequence[SubmissionArrival]) -> tuple[SubmissionOutcome, ...]:
    """Each arrival's verdict and score as the block decided them."""
    return tuple(
        SubmissionOutcome(miner=a.signed.message.miner, commit=a.signed.message.commit,
                          verdict=t.verdict.value if t.verdict else "undecided", score=t.score)
        for a, t in zip(arrivals, decision.tallies)
    )
