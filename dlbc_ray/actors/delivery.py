"""What a committed round leaves behind: the delivered model for the artifact store, and each submission's outcome.

The winner's weights go from the object store to the ledger's artifact folder as they
are; a delivered fusion is fused again here from the same contributors, mapping layers
and shard sizes the validators used, so its bytes hash to the block's ``model_hash``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dlbc_ray.actors.round_runner import RoundResult
from dlbc_ray.consensus.decision import Decision
from dlbc_ray.schema import Block, Task
from dlbc_ray.schema.round_messages import SubmissionArrival, SubmissionOutcome

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
    """BaaS: the contributors fused again (the same bytes validators fused); ``fetch`` reads a weights ref."""
    from dlbc_ray.actors.task_code import install
    from dlbc_ray.models import baas_fusion as baas

    install(task.code)  # the coordinator builds the task's net to fuse it
    contributors = block.fusion_votes[0].message.contributors
    by_commit = {a.signed.message.commit: a for a in result.arrivals}
    parts = []
    for commit in contributors:
        arrival = by_commit[commit]
        seed = arrival.reveal.message.sml_seed if arrival.reveal else None
        size = result.ctx.shards.get(arrival.signed.message.miner, (0, arrival.signed.message.examples))[1]
        parts.append(baas.contribution(task, fetch(result.weight_refs[commit]), seed, size))
    metadata = {"task_id": block.header.task_id or "", "fusion": task.fusion, "members": str(len(parts)),
                "contributors": ",".join(by_commit[c].signed.message.miner for c in contributors)}
    return baas.fuse(task, parts), block.header.model_hash or "", metadata


def outcomes(decision: Decision, arrivals: Sequence[SubmissionArrival]) -> tuple[SubmissionOutcome, ...]:
    """Each arrival's verdict and score as the block decided them."""
    return tuple(
        SubmissionOutcome(miner=a.signed.message.miner, commit=a.signed.message.commit,
                          verdict=t.verdict.value if t.verdict else "undecided", score=t.score)
        for a, t in zip(arrivals, decision.tallies)
    )
