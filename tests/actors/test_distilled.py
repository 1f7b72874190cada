"""Distillation (attack kind ``distilled``), and the check that names it: the transcript audit, tested on its own.

A distiller trains a fresh model exactly as an honest miner trains (its own init, mapping layer, mark, the
round's derived data order, every checkpoint recorded and committed) but on the labels an earlier winner
predicts for the task's inputs. Its weights owe the winner nothing, so provenance passes it (shown here
against a validator that reads the winner back from the chain). Its transcript claims the task's labels:
a validator's replay uses them, so every segment whose batches hold a label the winner got wrong diverges.
Real miners (``Miner``/``AdversaryMiner`` built directly), real Lightning training, real replays; no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.adversary import AdversaryMiner, MinerAttack
from dlbc_ray.actors.miner import Miner
from dlbc_ray.actors.validator import Validator
from dlbc_ray.actors.winners import StoreWinners
from dlbc_ray.config import MINIMAL, ValidatorConfig
from dlbc_ray.consensus.transcript import AuditFailure, compute_hyperparameters
from dlbc_ray.crypto import Identity
from dlbc_ray.ledger.artifacts import ArtifactStore
from dlbc_ray.models.data import DatasetBundle, load_builtin
from dlbc_ray.models.disguise import teacher_labels
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.protect import mapping_seed, mark_secret
from dlbc_ray.models.replay import Committed, Secrets, TranscriptAudits, audit, derive_for
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Reveal, Signed, Submission, Task, Verdict
from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival, WindowClose
from tests.builders import T0, fake_hash, signed_round

REQUESTER, TEACHER, DISTILLER, HONEST = (Identity.from_seed(n, n.encode())
                                         for n in ("requester", "teacher", "distiller", "honest"))
PROPOSER, JUDGE = Identity.from_seed("consensus", b"consensus"), Identity.from_seed("judge", b"judge")
CHAIN, DEADLINE, CFG = fake_hash("chain"), T0 + 60_000, MINIMAL.miner
POLICY = compute_hyperparameters(CFG.batch_size, CFG.lr, CFG.optimizer, CFG.val_fraction)
EVERY_SEGMENT = MINIMAL.protection.transcript.model_copy(update={"segments": 4096})


@dataclass(frozen=True)
class Made:
    miner: Miner
    ctx: RoundContext
    submission: Submission
    weights: dict[str, np.ndarray]
    reveal: Signed[Reveal]


@dataclass(frozen=True)
class World:
    bundle: DatasetBundle
    task: Signed[Task]
    teacher: Made  # an earlier round's winner
    distilled: Made  # this round: trained on the teacher's labels
    honest: Made  # this round: trained on the task's labels


def _close(ctx: RoundContext, commit: str) -> Signed[WindowClose]:
    return crypto.sign(PROPOSER, WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=DEADLINE,
                                             opens=(commit,), final=True), CHAIN)


def _ctx(task: Signed[Task], name: str) -> RoundContext:
    return RoundContext(chain_id=CHAIN, round_id=fake_hash(name), task_id=crypto.message_hash(task.message),
                        base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=DEADLINE)


def _made(miner: Miner, task: Signed[Task], bundle: DatasetBundle, ctx: RoundContext) -> Made:
    mined, weights = miner.mine(task, bundle.train, signed_round(PROPOSER, ctx))
    commit = mined.signed.message.commit
    return Made(miner, ctx, mined.signed.message, weights, miner.reveal(_close(ctx, commit), commit))


@pytest.fixture(scope="module")
def world() -> World:
    bundle = load_builtin("digits")
    task = make_task(REQUESTER, MINIMAL.task, bundle, nonce=1, created_ms=T0, chain_id=CHAIN)
    miner = lambda who: Miner(CFG, identity=who, protection=MINIMAL.protection, proposer=PROPOSER.public_key)  # noqa: E731
    teacher = _made(miner(TEACHER), task, bundle, _ctx(task, "earlier round"))
    thief = AdversaryMiner(CFG, identity=DISTILLER, protection=MINIMAL.protection, proposer=PROPOSER.public_key)
    thief.arm(MinerAttack("distilled", weights=teacher.weights, sml_seed=teacher.reveal.message.sml_seed))
    now = _ctx(task, "this round")
    return World(bundle, task, teacher, _made(thief, task, bundle, now), _made(miner(HONEST), task, bundle, now))


def _replayed(world: World, made: Made, who: Identity, params: Any = EVERY_SEGMENT) -> Any:
    """The transcript audit on its own: what a validator derives, against what ``made``'s miner serves."""
    commit, opened = made.submission.commit, _close(made.ctx, made.submission.commit)
    header, root, _ = made.miner.transcript_opening(opened, commit, 0)
    committed = Committed(made.submission.transcript_root, header, root,
                          lambda i: made.miner.transcript_opening(opened, commit, i)[2])
    secrets = Secrets(mapping_seed(who, made.ctx.task_id, made.ctx.round_id), mark_secret(who), MINIMAL.protection)
    derived = derive_for(world.task.message, made.ctx.task_id, made.ctx.round_id, world.bundle.train,
                         made.submission, secrets, POLICY)
    return audit(committed, derived, params, b"v" * 32)


