"""Refereed disputes (consensus.dispute), pure: one validator's exact replay mismatch is not outvoted once its
referees confirm it; a false challenge changes nothing; a revision is not equivocation, two rival ones are."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray.consensus.ballot import find_equivocations, is_conflicting, select_ballots
from dlbc_ray.consensus.checkpoints import compute_audit_segments
from dlbc_ray.consensus.decision import decide_round
from dlbc_ray.consensus.dispute import (
    MAX_CHALLENGES,
    commits_to_referee,
    compute_challenge,
    compute_challenges,
    compute_revision,
    is_dispute_vote,
    is_revision,
    judge_challenge,
    splice_escape_probability,
    splice_escape_without_disputes,
)
from dlbc_ray.consensus.proposal import propose_task_block
from dlbc_ray.consensus.validation import validate_block
from dlbc_ray.consensus.transcript import AuditFailure, AuditOutcome
from dlbc_ray.schema import Signed, Submission, Verdict
from dlbc_ray.schema.round_messages import Challenge
from tests.builders import T0, World, fake_hash, fake_key

EXPECTED, REPLAYED = fake_hash("committed checkpoint 4"), fake_hash("honest replay of segment 3")


def challenge(commit: str, challenger: str, segment: int = 3) -> Challenge:
    return Challenge(commit=commit, segment=segment, expected=EXPECTED, replayed=REPLAYED, challenger=challenger)


def spliced_round(world: World) -> tuple[list[Signed[Submission]], list[Signed]]:
    """Two submissions; validator 0 alone sampled the spliced segment of submission 0 and voted it bad."""
    task = world.task()
    subs = [world.submission(world.miners[i], task) for i in range(2)]
    ballots = [world.ballot(v, subs, [0 if j == 0 else 9000, 8000],
                            [Verdict.BAD_TRANSCRIPT if j == 0 else Verdict.VALID, Verdict.VALID])
               for j, v in enumerate(world.validators)]
    return subs, ballots


def confirmed_revisions(world: World, subs: list[Signed[Submission]], ballots: list[Signed]) -> list[Signed]:
    ch = challenge(subs[0].message.commit, world.validators[0].public_key)
    revised = []
    for v, b in zip(world.validators[1:], ballots[1:]):
        rulings = [judge_challenge(c, expected=EXPECTED, replayed=REPLAYED, exact=True)
                   for c in commits_to_referee(b.message, [ch], v.public_key).get(ch.commit, [])]
        revision = compute_revision(b.message, rulings)
        assert revision is not None
        revised.append(world.sign(v, revision))
    return revised


def decided(world: World, subs: list[Signed[Submission]], ballots: list[Signed]):  # noqa: ANN201
    task_id = subs[0].message.task_id
    return decide_round([s.message for s in subs], ballots, world.round_id(task_id),
                        world.params.validators, target=5000)


# ------------------------------------------------------------------ the promise


def test_one_validators_finding_is_outvoted_without_a_dispute() -> None:
    """The gap this closes: 1 of 4 saw the splice; 3 valid votes are > 2/3, so the splice is accepted."""
    world = World()
    subs, ballots = spliced_round(world)
    assert decided(world, subs, ballots).decision.tally(subs[0].message.commit).accepted


def test_confirmed_challenge_refuses_the_splice_and_the_block_says_why() -> None:
    world = World()
    subs, ballots = spliced_round(world)
    revisions = confirmed_revisions(world, subs, ballots)
    result = decided(world, subs, ballots + revisions)
    tally = result.decision.tally(subs[0].message.commit)
    assert tally.verdict is Verdict.BAD_TRANSCRIPT and not result.evidence
    assert result.decision.tally(subs[1].message.commit).accepted  # the other submission's votes untouched
    chosen = {b.message.validator: b for b in result.ballots}
    for r in revisions:  # the revisions count, not the ballots they revise, and name the segment and both hashes
        vote = chosen[r.message.validator].message.votes[0]
        assert is_dispute_vote(vote) and "segment 3" in vote.detail and EXPECTED in vote.detail and REPLAYED in vote.detail


def test_revisions_before_their_ballots_still_supersede_them() -> None:
    world = World()
    subs, ballots = spliced_round(world)
    revisions = confirmed_revisions(world, subs, ballots)
    result = decided(world, subs, revisions + ballots)
    assert result.decision.tally(subs[0].message.commit).verdict is Verdict.BAD_TRANSCRIPT


def test_a_block_with_revisions_is_valid_on_the_ledger_and_holds_no_evidence() -> None:
    world = World()
    task = world.task()
    when = T0 + 1000 * (world.state.height + 1)
    subs = [world.submission(world.miners[i], task) for i in range(2)]
    ballots = [world.ballot(v, subs, [0 if j == 0 else 9000, 8000],
                            [Verdict.BAD_TRANSCRIPT if j == 0 else Verdict.VALID, Verdict.VALID], close_ms=when - 1)
               for j, v in enumerate(world.validators)]
    revisions = confirmed_revisions(world, subs, ballots)
    block, _ = propose_task_block(world.state, task, subs, ballots + revisions, world.proposer, when,
                                  world.round_id(subs[0].message.task_id))
    assert not block.evidence and set(block.ballots) == {ballots[0], *revisions}
    validate_block(block, world.state)  # the ledger's rules accept it (World.apply alone runs none)
    assert block.header.winner is None or block.header.winner != subs[0].message.commit


def test_a_false_challenge_changes_no_ballot() -> None:
    """A liar's challenge: every referee replays the segment, lands on the committed checkpoint, signs nothing."""
    world = World()
    task = world.task()
    subs = [world.submission(world.miners[i], task) for i in range(2)]
    ballots = [world.ballot(v, subs, [9000, 8000]) for v in world.validators]
    lie = challenge(subs[0].message.commit, world.validators[3].public_key)
    for v, b in zip(world.validators[:3], ballots[:3]):
        rulings = [judge_challenge(c, expected=EXPECTED, replayed=EXPECTED, exact=True)
                   for c in commits_to_referee(b.message, [lie], v.public_key)[lie.commit]]
        assert rulings and not any(r.confirmed for r in rulings)
        assert compute_revision(b.message, rulings) is None
    assert decided(world, subs, ballots).decision.tally(subs[0].message.commit).accepted


