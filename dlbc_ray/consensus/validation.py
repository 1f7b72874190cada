"""Block validity: each rule is a named check that raises InvalidBlock with its reason.

Order matters for diagnosis: link rules (height, prev_hash, timestamp) before the
proposer's signature, roots before the body, the body before the decision it implies,
and the decision before the money it moves (CometBFT's and py-evm's header rules).
"""

from __future__ import annotations

from dlbc_ray import crypto
from dlbc_ray.constants import ZERO_HASH
from dlbc_ray.consensus.ballot import compute_submissions_root, find_ballot_fault, is_conflicting, is_fresh_round
from dlbc_ray.consensus.settlement import compute_settlement, debit_escrow
from dlbc_ray.consensus.state import ChainState
from dlbc_ray.consensus.task_rules import (  # noqa: F401 - expected_standing_target, get_block_task: re-exported
    expected_standing_target,
    fail_block,
    get_block_task,
    split_task_txs,
    validate_decision,
    validate_fusion,
    validate_fusion_vote,
    validate_model_reuse,
    validate_outcome,
    validate_settlement_time,
    validate_standing_task,
)
from dlbc_ray.consensus.verdicts import find_envelope_fault
from dlbc_ray.schema.base import MAX_AMOUNT
from dlbc_ray.schema import (
    Ballot,
    Block,
    BlockHeader,
    ChainParams,
    EquivocationEvidence,
    FusionEquivocationEvidence,
    MintTx,
    PostTaskTx,
    Signed,
    Submission,
    TransferTx,
)


def compute_block_hash(header: BlockHeader) -> str:
    return crypto.message_hash(header)


def compute_roots(block: Block) -> dict[str, str]:
    """The Merkle roots a header must carry for this body."""
    return {
        "submissions_root": crypto.merkle_root_of(block.submissions),
        "ballots_root": crypto.merkle_root_of(block.ballots),
        "fusion_root": crypto.merkle_root_of(block.fusion_votes),
        "txs_root": crypto.merkle_root_of(block.txs),
        "evidence_root": crypto.merkle_root_of(block.evidence),
    }


_fail = fail_block


# ----------------------------------------------------------------- header rules


def validate_validator_set(header: BlockHeader, params: ChainParams) -> None:
    n, f = len(params.validators), params.max_faulty
    if len(set(params.validators)) != n:
        raise _fail(header, "validator_set", "validator set lists a validator twice")
    if n < 3 * f + 1:
        raise _fail(header, "validator_set", f"{n} validators cannot tolerate {f} faulty (needs {3 * f + 1})")


def validate_clock(header: BlockHeader, params: ChainParams, now_ms: int | None) -> None:
    """A block may not claim a time beyond the importer's clock plus the allowed drift (not checked on replay)."""
    if now_ms is not None and header.timestamp_ms > now_ms + params.max_clock_drift_ms:
        raise _fail(header, "future_timestamp",
                    f"timestamp {header.timestamp_ms} is {header.timestamp_ms - now_ms} ms in the future")


def validate_link(header: BlockHeader, state: ChainState) -> None:
    if header.chain_id != state.chain_id:
        raise _fail(header, "chain_id", "block belongs to another chain")
    if header.height != state.height + 1:
        raise _fail(header, "height", f"height is {header.height}, expected {state.height + 1}")
    if header.prev_hash != state.head_hash:
        raise _fail(header, "prev_hash", f"prev_hash {header.prev_hash[:12]} is not the head {state.head_hash[:12]}")
    if header.timestamp_ms <= state.timestamp_ms:
        raise _fail(header, "timestamp", f"timestamp {header.timestamp_ms} is not after {state.timestamp_ms}")
    if header.proposer != state.params.proposer:
        raise _fail(header, "proposer", f"proposer {header.proposer[:12]} is not the chain's proposer")


SignedHeader = Signed[BlockHeader]  # made once: subscripting a generic model on every block costs more than the check


def validate_signature(block: Block) -> None:
    # The block's fields were parsed already; a malformed value cannot verify and is refused by this rule's name.
    signed = SignedHeader.model_construct(message=block.header, chain_id=block.header.chain_id,
                                          signer=block.header.proposer, signature=block.signature)
    if not crypto.is_valid_signature(signed):
        raise _fail(block.header, "block_signature", "proposer's signature does not verify")


