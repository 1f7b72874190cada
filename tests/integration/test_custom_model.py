"""examples/custom_model end to end: a user's package adds a net through the ``dlbc_ray.nets`` entry point,
a network mines its task, and the delivered model carries the winner's watermark.

The package is installed into this environment for the test only (offline: it has no dependencies
of its own) and removed afterwards. It is a regular install, not an editable one: Ray workers that
started before the install still find a package in site-packages, not a path a .pth file adds at startup.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlbc_ray.runtime import client, service
from dlbc_ray.config import MINIMAL
from dlbc_ray.runtime.home import Home, open_home
from dlbc_ray.runtime.keystore import load_key

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_model"
DLBC = Path(sys.executable).with_name("dlbc-ray")


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    build = tmp_path_factory.mktemp("custom-model-src")
    subprocess.run(["cp", "-r", str(EXAMPLE), str(build)], check=True)  # no egg-info left in the checkout
    done = _pip("install", "--no-deps", "--no-build-isolation", "--quiet", str(build / EXAMPLE.name))
    if done.returncode != 0:
        pytest.skip(f"cannot install examples/custom_model offline: {done.stderr.strip()[-300:]}")
    yield
    _pip("uninstall", "--yes", "--quiet", "dlbc-resnet")
    # gone from this process too: find_spec answers from sys.modules first, so a later test that ships the same
    # package as task code (test_task_code) would otherwise still find the uninstalled one
    for name in [m for m in sys.modules if m == "dlbc_resnet" or m.startswith("dlbc_resnet.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def net(installed: None, ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = open_home(tmp_path_factory.mktemp("custom-model-home"))
    service.up(MINIMAL, home, address="auto")
    yield home
    service.down(home)


def _cli(*args: str) -> dict | list:
    done = subprocess.run([str(DLBC), *args, "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_installed_net_is_listed_with_its_parameters(installed: None) -> None:
    rows = {row["name"]: row for row in _cli("nets")}
    row = rows["resnet_small"]
    assert row["source"] == "entry point dlbc_resnet.nets:resnet_small" and row["params"] == {"width": 16, "blocks": 2}
    assert (row["first_layer"], row["watermark_layer"]) == ("stem.weight", "blocks.0.conv1.weight")
    assert {"mlp", "cnn", "cnn1d"} <= rows.keys()


def test_the_example_task_is_mined_and_delivers_a_watermarked_model(net: Home, tmp_path: Path) -> None:
    task_id = client.submit(net, EXAMPLE / "task.yaml", requester="requester", address=None)
    view = client.wait_for(net, task_id, address=None, timeout_s=600)
    assert view["status"] == "done", view
    info = client.result(net, task_id[:10], output=tmp_path / "model.safetensors")
    assert info["winner"] and info["score"] >= 0.2
    winner = next(name for name in (f"miner-{i}" for i in range(MINIMAL.miners))
                  if load_key(net, name).public_key == info["winner"])
    # A fresh process reads the mark, as a requester would: the net comes from the entry point.
    arch = ["--model", "resnet_small", "--input-shape", "1,8,8", "--classes", "10", "--params",
            '{"width": 16, "blocks": 1}', "--home", str(net.root)]
    mark = _cli("watermark", "check", str(tmp_path / "model.safetensors"), "--miner", winner, *arch)
    assert mark["net"] == "resnet_small" and mark["owned"], mark
    other = next(name for name in (f"miner-{i}" for i in range(MINIMAL.miners)) if name != winner)
    assert not _cli("watermark", "check", str(tmp_path / "model.safetensors"), "--miner", other, *arch)["carried"]
