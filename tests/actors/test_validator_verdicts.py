"""Every verdict a validator can give, on real tiny trained models (no Ray: ``Validator`` built directly).

Miners train the registry MLP on digits for the MINIMAL preset's 2 epochs, once per module;
crafted submissions then break exactly one thing each. ``_fetch`` takes plain dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.adversary import AdversaryMiner, MinerAttack
from dlbc_ray.actors.miner import Miner
from dlbc_ray.actors.validator import Validator
from dlbc_ray.actors.winners import WinnerSource
from dlbc_ray.config import MINIMAL, ProtectionConfig, ValidatorConfig
from dlbc_ray.crypto import Identity
from dlbc_ray.models.data import DatasetBundle, load_builtin
from dlbc_ray.models.protect import mark_secret
from dlbc_ray.models.replay import TranscriptAudits
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Reveal, Signed, Submission, Task, Verdict, Vote
from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival, WindowClose
from tests.builders import T0, fake_hash, signed_round

PROTECTION = MINIMAL.protection
DEADLINE = T0 + 60_000
REQUESTER, VICTIM, THIEF = (Identity.from_seed(n, n.encode()) for n in ("requester", "victim", "thief"))
JUDGE = Identity.from_seed("validator", b"validator")
PROPOSER = Identity.from_seed("consensus", b"consensus")
CHAIN = fake_hash("chain")


@dataclass(frozen=True)
class Sent:
    """A submission as it reaches validators: envelope, weights, reveal and arrival time."""

    signed: Signed[Submission]
    weights: dict[str, np.ndarray]
    reveal: Signed[Reveal] | None
    arrived_ms: int = DEADLINE - 1

    def but(self, **changes: object) -> Sent:
        return Sent(**{**self.__dict__, **changes})


@dataclass(frozen=True)
class Setup:
    bundle: DatasetBundle
    task: Signed[Task]
    ctx: RoundContext
    victim: Sent


@pytest.fixture(scope="module")
def setup() -> Setup:
    bundle = load_builtin("digits")
    task = make_task(REQUESTER, MINIMAL.task, bundle, nonce=1, created_ms=T0, chain_id=CHAIN)
    task_id = crypto.message_hash(task.message)
    ctx = RoundContext(chain_id=CHAIN, round_id=fake_hash("round"), task_id=task_id, base_height=1, base_hash=fake_hash("head"),
                       eval_seed=0, submit_deadline_ms=DEADLINE)
    return Setup(bundle, task, ctx, mined_by(honest_miner(VICTIM), task, bundle, ctx))


def honest_miner(identity: Identity) -> Miner:
    return Miner(MINIMAL.miner, identity=identity, protection=PROTECTION, proposer=PROPOSER.public_key)


def closed(ctx: RoundContext, commit: str) -> Signed[WindowClose]:
    """The proposer's signed close of ``ctx``'s round: what opens a miner's reveal of ``commit``."""
    return crypto.sign(PROPOSER, WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=DEADLINE,
                                             opens=(commit,)), CHAIN)


def mined_by(miner: Miner, task: Signed[Task], bundle: DatasetBundle, ctx: RoundContext) -> Sent:
    mined, weights = miner.mine(task, bundle.train, signed_round(PROPOSER, ctx))
    reveal = miner.reveal(closed(ctx, mined.signed.message.commit), mined.signed.message.commit)
    return Sent(mined.signed, weights, reveal)


def validator(protection: ProtectionConfig = PROTECTION, registered: Sequence[Identity] = (VICTIM, THIEF),
              winners: WinnerSource | None = None) -> Validator:
    """Told each miner's watermark secret in ``registered`` order (the order its ownership loop reads them)."""
    return Validator(ValidatorConfig(), identity=JUDGE, protection=protection,
                     marks={m.public_key: mark_secret(m) for m in registered}, proposer=PROPOSER.public_key,
                     winners=winners)


