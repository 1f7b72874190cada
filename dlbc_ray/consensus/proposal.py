"""Assembling blocks: what the consensus actor proposes and the ledger then validates.

Each function returns a block that ``validate_block`` accepts against the same state.
"""

from __future__ import annotations

from collections import Counter
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
from dlbc_ray.consensus.ballot import compute_submissions_root, is_bound_to
from dlbc_ray.consensus.decision import Decision, decide
from dlbc_ray.consensus.quorum import is_conflicting
from dlbc_ray.consensus.settlement import compute_settlement
from dlbc_ray.consensus.state import ChainState
from dlbc_ray.consensus.validation import compute_roots
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import (
    Block,
    BlockHeader,
    ChainParams,
    EquivocationEvidence,
    FusionVote,
    MintTx,
    PostTaskTx,
    Signed,
    Submission,
    Task,
    Transaction,
    Vote,
)

_EMPTY_ROOTS = {k: crypto.merkle_root([]) for k in ("submissions_root", "votes_root", "fusion_root", "txs_root",
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


def find_equivocations(votes: Sequence[Signed[Vote]],
                       commits: Sequence[str] = ()) -> tuple[EquivocationEvidence, ...]:
    """One conflicting pair per equivocating validator (on its earliest submission), in the one
    order the ledger accepts: by validator; within a pair, by message hash."""
    order = {c: i for i, c in enumerate(commits)}
    seen: dict[tuple[str, str], Signed[Vote]] = {}
    found: dict[str, tuple[int, EquivocationEvidence]] = {}
    for signed in votes:
        validator, commit = signed.message.validator, signed.message.commit
        first = seen.setdefault((validator, commit), signed)
        rank = order.get(commit, -1)
        if is_conflicting(first.message, signed.message) and (validator not in found or rank < found[validator][0]):
            a, b = sorted((first, signed), key=lambda s: crypto.message_hash(s.message))
            found[validator] = (rank, EquivocationEvidence(first=a, second=b))
    return tuple(found[v][1] for v in sorted(found))


def select_bound(votes: Sequence[Signed[Vote]], round_id: str, commits: Sequence[str]) -> list[Signed[Vote]]:
    """The votes that judged exactly this round's submission set; any other ballot cannot go in the block."""
    root = compute_submissions_root(commits)
    return [v for v in votes if is_bound_to(v.message, round_id, root)]


def select_votes(votes: Sequence[Signed[Vote]], commits: Sequence[str], excluded: set[str]) -> tuple[Signed[Vote], ...]:
    """One vote per (validator, submission) from honest-looking validators with whole ballots, in a canonical order."""
    order = {c: i for i, c in enumerate(commits)}
    chosen: dict[tuple[str, str], Signed[Vote]] = {}
    for signed in votes:
        v = signed.message
        if v.commit in order and v.validator not in excluded:
            chosen.setdefault((v.validator, v.commit), signed)
    judged = Counter(validator for validator, _ in chosen)
    whole = [s for s in chosen.values() if judged[s.message.validator] == len(order)]
    return tuple(sorted(whole, key=lambda s: (order[s.message.commit], s.message.validator)))


def propose_task_block(
    state: ChainState,
    task: Signed[Task],
    submissions: Sequence[Signed[Submission]],
    votes: Sequence[Signed[Vote]],
    proposer: Identity,
    now_ms: int,
    round_id: str,
    fusion_votes: Sequence[Signed[FusionVote]] = (),
) -> tuple[Block, Decision]:
    """Decide the round and build its block on ``state``'s head; raises NoQuorum without a safe decision."""
    task_id = crypto.message_hash(task.message)
    commits = [s.message.commit for s in submissions]
    votes = select_bound(votes, round_id, commits)
    evidence = find_equivocations(votes, commits)
    culprits = {e.first.message.validator for e in evidence}
    chosen = select_votes(votes, commits, culprits)
    messages = [s.message for s in submissions]
    validators = state.params.validators
    decision = decide(messages, [v.message for v in chosen], validators, task.message.target, won=state.won_models)
    contributors = compute_contributors(messages, decision)
    fused_votes: tuple[Signed[FusionVote], ...] = ()
    fusion: FusionOutcome | None = None
    if is_fusion_task(task.message, contributors):
        fused_votes = select_fusion_votes(fusion_votes, validators, culprits)
        fusion = decide_fusion(task.message, contributors, [v.message for v in fused_votes], validators,
                               best_single_score(decision), culprits)
    posted = task_id in state.tasks
    balances = dict(state.balances)
    if not posted:
        balances[task.message.requester] = max(0, balances.get(task.message.requester, 0) - task.message.reward)
    settlement = compute_settlement(task_id, task.message, messages, decision, state.params, balances, fusion)
    txs: tuple[Transaction, ...] = (() if posted else (PostTaskTx(task=task),)) + settlement
    header = BlockHeader(
        chain_id=state.chain_id, height=state.height + 1, prev_hash=state.head_hash,
        timestamp_ms=next_timestamp(state, now_ms), proposer=proposer.public_key, task_id=task_id,
        round_id=round_id if submissions else None, difficulty=task.message.target, **compute_delivered(decision, fusion), **_EMPTY_ROOTS,
    )
    body = Block(header=header, signature="0" * 128, submissions=tuple(submissions), votes=chosen,
                 fusion_votes=fused_votes, txs=txs, evidence=evidence)
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
