"""A task that ships its own code, end to end: the package is NOT installed anywhere; the network runs it only
when its operator allowed it, miners and validators load exactly the signed package, and the delivered model
carries the winner's watermark (read in a fresh process that has the requester's own copy of the code).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlbc_ray.runtime import client, service
from dlbc_ray.config import MINIMAL, NetworkConfig
from dlbc_ray.errors import InvalidTask
from dlbc_ray.runtime.home import Home, open_home
from dlbc_ray.runtime.keystore import load_key

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_model"
DLBC = Path(sys.executable).with_name("dlbc-ray")


def _config(allow: bool) -> NetworkConfig:
    return MINIMAL.model_copy(update={"consensus": MINIMAL.consensus.model_copy(update={"allow_task_code": allow})})


@pytest.fixture(scope="module")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert importlib.util.find_spec("dlbc_resnet") is None, "the example must not be installed for this test"
    root = tmp_path_factory.mktemp("shipped")
    shutil.copytree(EXAMPLE / "dlbc_resnet", root / "dlbc_resnet", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(EXAMPLE / "task-shipped.yaml", root / "task.yaml")
    return root / "task.yaml"


@pytest.fixture
def home(ray_session: None, tmp_path: Path) -> Iterator[Home]:
    home = open_home(tmp_path / "home")
    yield home
    service.down(home)


def test_without_the_operators_opt_in_the_task_is_refused_in_one_line(home: Home, task_file: Path) -> None:
    service.up(_config(allow=False), home, address="auto")
    with pytest.raises(InvalidTask) as info:
        client.submit(home, task_file, requester="requester", address=None)
    assert info.value.reason == "task_code_off" and "\n" not in str(info.value)
    assert "start the network with `dlbc-ray up --allow-task-code`" in str(info.value)


def test_the_shipped_package_is_mined_and_delivers_a_watermarked_model(home: Home, task_file: Path,
                                                                      tmp_path: Path) -> None:
    service.up(_config(allow=True), home, address="auto")
    task_id = client.submit(home, task_file, requester="requester", address=None)
    view = client.wait_for(home, task_id, address=None, timeout_s=600)
    assert view["status"] == "done", (view.get("report") or {}).get("failure", view)
    info = client.result(home, task_id[:10], output=tmp_path / "model.safetensors")
    assert info["winner"] and info["score"] >= 0.2
    winner = next(name for name in (f"miner-{i}" for i in range(MINIMAL.miners))
                  if load_key(home, name).public_key == info["winner"])
    # The requester reads the mark with its own copy of the code on its path (nothing is installed).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(task_file.parent), os.environ.get("PYTHONPATH", "")])}
    arch = ["--model", "dlbc_resnet.nets:resnet_small", "--input-shape", "1,8,8", "--classes", "10",
            "--params", '{"width": 16, "blocks": 1}', "--home", str(home.root), "--json"]
    done = subprocess.run([str(DLBC), "watermark", "check", str(tmp_path / "model.safetensors"), "--miner", winner,
                           *arch], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["owned"], done.stdout
