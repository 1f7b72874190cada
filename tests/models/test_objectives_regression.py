"""Regression tasks end to end without Ray: float targets from a file, a target given as an error bound, a real
miner training through its Secure Mapping Layer and watermark with the task's loss, and a real validator scoring
with the function the task names; a copy is still caught by the mark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlbc_ray import crypto
from dlbc_ray.actors.miner import Miner
from dlbc_ray.actors.validator import Validator
from dlbc_ray.config import MINIMAL, ValidatorConfig
from dlbc_ray.consensus import compute_median_score
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models import sml
from dlbc_ray.models.data import load_file
from dlbc_ray.models.evaluate import evaluate
from dlbc_ray.models.nets import build_net, net_info
from dlbc_ray.models.objectives import check_task_objective, score, target_score
from dlbc_ray.models.protect import mapping_layer, mark_secret
from dlbc_ray.schema import Reveal, Signed, Task, Verdict, Vote
from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival, WindowClose
from dlbc_ray.runtime.taskfile import load_task_with_data, read_task_file, to_task
from tests.builders import T0, fake_hash, signed_round

CHAIN = fake_hash("chain")
DEADLINE = T0 + 60_000
REQUESTER, ALICE, BOB, THIEF = (Identity.from_seed(n, n.encode()) for n in ("requester", "alice", "bob", "thief"))
JUDGE, PROPOSER = Identity.from_seed("validator", b"v"), Identity.from_seed("consensus", b"c")
TASK = """\
model: {name: mlp, params: {hidden: [32]}}
dataset: linear.npz
metric: mse
target: 4.0
reward: 100
deadline: 600
max_epochs: 15
"""


def write_linear(path: Path, n: int = 1200, features: int = 6) -> Path:
    rng = np.random.default_rng(7)
    w = rng.normal(size=features)
    x = rng.normal(size=(n, features))
    y = x @ w + 0.1 * rng.normal(size=n)
    cut = n * 4 // 5
    np.savez(path, x_train=x[:cut], y_train=y[:cut], x_test=x[cut:], y_test=y[cut:])
    return path


# --------------------------------------------------------------------- rules


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=9))
def test_lower_error_is_a_higher_score_and_the_median_agrees(errors: list[float]) -> None:
    scores = [round(target_score("mse", e) * SCORE_SCALE) for e in errors]
    ordered = sorted(errors)
    if len(errors) % 2:  # the median of scores is the score of the median error (the map is monotone)
        assert compute_median_score(scores) == round(target_score("mse", ordered[len(errors) // 2]) * SCORE_SCALE)
    for a, b in zip(ordered, ordered[1:]):
        assert target_score("mse", a) >= target_score("mse", b)


def test_targets_are_checked_against_their_objective() -> None:
    assert target_score("accuracy", 0.9) == 0.9 and target_score("mae", 1.0) == 0.5
    for name, bad in [("accuracy", 1.5), ("accuracy", -0.1), ("mse", -1.0), ("mse", float("inf"))]:
        with pytest.raises(InvalidTask) as info:
            target_score(name, bad)
        assert info.value.reason == "bad_target"


@pytest.mark.parametrize(("metric", "outputs", "partition", "reason"), [
    ("accuracy", 1, "none", "bad_metric"), ("mse", 10, "none", "bad_metric"), ("mae", 1, "non-iid", "bad_partition")])
def test_a_task_whose_data_does_not_suit_its_metric_is_refused(metric: str, outputs: int, partition: str,
                                                               reason: str) -> None:
    with pytest.raises(InvalidTask) as info:
        check_task_objective(metric, outputs, partition)
    assert info.value.reason == reason
    check_task_objective("mse", 1, "iid")


# ----------------------------------------------------------------- task files


def test_a_regression_task_file_keeps_float_targets_and_signs_the_error_bound_as_a_score(tmp_path: Path) -> None:
    write_linear(tmp_path / "linear.npz")
    (tmp_path / "task.yaml").write_text(TASK)
    taskfile, bundle = load_task_with_data(tmp_path / "task.yaml")
    assert bundle.n_classes == 1 and bundle.train.y.dtype == np.float32
    assert not np.array_equal(bundle.train.y, np.round(bundle.train.y))  # not cut to labels
    task = to_task(taskfile, REQUESTER.public_key, nonce=1, now_ms=T0, bundle=bundle)
    assert task.dataset.n_classes == 1 and task.target == round(SCORE_SCALE / 5)  # 1 / (1 + 4.0)


@pytest.mark.parametrize(("change", "expected"), [
    (("dataset: linear.npz", "dataset: digits"), "dataset: the built-in datasets hold classes"),
    (("max_epochs: 15", "max_epochs: 15\npartition: non-iid"), "partition: non-iid shards skew labels"),
    (("target: 4.0", "target: -1"), "target: must be greater than or equal to 0"),
    (("metric: mse\ntarget: 4.0", "metric: accuracy\ntarget: 4.0"), "target: target for accuracy must be a score"),
])
def test_bad_regression_task_files_fail_in_one_line(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    (tmp_path / "task.yaml").write_text(TASK.replace(*change))
    with pytest.raises(InvalidTask, match=expected):
        read_task_file(tmp_path / "task.yaml")


def test_class_data_and_image_folders_are_refused_for_regression(tmp_path: Path) -> None:
    (tmp_path / "images" / "train" / "a").mkdir(parents=True)
    with pytest.raises(InvalidTask, match="an image folder holds classes") as info:
        load_file(tmp_path / "images", regression=True)
    assert info.value.reason == "bad_labels"
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "nan.npz", x_train=rng.normal(size=(8, 2)), y_train=[np.nan] * 8,
             x_test=rng.normal(size=(4, 2)), y_test=np.zeros(4))
    with pytest.raises(InvalidTask, match="y_train targets must be finite") as info:
        load_file(tmp_path / "nan.npz", regression=True)


# ------------------------------------------------------- a real miner and validator


@pytest.fixture(scope="module")
def round_(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("regression")
    write_linear(root / "linear.npz")
    (root / "task.yaml").write_text(TASK)
    taskfile, bundle = load_task_with_data(root / "task.yaml")
    task = crypto.sign(REQUESTER, to_task(taskfile, REQUESTER.public_key, nonce=1, now_ms=T0, bundle=bundle), CHAIN)
    ctx = RoundContext(chain_id=CHAIN, round_id=fake_hash("round"), task_id=crypto.message_hash(task.message),
                       base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=DEADLINE)
    return task, bundle, ctx


def _mine(identity: Identity, task: Signed[Task], bundle: object, ctx: RoundContext) -> SubmissionArrival:
    miner = Miner(MINIMAL.miner, identity=identity, protection=MINIMAL.protection, proposer=PROPOSER.public_key)
    mined, weights = miner.mine(task, bundle.train, signed_round(PROPOSER, ctx))  # type: ignore[attr-defined]
    commit = mined.signed.message.commit
    close = crypto.sign(PROPOSER, WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=DEADLINE,
                                              opens=(commit,)), CHAIN)
    arrival = SubmissionArrival(signed=mined.signed, arrived_ms=DEADLINE - 1, reveal=miner.reveal(close, commit))
    return arrival, weights


def _judge(task: Signed[Task], bundle: object, ctx: RoundContext, sent: list) -> list[Vote]:
    judge = Validator(ValidatorConfig(), identity=JUDGE, protection=MINIMAL.protection,
                      marks={m.public_key: mark_secret(m) for m in (ALICE, BOB, THIEF)}, proposer=PROPOSER.public_key)
    reply = judge.validate(task, bundle.test, [a for a, _ in sent], [w for _, w in sent],  # type: ignore
                           signed_round(PROPOSER, ctx))
    return list(reply.ballots[0].message.votes)


def test_a_marked_regression_model_is_valid_and_scored_with_the_tasks_mse(round_: tuple) -> None:
    task, bundle, ctx = round_
    arrival, weights = _mine(ALICE, task, bundle, ctx)
    (vote,) = _judge(task, bundle, ctx, [(arrival, weights)])
    assert vote.verdict is Verdict.VALID, vote.detail
    # The requester's view: the mapping layer folded into the first layer, scored on raw test inputs.
    spec = task.message
    net = build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes)
    q, kind = mapping_layer(bytes.fromhex(arrival.reveal.message.sml_seed), weights, spec.model.name,
                            spec.dataset.input_shape)
    raw = sml.fold_into_first_layer(weights, net_info(spec.model.name).first_layer, q, kind)
    assert abs(vote.score - round(evaluate(net, raw, bundle.test, metric="mse") * SCORE_SCALE)) <= 2
    assert spec.target <= vote.score <= SCORE_SCALE
    outputs = np.zeros((len(bundle.test), 1), dtype=np.float32)  # predicting 0 everywhere scores far lower
    assert round(score("mse", outputs, bundle.test.y) * SCORE_SCALE) < vote.score


def test_a_copied_regression_model_is_caught_by_the_mark(round_: tuple) -> None:
    task, bundle, ctx = round_
    arrival, weights = _mine(ALICE, task, bundle, ctx)
    sub = arrival.signed.message
    commit = crypto.compute_commit(sub.model_hash, THIEF.public_key, sub.task_id)
    stolen = crypto.sign(THIEF, sub.model_copy(update={"miner": THIEF.public_key, "commit": commit}), CHAIN)
    reveal = crypto.sign(THIEF, Reveal(task_id=sub.task_id, commit=commit, sml_seed=arrival.reveal.message.sml_seed),
                         CHAIN)
    copy = SubmissionArrival(signed=stolen, arrived_ms=DEADLINE - 1, reveal=reveal)
    (vote,) = _judge(task, bundle, ctx, [(copy, weights)])
    assert vote.verdict is not Verdict.VALID, vote


def test_two_honest_regression_models_are_both_valid(round_: tuple) -> None:
    task, bundle, ctx = round_
    votes = _judge(task, bundle, ctx, [_mine(ALICE, task, bundle, ctx), _mine(BOB, task, bundle, ctx)])
    assert [v.verdict for v in votes] == [Verdict.VALID, Verdict.VALID], [v.detail for v in votes]