def judge(setup: Setup, *sent: Sent, by: Validator | None = None, won: frozenset[str] = frozenset(),
          audits: TranscriptAudits | None = None) -> list[Vote]:
    arrivals = [SubmissionArrival(signed=s.signed, arrived_ms=s.arrived_ms, reveal=s.reveal) for s in sent]
    reply = (by or validator()).validate(setup.task, setup.bundle.test, arrivals, [s.weights for s in sent],
                                         signed_round(PROPOSER, setup.ctx), won, audits=audits)
    (ballot,) = reply.ballots  # one signature for the whole round
    assert crypto.is_valid_signature(ballot) and ballot.signer == ballot.message.validator == JUDGE.public_key
    assert (ballot.message.task_id, ballot.message.round_id) == (setup.ctx.task_id, setup.ctx.round_id)
    return list(ballot.message.votes)


def resigned(sent: Sent, signer: Identity = VICTIM, **changes: object) -> Signed[Submission]:
    return crypto.sign(signer, sent.signed.message.model_copy(update=changes), CHAIN)


def as_miner(sent: Sent, miner: Identity) -> Sent:
    """The same weights and mapping seed, submitted and revealed under ``miner``'s key."""
    sub = sent.signed.message
    commit = crypto.compute_commit(sub.model_hash, miner.public_key, sub.task_id)
    signed = crypto.sign(miner, sub.model_copy(update={"miner": miner.public_key, "commit": commit}), CHAIN)
    seed = sent.reveal.message.sml_seed if sent.reveal else "00" * 32
    return Sent(signed, sent.weights, crypto.sign(miner, Reveal(task_id=sub.task_id, commit=commit, sml_seed=seed),
                                                  CHAIN))


def adversary(setup: Setup, attack: MinerAttack) -> Sent:
    thief = AdversaryMiner(MINIMAL.miner, identity=THIEF, protection=PROTECTION, proposer=PROPOSER.public_key,
                           victims={"victim": VICTIM})
    thief.arm(attack)
    return mined_by(thief, setup.task, setup.bundle, setup.ctx)


# -------------------------------------------------------------------- valid


def test_an_honest_submission_is_valid_and_scored_on_the_test_split(setup: Setup) -> None:
    (vote,) = judge(setup, setup.victim)
    assert vote.verdict is Verdict.VALID and vote.score >= setup.task.message.target
    assert vote.commit == setup.victim.signed.message.commit  # judge() checks the ballot's task and round


# ----------------------------------------------------------------- envelope


def test_a_tampered_signature_is_bad_signature(setup: Setup) -> None:
    signed = setup.victim.signed
    bad = signed.model_copy(update={"signature": ("1" if signed.signature[0] == "0" else "0") + signed.signature[1:]})
    assert judge(setup, setup.victim.but(signed=bad))[0].verdict is Verdict.BAD_SIGNATURE


def test_a_submission_for_another_task_is_wrong_task(setup: Setup) -> None:
    other = fake_hash("another task")
    sub = setup.victim.signed.message
    moved = resigned(setup.victim, task_id=other, commit=crypto.compute_commit(sub.model_hash, sub.miner, other))
    assert judge(setup, setup.victim.but(signed=moved))[0].verdict is Verdict.WRONG_TASK


def test_a_malformed_commit_is_bad_commit(setup: Setup) -> None:
    bad = resigned(setup.victim, commit=fake_hash("not a commit"))
    assert judge(setup, setup.victim.but(signed=bad))[0].verdict is Verdict.BAD_COMMIT


def test_an_arrival_after_the_deadline_is_late(setup: Setup) -> None:
    (vote,) = judge(setup, setup.victim.but(arrived_ms=DEADLINE + 1))
    assert vote.verdict is Verdict.LATE and vote.score == 0


# ------------------------------------------------------------------ weights