# ------------------------------------------------------------------ each rule on its own


def test_only_an_exact_replay_mismatch_makes_a_challenge() -> None:
    me = fake_key("me")
    mismatch = AuditOutcome(False, AuditFailure.REPLAY_MISMATCH, "x", segment=3, expected=EXPECTED, replayed=REPLAYED)
    assert compute_challenge(fake_hash("c"), mismatch, me) == challenge(fake_hash("c"), me)
    for outcome in (AuditOutcome(True), AuditOutcome(False, AuditFailure.FINAL_MISMATCH, "x", expected=EXPECTED,
                                                     replayed=REPLAYED),
                    AuditOutcome(False, AuditFailure.WRONG_INIT, "x", segment=0, expected=EXPECTED, replayed=REPLAYED),
                    AuditOutcome(False, AuditFailure.ROOT_MISMATCH, "x"),
                    AuditOutcome(False, AuditFailure.REPLAY_MISMATCH, "x", segment=None)):
        assert compute_challenge(fake_hash("c"), outcome, me) is None


@pytest.mark.parametrize("reason", [AuditFailure.MISSING_CHECKPOINT, AuditFailure.BAD_PROOF,
                                    AuditFailure.MALFORMED_CHECKPOINT])
def test_a_checkpoint_the_miner_would_not_open_is_challenged_by_the_segment_ending_at_it(reason: AuditFailure) -> None:
    """A miner that committed a leaf it cannot serve (a skipped segment) must not pass because only one validator
    asked for it: the segment ending at that checkpoint is challenged, and a referee that cannot open it confirms."""
    me = fake_key("me")
    outcome = AuditOutcome(False, reason, "checkpoint 7: the miner did not serve it", segment=7)
    ch = compute_challenge(fake_hash("c"), outcome, me)
    assert ch is not None and ch.segment == 6 and ch.expected is None and reason.value in ch.replayed
    assert compute_challenge(fake_hash("c"), outcome.__class__(False, reason, "x", segment=0), me).segment == 0
    assert judge_challenge(ch, expected=None, replayed=None, exact=True, problem=f"{reason.value}: checkpoint 7").confirmed
    assert not judge_challenge(ch, expected=EXPECTED, replayed=EXPECTED, exact=True).confirmed  # it opens to others


def test_challenges_are_the_challengers_own_on_this_round_and_bounded() -> None:
    world = World()
    a, b = (v.public_key for v in world.validators[:2])
    commits = [fake_hash("c0"), fake_hash("c1")]
    flood = [challenge(commits[0], a, segment=s) for s in range(10)]
    kept = compute_challenges([(a, flood), (b, [challenge(commits[1], a)]),  # b forwards a's: not b's own
                               (b, [challenge(fake_hash("other round"), b)]), (b, [challenge(commits[0], b, 1)])],
                              commits)
    assert len([c for c in kept if c.challenger == a]) == MAX_CHALLENGES
    assert all(c.commit in commits for c in kept) and not any(c.commit == commits[1] for c in kept)
    assert [c.segment for c in kept] == [0, 1]  # one per (commit, segment): b's segment 1 repeats a's, kept once


