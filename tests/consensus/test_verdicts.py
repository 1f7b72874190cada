"""Each verdict rule that needs no model (consensus/verdicts.py), one breakage at a time."""

from __future__ import annotations

import pytest

from dlbc_ray import crypto
from dlbc_ray.consensus.decision import decide
from dlbc_ray.crypto import Identity
from dlbc_ray.consensus.verdicts import check_envelope, check_reuse, check_reveal, check_timing
from dlbc_ray.schema import Reveal, Signed, Submission, Verdict
from dlbc_ray.schema.round_messages import SubmissionArrival
from tests.builders import World, fake_hash

SEED = bytes(range(32))


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def signed(world: World) -> Signed[Submission]:
    return world.submission(world.miners[0], world.task(), "m")


def _resigned(world: World, sub: Signed[Submission], **changes: object) -> Signed[Submission]:
    return world.sign(world.miners[0], sub.message.model_copy(update=changes))


def _flip(signature: str) -> str:
    return ("1" if signature[0] == "0" else "0") + signature[1:]


# ------------------------------------------------------------------ envelope


def test_a_well_formed_submission_passes_the_envelope(world: World, signed: Signed[Submission]) -> None:
    assert check_envelope(signed, signed.message.task_id, world.chain_id) is None


@pytest.mark.parametrize("breakage", ["tampered", "signer_is_not_the_miner", "message_edited"])
def test_a_signature_that_does_not_verify_for_the_named_miner_is_bad_signature(
        world: World, signed: Signed[Submission], breakage: str) -> None:
    bad = {
        "tampered": signed.model_copy(update={"signature": _flip(signed.signature)}),
        "signer_is_not_the_miner": world.sign(world.miners[1], signed.message),
        "message_edited": signed.model_copy(update={"message": signed.message.model_copy(
            update={"claimed_score": 10_000})}),
    }[breakage]
    verdict, _ = check_envelope(bad, signed.message.task_id, world.chain_id) or (None, "")
    assert verdict is Verdict.BAD_SIGNATURE


def test_an_impersonation_signed_by_another_key_is_bad_signature(world: World, signed: Signed[Submission]) -> None:
    forged = world.sign(world.miners[1], signed.message).model_copy(update={"signer": signed.message.miner})
    verdict, _ = check_envelope(forged, signed.message.task_id, world.chain_id) or (None, "")
    assert verdict is Verdict.BAD_SIGNATURE


def test_a_submission_for_another_task_is_wrong_task(world: World, signed: Signed[Submission]) -> None:
    verdict, detail = check_envelope(signed, fake_hash("other task"), world.chain_id) or (None, "")
    assert verdict is Verdict.WRONG_TASK and signed.message.task_id[:12] in detail


def test_a_submission_signed_for_another_chain_is_wrong_chain(world: World, signed: Signed[Submission]) -> None:
    other = World(proposer=Identity.from_seed("other-consensus", b"other"))
    replayed = other.sign(world.miners[0], signed.message)
    verdict, _ = check_envelope(replayed, signed.message.task_id, world.chain_id) or (None, "")
    assert other.chain_id != world.chain_id and verdict is Verdict.WRONG_CHAIN


def test_a_commit_that_is_not_the_hash_of_its_parts_is_bad_commit(world: World, signed: Signed[Submission]) -> None:
    bad = _resigned(world, signed, commit=fake_hash("not the commit"))
    verdict, _ = check_envelope(bad, signed.message.task_id, world.chain_id) or (None, "")
    assert verdict is Verdict.BAD_COMMIT


def test_the_signature_is_checked_before_the_task(world: World, signed: Signed[Submission]) -> None:
    bad = signed.model_copy(update={"signature": _flip(signed.signature)})
    assert check_envelope(bad, fake_hash("other task"), world.chain_id)[0] is Verdict.BAD_SIGNATURE  # type: ignore[index]


# -------------------------------------------------------------------- timing


