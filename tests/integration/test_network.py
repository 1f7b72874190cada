"""A long-lived network on the real session cluster: submit, rank, mine in parallel, pay, survive kills."""

from __future__ import annotations

import runpy
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from dlbc_ray.runtime import client, service
from dlbc_ray.actors.names import CONSENSUS_NAME, LEDGER_NAME, NAMESPACE, miner_name
from dlbc_ray.config import MINIMAL
from dlbc_ray.errors import InvalidTask
from dlbc_ray.runtime.home import Home, open_home
from dlbc_ray.ledger import load_safetensors, verify_chain

pytestmark = pytest.mark.ray

TASK = """
model: {{name: mlp, params: {{hidden: [32]}}}}
dataset: digits
target: 0.5
reward: {reward}
deadline: 900
max_epochs: {epochs}
"""


@pytest.fixture(scope="module")
def net(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = open_home(tmp_path_factory.mktemp("network-home"))
    cfg = MINIMAL.model_copy(update={"miners": 3, "miners_per_task": 2})
    record, started = service.up(cfg, home, address="auto")
    assert started and record.groups == [["miner-0", "miner-1"], ["miner-2"]]
    yield home
    service.down(home)


def task_file(tmp_path: Path, reward: int = 100, epochs: int = 1) -> Path:
    path = tmp_path / f"task-{reward}-{epochs}-{time.time_ns()}.yaml"
    path.write_text(TASK.format(reward=reward, epochs=epochs))
    return path


def consensus():
    return ray.get_actor(CONSENSUS_NAME, namespace=NAMESPACE)


def wait_done(home: Home, task_id: str, timeout_s: float = 300) -> dict:
    view = client.wait_for(home, task_id, address=None, timeout_s=timeout_s)
    assert view["status"] == "done", view
    return view


def balance(home: Home, name: str) -> int:
    return next((a["balance"] for a in client.balances(home)["accounts"] if a["name"] == name), 0)


def test_submit_escrows_at_once_then_mines_and_delivers_a_raw_input_model(net: Home, tmp_path: Path) -> None:
    before = balance(net, "requester")
    task_id = client.submit(net, task_file(tmp_path, reward=300), requester="requester", address=None)
    assert balance(net, "requester") == before - 300 and client.balances(net)["escrow"] >= 300
    report = wait_done(net, task_id)["report"]
    info = client.result(net, task_id[:10], output=tmp_path / "model.safetensors")
    assert info["status"] == "done" and info["winner"] == report["winner"]
    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.models.evaluate import evaluate
    from dlbc_ray.models.nets import build_net

    weights = load_safetensors(tmp_path / "model.safetensors")
    accuracy = evaluate(build_net("mlp", {"hidden": [32]}, (1, 8, 8), 10), weights, load_builtin("digits").test)
    assert abs(accuracy - info["score"]) < 1e-4  # the folded model scores on raw inputs what validators measured
    # examples/use_result.py rebuilds the net from the file's own metadata, with plain PyTorch
    example = runpy.run_path(str(Path(__file__).parents[2] / "examples" / "use_result.py"))
    rebuilt = example["load_model"](tmp_path / "model.safetensors")
    test = load_builtin("digits").test
    predicted = rebuilt(torch.as_tensor(test.x)).argmax(dim=1).numpy()
    assert abs(float((predicted == test.y).mean()) - info["score"]) < 1e-4


def test_queue_is_ranked_and_groups_mine_tasks_at_the_same_time(net: Home, tmp_path: Path) -> None:
    c = consensus()
    ray.get(c.stop.remote())
    ids = {r: client.submit(net, task_file(tmp_path, reward=r, epochs=3), requester="requester", address=None)
           for r in (100, 5000, 1000)}
    queue = ray.get(c.queue.remote())
    assert [q["reward"] for q in queue] == [5000, 1000, 100]
    assert {"complexity_factor", "network_factor", "data_factor", "aging_factor"} <= set(queue[0])
    ray.get(c.start.remote())
    most = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not all(
            ray.get(c.task_view.remote(t))["status"] == "done" for t in ids.values()):
        most = max(most, len(ray.get(c.rounds.remote())))
        time.sleep(0.2)
    assert most == 2  # two disjoint miner groups were mining two tasks at once
    heights = [wait_done(net, ids[r])["report"]["height"] for r in (5000, 1000, 100)]
    assert len(set(heights)) == 3
    assert verify_chain(net.ledger).height >= max(heights)  # concurrent rounds, one valid chain


def test_transfers_go_into_the_next_blocks(net: Home) -> None:
    before = balance(net, "miner-2")
    first = client.transfer(net, "miner-2", 7, sender="requester", address=None)
    second = client.transfer(net, "miner-2", 5, sender="requester", address=None)
    assert second["height"] > first["height"]
    assert balance(net, "miner-2") == before + 12


def test_a_requester_who_cannot_pay_changes_nothing(net: Home, tmp_path: Path) -> None:
    height, supply = verify_chain(net.ledger).height, client.balances(net)["supply"]
    with pytest.raises(InvalidTask, match="balance|has"):
        client.submit(net, task_file(tmp_path, reward=10**12), requester="requester", address=None)
    assert verify_chain(net.ledger).height == height and client.balances(net)["supply"] == supply


def test_killing_a_miner_mid_round_lets_the_round_finish(net: Home, tmp_path: Path) -> None:
    c = consensus()
    ray.get(c.stop.remote())
    task_id = client.submit(net, task_file(tmp_path, reward=50, epochs=8), requester="requester", address=None)
    ray.get(c.start.remote())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rounds = ray.get(c.rounds.remote())
        miner = rounds[0].actors.get("miner-0") if rounds else None
        if miner is not None and miner.epoch >= 1:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the round never started training on miner-0")
    ray.kill(ray.get_actor(miner_name("miner-0"), namespace=NAMESPACE), no_restart=False)
    report = wait_done(net, task_id)["report"]
    assert report["winner"] == client.account(net, "miner-1")
    assert any(o["verdict"] == "failed" for o in report["outcomes"])
    assert answers_again(miner_name("miner-0"))["name"] == "miner-0"


def answers_again(name: str, timeout_s: float = 120) -> dict:
    """A restarting actor refuses calls (ActorUnavailableError) until its __init__ has run again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(ray.get_actor(name, namespace=NAMESPACE).info.remote(), timeout=30)
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_killing_the_ledger_loses_no_block(net: Home, tmp_path: Path) -> None:
    height = verify_chain(net.ledger).height
    ray.kill(ray.get_actor(LEDGER_NAME, namespace=NAMESPACE), no_restart=False)
    task_id = client.submit(net, task_file(tmp_path), requester="requester", address=None)
    wait_done(net, task_id)
    assert verify_chain(net.ledger).height >= height + 2


def test_a_restarted_consensus_recovers_its_queue_and_carries_on(net: Home, tmp_path: Path) -> None:
    ray.get(consensus().stop.remote())
    task_id = client.submit(net, task_file(tmp_path), requester="requester", address=None)
    ray.kill(consensus(), no_restart=False)
    wait_done(net, task_id, timeout_s=300)  # the new consensus rebuilt the pool from the ledger and the home


def test_up_on_a_live_network_changes_nothing(net: Home) -> None:
    record, started = service.up(MINIMAL.model_copy(update={"miners": 3}), net, address="auto")
    assert not started


def test_down_keeps_the_ledger_and_up_resumes_it(net: Home, tmp_path: Path) -> None:
    height = verify_chain(net.ledger).height
    service.down(net)
    assert service.consensus_handle() is None and verify_chain(net.ledger).height == height
    cfg = MINIMAL.model_copy(update={"miners": 3, "miners_per_task": 2})
    assert service.up(cfg, net, address="auto")[1]
    task_id = client.submit(net, task_file(tmp_path), requester="requester", address=None)
    assert wait_done(net, task_id)["report"]["height"] == height + 2  # escrow block, then the task's block
    assert np.isfinite(client.balances(net)["supply"])
