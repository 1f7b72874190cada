"""A validator's mark check does not grow with the registry, and still names a rival's stolen model.

With more miners registered than ``ProtectionConfig.all_marks_up_to``, each submission is checked against
this ballot's submitters and the owners of the earlier models the validator compares against
(``consensus.marks``), not against every registered miner. Real tiny models (no Ray), as in
``test_validator_verdicts``; which owners were read is what the validator derived keys for.
"""

from __future__ import annotations

from dlbc_ray.actors.validator import Validator
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import Verdict
from tests.actors.test_validator_verdicts import (PROTECTION, THIEF, VICTIM, Setup, _copy_noise, judge, next_round,
                                                  setup, validator)

__all__ = ["setup"]  # the module-scoped fixture: the victim's model is trained once

BYSTANDERS = tuple(Identity.from_seed(f"bystander-{i}", f"bystander/{i}".encode()) for i in range(62))
REGISTRY = (VICTIM, *BYSTANDERS[:31], THIEF, *BYSTANDERS[31:])  # 64 registered, the pair not first or last


def large(all_up_to: int = 16) -> Validator:
    return holding_every_key(validator(PROTECTION.model_copy(update={"all_marks_up_to": all_up_to}),
                                       registered=REGISTRY))


def holding_every_key(by: Validator) -> Validator:
    """``owners_read`` is the keys a validator holds: lift its byte budget (``KeyCache``) so it holds all it read."""
    by._bench.keys.budget = 1 << 62
    return by


def owners_read(by: Validator) -> set[str]:
    return {owner for owner, _, _ in by._bench.keys}


def test_a_copy_beside_its_victim_is_named_reading_only_the_rounds_submitters(setup: Setup) -> None:
    by = large()
    copied, victim = judge(setup, _copy_noise(setup), setup.victim, by=by)
    assert copied.verdict is Verdict.STOLEN and f"watermark of miner {VICTIM.public_key[:12]}" in copied.detail
    assert victim.verdict is Verdict.VALID
    assert owners_read(by) == {VICTIM.public_key, THIEF.public_key}  # 2 of 64 registered


def test_a_lone_copy_of_an_earlier_rounds_model_is_named_by_its_owners_mark(setup: Setup) -> None:
    """The victim submitted in an earlier round (so the validator compares against its model); in the next
    round the thief sends a re-marked copy alone: the victim is an earlier owner, so its mark is read."""
    by = large()
    assert [v.verdict for v in judge(setup, setup.victim, by=by)] == [Verdict.VALID]
    (vote,) = judge(next_round(setup), _copy_noise(setup), by=by)
    assert vote.verdict is Verdict.STOLEN and f"watermark of miner {VICTIM.public_key[:12]}" in vote.detail
    assert owners_read(by) == {VICTIM.public_key, THIEF.public_key}


def test_the_set_read_is_bounded_whatever_the_registry(setup: Setup) -> None:
    for registry in (REGISTRY[:20], REGISTRY):
        by = holding_every_key(validator(PROTECTION.model_copy(update={"all_marks_up_to": 16}), registered=registry))
        judge(setup, setup.victim, by=by)
        assert owners_read(by) == {VICTIM.public_key}


def test_a_registry_within_the_bound_is_read_whole_so_a_lone_copy_of_an_unseen_model_is_named(setup: Setup) -> None:
    """The victim never submitted anywhere: only reading every registered mark names the copy. The
    default bound keeps that guarantee for small networks; here 64 registered, bound 64."""
    by = large(all_up_to=64)
    (vote,) = judge(setup, _copy_noise(setup), by=by)
    assert vote.verdict is Verdict.STOLEN and f"watermark of miner {VICTIM.public_key[:12]}" in vote.detail
    assert len(owners_read(by)) == 64