def test_weights_that_do_not_hash_to_the_signed_hash_are_hash_mismatch(setup: Setup) -> None:
    first = next(iter(setup.victim.weights))
    shipped = {**setup.victim.weights, first: setup.victim.weights[first] + np.float32(1e-3)}
    assert judge(setup, setup.victim.but(weights=shipped))[0].verdict is Verdict.HASH_MISMATCH


def test_weights_that_never_arrive_are_hash_mismatch(setup: Setup) -> None:
    assert judge(setup, setup.victim.but(weights=None))[0].verdict is Verdict.HASH_MISMATCH  # type: ignore[arg-type]


def _signed_for(sent: Sent, weights: dict[str, np.ndarray], **changes: object) -> Sent:
    """``weights`` under a correct hash and commit, signed by the victim, revealed with its seed."""
    sub = sent.signed.message
    model_hash = crypto.hash_weights(weights)
    commit = crypto.compute_commit(model_hash, sub.miner, sub.task_id)
    signed = resigned(sent, model_hash=model_hash, commit=commit, **changes)
    seed = sent.reveal.message.sml_seed if sent.reveal else "00" * 32
    return Sent(signed, weights, crypto.sign(VICTIM, Reveal(task_id=sub.task_id, commit=commit, sml_seed=seed), CHAIN))


def test_a_missing_tensor_is_wrong_architecture(setup: Setup) -> None:
    weights = dict(setup.victim.weights)
    weights.pop("fc.2.bias")
    (vote,) = judge(setup, _signed_for(setup.victim, weights))
    assert vote.verdict is Verdict.WRONG_ARCHITECTURE and "fc.2.bias" in vote.detail


def test_a_false_parameter_count_is_wrong_architecture(setup: Setup) -> None:
    sent = _signed_for(setup.victim, setup.victim.weights, num_params=setup.victim.signed.message.num_params + 1)
    assert judge(setup, sent)[0].verdict is Verdict.WRONG_ARCHITECTURE


# ------------------------------------------------------------------- reveal


def test_no_reveal_for_a_committed_mapping_layer_is_bad_reveal(setup: Setup) -> None:
    assert judge(setup, setup.victim.but(reveal=None))[0].verdict is Verdict.BAD_REVEAL


def test_a_reveal_of_another_seed_is_bad_reveal(setup: Setup) -> None:
    sub = setup.victim.signed.message
    other = crypto.sign(VICTIM, Reveal(task_id=sub.task_id, commit=sub.commit, sml_seed="ab" * 32), CHAIN)
    assert judge(setup, setup.victim.but(reveal=other))[0].verdict is Verdict.BAD_REVEAL


def test_no_mapping_layer_commitment_is_bad_reveal(setup: Setup) -> None:
    unmapped = resigned(setup.victim, sml_commitment=None)
    assert judge(setup, setup.victim.but(signed=unmapped, reveal=None))[0].verdict is Verdict.BAD_REVEAL


# ---------------------------------------------------------------- ownership


def test_a_model_without_its_submitters_mark_is_stolen(setup: Setup) -> None:
    (vote,) = judge(setup, as_miner(setup.victim, THIEF), by=validator(registered=(THIEF, VICTIM)))
    assert vote.verdict is Verdict.STOLEN and "own watermark is missing" in vote.detail


def test_a_model_carrying_another_miners_mark_is_stolen(setup: Setup) -> None:
    (vote,) = judge(setup, as_miner(setup.victim, THIEF), by=validator(registered=(VICTIM, THIEF)))
    assert vote.verdict is Verdict.STOLEN and f"watermark of miner {VICTIM.public_key[:12]}" in vote.detail


def test_a_submitter_nobody_registered_is_stolen(setup: Setup) -> None:
    (vote,) = judge(setup, setup.victim, by=validator(registered=(THIEF,)))
    assert vote.verdict is Verdict.STOLEN and "not a registered miner" in vote.detail


