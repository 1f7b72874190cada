"""A miner with 2 workers trains data-parallel through Ray Train (TorchTrainer, Lightning's RayDDPStrategy,
gloo on CPU) and its submission is what a single-device miner's is: hash, watermark, mapping layer and a
transcript a validator replays, here bit for bit (``models.distributed``: 2 workers' all-reduce is exact).

The miner is built directly in the test process (``Miner``: Ray Train starts its workers from here), on
the suite's Ray session. Slow: Ray Train starts a controller and 2 worker processes (torch + Lightning).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.miner import Miner
from dlbc_ray.config import MINIMAL
from dlbc_ray.consensus.transcript import compute_hyperparameters
from dlbc_ray.crypto import Identity
from dlbc_ray.models.data import DatasetBundle, holdout, load_builtin
from dlbc_ray.models.protect import mapping_seed, mark_secret
from dlbc_ray.models.replay import Committed, Secrets, audit, derive_for, replay
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Signed, Submission, Task, Verdict
from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival, WindowClose
from tests.builders import T0, fake_hash, signed_round

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REQUESTER, MINER = (Identity.from_seed(n, n.encode()) for n in ("requester", "dp-miner"))
PROPOSER = Identity.from_seed("consensus", b"consensus")
CHAIN = fake_hash("chain")
DEADLINE = T0 + 600_000
CFG = MINIMAL.miner.model_copy(update={"num_cpus": 0.5, "workers": 2})
POLICY = compute_hyperparameters(CFG.batch_size, CFG.lr, CFG.optimizer, CFG.val_fraction)


@dataclass(frozen=True)
class Mined:
    miner: Miner
    bundle: DatasetBundle
    task: Signed[Task]
    ctx: RoundContext
    submission: Submission
    weights: dict[str, Any]


def close(ctx: RoundContext, commit: str) -> Signed[WindowClose]:
    message = WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=DEADLINE, opens=(commit,), final=True)
    return crypto.sign(PROPOSER, message, CHAIN)


@pytest.fixture(scope="module")
def done(ray_session: None) -> Mined:
    bundle = load_builtin("digits")
    task = make_task(REQUESTER, MINIMAL.task.model_copy(update={"epochs": 2}), bundle, nonce=7, created_ms=T0,
                     chain_id=CHAIN)
    ctx = RoundContext(chain_id=CHAIN, round_id=fake_hash("dp-round"), task_id=crypto.message_hash(task.message),
                       base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=DEADLINE)
    miner = Miner(CFG, identity=MINER, protection=MINIMAL.protection, proposer=PROPOSER.public_key)
    mined, weights = miner.mine(task, bundle.train, signed_round(PROPOSER, ctx))
    return Mined(miner, bundle, task, ctx, mined.signed.message, weights)


def _committed(done: Mined) -> Committed:
    opened = close(done.ctx, done.submission.commit)
    header, root, _ = done.miner.transcript_opening(opened, done.submission.commit, 0)
    return Committed(done.submission.transcript_root, header, root,
                     lambda i: done.miner.transcript_opening(opened, done.submission.commit, i)[2])


def _derived(done: Mined) -> Any:
    secrets = Secrets(mapping_seed(MINER, done.ctx.task_id, done.ctx.round_id), mark_secret(MINER), MINIMAL.protection)
    return derive_for(done.task.message, done.ctx.task_id, done.ctx.round_id, done.bundle.train, done.submission,
                      secrets, POLICY)


def test_the_transcript_records_two_workers_and_commits_to_the_signed_model(done: Mined) -> None:
    header = _committed(done).header
    assert header.workers == 2 and header.device == "cpu" and header.steps == header.steps_per_epoch * 2
    assert done.submission.transcript_root == _committed(done).root
    assert done.submission.model_hash == crypto.hash_weights(done.weights)


def test_every_segment_of_a_two_worker_run_replays_bit_for_bit(done: Mined) -> None:
    params = MINIMAL.protection.transcript.model_copy(update={"segments": MINIMAL.protection.transcript.max_checkpoints})
    outcome, cost = audit(_committed(done), _derived(done), params, b"v" * 32)
    assert outcome.passed, outcome  # tolerance 0: the CPU replay is exact
    assert cost.replayed_steps == _committed(done).header.steps


def test_a_replay_that_ignores_the_workers_does_not_land(done: Mined) -> None:
    """The header's worker count is what makes the replay match: one device's step is another computation."""
    committed, derived = _committed(done), _derived(done)
    single = committed.header.model_copy(update={"workers": 1})
    start, end = committed.fetch(0)[2], committed.fetch(1)[2]
    replayed = replay(derived.make_system, derived.fit, single, start, end.step)
    assert not all(np.array_equal(replayed.weights[k], end.weights[k]) for k in end.weights)


def test_the_watermark_and_the_mapping_layer_are_the_miners_and_a_validator_votes_valid(done: Mined) -> None:
    from dlbc_ray.actors.validator import Validator
    from dlbc_ray.config import ValidatorConfig
    from dlbc_ray.models.replay import TranscriptAudits

    commit = done.submission.commit
    opened = close(done.ctx, commit)
    arrival = SubmissionArrival(signed=crypto.sign(MINER, done.submission, CHAIN), arrived_ms=DEADLINE - 1,
                                reveal=done.miner.reveal(opened, commit))
    judge = Validator(ValidatorConfig(), identity=Identity.from_seed("judge", b"judge"), protection=MINIMAL.protection,
                      marks={MINER.public_key: mark_secret(MINER)}, proposer=PROPOSER.public_key)
    audits = TranscriptAudits(done.bundle.train, POLICY,
                              {commit: (opened.signature, lambda i: done.miner.transcript_opening(opened, commit, i))})
    reply = judge.validate(done.task, done.bundle.test, [arrival], [done.weights], signed_round(PROPOSER, done.ctx),
                           audits=audits)
    vote = reply.ballots[0].message.votes[0]
    assert vote.verdict is Verdict.VALID, vote.detail  # own mark read, no other; scored behind its mapping layer
    assert vote.score > 0
    fit, _ = holdout(done.bundle.train, CFG.val_fraction, _committed(done).header.seed)
    assert len(fit) == done.submission.examples


def test_a_two_worker_model_carries_its_own_mark_and_no_other(done: Mined) -> None:
    from dlbc_ray.models.protect import read_mark, watermark_key
    from dlbc_ray.models.nets import build_net

    spec = done.task.message
    net = build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes)
    own = watermark_key(mark_secret(MINER), MINER.public_key, net, spec.model.name, MINIMAL.protection.watermark_bits)
    rival = Identity.from_seed("rival", b"rival")
    other = watermark_key(mark_secret(rival), rival.public_key, net, spec.model.name, MINIMAL.protection.watermark_bits)
    assert read_mark(done.weights, own, MINIMAL.protection).owned
    assert not read_mark(done.weights, other, MINIMAL.protection).carried


def test_a_data_parallel_miner_actor_stops_its_workers_when_the_window_closes(ray_session: None) -> None:
    """As a Ray actor (how networks run it): Ray Train starts from inside the miner, which holds no CPU of its own,
    and the proposer's final close reaches the workers, which stop at the end of the epoch they are in."""
    from dlbc_ray.actors._ray import get
    from dlbc_ray.actors.spawn import spawn_miner
    from dlbc_ray.errors import RevealRefused

    bundle = load_builtin("digits")
    task = make_task(REQUESTER, MINIMAL.task.model_copy(update={"epochs": 40}), bundle, nonce=8, created_ms=T0,
                     chain_id=CHAIN)
    ctx = RoundContext(chain_id=CHAIN, round_id=fake_hash("dp-cancel"), task_id=crypto.message_hash(task.message),
                       base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=DEADLINE)
    member = spawn_miner(CFG, MINER, MINIMAL.protection, proposer=PROPOSER.public_key)
    mined_ref, weights_ref = member.handle.mine.remote(task, bundle.train, signed_round(PROPOSER, ctx))
    final = crypto.sign(PROPOSER, WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=DEADLINE, opens=(),
                                              final=True), CHAIN)
    for _ in range(600):  # until the miner has begun this task (its first lines run before Ray Train starts)
        try:
            get(member.handle.cancel.remote(final), timeout=30, what="cancel")
            break
        except RevealRefused:
            time.sleep(0.1)
    mined = get(mined_ref, timeout=400, what="data-parallel mine")
    submission = mined.signed.message
    assert submission.epochs == 1, submission.epochs  # 40 asked: the close stopped both workers after the first
    assert submission.model_hash == crypto.hash_weights(get(weights_ref, timeout=60, what="weights"))


def test_a_worker_that_fails_is_a_named_error_not_a_hang(done: Mined) -> None:
    """A worker's exception (here: 2 workers asked of 65 examples by 64, whose last batch of 1 cannot be
    shared) ends the run as ActorUnavailable('train_workers'), whatever Ray Train raises."""
    from dlbc_ray.actors import data_parallel as dp
    from dlbc_ray.errors import ActorUnavailable
    from dlbc_ray.models.data import Split
    from dlbc_ray.models.training import TrainSettings

    committed = _committed(done)
    tiny = Split(x=done.bundle.train.x[:65], y=done.bundle.train.y[:65])
    job = dp.Job(net=_derived(done).make_system().net, data=tiny,
                 settings=TrainSettings(epochs=1, batch_size=64, seed=committed.header.seed, num_threads=1,
                                        val_fraction=0.0),
                 regularizers=(), header=committed.header, audit=MINIMAL.protection.transcript, workers=2)
    with pytest.raises(ActorUnavailable) as caught:
        dp.train(job, dp.open_channel(), dp.Placement(use_gpu=False, timeout_s=MINIMAL.miner.train_call_timeout_s,
                                                      cpus_per_worker=0.5))
    assert caught.value.reason == "train_workers"
