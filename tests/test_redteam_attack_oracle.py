"""The attack suite's mark-oracle kind, its detector on its own (known-good and known-bad trials).

The kind (dlbc-ray attack --kind mark-oracle) asks every validator, during the window, to judge the
adversary's own task in a round it signed itself (or one claiming the proposer's key), and asks for
the old ``_read_marks`` by name. Caught only when every question was refused.
"""

from __future__ import annotations

from dlbc_ray.attack.detectors import oracle_refused
from dlbc_ray.attack.judging import Trial
from dlbc_ray.attack.kinds import ATTACK_KINDS
from dlbc_ray.schema.round_messages import RoundReport
from tests.builders import fake_hash

REFUSED = {"validator-0: self-signed round": "round_signer",
           "validator-0: round claiming the proposer's key": "round_signature",
           "validator-0: _read_marks by name": "no_such_method"}


def trial(refusals: dict[str, str]) -> Trial:
    report = RoundReport(height=6, block_hash=fake_hash("b"), task_id=fake_hash("t"), winner=None, score=None,
                         committed=True)
    return Trial("mark-oracle", 0, report, None, 5, 6, None, {}, (), 5000, refusals)


def test_every_question_refused_is_caught() -> None:
    caught, how = oracle_refused(trial(REFUSED))
    assert caught and "3 questions, 0 answered" in how and "round_signer" in how


def test_one_validator_that_answers_is_not_caught() -> None:
    caught, how = oracle_refused(trial({**REFUSED, "validator-1: self-signed round": "accepted"}))
    assert not caught and "validator-1: self-signed round" in how


def test_a_trial_that_asked_nothing_proves_nothing() -> None:
    assert not oracle_refused(trial({}))[0]


def test_the_kind_is_registered_and_must_be_stopped() -> None:
    kind = ATTACK_KINDS["mark-oracle"]
    assert kind.detect is oracle_refused and not kind.gap