def test_a_thief_armed_with_the_victims_model_is_stolen_and_the_victim_after_it_still_valid(setup: Setup) -> None:
    thief = adversary(setup, MinerAttack("thief", victim="victim", task=setup.task, train=setup.bundle.train))
    assert thief.signed.message.model_hash == setup.victim.signed.message.model_hash  # an exact copy
    first, second = judge(setup, thief, setup.victim)
    assert first.verdict is Verdict.STOLEN and second.verdict is Verdict.VALID


def test_one_projection_reads_every_owners_mark_as_key_by_key_reading_does(setup: Setup) -> None:
    from dlbc_ray.actors.judging import mark_key
    from dlbc_ray.models.protect import read_mark

    by = validator()
    for weights in (setup.victim.weights, _copy_noise(setup).weights):
        keys = [mark_key({}, by._marks, PROTECTION, o, setup.task.message.model.name, weights) for o in by._marks]
        assert by._bench.read_marks(setup.task.message.model.name, weights) == [read_mark(weights, k, PROTECTION)
                                                                                for k in keys]


# -------------------------------------------------------------------- reuse

UNMARKED = PROTECTION.model_copy(update={"watermark": False})


def test_identical_weights_later_in_the_round_are_a_duplicate(setup: Setup) -> None:
    first, second = judge(setup, setup.victim, as_miner(setup.victim, THIEF), by=validator(UNMARKED))
    assert first.verdict is Verdict.VALID and second.verdict is Verdict.DUPLICATE


def test_weights_that_already_won_a_block_are_a_replay(setup: Setup) -> None:
    (vote,) = judge(setup, setup.victim, won=frozenset({setup.victim.signed.message.model_hash}))
    assert vote.verdict is Verdict.REPLAY


def test_a_near_copy_of_an_earlier_valid_model_that_does_not_beat_it_is_a_copy(setup: Setup) -> None:
    rng = np.random.default_rng(0)
    noisy = {k: v + rng.standard_normal(v.shape).astype(np.float32) * np.float32(1e-4) for k, v in
             setup.victim.weights.items()}
    copy = as_miner(_signed_for(setup.victim, noisy), THIEF)
    first, second = judge(setup, setup.victim, copy, by=validator(UNMARKED))
    assert first.verdict is Verdict.VALID and second.verdict is Verdict.COPY


def _copy_noise(setup: Setup) -> Sent:
    return adversary(setup, MinerAttack("copy-noise", victim="victim", task=setup.task, train=setup.bundle.train))


@pytest.mark.parametrize("copier_first", [True, False], ids=["copier-first", "victim-first"])
def test_a_noisy_re_marked_copy_beside_its_victim_is_stolen_whichever_arrives_first(setup: Setup,
                                                                                  copier_first: bool) -> None:
    copy = _copy_noise(setup)
    order = (copy, setup.victim) if copier_first else (setup.victim, copy)
    votes = judge(setup, *order)
    by_miner = {v.commit: v for v in votes}
    copied, victim = by_miner[copy.signed.message.commit], by_miner[setup.victim.signed.message.commit]
    assert copied.verdict is Verdict.STOLEN and "carries the watermark" in copied.detail and copied.score == 0
    assert victim.verdict is Verdict.VALID and victim.score > 0


def test_without_marks_sn9_decides_a_near_pair_later_must_beat_earlier(setup: Setup) -> None:
    copy = _copy_noise(setup)
    first, second = judge(setup, setup.victim, copy, by=validator(UNMARKED))
    assert first.verdict is Verdict.VALID and second.verdict is Verdict.COPY
    first, second = judge(setup, copy, setup.victim, by=validator(UNMARKED))  # the re-marked copy scores lower
    assert first.score + PROTECTION.copy_epsilon < second.score and second.verdict is Verdict.VALID


def test_two_honest_models_are_never_near_copies(setup: Setup) -> None:
    other = mined_by(honest_miner(THIEF), setup.task, setup.bundle, setup.ctx)
    assert [v.verdict for v in judge(setup, setup.victim, other)] == [Verdict.VALID, Verdict.VALID]


