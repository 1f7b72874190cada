"""Refereed disputes through the real runner, on the attack suite's network (real Ray, real training, real blocks).

The ``spliced`` kind forces validator-0's audit sample onto the spliced segment and the three others' onto the
last segment only: one validator alone sees the splice, and the block must still refuse it, by the others'
revised ballots naming the segment and hashes. A liar's false challenge changes nothing; an honest round takes
no referee trip. Marked slow: it starts its own attack network (~60 s on 2 cores); the same three checks are
offered to tests/integration/test_attacks.py, whose network is already up (NOTES.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dlbc_ray.attack.harness import AttackNetwork, attack_config
from dlbc_ray.consensus.dispute import is_dispute_vote
from dlbc_ray.runtime.home import open_home
from dlbc_ray.schema import Verdict

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def network(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackNetwork]:
    with AttackNetwork(open_home(tmp_path_factory.mktemp("dispute-home")), attack_config()) as net:
        report = net.warm_up()
        assert report.committed and report.winner, report.failure
        assert "challenges" not in report.timings and "dispute_s" not in report.timings  # no referee trip
        yield net


def test_a_splice_only_one_validator_sampled_is_refused_by_the_others_revisions(network: AttackNetwork) -> None:
    result = network.trial("spliced", 0)
    trial = network.last
    assert trial is not None and trial.block is not None and trial.record is not None, result
    assert result.detected and result.honest_winner_kept and result.false_positives == 0, result
    votes = {b.message.validator: v for b in trial.block.ballots for v in b.message.votes
             if v.commit == trial.record.commit}
    challenger = trial.keys["validator-0"]
    assert votes[challenger].verdict is Verdict.BAD_TRANSCRIPT and not is_dispute_vote(votes[challenger])
    assert sum(is_dispute_vote(v) for k, v in votes.items() if k != challenger) == 3, votes  # each referee confirmed
    assert not trial.block.evidence and trial.report.timings.get("revised_ballots") == 3.0


def test_a_false_challenge_changes_nothing(network: AttackNetwork) -> None:
    from dlbc_ray.actors.liars import ValidatorLie

    network._arm(None, {"validator-3": ValidatorLie("false-challenge")})
    try:
        report = network.round(network._task())
    finally:
        network._arm(None, {})
    assert report.committed and report.winner, report.failure
    assert report.timings.get("challenges", 0.0) >= 1.0 and report.timings.get("revised_ballots") == 0.0
    assert {o.verdict for o in report.outcomes if o.commit} == {"valid"}, report.outcomes
