"""The rules of a task block's outcome: its task, the decision its ballots imply, the fusion, and when it settles.

Split from ``validation`` (which runs them in order, in ``validate_task_block``); each raises
``InvalidBlock`` with its named reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dlbc_ray import crypto
from dlbc_ray.consensus.baas import (
    FusionOutcome,
    best_single_score,
    compute_contributors,
    compute_delivered,
    decide_fusion,
    is_fusion_task,
)
from dlbc_ray.consensus.decision import Decision, decide
from dlbc_ray.consensus.difficulty import compute_standing_difficulty
from dlbc_ray.consensus.state import ChainState
from dlbc_ray.errors import ConsensusError, InvalidBlock, NoQuorum
from dlbc_ray.schema import (
    Ballot,
    Block,
    BlockHeader,
    ChainParams,
    FusionVote,
    PayoutTx,
    PenaltyTx,
    PostTaskTx,
    Signed,
    Submission,
    Task,
)


def fail_block(header: BlockHeader, reason: str, message: str) -> InvalidBlock:
    return InvalidBlock(f"block {header.height}: {message}", reason=reason, height=header.height)


_fail = fail_block


def get_block_task(block: Block, state: ChainState) -> tuple[Task, int]:
    """The block's task (posted now or earlier and still open) and its index of posting tx, or -1."""
    task_id = block.header.task_id
    for i, tx in enumerate(block.txs):
        if isinstance(tx, PostTaskTx) and crypto.message_hash(tx.task.message) == task_id:
            return tx.task.message, i
    record = state.tasks.get(task_id or "")
    if record is None or record.status != "open":
        raise _fail(block.header, "task", f"task {str(task_id)[:12]} is neither posted here nor open")
    return record.task, -1


def split_task_txs(block: Block, post_index: int) -> list[PenaltyTx | PayoutTx]:
    """A task block holds only: its own task's posting (first), then penalties and payouts."""
    system: list[PenaltyTx | PayoutTx] = []
    for i, tx in enumerate(block.txs):
        if i == post_index == 0:
            continue
        if not isinstance(tx, PenaltyTx | PayoutTx) or tx.task_id != block.header.task_id:
            raise _fail(block.header, "txs", f"transaction {i} ({tx.kind}) does not belong in a task block")
        system.append(tx)
    return system


def validate_decision(block: Block, task: Task, submissions: Sequence[Submission], ballots: Iterable[Ballot],
                      state: ChainState, excluded: set[str]) -> Decision:
    header = block.header
    try:
        decision = decide(submissions, ballots, state.params.validators, task.target, excluded=excluded,
                          won=state.won_models)
    except NoQuorum as e:
        raise _fail(header, "quorum", str(e)) from None
    if header.difficulty != task.target:
        raise _fail(header, "difficulty", f"header difficulty is {header.difficulty}, the task's target {task.target}")
    return decision


def validate_fusion_vote(signed: Signed[FusionVote], header: BlockHeader, params: ChainParams) -> FusionVote:
    v = signed.message
    if signed.chain_id != header.chain_id:
        raise _fail(header, "fusion_vote_chain", f"fusion vote by {v.validator[:12]} is signed for another chain")
    if signed.signer != v.validator or v.validator not in params.validators:
        raise _fail(header, "fusion_vote_signer", f"fusion vote by {v.validator[:12]} is not a validator's own")
    if not crypto.is_valid_signature(signed):
        raise _fail(header, "fusion_vote_signature", f"fusion vote by {v.validator[:12]} does not verify")
    if (v.task_id, v.round_id) != (header.task_id, header.round_id):
        raise _fail(header, "fusion_vote_round", f"fusion vote by {v.validator[:12]} is for another round")
    return v


def validate_fusion(block: Block, task: Task, submissions: Sequence[Submission], decision: Decision,
                    params: ChainParams, excluded: set[str]) -> FusionOutcome | None:
    """BaaS: the fusion votes must settle one fused model when the task fuses, and be absent otherwise."""
    header = block.header
    contributors = compute_contributors(submissions, decision)
    if not is_fusion_task(task, contributors):
        if block.fusion_votes:
            raise _fail(header, "fusion", "fusion votes in a block whose task fuses nothing")
        return None
    votes = [validate_fusion_vote(v, header, params) for v in block.fusion_votes]
    if len({v.validator for v in votes}) != len(votes):
        raise _fail(header, "duplicate_vote", "a validator signs two fusion votes")
    try:
        return decide_fusion(task, contributors, votes, params.validators, best_single_score(decision), excluded)
    except NoQuorum as e:
        raise _fail(header, "fusion_quorum", str(e)) from None


def validate_outcome(header: BlockHeader, decision: Decision, fusion: FusionOutcome | None) -> None:
    """The delivered model: the fusion when it won, else the best single submission."""
    for field, value in compute_delivered(decision, fusion).items():
        if getattr(header, field) != value:
            raise _fail(header, field, f"header {field} is {getattr(header, field)}, the ballots imply {value}")


def expected_standing_target(state: ChainState) -> int:
    """The accuracy target the next standing block must carry (PoLe's difficulty)."""
    params = state.params.retarget
    if params is None:
        raise ConsensusError("this chain has no PoLe difficulty parameters", reason="standing_task")
    pole = state.pole
    return compute_standing_difficulty(pole.height + 1, pole.difficulty, pole.intervals_ms, params)


def validate_standing_task(block: Block, task: Task, state: ChainState) -> None:
    """PoLe: funded by the treasury at the block reward, aimed at the chain's difficulty, never empty."""
    header, params = block.header, state.params
    if params.retarget is None or task.requester != params.treasury or task.reward != params.block_reward:
        raise _fail(header, "standing_task", "standing tasks are the treasury's, at the chain's block reward")
    expected = expected_standing_target(state)
    if task.target != expected:
        raise _fail(header, "difficulty", f"standing task targets {task.target}, the difficulty is {expected}")
    if header.winner is None:
        raise _fail(header, "standing_task", "a standing-task block needs a winner (no valid model, no block)")


def validate_settlement_time(header: BlockHeader, task: Task, params: ChainParams) -> None:
    """A task is refunded only once its deadline has passed, and a winner paid only soon after it."""
    if header.model_hash is None and task.kind == "request" and header.timestamp_ms < task.deadline_ms:
        raise _fail(header, "early_refund", f"refund at {header.timestamp_ms}, before the deadline {task.deadline_ms}")
    if header.model_hash is not None and header.timestamp_ms > task.deadline_ms + params.settle_grace_ms:
        raise _fail(header, "late_settlement", f"winner paid at {header.timestamp_ms}, past the deadline "
                    f"{task.deadline_ms} and its {params.settle_grace_ms} ms grace")


def validate_model_reuse(header: BlockHeader, state: ChainState) -> None:
    """Weights that already won a block never win again, on any task."""
    if header.model_hash is not None and header.model_hash in state.won_models:
        raise _fail(header, "model_reused", f"model {header.model_hash[:12]} already won block "
                    f"{state.won_models[header.model_hash]}")
