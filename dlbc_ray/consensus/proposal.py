"""Assembling blocks: what the consensus actor proposes and the ledger then validates.

Each function returns a block that ``validate_block`` accepts against the same state.
"""

from __future__ import annotations

from collections.abc import Sequence

from dlbc_ray import crypto
from dlbc_ray.constants import ZERO_HASH
from dlbc_ray.consensus.baas import (
    FusionOutcome,
    best_single_score,
    compute_contributors,
    compute_delivered,
    decide_fusion,
    is_fusion_task,
)
from dlbc_ray.consensus.decision import Decision, decide_round
from dlbc_ray.consensus.settlement import compute_settlement, debit_escrow
from dlbc_ray.consensus.state import ChainState
from dlbc_ray.consensus.validation import compute_roots
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import (
    Ballot,
    Block,
    BlockHeader,
    ChainParams,
    FusionVote,
    MintTx,
    PostTaskTx,
    Signed,
    Submission,
    Task,
    Transaction,
)

_EMPTY_ROOTS = {k: crypto.merkle_root([]) for k in ("submissions_root", "ballots_root", "fusion_root", "txs_root",
                                                     "evidence_root")}


def seal(header: BlockHeader, body: Block, proposer: Identity) -> Block:
    """Fill the header's roots from ``body`` and sign it."""
    draft = body.model_copy(update={"header": header})
    header = header.model_copy(update=compute_roots(draft))
    signature = proposer.sign_root(crypto.signing_root(header, header.chain_id)).hex()
    return draft.model_copy(update={"header": header, "signature": signature})


def make_genesis(params: ChainParams, proposer: Identity, timestamp_ms: int) -> Block:
    header = BlockHeader(chain_id=crypto.message_hash(params), height=0, prev_hash=ZERO_HASH,
                         timestamp_ms=timestamp_ms, proposer=proposer.public_key, **_EMPTY_ROOTS)
    mints = tuple(MintTx(recipient=a.account, amount=a.amount) for a in params.allocations)
    body = Block(header=header, signature="0" * 128, txs=mints, params=params)
    return seal(header, body, proposer)


def next_timestamp(state: ChainState, now_ms: int) -> int:
    """Strictly increasing even if the clock is not."""
    return max(now_ms, state.timestamp_ms + 1)


def propose_task_block(
    state: ChainState,
    task: Signed[Task],
    submissions: Sequence[Signed[Submission]],
    ballots: Sequence[Signed[Ballot]],
    proposer: Identity,
    now_ms: int,
    round_id: str,
    fusion_votes: Sequence[Signed[FusionVote]] = (),
) -> tuple[Block, Decision]:
    """Decide the round and build its block on ``state``'s head; raises NoQuorum without a safe decision."""
    task_id = crypto.message_hash(task.message)
    messages = [s.message for s in submissions]
    validators = state.params.validators
    decided = decide_round(messages, ballots, round_id, validators, task.message.target, won=state.won_models,
                           fusion_votes=fusion_votes)
    decision = decided.decision
    contributors = compute_contributors(messages, decision)
    fused_votes: tuple[Signed[FusionVote], ...] = ()
    fusion: FusionOutcome | None = None
    if is_fusion_task(task.message, contributors):
        fused_votes = select_fusion_votes(fusion_votes, validators, decided.culprits)
        fusion = decide_fusion(task.message, contributors, [v.message for v in fused_votes], validators,
                               best_single_score(decision), decided.culprits)
    posted = task_id in state.tasks
    balances = debit_escrow(state.balances, task.message, posted_here=not posted)
    settlement = compute_settlement(task_id, task.message, messages, decision, state.params, balances, fusion)
    txs: tuple[Transaction, ...] = (() if posted else (PostTaskTx(task=task),)) + settlement
    header = BlockHeader(
        chain_id=state.chain_id, height=state.height + 1, prev_hash=state.head_hash,
        timestamp_ms=next_timestamp(state, now_ms), proposer=proposer.public_key, task_id=task_id,
        round_id=round_id if submissions else None, difficulty=task.message.target,
        **compute_delivered(decision, fusion), **_EMPTY_ROOTS,
    )
    body = Block(header=header, signature="0" * 128, submissions=tuple(submissions), ballots=decided.ballots,
                 fusion_votes=fused_votes, txs=txs, evidence=decided.evidence)
    return seal(header, body, proposer), decision


def select_fusion_votes(votes: Sequence[Signed[FusionVote]], validators: Sequence[str],
                        excluded: set[str]) -> tuple[Signed[FusionVote], ...]:
    """One fusion vote per validator (the first), from validators not caught equivocating, sorted."""
    chosen: dict[str, Signed[FusionVote]] = {}
    for signed in votes:
        v = signed.message
        if v.validator in validators and v.validator not in excluded:
            chosen.setdefault(v.validator, signed)
    return tuple(chosen[k] for k in sorted(chosen))


def propose_tx_block(state: ChainState, txs: Sequence[Transaction], proposer: Identity, now_ms: int) -> Block:
    """A block that only moves money or posts tasks."""
    header = BlockHeader(chain_id=state.chain_id, height=state.height + 1, prev_hash=state.head_hash,
                         timestamp_ms=next_timestamp(state, now_ms), proposer=proposer.public_key, **_EMPTY_ROOTS)
    return seal(header, Block(header=header, signature="0" * 128, txs=tuple(txs)), proposer)
