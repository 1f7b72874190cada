"""Every method Ray exposes on an actor's handle (all functions of the class, underscored or not: Ray
answers ``handle._private.remote()``) is reviewed here, one line each: what it hands out and who may
call it. A new method fails the test until someone has decided whether it can leak a secret (a mark
secret, a mapping seed, a task's test split, a signing key, a transcript before the close).

Then the one the review found leaking, tried directly (no Ray: ``Validator`` built as
tests/actors/test_validator_verdicts.py builds it). Limit, as the README says: Ray is not a sandbox;
whoever holds the cluster token can run code in any actor (``__ray_call__``). The promise checked
here is narrower: no method of ours hands a secret, or an answer computed from one, to the wrong caller.
"""

from __future__ import annotations

import inspect

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
from dlbc_ray.errors import DLBCError
from dlbc_ray.models.data import load_builtin
from dlbc_ray.models.protect import mark_secret
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Verdict
from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival
from tests.actors.test_miner_secrets import REVIEWED as MINER_REVIEWED
from tests.builders import T0, fake_hash

SEALED = "guarded: answers only against the proposer's signed close of the caller's round (check_close)"
PUBLIC = "harmless: chain data or public configuration, nothing secret"
INTERNAL = "internal helper: takes no secret as input and returns none; called by the actor itself"
ORACLE = "LEAK: answers from the miners' mark secrets for any caller (test_a_validator_is_no_mark_oracle)"

VALIDATOR: dict[str, str] = {
    "__init__": "constructor (Ray calls it once; marks come from the network's assembler)",
    "info": PUBLIC + " (counts of known miners, no secrets)",
    "validate": ORACLE + "; signs a ballot for any ctx whose test split hash matches the caller's own task",
    "fuse": "signs a fusion vote for the caller's ctx; reads no mark secret",
    "_audit": INTERNAL, "_fetch": INTERNAL + " (an object ref the caller already holds)",
    "_fingerprint": INTERNAL, "_probe_set": INTERNAL + " (probes derive from the public task spec)",
    "_score": INTERNAL + " (scores on the test split the caller passes in)", "_resolve_audits": INTERNAL,
    "_check_model": ORACLE, "_judge": ORACLE, "_check_marks": ORACLE, "_read_marks": ORACLE,
    "_copied_by_marks": ORACLE, "_resolve_copies": ORACLE, "_resolve_derived": ORACLE,
}
REVIEWS: dict[type, dict[str, str]] = {
    Miner: {**{name: SEALED if name in ("reveal", "transcript_opening", "cancel") else PUBLIC
               for name in MINER_REVIEWED},  # reviewed in tests/actors/test_miner_secrets.py, one test per guard
            "mine": "GAP (no secret): trains for any caller's signed task and ctx, unvalidated (Ray does not "
                    "re-parse), so anyone can keep a rival's two slots busy; see NOTES (proposer-signed ctx)"},
    AdversaryMiner: {},  # the attack suite's own miner: all of Miner's, plus its attacks (test-only actor)
    Validator: VALIDATOR,
    AdversaryValidator: {**VALIDATOR, "arm": "the attack suite's switch (test-only actor)"},
    Ledger: {
        "__init__": "constructor", "head": PUBLIC, "params": PUBLIC, "snapshot": PUBLIC, "blocks": PUBLIC,
        "import_block": "validates every rule before it writes (the ledger re-checks; a caller gains nothing)",
        "store_artifact": "anyone may store weights by hash; readers trust only the seed the winner committed "
                          "to on chain (client.committed_seed)",
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


def test_no_reviewed_actor_method_hands_out_a_secret_by_name() -> None:
    """The miner's old leaks (issue 10, finding 6) must not come back under any actor."""
    for cls in REVIEWS:
        assert not exposed(cls) & {"watermark_secret", "mapping_seed", "mark_secret", "secret_key", "test_split"}


# ------------------------------------------------------------------ the leak the review found

REQUESTER, VICTIM, THIEF = (Identity.from_seed(n, n.encode()) for n in ("requester", "victim", "thief"))
PROPOSER = Identity.from_seed("consensus", b"consensus")
CHAIN = fake_hash("chain")


@pytest.mark.xfail(strict=True, reason="validate() answers any caller: a thief posts nothing, signs its own task "
                   "with its own test split and asks whether stolen weights still carry the victim's mark "
                   "(REQUEST theft: validate only against the proposer's signed round, as a miner's reveal)")
def test_a_validator_is_no_mark_oracle() -> None:
    """During the window a thief holds the victim's weights (the object store is shared) and wants to know
    when its edits have removed the victim's watermark. The validator must not tell it."""
    from tests.actors.test_validator_verdicts import honest_miner, mined_by

    bundle = load_builtin("digits")
    real = make_task(REQUESTER, MINIMAL.task, bundle, nonce=1, created_ms=T0, chain_id=CHAIN)
    ctx = RoundContext(chain_id=CHAIN, round_id=fake_hash("round"), task_id=crypto.message_hash(real.message),
                       base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=T0 + 60_000)
    stolen = mined_by(honest_miner(VICTIM), real, bundle, ctx).weights  # what the victim will submit
    # The thief's own task: same net, the public data, its own test split; never posted on chain.
    own = make_task(THIEF, MINIMAL.task, bundle, nonce=7, created_ms=T0, chain_id=CHAIN)
    own_ctx = ctx.model_copy(update={"task_id": crypto.message_hash(own.message), "round_id": fake_hash("mine")})
    from dlbc_ray.models import sml
    from dlbc_ray.schema import Reveal, Submission

    seed, model_hash = b"any seed the thief likes 0123456", crypto.hash_weights(stolen)
    sub = Submission(task_id=own_ctx.task_id, miner=THIEF.public_key, model_hash=model_hash,
                     commit=crypto.compute_commit(model_hash, THIEF.public_key, own_ctx.task_id),
                     num_params=sum(int(w.size) for w in stolen.values()), claimed_score=0, epochs=1, train_ms=1,
                     examples=len(bundle.train.y), sml_commitment=sml.seed_commitment(seed))
    reveal = crypto.sign(THIEF, Reveal(task_id=sub.task_id, commit=sub.commit, sml_seed=seed.hex()), CHAIN)
    arrival = SubmissionArrival(signed=crypto.sign(THIEF, sub, CHAIN), arrived_ms=T0 + 1, reveal=reveal)
    judge = Validator(ValidatorConfig(), identity=Identity.from_seed("validator", b"validator"),
                      protection=MINIMAL.protection, marks={m.public_key: mark_secret(m) for m in (VICTIM, THIEF)})
    try:
        reply = judge.validate(own, bundle.test, [arrival], [stolen], own_ctx)
    except DLBCError:  # refused: the validator answered nothing
        return
    (vote,) = reply.ballots[0].message.votes
    told = vote.verdict is Verdict.STOLEN and VICTIM.public_key[:12] in vote.detail
    assert not told, f"the validator told a stranger: {vote.verdict.value}: {vote.detail}"
