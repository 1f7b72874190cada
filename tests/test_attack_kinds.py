"""Attack kinds are one registry (attack/kinds.py): a new kind is one registration, and the CLI's selection,
the harness's arming and the judging all read it. No Ray: the plans run against a stand-in network."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from dlbc_ray import crypto
from dlbc_ray.attack import kinds
from dlbc_ray.attack.judging import ADVERSARY, LIARS, Trial, judge
from dlbc_ray.errors import ConfigError
from dlbc_ray.schema.round_messages import RoundReport, SubmissionOutcome
from tests.builders import World, fake_hash

BEFORE = ("thief", "copy-noise", "random-weights", "replay", "disguised-replay", "partial-reuse", "layer-reset",
          "fine-tuned-replay", "pruned-replay", "distilled", "forged-signature", "hash-mismatch", "wrong-task", "late",
          "lying-validators", "equivocating-validator", "too-many-liars", "false-claim", "secret-probe",
          "cross-chain-replay", "proposer-drop", "fake-transcript", "mark-oracle")
NOW = (*BEFORE, "spliced")


def network() -> SimpleNamespace:
    """What a plan reads of an AttackNetwork."""
    return SimpleNamespace(bundle=SimpleNamespace(train="training split"), earlier_winner=lambda: ({}, "00" * 16),
                           handles={"miner-0": "h0", "miner-1": "h1"}, other_chain=fake_hash("other"),
                           net=SimpleNamespace(chain_id=fake_hash("this")))


@pytest.fixture
def late_thief() -> Iterator[str]:
    """A kind added in one registration: the thief's behaviour, judged as a late submission."""
    kinds.register_attack_kind(kinds.AttackKind("late-thief", kinds.thief("thief"), kinds.attack_kind("late").detect))
    yield "late-thief"
    del kinds.ATTACK_KINDS["late-thief"]


def late_trial(kind: str) -> Trial:
    key = crypto.Identity.from_seed("m", b"m").public_key
    late = SubmissionOutcome(miner=key, commit=None, verdict="late", score=None, detail=f"{ADVERSARY}: after the close")
    report = RoundReport(height=6, block_hash=None, task_id=fake_hash("task"), winner=None, score=None,
                         committed=True, outcomes=(late,))
    return Trial(kind, 0, report, None, 5, 6, SimpleNamespace(commit=fake_hash("a")), {ADVERSARY: key, "miner-0": "x",
                 "miner-1": "y"}, (), 5000)  # type: ignore[arg-type]


def test_a_registered_kind_is_selected_armed_and_judged(late_thief: str) -> None:
    assert kinds.check_kinds(late_thief) == (late_thief,) and late_thief in kinds.check_kinds("all")
    task = World().task()
    attack, lies = kinds.attack_kind(late_thief).plan(network(), 0, task)  # type: ignore[arg-type]
    assert (attack.kind, attack.task, attack.train, lies) == ("thief", task, "training split", {})
    assert judge(late_trial(late_thief)).detected  # late's detector, through the registry


def test_the_registry_holds_every_kind_the_suite_had_and_each_plan_arms_a_known_behaviour() -> None:
    from dlbc_ray.actors.adversary import PLAYS

    assert kinds.check_kinds("all") == NOW and kinds.check_kinds("gaps") == ()
    task = World().task()
    for name in NOW:
        attack, lies = kinds.attack_kind(name).plan(network(), 1, task)  # type: ignore[arg-type]
        assert attack is None or attack.kind in PLAYS, name
        assert {n for n, lie in lies.items() if lie.kind != "sample"} <= set(LIARS), name  # a forced sample is no lie


def test_spliced_forces_exactly_one_validators_sample_onto_the_spliced_segment() -> None:
    attack, lies = kinds.attack_kind("spliced").plan(network(), 0, World().task())  # type: ignore[arg-type]
    assert attack is not None and all(lie.kind == "sample" for lie in lies.values()) and len(lies) == 4
    assert [n for n, lie in lies.items() if attack.segment in lie.segments] == ["validator-0"]


@pytest.mark.parametrize("name", ["", "all", "gaps", "thief"])
def test_a_kind_name_is_new_and_not_a_selector(name: str) -> None:
    with pytest.raises(ValueError):
        kinds.register_attack_kind(kinds.AttackKind(name, kinds.no_miner, kinds.attack_kind("late").detect))


def test_an_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown attack kind 'nope'; use 'all', 'gaps' or one of thief") as info:
        kinds.check_kinds("nope")
    assert info.value.reason == "kind"