def validate_roots(block: Block) -> None:
    for name, root in compute_roots(block).items():
        if getattr(block.header, name) != root:
            raise _fail(block.header, name, f"{name} does not match the block body")


# ------------------------------------------------------------------ body rules


def validate_submission(signed: Signed[Submission], header: BlockHeader) -> Submission:
    """The envelope rules every validator applied (``find_envelope_fault``), each by its reason."""
    fault = find_envelope_fault(signed, header.task_id or "", header.chain_id)
    if fault is not None:
        raise _fail(header, fault[0], f"submission {signed.message.commit[:12]}: {fault[2]}")
    return signed.message


def validate_submissions(block: Block) -> list[Submission]:
    submissions = [validate_submission(s, block.header) for s in block.submissions]
    if len({s.commit for s in submissions}) != len(submissions):
        raise _fail(block.header, "duplicate_submission", "a submission appears twice")
    return submissions


def validate_ballot(signed: Signed[Ballot], header: BlockHeader, params: ChainParams, root: str,
                    commits: set[str]) -> Ballot:
    """One validator's signed ballot, bound to this block's round and submission set."""
    b = signed.message
    if signed.chain_id != header.chain_id:
        raise _fail(header, "ballot_chain", f"ballot of {b.validator[:12]} is signed for another chain")
    if signed.signer != b.validator:
        raise _fail(header, "ballot_signer", f"ballot of {b.validator[:12]} not signed by its validator")
    if b.validator not in params.validators:
        raise _fail(header, "ballot_validator", f"ballot of {b.validator[:12]}, who is not a validator")
    if not crypto.is_valid_signature(signed):
        raise _fail(header, "ballot_signature", f"ballot of {b.validator[:12]} signature does not verify")
    if (b.task_id, b.round_id) != (header.task_id, header.round_id):
        raise _fail(header, "ballot_round", f"ballot of {b.validator[:12]} is for another round")
    if b.submissions_root != root:
        raise _fail(header, "ballot_set", f"ballot of {b.validator[:12]} judged another submission set")
    unknown = next((v.commit for v in b.votes if v.commit not in commits), None)
    if unknown is not None:
        raise _fail(header, "vote_commit", f"ballot of {b.validator[:12]} votes on {unknown[:12]}, not in this block")
    if len({v.commit for v in b.votes}) != len(b.votes):
        raise _fail(header, "duplicate_vote", f"ballot of {b.validator[:12]} votes twice on one submission")
    return b


def validate_ballots(block: Block, state: ChainState, commits: set[str]) -> list[Ballot]:
    """Every ballot, and every ballot given as evidence, judged exactly this block's submissions in one round
    that is still fresh; a validator's ballot appears once.

    A proposer that drops a submission after the ballots, or reuses ballots from a stale
    round, is caught here; ballots of different rounds or windows cannot mix (``ballot_round``).
    """
    header, params = block.header, state.params
    root = compute_submissions_root([s.message.commit for s in block.submissions])
    ballots = [validate_ballot(b, header, params, root, commits) for b in block.ballots]
    if len({b.validator for b in ballots}) != len(ballots):
        raise _fail(header, "duplicate_vote", "a validator's ballot appears twice")
    every = ballots + [validate_ballot(b, header, params, root, commits) for b in _evidence_ballots(block)]
    for b in every:
        if (b.base_hash, b.close_ms) != (every[0].base_hash, every[0].close_ms):
            raise _fail(header, "ballot_round", f"ballot of {b.validator[:12]} is for another window of the round")
        if not is_fresh_round(b, state.recent_hashes, header.timestamp_ms, params):
            raise _fail(header, "stale_round", f"ballot of {b.validator[:12]} belongs to a round that has expired")
    return ballots


def validate_evidence(block: Block, params: ChainParams) -> set[str]:
    """Every piece of evidence must prove equivocation; returns the equivocating validators.

    A pair of ballots was checked with the block's (``validate_ballots``: signed, bound,
    fresh); a pair of fusion votes is checked here as a fusion vote of the block would be.
    """
    culprits: set[str] = set()
    for ev in block.evidence:
        if isinstance(ev, FusionEquivocationEvidence):
            first, second = (validate_fusion_vote(v, block.header, params) for v in (ev.first, ev.second))
        else:
            first, second = ev.first.message, ev.second.message
        if not is_conflicting(first, second):
            raise _fail(block.header, "evidence", f"evidence against {first.validator[:12]} shows no conflict")
        culprits.add(first.validator)
    return culprits


