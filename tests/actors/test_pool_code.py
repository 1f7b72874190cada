"""A restarted coordinator's pool and a queued task that ships its own code: the code is installed before the
task's net is built to price it, and without the operator's opt-in the task is not adopted (its code never runs)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dlbc_ray import crypto
from dlbc_ray.actors import task_code
from dlbc_ray.actors.pool import TaskPool
from dlbc_ray.models.data import Split
from dlbc_ray.models.taskcode import code_hash
from dlbc_ray.schema import ModelSpec
from dlbc_ray.schema.task import CodeSpec
from tests.builders import World

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_model" / "dlbc_resnet"
NET = ModelSpec(name="dlbc_resnet.nets:resnet_small", params={"width": 8, "blocks": 1})


@pytest.fixture
def saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A task with code saved by a coordinator that has since restarted; its code is on this node already
    (fetched from the cluster before the restart), but no process has imported it."""
    task_code._unload("dlbc_resnet")  # another test may have loaded the example into this process
    package = Path(shutil.copytree(EXAMPLE, tmp_path / "src" / "dlbc_resnet",
                                   ignore=shutil.ignore_patterns("__pycache__")))
    code = CodeSpec(package="dlbc_resnet", hash=code_hash(package))
    monkeypatch.setattr(task_code, "ROOT", tmp_path / "code-root")
    shutil.copytree(package, tmp_path / "code-root" / code.hash / "dlbc_resnet")
    world = World()
    task = world.task().message.model_copy(update={"model": NET, "code": code})
    task_id = crypto.message_hash(task)
    split = Split(np.zeros((4, 1, 8, 8), np.float32), np.arange(4) % 2)
    TaskPool(tmp_path / "tasks").save(task_id, world.sign(world.requester, task), split, split)
    yield tmp_path / "tasks", task_id
    task_code._unload("dlbc_resnet")


def test_a_restarted_pool_installs_a_tasks_code_before_pricing_its_net(saved: tuple[Path, str],
                                                                       ray_session: None) -> None:
    folder, task_id = saved
    assert "dlbc_resnet" not in sys.modules
    pool = TaskPool(folder, allow_code=True)  # what Consensus.__init__ builds, then recover() adopts from
    assert pool.adopt(task_id)
    entry = pool.entry(task_id)
    assert entry is not None and entry.status == "queued" and "dlbc_resnet.nets" in sys.modules
    from dlbc_ray.models.nets import build_net, count_parameters

    net = build_net(NET.name, NET.params, (1, 8, 8), 10)
    assert entry.pending.cost.parameters == count_parameters(net) > 0  # priced from the task's own net


def test_without_the_opt_in_a_task_with_code_is_not_adopted_and_its_code_never_runs(saved: tuple[Path, str]) -> None:
    folder, task_id = saved
    pool = TaskPool(folder)
    assert not pool.adopt(task_id) and task_id not in pool
    assert "dlbc_resnet" not in sys.modules
    assert not pool.adopt(task_id)  # remembered: the next tick does not read the files again