def test_the_distiller_really_trained_on_the_teachers_labels_and_sent_a_complete_transcript(world: World) -> None:
    """The attack as played: a real transcript of its own run (same header as an honest one), other labels."""
    spec, d = world.task.message, world.distilled
    record = d.miner.last_record()  # type: ignore[attr-defined]
    assert record is not None and record.kind == "distilled" and "labels" in record.note
    taught = teacher_labels(build_net(spec.model.name, spec.model.params, spec.dataset.input_shape,
                                      spec.dataset.n_classes), world.teacher.weights,
                            bytes.fromhex(world.teacher.reveal.message.sml_seed), spec.model.name,
                            spec.dataset.input_shape, world.bundle.train)
    wrong = float(np.mean(taught.y != world.bundle.train.y))
    assert 0 < wrong < 0.5, wrong  # a good teacher: most labels are the task's, some are not
    assert d.submission.transcript_root is not None and d.submission.epochs == world.honest.submission.epochs


def test_the_audit_names_a_distilled_transcript_and_passes_an_honest_one(world: World) -> None:
    """Known-bad and known-good, every segment replayed: the distilled run diverges, the honest one is bitwise."""
    bad, bad_cost = _replayed(world, world.distilled, DISTILLER)
    good, good_cost = _replayed(world, world.honest, HONEST)
    assert bad.passed is False and bad.reason is AuditFailure.REPLAY_MISMATCH, bad
    assert good.passed is True, good
    assert good_cost.replayed_steps > 0 and len(good_cost.segments) > 2


def _validator(winners: Any = None, params: Any = EVERY_SEGMENT) -> Validator:
    protection = MINIMAL.protection.model_copy(update={"transcript": params})
    marks = {m.public_key: mark_secret(m) for m in (TEACHER, DISTILLER, HONEST)}
    return Validator(ValidatorConfig(), identity=JUDGE, protection=protection, marks=marks,
                     proposer=PROPOSER.public_key, winners=winners)


def _votes(world: World, by: Validator, *made: Made, won: frozenset[str] = frozenset(), audited: bool = True) -> list:
    arrivals = [SubmissionArrival(signed=crypto.sign(m.miner.identity, m.submission, CHAIN), arrived_ms=DEADLINE - 1,
                                  reveal=m.reveal) for m in made]
    openers = {m.submission.commit: (_close(m.ctx, m.submission.commit).signature,
                                     lambda i, m=m: m.miner.transcript_opening(_close(m.ctx, m.submission.commit),
                                                                               m.submission.commit, i))
               for m in made}
    audits = TranscriptAudits(world.bundle.train, POLICY, openers) if audited else None
    reply = by.validate(world.task, world.bundle.test, arrivals, [m.weights for m in made],
                        signed_round(PROPOSER, made[0].ctx), won, audits=audits)
    return list(reply.ballots[0].message.votes)


def test_provenance_passes_the_distilled_model_even_knowing_the_teacher(world: World, tmp_path: Path) -> None:
    """The gap the audit closes: a validator that reads the teacher back from the chain as an earlier winner,
    without transcript audits, finds the distilled model valid (its weights owe the teacher nothing)."""
    t = world.teacher
    meta = {"task_id": t.submission.task_id, "miner": t.submission.miner, "sml_seed": t.reveal.message.sml_seed}
    ArtifactStore(tmp_path).put(t.weights, t.submission.model_hash, metadata=meta)
    (vote,) = _votes(world, _validator(StoreWinners(str(tmp_path))), world.distilled,
                     won=frozenset({t.submission.model_hash}), audited=False)
    assert vote.verdict is Verdict.VALID, vote.detail


def test_a_validator_votes_bad_transcript_for_the_distilled_model_and_names_what_it_audited_for_the_honest(
        world: World) -> None:
    """The whole validator, every segment audited: distilled is bad_transcript with its evidence; the honest
    model's valid vote says which segments were replayed, how compared and how many steps (item: audit evidence)."""
    distilled, honest = _votes(world, _validator(), world.distilled, world.honest)
    assert distilled.verdict is Verdict.BAD_TRANSCRIPT and distilled.detail.startswith("replay_mismatch"), distilled
    assert honest.verdict is Verdict.VALID, honest.detail
    assert honest.detail.startswith("audit: segments ") and " bitwise, " in honest.detail, honest.detail
    assert honest.detail.endswith(" steps") and int(honest.detail.split()[-2]) > 0, honest.detail


def test_with_the_default_sampling_a_passing_vote_names_the_sampled_and_the_last_segment(world: World) -> None:
    (vote,) = _votes(world, _validator(params=MINIMAL.protection.transcript), world.honest)
    segments = vote.detail.removeprefix("audit: segments ").split()[0].split(",")
    assert vote.verdict is Verdict.VALID and 1 <= len(segments) <= MINIMAL.protection.transcript.segments + 1, vote