def test_judging_a_challenge() -> None:
    ch = challenge(fake_hash("c"), fake_key("v"))
    assert judge_challenge(ch, expected=EXPECTED, replayed=REPLAYED, exact=True).confirmed
    assert not judge_challenge(ch, expected=EXPECTED, replayed=EXPECTED, exact=True).confirmed
    assert not judge_challenge(ch, expected=EXPECTED, replayed=REPLAYED, exact=False).confirmed  # another device class
    assert judge_challenge(ch, expected=None, replayed=None, exact=True, problem="missing_checkpoint: 4").confirmed
    assert not judge_challenge(ch, expected=None, replayed=None, exact=True).confirmed  # no such segment


def test_a_referee_replays_only_others_challenges_on_what_it_voted_valid() -> None:
    world = World()
    task = world.task()
    subs = [world.submission(world.miners[i], task) for i in range(2)]
    me = world.validators[1]
    ballot = world.ballot(me, subs, [9000, 0], [Verdict.VALID, Verdict.COPY]).message
    todo = commits_to_referee(ballot, [challenge(subs[0].message.commit, me.public_key),
                                       challenge(subs[1].message.commit, fake_key("x")),
                                       challenge(subs[0].message.commit, fake_key("y"), 5)], me.public_key)
    assert {c: [x.segment for x in v] for c, v in todo.items()} == {subs[0].message.commit: [5]}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["same", "flip", "score", "unflip", "detail"]), min_size=2, max_size=2),
       st.booleans())
def test_only_valid_to_dispute_flips_are_revisions(changes: list[str], other_base: bool) -> None:
    world = World()
    task = world.task()
    subs = [world.submission(world.miners[i], task) for i in range(2)]
    v = world.validators[0]
    earlier = world.ballot(v, subs, [9000, 8000], [Verdict.VALID, Verdict.BAD_TRANSCRIPT]).message
    ruling = judge_challenge(challenge(subs[0].message.commit, fake_key("x")), expected=EXPECTED, replayed=REPLAYED,
                             exact=True)
    flipped = compute_revision(earlier, [ruling])
    assert flipped is not None
    votes = []
    for vote, flip, change in zip(earlier.votes, flipped.votes, changes):
        votes.append({"same": vote, "flip": flip, "score": vote.model_copy(update={"score": 1}),
                      "unflip": vote.model_copy(update={"verdict": Verdict.VALID}),
                      "detail": vote.model_copy(update={"detail": "dispute: forged"})}[change])
    later = earlier.model_copy(update={"votes": tuple(votes), **({"base_hash": fake_hash("x")} if other_base else {})})
    legit = set(changes) <= {"same", "flip"} and not other_base and later != earlier
    # vote 0 was valid ("flip" makes it a dispute vote); vote 1 was already bad ("flip" leaves it as it was)
    assert is_revision(earlier, later) == legit
    assert is_conflicting(earlier, later) == (later != earlier and not legit)


def test_two_rival_revisions_are_equivocation() -> None:
    world = World()
    task = world.task()
    subs = [world.submission(world.miners[i], task) for i in range(2)]
    v = world.validators[0]
    base = world.ballot(v, subs, [9000, 8000])
    first, second = (world.sign(v, compute_revision(base.message, [judge_challenge(  # type: ignore[arg-type]
        challenge(s.message.commit, fake_key("x")), expected=EXPECTED, replayed=REPLAYED, exact=True)]))
        for s in subs)
    assert find_equivocations([base, first]) == ()
    evidence = find_equivocations([base, first, second])
    assert len(evidence) == 1 and {evidence[0].first, evidence[0].second} == {first, second}
    chosen = select_ballots([second, base], world.round_id(task.message and subs[0].message.task_id),
                            [s.message.commit for s in subs], [v.public_key])
    assert chosen == (second,)


# ------------------------------------------------------------------ escape


def test_a_splice_escapes_only_if_no_validator_samples_it() -> None:
    assert splice_escape_probability(11, 1, 4) == pytest.approx(0.9 ** 4)
    assert splice_escape_probability(11, 10, 4) == 0.0
    assert splice_escape_without_disputes(11, 1, 4) == pytest.approx(1 - 0.1 ** 4 - 4 * 0.1 ** 3 * 0.9)
    for n in (3, 8, 33, 96):
        for v in (1, 4, 7):
            assert splice_escape_probability(n, 1, v) <= splice_escape_without_disputes(n, 1, v) + 1e-12


def test_escape_formula_matches_the_real_sampler() -> None:
    n, v, trials, spliced = 9, 4, 3000, 2
    escaped = 0
    for t in range(trials):
        seeds = [hashlib.sha256(f"{t}|{i}".encode()).digest() for i in range(v)]
        escaped += all(spliced not in compute_audit_segments(s, n, 1) for s in seeds)
    assert escaped / trials == pytest.approx(splice_escape_probability(n, 1, v), abs=0.03)
