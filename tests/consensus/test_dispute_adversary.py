"""Refereed disputes against Byzantine validators (issue 11, red team), pure: what a referee may sign, what a
challenge flood costs, and which second ballot of a validator is a revision and which is equivocation.

Each test tries to break one promise: a referee signs only answers to challenges (``is_answer``); a dispute vote
is exactly what ``compute_revision`` signs (``parse_dispute``), so no other second ballot escapes as a "revision";
a referee's work is bounded whatever the challengers send.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray import canonical
from dlbc_ray.consensus.ballot import find_equivocations, is_conflicting
from dlbc_ray.consensus.dispute import (
    commits_to_referee,
    compute_challenges,
    compute_revision,
    is_answer,
    is_revision,
    judge_challenge,
    select_answers,
)
from dlbc_ray.consensus.proposal import propose_task_block
from dlbc_ray.consensus.validation import validate_block
from dlbc_ray.schema import Ballot, Signed, Submission, Verdict, Vote
from dlbc_ray.schema.round_messages import Challenge
from tests.builders import World, fake_hash, fake_key
from tests.consensus.test_dispute import EXPECTED, REPLAYED, challenge, decided


def two_subs(world: World) -> list[Signed[Submission]]:
    task = world.task()
    return [world.submission(world.miners[i], task) for i in range(2)]


def revised(ballot: Ballot, ch: Challenge) -> Ballot:
    """The revision an honest referee signs on confirming ``ch``."""
    out = compute_revision(ballot, [judge_challenge(ch, expected=EXPECTED, replayed=REPLAYED, exact=True)])
    assert out is not None
    return out


def dispute_of(commit: str, segment: int = 3) -> Vote:
    return Vote(commit=commit, verdict=Verdict.BAD_TRANSCRIPT, score=0,
                detail=f"dispute: segment {segment} expected {EXPECTED} replayed {REPLAYED}")


# ------------------------------------------------------------------ what a referee may sign


def byzantine_revisions(world: World, subs: list[Signed[Submission]], ballot: Ballot) -> dict[str, Ballot]:
    """A referee's ballot voted both valid; only submission 0's segment 3 was challenged (by someone else)."""
    c0, c1 = (s.message.commit for s in subs)
    votes = ballot.votes
    return {
        "unchallenged commit": ballot.model_copy(update={"votes": (votes[0], dispute_of(c1))}),
        "unchallenged segment": ballot.model_copy(update={"votes": (dispute_of(c0, segment=4), votes[1])}),
        "scores changed too": ballot.model_copy(update={"votes": (dispute_of(c0), votes[1].model_copy(
            update={"score": votes[1].score - 1}))}),
        "order changed": ballot.model_copy(update={"votes": (votes[1], dispute_of(c0))}),
        "base changed": revised(ballot, challenge(c0, fake_key("x"))).model_copy(update={"base_hash": fake_hash("b")}),
        "window changed": revised(ballot, challenge(c0, fake_key("x"))).model_copy(update={"close_ms": 1}),
        "round changed": revised(ballot, challenge(c0, fake_key("x"))).model_copy(update={"round_id": fake_hash("r")}),
        "dispute with a score": ballot.model_copy(update={"votes": (dispute_of(c0).model_copy(update={"score": 7}),
                                                                    votes[1])}),
        "dispute that agrees": ballot.model_copy(update={"votes": (dispute_of(c0).model_copy(update={
            "detail": f"dispute: segment 3 expected {EXPECTED} replayed {EXPECTED}"}), votes[1])}),
        "dispute naming nothing": ballot.model_copy(update={"votes": (dispute_of(c0).model_copy(update={
            "detail": "dispute: trust me"}), votes[1])}),
    }


@pytest.mark.parametrize("how", ["unchallenged commit", "unchallenged segment", "scores changed too", "order changed",
                                 "base changed", "window changed", "round changed", "dispute with a score",
                                 "dispute that agrees", "dispute naming nothing"])
def test_a_byzantine_referees_second_ballot_never_supersedes_its_ballot(how: str) -> None:
    """Whatever a referee signs besides an answer, its first ballot counts: either the runner drops it (a revision
    of what nobody challenged) or it is no revision at all, and the round keeps it only as equivocation evidence."""
    world = World()
    subs = two_subs(world)
    ballots = [world.ballot(v, subs, [9000, 8000]) for v in world.validators]
    liar = world.validators[3]
    asked = [challenge(subs[0].message.commit, world.validators[0].public_key)]
    rogue = world.sign(liar, byzantine_revisions(world, subs, ballots[3].message)[how])
    assert not is_answer(ballots[3].message, rogue.message, asked)
    kept = select_answers(ballots[3].message, [rogue], asked)
    result = decided(world, subs, ballots + kept)
    assert liar.public_key not in {b.message.validator for b in result.ballots} or ballots[3] in result.ballots
    assert rogue not in result.ballots
    elsewhere = how in ("base changed", "window changed", "round changed")  # another window's: never in this block
    if kept and not elsewhere:
        assert [e.first.message.validator for e in result.evidence] == [liar.public_key]
    assert not (elsewhere and result.evidence)
    assert result.decision.tally(subs[0].message.commit).accepted and result.decision.tally(
        subs[1].message.commit).accepted


def test_an_honest_answer_is_kept_and_supersedes() -> None:
    world = World()
    subs = two_subs(world)
    ballot = world.ballot(world.validators[1], subs, [9000, 8000])
    asked = [challenge(subs[0].message.commit, world.validators[0].public_key)]
    answer = world.sign(world.validators[1], revised(ballot.message, asked[0]))
    assert is_answer(ballot.message, answer.message, asked)
    assert select_answers(ballot.message, [answer], asked) == [answer]


def test_a_referee_cannot_answer_its_own_challenge_nor_revise_a_vote_it_did_not_vote_valid() -> None:
    world = World()
    subs = two_subs(world)
    me = world.validators[1]
    ballot = world.ballot(me, subs, [9000, 0], [Verdict.VALID, Verdict.COPY]).message
    own = [challenge(subs[0].message.commit, me.public_key)]
    assert not is_answer(ballot, revised(ballot, challenge(subs[0].message.commit, fake_key("x"))), own)
    turned = ballot.model_copy(update={"votes": (ballot.votes[0], dispute_of(subs[1].message.commit))})
    others = [challenge(subs[1].message.commit, world.validators[0].public_key)]
    assert not is_revision(ballot, turned) and not is_answer(ballot, turned, others)
    assert is_conflicting(ballot, turned)  # a copy verdict turned into a dispute is a second opinion: equivocation


def test_a_revision_of_another_validators_ballot_is_not_the_referees() -> None:
    world = World()
    subs = two_subs(world)
    mine, theirs = (world.ballot(v, subs, [9000, 8000]) for v in world.validators[1:3])
    asked = [challenge(subs[0].message.commit, world.validators[0].public_key)]
    forged = world.sign(world.validators[2], revised(theirs.message, asked[0]))
    assert select_answers(mine.message, [forged], asked) == []


def test_two_answers_that_revise_differently_are_evidence() -> None:
    world = World()
    subs = two_subs(world)
    v = world.validators[1]
    ballot = world.ballot(v, subs, [9000, 8000])
    asked = [challenge(s.message.commit, world.validators[0].public_key) for s in subs]
    first, second = (world.sign(v, revised(ballot.message, ch)) for ch in asked)
    kept = select_answers(ballot.message, [first, second], asked)
    assert kept == [first, second]
    assert [e.first.message.validator for e in find_equivocations([ballot, *kept])] == [v.public_key]


# ------------------------------------------------------------------ a flood of challenges


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 4096)), max_size=200))
def test_a_referees_work_is_bounded_whatever_the_challengers_send(flood: list[tuple[int, int, int]]) -> None:
    """V validators x any number of segments: each referee replays at most one segment per other validator on
    each commit it voted valid ((V - 1) x M in all), and commits outside the round cost nothing."""
    world = World()
    keys = [v.public_key for v in world.validators]
    commits = [fake_hash(f"c{i}") for i in range(2)]
    by: dict[str, list[Challenge]] = {}
    for who, which, segment in flood:
        commit = commits[which] if which < 2 else fake_hash("not in the round")
        by.setdefault(keys[who], []).append(challenge(commit, keys[who], segment))
    kept = compute_challenges(list(by.items()), commits)
    assert all(c.commit in commits for c in kept)
    me = world.validators[0]
    subs_votes = Ballot(task_id=fake_hash("t"), round_id=fake_hash("r"), submissions_root=fake_hash("s"),
                        base_hash=fake_hash("b"), close_ms=0, validator=me.public_key,
                        votes=tuple(Vote(commit=c, verdict=Verdict.VALID, score=9000) for c in commits))
    todo = commits_to_referee(subs_votes, kept, me.public_key)
    assert all(len(v) <= len(keys) - 1 for v in todo.values())
    assert sum(map(len, todo.values())) <= (len(keys) - 1) * len(commits)


def test_a_false_challenge_with_forged_hashes_or_out_of_range_is_refuted() -> None:
    """A referee never reads the challenge's hashes: it opens the committed checkpoint itself. A segment the
    transcript does not have (``referee_segment`` replays nothing) confirms nothing."""
    lie = Challenge(commit=fake_hash("c"), segment=4096, expected=fake_hash("forged"), replayed="forged too",
                    challenger=fake_key("colluder"))
    assert not judge_challenge(lie, expected=EXPECTED, replayed=EXPECTED, exact=True).confirmed
    assert not judge_challenge(lie, expected=None, replayed=None, exact=True).confirmed


def test_a_colluders_false_challenge_and_a_byzantine_referee_leave_the_honest_best_accepted() -> None:
    """The miner's colluder challenges the honest best submission and, as a referee, disputes it anyway: one
    faulty validator of four; the honest three refute and sign nothing, so the honest model still wins."""
    world = World()
    subs = two_subs(world)
    ballots = [world.ballot(v, subs, [9000, 8000]) for v in world.validators]
    colluder = world.validators[3]
    lie = challenge(subs[0].message.commit, colluder.public_key)
    kept = compute_challenges([(colluder.public_key, [lie])], [s.message.commit for s in subs])
    honest = [compute_revision(b.message, [judge_challenge(c, expected=EXPECTED, replayed=EXPECTED, exact=True)
                                           for c in commits_to_referee(b.message, kept, v.public_key).get(
                                               lie.commit, [])]) for v, b in zip(world.validators[:3], ballots)]
    assert honest == [None, None, None]
    # its own challenge is not its to answer: the runner drops the colluder's revision
    rogue = world.sign(colluder, revised(ballots[3].message, challenge(lie.commit, fake_key("x"))))
    result = decided(world, subs, ballots + select_answers(ballots[3].message, [rogue], kept))
    assert result.decision.winner is not None and result.decision.winner.commit == subs[0].message.commit


# ------------------------------------------------------------------ one field of a revision mutated


def signable(vote: Vote) -> bool:
    """What ``compute_revision`` can sign, written out independently of ``parse_dispute``."""
    parts = vote.detail.split(" ")
    return vote.verdict is Verdict.BAD_TRANSCRIPT and vote.score == 0 and len(parts) >= 7 and parts[:2] == [
        "dispute:", "segment"] and parts[2].isdigit() and parts[3] == "expected" and parts[5] == "replayed" \
        and parts[4] != " ".join(parts[6:])

FIELDS = ["task_id", "round_id", "submissions_root", "base_hash", "close_ms", "validator",
          "vote.commit", "vote.verdict", "vote.score", "vote.detail"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FIELDS), st.integers(0, 1), st.data())
def test_any_one_field_of_a_revision_mutated_is_no_revision_or_the_same_bytes(field: str, index: int,
                                                                             data: st.DataObject) -> None:
    """Mutate one field of an honest revision: it is no longer a revision of the ballot (so, in the same round, the
    pair is equivocation evidence), or it encodes to the very same bytes."""
    world = World()
    subs = two_subs(world)
    ballot = world.ballot(world.validators[1], subs, [9000, 8000]).message
    revision = revised(ballot, challenge(subs[0].message.commit, world.validators[0].public_key))
    disputes = st.builds(lambda s, a, b: f"dispute: segment {s} expected {a} replayed {b}",
                         st.integers(0, 99), *[st.sampled_from([EXPECTED, REPLAYED])] * 2)
    hashes = st.sampled_from([fake_hash("x"), subs[0].message.commit, subs[1].message.commit, EXPECTED])
    if field.startswith("vote."):
        name = field.split(".")[1]
        value = data.draw({"commit": hashes, "verdict": st.sampled_from(list(Verdict)), "score": st.integers(0, 10_000),
                           "detail": st.one_of(st.text(max_size=200), st.just(revision.votes[0].detail),
                                               disputes)}[name])
        votes = list(revision.votes)
        votes[index] = Vote.model_validate({**votes[index].model_dump(), name: value})
        mutated = revision.model_copy(update={"votes": tuple(votes)})
    else:
        value = data.draw(st.integers(0, 2**40) if field == "close_ms" else
                          st.sampled_from([fake_key("y"), world.validators[2].public_key]) if field == "validator"
                          else hashes)
        mutated = Ballot.model_validate({**revision.model_dump(), field: value})
    if canonical.canonical_bytes(mutated) == canonical.canonical_bytes(revision):
        return
    if is_revision(ballot, mutated):  # only what another honest referee could sign: a dispute vote, exactly
        assert all(a == b or signable(b) for a, b in zip(ballot.votes, mutated.votes)) and mutated != revision
        assert is_conflicting(revision, mutated) or is_revision(revision, mutated)
        return
    same_round = (mutated.validator, mutated.task_id, mutated.round_id) == (ballot.validator, ballot.task_id,
                                                                             ballot.round_id)
    assert is_conflicting(ballot, mutated) == same_round


def test_a_forged_revision_given_to_the_proposer_excludes_its_signer_on_the_ledger() -> None:
    """A validator signs its ballot and a 'revision' whose dispute vote carries a score: that is no revision, the
    proposer puts the pair in the block as evidence, the ledger accepts it and the validator counts for nothing."""
    from tests.builders import T0

    world = World()
    task = world.task()
    when = T0 + 1000 * (world.state.height + 1)
    subs = [world.submission(world.miners[i], task) for i in range(2)]
    ballots = [world.ballot(v, subs, [9000, 8000], close_ms=when - 1) for v in world.validators]
    liar = world.validators[3]
    forged = world.sign(liar, ballots[3].message.model_copy(update={"votes": (
        dispute_of(subs[0].message.commit).model_copy(update={"score": 9000}), ballots[3].message.votes[1])}))
    block, _ = propose_task_block(world.state, task, subs, ballots + [forged], world.proposer, when,
                                  world.round_id(subs[0].message.task_id))
    assert [e.first.message.validator for e in block.evidence] == [liar.public_key]
    validate_block(block, world.state)  # World.apply alone runs no rule


# ------------------------------------------------------------------ the ledger's view of revisions


def _round_with_revisions(world: World):  # noqa: ANN202
    from tests.builders import T0

    task = world.task()
    when = T0 + 1000 * (world.state.height + 1)
    subs = [world.submission(world.miners[i], task) for i in range(2)]
    ballots = [world.ballot(v, subs, [9000, 8000], close_ms=when - 1) for v in world.validators]
    v = world.validators[1]
    first, second = (world.sign(v, revised(ballots[1].message, challenge(s.message.commit,
                                                                           world.validators[0].public_key)))
                     for s in subs)
    return task, when, subs, ballots, first, second


def test_a_ballot_and_its_revision_given_as_evidence_are_refused_by_the_ledger() -> None:
    """A proposer that frames a referee (its ballot and its honest revision as 'equivocation'): 'evidence'."""
    from dlbc_ray.consensus.proposal import seal
    from dlbc_ray.errors import InvalidBlock
    from dlbc_ray.schema import EquivocationEvidence

    world = World()
    task, when, subs, ballots, first, _ = _round_with_revisions(world)
    block, _ = propose_task_block(world.state, task, subs, ballots + [first], world.proposer, when,
                                  world.round_id(subs[0].message.task_id))
    assert not block.evidence and first in block.ballots
    a, b = sorted((ballots[1], first), key=lambda s: canonical_hash(s.message))
    body = {"ballots": tuple(x for x in block.ballots if x != first),
            "evidence": (EquivocationEvidence(first=a, second=b),)}
    framed = seal(block.header, block.model_copy(update=body), world.proposer)
    with pytest.raises(InvalidBlock) as info:
        validate_block(framed, world.state)
    assert info.value.reason == "evidence"


def test_two_rival_revisions_are_evidence_the_ledger_accepts() -> None:
    world = World()
    task, when, subs, ballots, first, second = _round_with_revisions(world)
    block, _ = propose_task_block(world.state, task, subs, ballots + [first, second], world.proposer, when,
                                  world.round_id(subs[0].message.task_id))
    assert [e.first.message.validator for e in block.evidence] == [world.validators[1].public_key]
    assert world.validators[1].public_key not in {b.message.validator for b in block.ballots}
    validate_block(block, world.state)


def canonical_hash(message: Ballot) -> str:
    from dlbc_ray import crypto

    return crypto.message_hash(message)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(FIELDS), st.integers(0, 1), st.data())
def test_a_revision_mutated_in_a_block_is_refused_by_name_or_is_the_same_bytes(field: str, index: int,
                                                                             data: st.DataObject) -> None:
    """The ledger's side: one field of a revision in a block changed (the proposer re-seals, the validator does not
    sign again): refused with a named reason, or the same canonical bytes."""
    from dlbc_ray.consensus.proposal import seal
    from dlbc_ray.errors import InvalidBlock

    world = World()
    task, when, subs, ballots, first, _ = _round_with_revisions(world)
    block, _ = propose_task_block(world.state, task, subs, ballots + [first], world.proposer, when,
                                  world.round_id(subs[0].message.task_id))
    message = first.message
    if field.startswith("vote."):
        name = field.split(".")[1]
        value = data.draw({"commit": st.sampled_from([fake_hash("x"), subs[1 - index].message.commit]),
                           "verdict": st.sampled_from(list(Verdict)), "score": st.integers(0, 10_000),
                           "detail": st.text(max_size=200)}[name])
        votes = list(message.votes)
        votes[index] = Vote.model_validate({**votes[index].model_dump(), name: value})
        mutated = message.model_copy(update={"votes": tuple(votes)})
    else:
        value = data.draw(st.integers(0, 2**40) if field == "close_ms" else st.sampled_from(
            [fake_key("y"), world.validators[2].public_key] if field == "validator" else [fake_hash("x"), EXPECTED]))
        mutated = Ballot.model_validate({**message.model_dump(), field: value})
    if canonical.canonical_bytes(mutated) == canonical.canonical_bytes(message):
        return
    forged = Signed[Ballot].model_construct(message=mutated, chain_id=first.chain_id, signer=first.signer,
                                            signature=first.signature)
    ballots_in = tuple(sorted((forged if b == first else b for b in block.ballots), key=lambda b: b.message.validator))
    with pytest.raises(InvalidBlock) as info:
        validate_block(seal(block.header, block.model_copy(update={"ballots": ballots_in}), world.proposer),
                       world.state)
    assert info.value.reason in {"ballot_signer", "ballot_validator", "ballot_signature", "ballot_round", "ballot_set"}


@pytest.mark.parametrize("order", ["ballot first", "revision first"])
def test_a_revision_sent_with_the_ballot_answers_nothing(order: str) -> None:
    """A validator's first reply carrying its ballot and a 'revision' of it (no challenge was made yet): the round
    keeps one of them as its ballot, never lets the second supersede the first, and no evidence is needed."""
    world = World()
    subs = two_subs(world)
    v = world.validators[3]
    ballot = world.ballot(v, subs, [9000, 8000])
    early = world.sign(v, revised(ballot.message, challenge(subs[0].message.commit, fake_key("x"))))
    mine = [ballot, early] if order == "ballot first" else [early, ballot]
    kept = mine[:1] + select_answers(mine[0].message, mine[1:], ())  # what RoundRunner.validate keeps
    assert kept == mine[:1]