@pytest.mark.parametrize(("arrived", "late"), [(999, False), (1000, False), (1001, True)])
def test_only_an_arrival_after_the_deadline_is_late(signed: Signed[Submission], arrived: int, late: bool) -> None:
    judgement = check_timing(SubmissionArrival(signed=signed, arrived_ms=arrived), 1000)
    assert (judgement is not None) is late
    if judgement:
        assert judgement[0] is Verdict.LATE and "1 ms" in judgement[1]


# --------------------------------------------------------------------- reuse


def test_new_weights_are_not_reused() -> None:
    assert check_reuse(fake_hash("new"), {fake_hash("a")}, {fake_hash("b")}) is None


def test_weights_seen_earlier_in_the_round_are_a_duplicate() -> None:
    assert check_reuse(fake_hash("a"), {fake_hash("a")}, set())[0] is Verdict.DUPLICATE  # type: ignore[index]


def test_weights_that_already_won_are_a_replay_even_if_also_seen_this_round() -> None:
    assert check_reuse(fake_hash("a"), {fake_hash("a")}, {fake_hash("a")})[0] is Verdict.REPLAY  # type: ignore[index]


def test_a_rejected_copy_does_not_bar_its_original_from_winning(world: World) -> None:
    task = world.task()
    victim = world.submission(world.miners[0], task, "best")
    thief = world.sign(world.miners[2], victim.message.model_copy(update={
        "miner": world.miners[2].public_key,
        "commit": crypto.compute_commit(victim.message.model_hash, world.miners[2].public_key, victim.message.task_id),
    }))
    other = world.submission(world.miners[1], task, "second")
    ballots = [world.ballot(v, [thief, victim, other], [0, 9300, 9000], [Verdict.STOLEN, Verdict.VALID, Verdict.VALID])
               for v in world.validators]
    decision = decide([s.message for s in (thief, victim, other)], [b.message for b in ballots],
                      world.params.validators, target=5000)
    assert decision.tally(thief.message.commit).verdict is Verdict.STOLEN
    assert decision.winner == victim.message


# -------------------------------------------------------------------- reveal


def _committed(world: World, signed: Signed[Submission], seed: bytes = SEED) -> Signed[Submission]:
    from dlbc_ray.models.sml import seed_commitment

    return _resigned(world, signed, sml_commitment=seed_commitment(seed))


def _reveal(world: World, sub: Signed[Submission], *, signer: int = 0, seed: bytes = SEED,
            commit: str | None = None) -> Signed[Reveal]:
    message = Reveal(task_id=sub.message.task_id, commit=commit or sub.message.commit, sml_seed=seed.hex())
    return world.sign(world.miners[signer], message)


def _check(world: World, sub: Signed[Submission], reveal: Signed[Reveal] | None) -> Verdict | None:
    from dlbc_ray.models.sml import seed_commitment

    seed = bytes.fromhex(reveal.message.sml_seed) if reveal else None
    judgement = check_reveal(sub.message, reveal, seed_commitment(seed) if seed else None, world.chain_id)
    return judgement[0] if judgement else None


def test_without_a_commitment_there_is_nothing_to_reveal(world: World, signed: Signed[Submission]) -> None:
    assert check_reveal(signed.message, None, None, world.chain_id) is None


def test_a_matching_reveal_by_the_miner_passes(world: World, signed: Signed[Submission]) -> None:
    sub = _committed(world, signed)
    assert _check(world, sub, _reveal(world, sub)) is None


@pytest.mark.parametrize("breakage", ["missing", "other_signer", "tampered", "other_commit", "other_seed"])
def test_every_broken_reveal_is_bad_reveal(world: World, signed: Signed[Submission], breakage: str) -> None:
    sub = _committed(world, signed)
    good = _reveal(world, sub)
    reveal = {
        "missing": None,
        "other_signer": _reveal(world, sub, signer=1),
        "tampered": good.model_copy(update={"signature": _flip(good.signature)}),
        "other_commit": _reveal(world, sub, commit=fake_hash("another commit")),
        "other_seed": _reveal(world, sub, seed=bytes(32)),
    }[breakage]
    assert _check(world, sub, reveal) is Verdict.BAD_REVEAL
