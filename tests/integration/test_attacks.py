"""Every adversary kind through the real runner: one shared network, real rounds, real blocks.

The network (2 honest miners, 1 adversary, 4 validators of which 2 switchable liars) starts
once for the module (~50 s on 2 cores, plus one honest warm-up round); each trial is one
round (1-5 s; ``late`` waits out its 20 s window). Known gaps are strict xfails, so a fix
shows up as a failure to remove the mark. The CLI's wiring is tested without Ray at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlbc_ray.attack.harness import ADVERSARY, HONEST_MINERS, KINDS, AttackNetwork, KindResult, attack_config
from dlbc_ray.cli._app import new_app
from dlbc_ray.cli.attack import attack
from dlbc_ray.runtime.home import open_home


@pytest.fixture(scope="module")
def network(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackNetwork]:
    with AttackNetwork(open_home(tmp_path_factory.mktemp("attack-home")), attack_config()) as net:
        report = net.warm_up()
        assert report.committed and report.winner, report.failure
        yield net


@pytest.mark.ray
@pytest.mark.parametrize("kind", KINDS)
def test_every_attack_is_caught_and_the_honest_outcome_stands(network: AttackNetwork, kind: str) -> None:
    trials = 3 if kind == "lying-validators" else 1  # random scores, always approve, always reject
    for i in range(trials):
        result = network.trial(kind, i)
        trial = network.last
        assert trial is not None and result.false_positives == 0, result
        assert result.detected and result.honest_winner_kept, result


@pytest.mark.ray
def test_too_many_liars_leave_the_chain_where_it_was(network: AttackNetwork) -> None:
    network.trial("too-many-liars", 0)
    trial = network.last
    assert trial is not None and not trial.report.committed and trial.block is None
    assert trial.height_after == trial.height_before and "split" in trial.report.failure


@pytest.mark.ray
def test_an_equivocator_is_named_in_the_block_and_not_counted(network: AttackNetwork) -> None:
    network.trial("equivocating-validator", 0)
    trial = network.last
    assert trial is not None and trial.block is not None
    liar = trial.keys["validator-3"]
    assert trial.block.evidence and all(e.first.message.validator == liar for e in trial.block.evidence)
    assert all(e.first.message != e.second.message for e in trial.block.evidence)
    assert liar not in {b.message.validator for b in trial.block.ballots}
    assert {o.miner for o in trial.report.outcomes if o.verdict == "valid"} == {trial.keys[n] for n in HONEST_MINERS}


@pytest.mark.ray
@pytest.mark.parametrize(("kind", "verdicts"), [
    ("disguised-replay", {"derived"}), ("partial-reuse", {"derived"}), ("fine-tuned-replay", {"derived"}),
    ("pruned-replay", {"derived"}),
    ("layer-reset", {"derived", "stolen"}),  # its first layer reset, the owner's mark host kept: either gives it away
])
def test_a_disguised_or_partly_reused_earlier_winner_is_derived(network: AttackNetwork, kind: str,
                                                                verdicts: set[str]) -> None:
    """The validators judged the earlier winner (the warm-up round): what it computes, or the weights of a
    layer it kept, give the disguise away."""
    result = network.trial(kind, 0)
    trial = network.last
    assert trial is not None and trial.record is not None and trial.block is not None
    outcome = next(o for o in trial.report.outcomes if o.commit == trial.record.commit)
    assert outcome.verdict in verdicts, (outcome, trial.record.note)
    assert result.detected and result.honest_winner_kept and result.false_positives == 0, result


@pytest.mark.ray
def test_a_refuted_false_claim_reopens_the_window_and_an_honest_miner_wins(network: AttackNetwork) -> None:
    # A race: the adversary claims at once, but an honest miner whose first epoch already reaches the
    # standing target may confirm first (then nothing needs refuting). Every trial must keep the honest
    # outcome; within a few trials the adversary must have been first at least once, and refuted.
    refuted = 0
    for index in range(1, 5):
        network.trial("false-claim", index)
        trial = network.last
        assert trial is not None and trial.block is not None
        assert trial.block.header.winner in {trial.keys[n] for n in HONEST_MINERS}
        adversary = [o for o in trial.report.outcomes if o.miner == trial.keys[ADVERSARY]]
        assert all(o.verdict != "valid" or (o.score or 0) < trial.target for o in adversary)
        refuted += int(trial.report.timings.get("refuted_claims", 0))
        if refuted:
            break
    assert refuted >= 1, "the false claim never came first in 4 trials: the refutation path went untested"


@pytest.mark.ray
def test_the_adversary_never_signs_as_anyone_else_in_a_block(network: AttackNetwork) -> None:
    network.trial("forged-signature", 1)
    trial = network.last
    assert trial is not None and trial.block is not None
    honest = {trial.keys[n] for n in HONEST_MINERS}
    assert {s.message.miner for s in trial.block.submissions} == honest
    assert any(o.detail.startswith(f"{ADVERSARY}:") and o.verdict == "bad_signature" for o in trial.report.outcomes)


@pytest.mark.ray
def test_messages_signed_for_another_chain_move_nothing_here(network: AttackNetwork) -> None:
    result = network.trial("cross-chain-replay", 0)
    trial = network.last
    assert trial is not None and trial.block is not None and trial.record is not None
    assert trial.refusals == {"transfer": "wrong_chain", "task": "wrong_chain"}
    assert trial.height_after == trial.height_before + 1 and trial.keys[ADVERSARY] not in {
        s.message.miner for s in trial.block.submissions}
    assert result.detected and result.honest_winner_kept and result.false_positives == 0, result


@pytest.mark.ray
def test_a_proposer_that_drops_the_best_submission_is_refused_and_the_honest_block_commits(
        network: AttackNetwork) -> None:
    from dlbc_ray.ledger import verify_chain

    result = network.trial("proposer-drop", 0)
    trial = network.last
    assert trial is not None and trial.block is not None
    assert trial.refusals == {"block without the best submission": "ballot_set"}
    assert trial.block.header.winner == trial.report.winner and len(trial.block.submissions) == len(HONEST_MINERS)
    assert result.detected and result.honest_winner_kept and result.false_positives == 0, result
    assert verify_chain(network.home.ledger).height == trial.height_after


# ------------------------------------------------------------------------ CLI (no Ray)

runner = CliRunner()


def cli():  # type: ignore[no-untyped-def]
    app = new_app("test")
    app.command("attack")(attack)
    app.command("noop")(lambda: None)  # a second command keeps 'attack' a subcommand
    return app


@pytest.mark.parametrize(("args", "words"), [(["--kind", "nope"], ["unknown attack kind", "thief"]),
                                             (["--trials", "0"], ["--trials"])])
def test_bad_options_fail_in_one_line_before_anything_starts(tmp_path: Path, args: list[str],
                                                             words: list[str]) -> None:
    result = runner.invoke(cli(), ["attack", *args, "--home", str(tmp_path / "h")])
    assert result.exit_code == 2, result.output
    assert all(w in result.stderr for w in words) and "Traceback" not in result.output
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize(("detected", "code"), [(2, 0), (1, 1)])
def test_json_is_one_object_per_kind_and_a_beaten_defense_fails_the_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, detected: int, code: int) -> None:
    seen = {}

    def fake(kinds, trials, home, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kinds=kinds, trials=trials, home=home.root)
        return [KindResult("thief", 2, detected, 2, 0, ("stolen", "stolen"))]

    monkeypatch.setattr("dlbc_ray.attack.harness.run_attacks", fake)
    result = runner.invoke(cli(), ["attack", "--kind", "thief", "--trials", "2", "--home", str(tmp_path), "--json"])
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout) == [{"kind": "thief", "trials": 2, "detected": detected,
                                          "honest_winner_kept": 2, "false_positives": 0}]
    assert seen["kinds"] == ("thief",) and seen["trials"] == 2 and seen["home"].parent == tmp_path / "attacks"


@pytest.mark.ray
def test_a_rivals_handle_answers_no_probe_with_a_secret(network: AttackNetwork) -> None:
    """Ray exposes every method of a class on its handle; none of a miner's hands out a secret."""
    from dlbc_ray import crypto
    from dlbc_ray.actors.adversary import probe_rivals
    from dlbc_ray.schema.round_messages import WindowClose

    rival = network.handles[HONEST_MINERS[0]]
    assert {"watermark_secret", "mapping_seed"}.isdisjoint(dir(rival))
    task_id = crypto.message_hash(network._task().message)
    forged = crypto.sign(network.net.identities.requester, WindowClose(task_id=task_id, round_id=task_id,
                                                                      closed_ms=0), network.net.chain_id)
    leaks, tried, seeds = probe_rivals({HONEST_MINERS[0]: rival}, [forged], task_id)
    assert tried > 10 and leaks == [] and seeds == {}
    result = network.trial("secret-probe", 0)
    assert network.last is not None and network.last.record is not None and network.last.record.leaks == ()
    assert result.detected and result.honest_winner_kept and result.false_positives == 0, result