def _evidence_ballots(block: Block) -> list[Signed[Ballot]]:
    return [b for ev in block.evidence if isinstance(ev, EquivocationEvidence) for b in (ev.first, ev.second)]


def validate_task_block(block: Block, state: ChainState) -> None:
    header, params = block.header, state.params
    task, post_index = get_block_task(block, state)
    if task.kind == "standing":
        validate_standing_task(block, task, state)
    validate_settlement_time(header, task, params)
    validate_model_reuse(header, state)
    system = split_task_txs(block, post_index)
    submissions = validate_submissions(block)
    commits = {s.commit for s in submissions}
    ballots = validate_ballots(block, state, commits)
    culprits = validate_evidence(block, params)
    if (fault := find_ballot_fault(block, task.deadline_ms)) is not None:
        raise _fail(header, *fault)
    decision = validate_decision(block, task, submissions, ballots, state, culprits)
    fusion = validate_fusion(block, task, submissions, decision, params, culprits)
    validate_outcome(header, decision, fusion)
    balances = debit_escrow(state.balances, task, posted_here=post_index == 0)
    expected = compute_settlement(header.task_id or "", task, submissions, decision, params, balances, fusion)
    if tuple(system) != expected:
        raise _fail(header, "settlement", "penalties and payouts differ from what the ballots imply")


def validate_tx_block(block: Block) -> None:
    header = block.header
    if block.submissions or block.ballots or block.evidence:
        raise _fail(header, "body", "a block without a task carries submissions, ballots or evidence")
    if (header.winner, header.model_hash, header.score, header.difficulty, header.round_id) != (None,) * 5 \
            or header.fused or block.fusion_votes:
        raise _fail(header, "winner", "a block without a task names a winner, a round or a fusion")
    for i, tx in enumerate(block.txs):
        if not isinstance(tx, TransferTx | PostTaskTx):
            raise _fail(header, "txs", f"transaction {i} ({tx.kind}) is not allowed outside a task block")
        if isinstance(tx, PostTaskTx) and tx.task.message.kind != "request":
            raise _fail(header, "standing_task", f"transaction {i} posts a standing task; only its own block may")


def validate_genesis(block: Block) -> None:
    header, params = block.header, block.params
    if params is None:
        raise _fail(header, "genesis", "genesis carries no chain parameters")
    checks = [
        (header.height == 0, "height", "genesis height must be 0"),
        (header.prev_hash == ZERO_HASH, "prev_hash", "genesis prev_hash must be zero"),
        (header.chain_id == crypto.message_hash(params), "chain_id", "chain_id is not the hash of the parameters"),
        (header.proposer == params.proposer, "proposer", "genesis is not signed by the chain's proposer"),
        (not (block.submissions or block.ballots or block.evidence or block.fusion_votes or header.task_id), "body",
         "genesis mines nothing"),
        ((header.round_id, header.winner, header.model_hash, header.score, header.difficulty, header.fused)
         == (None, None, None, None, None, False), "genesis", "genesis names a round, a winner or a difficulty"),
        (sum(a.amount for a in params.allocations) <= MAX_AMOUNT, "supply", "genesis allocates more than the cap"),
        (block.txs == tuple(MintTx(recipient=a.account, amount=a.amount) for a in params.allocations),
         "txs", "genesis transactions are not the allocations"),
    ]
    for ok, reason, message in checks:
        if not ok:
            raise _fail(header, reason, message)
    validate_validator_set(header, params)
    validate_roots(block)
    validate_signature(block)


def validate_block(block: Block, state: ChainState | None, *, now_ms: int | None = None) -> None:
    """Every rule; ``state`` is the chain after the parent (None for genesis).

    ``now_ms`` is the importer's clock: a block too far in the future is refused on
    import; a replay of stored blocks passes None, as those were checked when they came.
    """
    if state is None:
        validate_genesis(block)
        return
    if block.params is not None:
        raise _fail(block.header, "genesis", "only genesis carries chain parameters")
    validate_link(block.header, state)
    validate_clock(block.header, state.params, now_ms)
    validate_signature(block)
    validate_roots(block)
    if block.header.task_id is None:
        validate_tx_block(block)
    else:
        validate_task_block(block, state)
