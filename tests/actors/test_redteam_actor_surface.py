"""Every method Ray exposes on an actor's handle (all functions of the class, underscored or not: Ray
answers ``handle._private.remote()``) is reviewed here, one line each: what it hands out and who may
call it. A new method fails the test until someone has decided whether it can leak a secret (a mark
secret, a mapping seed, a task's test split, a signing key, a transcript before the close).

Then the one the review found leaking (a validator as a mark oracle), tried directly (no Ray:
``Validator`` built as tests/actors/test_validator_verdicts.py builds it): closed for ``validate`` and
``fuse`` by the proposer's signed round; the mark-reading helpers are off the class (``actors.judging``).
Limit, as the README says: Ray is not a sandbox; whoever holds the cluster token can run code in any
actor (``__ray_call__``). The promise checked here is narrower: no method of ours hands a secret, or an answer computed from one, to the wrong caller.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.adversary import AdversaryMiner
from dlbc_ray.actors.coordinator import Consensus
from dlbc_ray.actors.ledger import Ledger
from dlbc_ray.actors.liars import AdversaryValidator
from dlbc_ray.actors.miner import Miner
from dlbc_ray.actors.validator import Validator
from dlbc_ray.config import MINIMAL, ValidatorConfig
from dlbc_ray.crypto import Identity
from dlbc_ray.consensus.ballot import compute_submissions_root
from dlbc_ray.errors import InvalidMessage, RoundRefused
from dlbc_ray.models import sml
from dlbc_ray.models.data import DatasetBundle, load_builtin
from dlbc_ray.models.protect import mark_secret
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Ballot, Reveal, Signed, Submission, Task, Verdict, Vote
from dlbc_ray.schema.round_messages import BallotReply, Challenge, RoundContext, SubmissionArrival
from tests.actors.test_miner_secrets import REVIEWED as MINER_REVIEWED
from tests.builders import T0, fake_hash, signed_round

SEALED = "guarded: answers only against the proposer's signed close of the caller's round (check_close)"
PUBLIC = "harmless: chain data or public configuration, nothing secret"
INTERNAL = "internal helper: takes no secret as input and returns none; called by the actor itself"
ROUND = ("guarded: only for a round the proposer signed, of the very task handed over (consensus.round_context, "
         "RoundRefused before anything is read); every argument re-parsed as declared (actors/inbound.py)")
SECRET_HELPERS = {"_judge", "_check_model", "_check_marks", "_read_marks", "_copied_by_marks", "_resolve_copies",
                  "_score"}  # moved off the class to actors/judging.py's Bench: no handle answers them

VALIDATOR: dict[str, str] = {
    "__init__": "constructor (Ray calls it once; marks and the proposer's key come from the network's assembler)",
    "info": PUBLIC + " (counts of known miners, no secrets)",
    "validate": ROUND + " (test_a_validator_is_no_mark_oracle); the test split must hash to the task's test_hash",
    "fuse": ROUND + "; reads no mark secret",
    "referee": ROUND + "; and only for its own signed ballot of that round (test_a_referee_revises_only_its_own_ballot);"
               " answers a segment's replayed state hash, what a challenger's vote already quotes",
    "_own_ballot": INTERNAL + " (checks a ballot is the validator's own; reads no secret)",
    "_audit": INTERNAL + " (returns nothing: it changes the caller's own copy of the verdicts)",
    "_fetch": INTERNAL + " (an object ref the caller already holds)",
    "_fingerprint": INTERNAL, "_probe_set": INTERNAL + " (probes derive from the public task spec)",
    "_resolve_audits": INTERNAL,
}
REVIEWS: dict[type, dict[str, str]] = {
    Miner: {**{name: SEALED if name in ("reveal", "transcript_opening", "cancel") else PUBLIC
               for name in MINER_REVIEWED},  # reviewed in tests/actors/test_miner_secrets.py, one test per guard
            "mine": ROUND + " (test_a_miner_trains_for_no_strangers_round). Left: a replay of the proposer's own "
                    "signed round of that task trains it again"},
    AdversaryMiner: {},  # the attack suite's own miner: all of Miner's, plus its attacks (test-only actor)
    Validator: VALIDATOR,
    AdversaryValidator: {**VALIDATOR, "arm": "the attack suite's switch (test-only actor)"},
    Ledger: {
        "__init__": "constructor", "head": PUBLIC, "params": PUBLIC, "snapshot": PUBLIC, "blocks": PUBLIC,
        "import_block": "validates every rule before it writes, the delivered model too (kept only for a block "
                        "that validated, under the block's model hash; a caller gains nothing)",
        "artifact": PUBLIC + " (a delivered model by its hash: what a committed block made public; readers check "
                    "the hash again, actors.winners.checked)",
    },
    Consensus: {
        "__init__": "constructor", "chain": PUBLIC, "snapshot": PUBLIC, "members": PUBLIC, "queue": PUBLIC,
        "rounds": PUBLIC, "status": PUBLIC, "task_view": PUBLIC + " (status and attempts; no data)",
        "report": "progress for the live view only; decides nothing",
        "submit_task": "verifies the requester's signature; stores the caller's own data",
        "submit_transfer": "verifies the sender's signature",
        "mine": "runs a round of the caller's own signed task on the caller's data (the demo's path)",
        "mine_standing": "PoLe's standing task; its data is the public built-in set",
        "start": "starts the scheduler (idempotent)", "stop": "stops the scheduler", "tick": "one scheduler pass",
        "_ask": INTERNAL, "_blocks": PUBLIC, "_commit_block": INTERNAL + " (the ledger re-checks the block)",
        "_import": INTERNAL + " (the ledger re-checks the block)", "_commit_round": INTERNAL,
        "_free_groups": INTERNAL, "_keep": INTERNAL, "_loop": INTERNAL, "_mine_entry": INTERNAL,
        "_mine_standing_group": INTERNAL, "_post_task": INTERNAL + " (the ledger re-checks the posting)",
        "_round": "as mine", "_load_standing": "the standing task's data: the public built-in set",
    },
}


def exposed(cls: type) -> set[str]:
    """What Ray would answer on a handle of ``cls``: every function of the class."""
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("__") or name == "__init__"}


@pytest.mark.parametrize("cls", list(REVIEWS), ids=lambda c: c.__name__)
def test_every_method_ray_exposes_is_reviewed(cls: type) -> None:
    reviewed = REVIEWS[cls] or {name: "attack suite" for name in exposed(cls)}
    unreviewed = exposed(cls) - set(reviewed)  # a method gone since its review can leak nothing
    assert not unreviewed, f"{cls.__name__}: review {sorted(unreviewed)} here first"


def test_no_validator_method_reads_marks_for_a_caller() -> None:
    """Each helper that reads a mark secret lives on a plain object the validator holds (Ray answers every function
    of an actor's class, underscored or not: ``handle._read_marks.remote(model, weights)`` needed no round at all)."""
    for cls in (Validator, AdversaryValidator):
        assert not exposed(cls) & SECRET_HELPERS, sorted(exposed(cls) & SECRET_HELPERS)


def test_no_reviewed_actor_method_hands_out_a_secret_by_name() -> None:
    """The miner's old leaks (issue 10, finding 6) must not come back under any actor."""
    for cls in REVIEWS:
        assert not exposed(cls) & {"watermark_secret", "mapping_seed", "mark_secret", "secret_key", "test_split"}


# ------------------------------------------------------------------ the leak the review found, now closed

REQUESTER, VICTIM, THIEF = (Identity.from_seed(n, n.encode()) for n in ("requester", "victim", "thief"))
PROPOSER = Identity.from_seed("consensus", b"consensus")
CHAIN = fake_hash("chain")


@dataclass(frozen=True)
class Theft:
    """A thief's question: the victim's weights (the object store is shared) under the thief's own submission, on
    the thief's own task (same net, the public data, its own test split; never posted on chain)."""

    bundle: DatasetBundle
    real_ctx: RoundContext  # the round the victim mines in
    own: Signed[Task]
    own_ctx: RoundContext
    arrival: SubmissionArrival
    stolen: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def theft() -> Theft:
    from tests.actors.test_validator_verdicts import honest_miner, mined_by

    bundle = load_builtin("digits")
    real = make_task(REQUESTER, MINIMAL.task, bundle, nonce=1, created_ms=T0, chain_id=CHAIN)
    ctx = RoundContext(chain_id=CHAIN, round_id=fake_hash("round"), task_id=crypto.message_hash(real.message),
                       base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=T0 + 60_000)
    stolen = mined_by(honest_miner(VICTIM), real, bundle, ctx).weights  # what the victim will submit
    own = make_task(THIEF, MINIMAL.task, bundle, nonce=7, created_ms=T0, chain_id=CHAIN)
    own_ctx = ctx.model_copy(update={"task_id": crypto.message_hash(own.message), "round_id": fake_hash("mine")})
    seed, model_hash = b"any seed the thief likes 0123456", crypto.hash_weights(stolen)
    sub = Submission(task_id=own_ctx.task_id, miner=THIEF.public_key, model_hash=model_hash,
                     commit=crypto.compute_commit(model_hash, THIEF.public_key, own_ctx.task_id),
                     num_params=sum(int(w.size) for w in stolen.values()), claimed_score=0, epochs=1, train_ms=1,
                     examples=len(bundle.train.y), sml_commitment=sml.seed_commitment(seed))
    reveal = crypto.sign(THIEF, Reveal(task_id=sub.task_id, commit=sub.commit, sml_seed=seed.hex()), CHAIN)
    arrival = SubmissionArrival(signed=crypto.sign(THIEF, sub, CHAIN), arrived_ms=T0 + 1, reveal=reveal)
    return Theft(bundle, ctx, own, own_ctx, arrival, stolen)


def judge() -> Validator:
    return Validator(ValidatorConfig(), identity=Identity.from_seed("validator", b"validator"),
                     protection=MINIMAL.protection, marks={m.public_key: mark_secret(m) for m in (VICTIM, THIEF)},
                     proposer=PROPOSER.public_key, chain_id=CHAIN)


def told(reply: BallotReply) -> bool:
    (vote,) = reply.ballots[0].message.votes
    return vote.verdict is Verdict.STOLEN and VICTIM.public_key[:12] in vote.detail


def asked_round(t: Theft, how: str) -> Signed[RoundContext]:
    """Every round context a thief can lay hands on during the window."""
    own = crypto.sign(THIEF, t.own_ctx, CHAIN)
    return {"self-signed": own,
            "claims the proposer's key": own.model_copy(update={"signer": PROPOSER.public_key}),
            "the real round, its own task": crypto.sign(PROPOSER, t.real_ctx, CHAIN),
            "the proposer's round, altered": crypto.sign(PROPOSER, t.real_ctx, CHAIN).model_copy(
                update={"message": t.own_ctx}),
            "another chain's round": crypto.sign(PROPOSER, t.own_ctx, fake_hash("another chain")),
            # the same keys run another chain (a demo home made anew): the proposer's own round there, consistent
            "the proposer's round on a chain sharing its keys": signed_round(
                PROPOSER, t.own_ctx.model_copy(update={"chain_id": fake_hash("another chain")}))}[how]


REFUSED = {"self-signed": "round_signer", "claims the proposer's key": "round_signature",
           "the real round, its own task": "round_task", "the proposer's round, altered": "round_signature",
           "another chain's round": "round_chain", "the proposer's round on a chain sharing its keys": "round_chain"}


@pytest.mark.parametrize("how", sorted(REFUSED))
def test_a_validator_is_no_mark_oracle(theft: Theft, how: str) -> None:
    """During the window a thief holds the victim's weights and wants to know when its edits have removed the
    victim's watermark. The validator judges only rounds the proposer signed, for the task handed over."""
    with pytest.raises(RoundRefused) as refused:
        judge().validate(theft.own, theft.bundle.test, [theft.arrival], [theft.stolen], asked_round(theft, how))
    assert refused.value.reason == REFUSED[how]
    with pytest.raises(RoundRefused):  # nor fuses for it
        judge().fuse(theft.own, theft.bundle.test, [theft.arrival], [theft.stolen], asked_round(theft, how))
    with pytest.raises(RoundRefused):  # nor referees a dispute in it (``referee`` reads the mark to replay)
        judge().referee(theft.own, [theft.arrival], asked_round(theft, how), ballot_of(THIEF, theft), [])


def ballot_of(signer: Identity, t: Theft, *, validator: Identity | None = None) -> Signed[Ballot]:
    sub = t.arrival.signed.message
    ballot = Ballot(task_id=t.real_ctx.task_id, round_id=t.real_ctx.round_id,
                    submissions_root=compute_submissions_root([sub.commit]), base_hash=t.real_ctx.base_hash,
                    close_ms=t.real_ctx.submit_deadline_ms, validator=(validator or signer).public_key,
                    votes=(Vote(commit=sub.commit, verdict=Verdict.VALID, score=9000),))
    return crypto.sign(signer, ballot, CHAIN)


@pytest.mark.parametrize("whose", ["another validator's", "signed by another", "another round's"])
def test_a_referee_revises_only_its_own_ballot(theft: Theft, whose: str) -> None:
    """Nobody makes a validator sign a revision of a ballot it did not sign for this very round."""
    me = Identity.from_seed("validator", b"validator")
    ballot = {"another validator's": ballot_of(THIEF, theft),
              "signed by another": ballot_of(THIEF, theft, validator=me),
              "another round's": crypto.sign(me, ballot_of(me, theft).message.model_copy(
                  update={"round_id": fake_hash("other round")}), CHAIN)}[whose]
    ch = Challenge(commit=theft.arrival.signed.message.commit, segment=0, expected=fake_hash("e"),
                   replayed=fake_hash("r"), challenger=THIEF.public_key)
    real = crypto.sign(PROPOSER, theft.real_ctx, CHAIN)
    with pytest.raises(InvalidMessage, match="ballot"):
        judge().referee(real_task(theft), [theft.arrival], real, ballot, [ch])


def real_task(t: Theft) -> Signed[Task]:
    return make_task(REQUESTER, MINIMAL.task, t.bundle, nonce=1, created_ms=T0, chain_id=CHAIN)


def test_the_question_would_be_answered_in_a_round_the_proposer_signed(theft: Theft) -> None:
    """The control: the same question in a round the proposer signed for that task is answered (the refusal
    above is the round check, not a broken question). Reaching it takes a task posted on chain and a round."""
    signed = crypto.sign(PROPOSER, theft.own_ctx, CHAIN)
    assert told(judge().validate(theft.own, theft.bundle.test, [theft.arrival], [theft.stolen], signed))


@pytest.mark.parametrize("how", sorted(REFUSED))
def test_a_miner_trains_for_no_strangers_round(theft: Theft, how: str) -> None:
    """A stranger cannot keep a rival's slots busy: the miner refuses before any training."""
    miner = Miner(MINIMAL.miner, identity=VICTIM, protection=MINIMAL.protection, proposer=PROPOSER.public_key,
                  chain_id=CHAIN)
    with pytest.raises(RoundRefused) as refused:
        miner.mine(theft.own, theft.bundle.train, asked_round(theft, how))
    assert refused.value.reason == REFUSED[how]


def test_a_miner_trains_the_proposers_round_once_however_often_it_is_replayed(theft: Theft) -> None:
    """The proposer's signed round is in the shared object store: a stranger who replays it must not keep the
    miner's slots busy. The first call trains; every later one is refused before any training."""
    real = make_task(REQUESTER, MINIMAL.task, theft.bundle, nonce=1, created_ms=T0, chain_id=CHAIN)
    miner = Miner(MINIMAL.miner, identity=VICTIM, protection=MINIMAL.protection, proposer=PROPOSER.public_key,
                  chain_id=CHAIN)
    signed = signed_round(PROPOSER, theft.real_ctx)
    mined, _ = miner.mine(real, theft.bundle.train, signed)
    assert mined.signed.message.task_id == theft.real_ctx.task_id
    for _ in range(2):
        with pytest.raises(RoundRefused) as refused:
            miner.mine(real, theft.bundle.train, signed)
        assert refused.value.reason == "round_repeat"
    assert "claim_round" not in dir(Miner)  # no caller can claim a round ahead of its miner