@pytest.mark.ray
def test_live_rounds_audit_transcripts_a_run_under_another_seed_is_bad_transcript(network: AttackNetwork) -> None:
    """Every validator replays each submission's transcript in a live round: the honest miners' runs pass
    (valid from all four), the seed shopper's genuine-looking run under another seed is refused by each."""
    from dlbc_ray.consensus.transcript import AuditFailure
    from dlbc_ray.schema import Verdict

    result = network.trial("fake-transcript", 0)
    trial = network.last
    assert trial is not None and trial.block is not None and trial.record is not None
    votes = {}
    for v in (v for b in trial.block.ballots for v in b.message.votes):
        votes.setdefault(v.commit, []).append(v)
    bad = votes[trial.record.commit]
    assert len(bad) == 4 and all(v.verdict is Verdict.BAD_TRANSCRIPT for v in bad), [(v.verdict, v.detail) for v in bad]
    assert all(v.detail.split(":")[0] == AuditFailure.WRONG_HEADER.value for v in bad), [v.detail for v in bad]
    honest = [s.message.commit for s in trial.block.submissions if s.message.miner != trial.key(ADVERSARY)]
    assert len(honest) == len(HONEST_MINERS)
    assert all(len(votes[c]) == 4 and all(v.verdict is Verdict.VALID for v in votes[c]) for c in honest)
    assert all(s.message.transcript_root for s in trial.block.submissions)
    assert result.detected and result.honest_winner_kept and result.false_positives == 0, result