def test_a_noisy_copy_with_the_thiefs_mark_settled_is_rejected_even_alone(setup: Setup) -> None:
    """Its victim never submits, so no near model is there to compare: the victim's mark alone convicts it."""
    copy = _copy_noise(setup)
    (vote,) = judge(setup, copy)
    assert vote.verdict is Verdict.STOLEN and "carries the watermark" in vote.detail


# -------------------------------------------------------------- provenance


def next_round(setup: Setup) -> Setup:
    """The same task's next round (a retry): another round id, the same validators."""
    return Setup(setup.bundle, setup.task, setup.ctx.model_copy(update={"round_id": fake_hash("next round")}),
                 setup.victim)


def test_a_disguised_replay_of_an_earlier_winner_is_rejected(setup: Setup) -> None:
    """Units permuted and rescaled, re-mapped to the replayer's own layer, its own mark written: every weight
    differs and the mark reads as the replayer's, but the validator that judged the winner knows its function."""
    won, judge_ = setup.victim, validator()
    assert judge(setup, won, by=judge_)[0].verdict is Verdict.VALID  # the winner's round, on this validator
    attack = MinerAttack("disguised-replay", weights=won.weights, sml_seed=won.reveal.message.sml_seed)  # type: ignore[union-attr]
    later = next_round(setup)
    replay = adversary(later, attack)
    assert replay.signed.message.model_hash != won.signed.message.model_hash
    (vote,) = judge(later, replay, by=judge_, won=frozenset({won.signed.message.model_hash}))
    assert vote.verdict is Verdict.DERIVED and won.signed.message.commit[:12] in vote.detail, vote.detail


def test_a_disguised_replay_passes_every_other_check(setup: Setup) -> None:
    """Without the earlier round on record the same submission is valid: provenance is what catches it."""
    won = setup.victim
    attack = MinerAttack("disguised-replay", weights=won.weights, sml_seed=won.reveal.message.sml_seed)  # type: ignore[union-attr]
    later = next_round(setup)
    (vote,) = judge(later, adversary(later, attack), won=frozenset({won.signed.message.model_hash}))
    assert vote.verdict is Verdict.VALID and vote.score > setup.task.message.target


def test_partial_reuse_of_an_earlier_winner_is_rejected(setup: Setup) -> None:
    """The winner's mark host reset and the task's epochs trained with the thief's own mark."""
    won, judge_ = setup.victim, validator()
    judge(setup, won, by=judge_)
    attack = MinerAttack("partial-reuse", weights=won.weights, sml_seed=won.reveal.message.sml_seed)  # type: ignore[union-attr]
    later = next_round(setup)
    (vote,) = judge(later, adversary(later, attack), by=judge_)
    assert vote.verdict is Verdict.DERIVED, vote.detail


def test_honest_models_of_later_rounds_are_not_derived(setup: Setup) -> None:
    """Another miner's honest model for the retry, and the victim's own again, beside the remembered winner."""
    judge_ = validator()
    judge(setup, setup.victim, by=judge_)
    later = next_round(setup)
    other = mined_by(honest_miner(THIEF), later.task, later.bundle, later.ctx)
    again = mined_by(honest_miner(VICTIM), later.task, later.bundle, later.ctx)
    votes = judge(later, other, again, by=judge_)
    assert [v.verdict for v in votes] == [Verdict.VALID, Verdict.VALID], [v.detail for v in votes]


def test_a_disguised_copy_later_in_the_same_round_is_derived(setup: Setup) -> None:
    """Within a round: the later of two models that compute the same thing, by different miners, is derived."""
    from dlbc_ray.models.disguise import permute_and_rescale

    copy = as_miner(_signed_for(setup.victim, permute_and_rescale(setup.victim.weights, np.random.default_rng(1))),
                    THIEF)
    first, second = judge(setup, setup.victim, copy, by=validator(UNMARKED))
    assert first.verdict is Verdict.VALID and second.verdict is Verdict.DERIVED, second.detail
