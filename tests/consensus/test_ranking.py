"""Task ranking: reward per cost, raised by waiting; deterministic ties; no starvation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dlbc_ray.consensus.ranking import (
    PendingTask,
    RankingWeights,
    TaskCost,
    compute_task_score,
    estimate_cost,
    explain,
    rank_tasks,
)

W = RankingWeights()
NOW = 2 * 10**15  # ms; late enough for the long waits below
SMALL = TaskCost(parameters=10_000, flops_per_sample=20_000, train_examples=1_000, test_examples=200, epochs=5,
                 data_bytes=300_000)


def big(factor: int = 1000) -> TaskCost:
    return SMALL.model_copy(update={"flops_per_sample": SMALL.flops_per_sample * factor,
                                    "parameters": SMALL.parameters * factor})


def pending(task_id: str, *, reward: int = 100, cost: TaskCost = SMALL, waited_s: float = 0) -> PendingTask:
    return PendingTask(task_id=task_id, reward=reward, submitted_ms=NOW - int(waited_s * 1000), cost=cost)


def order(tasks: list[PendingTask], weights: RankingWeights = W) -> list[str]:
    return [t.task_id for t in rank_tasks(tasks, NOW, weights)]


def test_higher_reward_ranks_first_at_equal_cost() -> None:
    assert order([pending("a", reward=100), pending("b", reward=300), pending("c", reward=200)]) == ["b", "c", "a"]


def test_higher_cost_ranks_later_at_equal_reward() -> None:
    tasks = [pending("a", cost=big(1000)), pending("b", cost=SMALL), pending("c", cost=big(10))]
    assert order(tasks) == ["b", "c", "a"]


@pytest.mark.parametrize("field", ["parameters", "flops_per_sample", "train_examples", "test_examples", "epochs",
                                   "data_bytes"])
def test_every_cost_input_lowers_the_score(field: str) -> None:
    heavier = SMALL.model_copy(update={field: getattr(SMALL, field) * 1000})
    assert compute_task_score(heavier, 100, 0, W) < compute_task_score(SMALL, 100, 0, W)


def test_waiting_raises_the_score() -> None:
    scores = [compute_task_score(SMALL, 100, s, W) for s in (0, 60, 600, 6000)]
    assert scores == sorted(scores) and len(set(scores)) == 4
    assert compute_task_score(SMALL, 100, 600, W) == pytest.approx(2 * compute_task_score(SMALL, 100, 0, W))


def test_ties_go_to_the_smaller_task_id_whatever_the_input_order() -> None:
    tasks = [pending(task_id) for task_id in ("c", "a", "d", "b")]
    for seed in range(5):
        random.Random(seed).shuffle(tasks)
        assert order(tasks) == ["a", "b", "c", "d"]


def test_a_clock_behind_the_arrival_counts_as_no_wait() -> None:
    early = PendingTask(task_id="x", reward=100, submitted_ms=NOW + 5_000, cost=SMALL)
    assert explain(early, NOW, W)["waited_s"] == 0
    assert order([early, pending("y")]) == ["x", "y"]  # a tie, broken by id


def test_weights_change_the_order_as_expected() -> None:
    compute_heavy = SMALL.model_copy(update={"flops_per_sample": 10**9})  # ~15 PFLOP to train
    network_heavy = SMALL.model_copy(update={"data_bytes": 10**12})  # 1 TB to download
    tasks = [pending("compute", cost=compute_heavy), pending("network", cost=network_heavy)]
    assert order(tasks, W.model_copy(update={"complexity": 2.0, "network": 0.5})) == ["network", "compute"]
    assert order(tasks, W.model_copy(update={"complexity": 0.5, "network": 2.0})) == ["compute", "network"]
    ignored = W.model_copy(update={"complexity": 0.0, "network": 0.0, "data": 0.0})
    assert order([pending("cheap", reward=1), pending("dear", reward=2, cost=big(10**6))], ignored) == ["dear", "cheap"]


def test_a_faster_aging_rate_lets_the_old_task_overtake_sooner() -> None:
    tasks = [pending("old", reward=100, waited_s=600), pending("new", reward=300)]
    assert order(tasks) == ["new", "old"]  # aging x2 does not beat reward x3
    assert order(tasks, W.model_copy(update={"aging_rate": 1 / 60})) == ["old", "new"]  # x11 does


def test_explain_exposes_each_factor_and_agrees_with_the_score() -> None:
    task = pending("t", reward=500, cost=big(100), waited_s=120)
    info = explain(task, NOW, W)
    assert {"complexity_factor", "network_factor", "data_factor", "aging_factor", "cost", "score",
            "compute_flops", "network_bytes", "data_examples", "waited_s"} <= set(info)
    assert info["compute_flops"] == 3 * SMALL.flops_per_sample * 100 * SMALL.train_examples * SMALL.epochs
    assert info["network_bytes"] == SMALL.data_bytes + 2 * 4 * SMALL.parameters * 100
    assert info["waited_s"] == 120 and info["aging_factor"] == pytest.approx(1.2)
    assert info["cost"] == pytest.approx(info["complexity_factor"] * info["network_factor"] * info["data_factor"])
    assert info["score"] == pytest.approx(500 * info["aging_factor"] / info["cost"])
    assert info["score"] == pytest.approx(compute_task_score(task.cost, 500, 120, W))


def test_estimate_cost_counts_float32_features_and_int64_labels() -> None:
    cost = estimate_cost(parameters=1000, flops_per_sample=4000, input_shape=(1, 8, 8), train_examples=100,
                         test_examples=20, epochs=3)
    assert cost.data_bytes == 100 * (64 * 4 + 8)
    assert cost.compute_flops == 3 * 4000 * 100 * 3 and cost.data_examples == 120


@pytest.mark.parametrize("change", [{"queue": 0.0}, {"aging_rate": 0.0}, {"complexity": -1.0}, {"flop_unit": 0.0}])
def test_weights_that_would_allow_starvation_or_nonsense_are_refused(change: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        RankingWeights(**change)


def test_huge_weights_and_waits_do_not_overflow() -> None:
    heavy = RankingWeights(queue=50.0, complexity=50.0)
    tasks = [pending("old", waited_s=1e12, cost=big(10**6)), pending("new", reward=10**9)]
    assert order(tasks, heavy) == ["old", "new"]
    assert math.isinf(explain(tasks[0], NOW, heavy)["aging_factor"])


costs = st.builds(TaskCost, parameters=st.integers(0, 10**9), flops_per_sample=st.integers(0, 10**12),
                  train_examples=st.integers(0, 10**7), test_examples=st.integers(0, 10**6),
                  epochs=st.integers(1, 1000), data_bytes=st.integers(0, 10**12))
# Any positive queue weight and aging rate prevent starvation; these bounds only keep the
# wait that proves it (up to ~1e218 s here) inside float range.
weights = st.builds(RankingWeights, complexity=st.floats(0, 4), network=st.floats(0, 4), data=st.floats(0, 4),
                    queue=st.floats(0.5, 4), aging_rate=st.floats(1e-4, 1.0))
rivals = st.lists(st.tuples(st.integers(1, 10**9), costs, st.floats(0, 10**7)), min_size=1, max_size=8)
FAR = 2**1010  # a "now" late enough for waits up to 2**1000 s


@settings(max_examples=200, deadline=None)
@given(reward=st.integers(1, 10**9), cost=costs, fixed=rivals, w=weights)
def test_any_task_eventually_ranks_first_and_stays_first(reward: int, cost: TaskCost,
                                                         fixed: list[tuple[int, TaskCost, float]],
                                                         w: RankingWeights) -> None:
    """Anti-starvation: against rivals whose waits are fixed, waiting long enough always wins."""
    def at(task_id: str, reward: int, cost: TaskCost, waited_s: float) -> PendingTask:
        return PendingTask(task_id=task_id, reward=reward, submitted_ms=FAR - int(waited_s * 1000), cost=cost)

    others = [at(f"r{i}", r, c, s) for i, (r, c, s) in enumerate(fixed)]
    # "~" sorts after every rival id, so the starving task must win outright, never on a tie.
    firsts = [rank_tasks([at("~", reward, cost, 2.0**k), *others], FAR, w)[0].task_id for k in range(0, 1001, 8)]
    assert "~" in firsts
    assert all(f == "~" for f in firsts[firsts.index("~"):])


@given(tasks=st.lists(st.tuples(st.integers(1, 1000), costs, st.floats(0, 1e5)), min_size=1, max_size=10),
       seed=st.integers(0, 1000))
def test_ranking_is_a_function_of_the_set_not_the_input_order(tasks: list[tuple[int, TaskCost, float]],
                                                              seed: int) -> None:
    pool = [pending(f"t{i}", reward=r, cost=c, waited_s=s) for i, (r, c, s) in enumerate(tasks)]
    shuffled = pool[:]
    random.Random(seed).shuffle(shuffled)
    assert order(pool) == order(shuffled)