@pytest.mark.ray
def test_a_restarted_validator_reads_the_earlier_winner_back_from_the_chain(network: AttackNetwork) -> None:
    """The assembler gives every validator the ledger as its source of earlier winners: ``validator-0``,
    restarted after the warm-up block (its memory gone), still calls a disguised copy of that block's
    winner ``derived``, naming the winner it read back from the chain's artifacts."""
    import ray

    from dlbc_ray.actors._ray import get_retrying
    from dlbc_ray.schema import Verdict

    restarted = network.handles["validator-0"]
    before = get_retrying(lambda: restarted.info.remote(), timeout=30, what="validator")["pid"]
    ray.kill(restarted, no_restart=False)  # Ray restarts it (max_restarts): a fresh process, a fresh memory
    # ray.kill returns at once: the old process may still answer for a moment, and a round sent to it then dies
    # with it (no ballot); wait for the new process itself
    deadline = time.monotonic() + 180
    while (after := get_retrying(lambda: restarted.info.remote(), timeout=30, what="restarted validator",
                                 patience_s=180))["pid"] == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert after["name"] == "validator-0" and after["pid"] != before
    result = network.trial("disguised-replay", 0)
    trial = network.last
    assert trial is not None and trial.block is not None and trial.record is not None
    (vote,) = [v for b in trial.block.ballots if b.message.validator == trial.key("validator-0")
               for v in b.message.votes if v.commit == trial.record.commit]
    # a validator that remembers names the model by its commit; only one that read it back says "winner"
    assert vote.verdict is Verdict.DERIVED and "from winner " in vote.detail, vote.detail
    assert result.detected and result.honest_winner_kept and result.false_positives == 0, result


@pytest.mark.ray
def test_a_distiller_is_refused_by_the_transcript_audit_and_honest_audits_leave_evidence(
        network: AttackNetwork) -> None:
    """Trained on the latest winner's labels with a transcript claiming the task's: refused, with at least one
    ``bad_transcript`` vote (each validator samples its segments: benchmarks/pol.py measures how often);
    each honest valid vote names the segments it replayed."""
    result = network.trial("distilled", 0)
    trial = network.last
    assert trial is not None and trial.block is not None and trial.record is not None
    assert "labels" in trial.record.note, trial.record.note
    assert result.detected and result.honest_winner_kept and result.false_positives == 0, (result, trial.record.note)
    honest = {s.message.commit for s in trial.block.submissions if s.message.miner != trial.key(ADVERSARY)}
    valid = [v for b in trial.block.ballots for v in b.message.votes if v.commit in honest]
    assert valid and all(v.detail.startswith("audit: segments ") and " bitwise, " in v.detail for v in valid), valid


@pytest.mark.ray
def test_a_splice_one_validator_sampled_is_refused_by_the_others_revisions(network: AttackNetwork) -> None:
    """One spliced segment that only validator-0's sample hits: its challenge is refereed by the three others,
    whose revised ballots turn their votes ``bad_transcript`` naming the segment (no equivocation evidence)."""
    from dlbc_ray.consensus.dispute import is_dispute_vote
    from dlbc_ray.schema import Verdict

    network.trial("spliced", 0)
    trial = network.last
    assert trial is not None and trial.block is not None and trial.record is not None
    votes = {b.message.validator: v for b in trial.block.ballots for v in b.message.votes
             if v.commit == trial.record.commit}
    challenger = trial.key("validator-0")
    assert votes[challenger].verdict is Verdict.BAD_TRANSCRIPT and not is_dispute_vote(votes[challenger])
    assert sum(is_dispute_vote(v) for k, v in votes.items() if k != challenger) == 3, votes
    assert not trial.block.evidence
