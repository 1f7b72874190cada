"""`dlbc-ray watermark check` through CliRunner: verdicts, both ways to name the net, every bad input.

Marked weights come from ``watermark.settle`` on a fresh net (a second, not a training run);
identities are fixed seeds saved with the real key store, so every figure is reproducible.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dlbc_ray import crypto
from dlbc_ray.cli import watermark as watermark_cli
from dlbc_ray.cli._app import new_app
from dlbc_ray.crypto import Identity
from dlbc_ray.runtime.home import Home, open_home
from dlbc_ray.runtime.keystore import key_path, save_key
from dlbc_ray.ledger import Chain, save_safetensors
from dlbc_ray.models import watermark
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.protect import watermark_key
from dlbc_ray.models.weights import to_numpy
from tests.builders import World

runner = CliRunner()
app = new_app("test root")
app.add_typer(watermark_cli.app, name="watermark")
ALICE, BOB = Identity.from_seed("alice", b"wm-alice"), Identity.from_seed("bob", b"wm-bob")
DIGITS = ["--input-shape", "1,8,8", "--classes", "10"]


def marked(model: str, owner: Identity, flips: int = 0) -> dict[str, np.ndarray]:
    """A fresh net whose host layer carries ``owner``'s settled mark, with ``flips`` bits then turned wrong."""
    net = build_net(model, {}, (1, 8, 8), 10)
    key = watermark_key(owner.derive("watermark"), owner.public_key, net, model, 256)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny steps: extra threads only add contention (8x slower on 2 cores)
    try:
        watermark.settle(net, key, max_steps=5_000)
    finally:
        torch.set_num_threads(threads)
    weights = to_numpy(net)
    shape = weights[key.layer].shape
    blocks = key.x.shape[0] // math.prod(shape[1:])  # w averages `blocks` row blocks of the host (see filter_mean)
    for j in range(flips):  # push bit j just past the boundary along its own key column (every row of a block alike)
        margin = watermark.signed_margins(weights, key)[j]
        column = key.x[:, j] / float(key.x[:, j] @ key.x[:, j])
        sign = 1.0 if key.bits[j] else -1.0
        shift = ((margin + 0.3) * sign * column).reshape(blocks, 1, *shape[1:])
        shift = np.repeat(shift, shape[0] // blocks, axis=1).reshape(shape)
        weights[key.layer] = (weights[key.layer] - shift).astype(np.float32)
    return weights


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Home, str]:
    """A home with alice's and bob's keys, a ledger holding one digits/mlp task, and model files."""
    home = open_home(tmp_path_factory.mktemp("wm") / "home")
    save_key(home, ALICE)
    save_key(home, BOB)
    builder = World()
    chain = Chain.open(home.ledger)
    chain.import_block(builder.genesis)
    block, task = builder.round({0: [9000] * 4})
    chain.import_block(block)
    chain.close()
    task_id = crypto.message_hash(task.message)
    meta = {"task_id": task_id, "miner": ALICE.public_key, "sml_seed": "00" * 32}
    save_safetensors(marked("mlp", ALICE), home.artifacts / "alice.safetensors", meta)
    save_safetensors(marked("mlp", ALICE, flips=3), home.artifacts / "faded.safetensors", meta)
    save_safetensors(marked("mlp", ALICE), home.root / "bare.safetensors")
    save_safetensors(marked("cnn", ALICE), home.root / "cnn.safetensors")
    return home, task_id


def run(home: Home, *args: str):
    return runner.invoke(app, ["watermark", "check", *args, "--home", str(home.root)], catch_exceptions=False)


def checked(home: Home, *args: str) -> dict:
    result = run(home, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error"), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]


def test_owner_is_recognised_through_the_task_in_the_ledger(world: tuple[Home, str]) -> None:
    home, task_id = world
    before = snapshot(home.root)
    info = checked(home, str(home.artifacts / "alice.safetensors"), "--miner", "alice")
    assert snapshot(home.root) == before  # reading the ledger leaves it byte for byte as it was
    assert info["verdict"] == "owned by alice" and info["owned"] and info["ber"] == 0.0 and info["bit_errors"] == 0
    assert info["architecture_from"] == f"task {task_id}" and info["artifact_miner"] == "alice"
    assert (info["host"], info["M"], info["T"]) == ("fc.1.weight", 8192, 256) and info["margin"] > 0.5


def test_another_miner_is_not_the_owner(world: tuple[Home, str]) -> None:
    home, _ = world
    info = checked(home, str(home.artifacts / "alice.safetensors"), "--miner", "bob")
    assert info["verdict"] == "not bob's" and not info["owned"] and info["ber"] > 0.1
    assert info["artifact_miner"].startswith("another key")


def test_a_faded_mark_still_counts_as_the_miners_but_not_as_owned(world: tuple[Home, str]) -> None:
    home, _ = world
    info = checked(home, str(home.artifacts / "faded.safetensors"), "--miner", "alice")
    assert 0 < info["bit_errors"] <= 6 and info["verdict"] == "carries alice's mark" and not info["owned"]
    assert info["chance"] < 1e-6 and info["carried"]


def test_model_options_stand_in_for_a_task(world: tuple[Home, str]) -> None:
    home, _ = world
    info = checked(home, str(home.root / "bare.safetensors"), "--miner", "alice", "--model", "mlp", *DIGITS)
    assert info["verdict"] == "owned by alice" and info["architecture_from"] == "options"
    cnn = checked(home, str(home.root / "cnn.safetensors"), "--miner", "alice", "--model", "cnn", *DIGITS)
    assert cnn["verdict"] == "owned by alice" and (cnn["host"], cnn["T"]) == ("conv.1.weight", 72)


def test_text_output_names_the_verdict(world: tuple[Home, str]) -> None:
    home, _ = world
    result = run(home, str(home.artifacts / "alice.safetensors"), "--miner", "alice")
    assert result.exit_code == 0 and "owned by alice" in result.stdout and "BER" in result.stdout


def _bad_files(home: Home) -> dict[str, Path]:
    """Broken model files, written once next to the good ones."""
    good = (home.artifacts / "alice.safetensors").read_bytes()
    files = {"text": b"not a model\n", "header_cut": good[:40], "data_cut": good[: len(good) // 2], "empty": b""}
    paths = {}
    for name, data in files.items():
        paths[name] = home.root / "bad" / f"{name}.safetensors"
        paths[name].parent.mkdir(exist_ok=True)
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("name", ["text", "header_cut", "data_cut", "empty"])
def test_broken_model_files_are_one_line(world: tuple[Home, str], name: str) -> None:
    home, _ = world
    path = _bad_files(home)[name]
    before = snapshot(home.root)
    one_line_error(run(home, str(path), "--miner", "alice"), 7, "safetensors")
    assert snapshot(home.root) == before


@pytest.mark.parametrize(("args", "code", "words"), [
    (["cnn.safetensors", "--model", "mlp", *DIGITS], 7, ["wrong architecture"]),
    (["bare.safetensors", "--model", "cnn", *DIGITS], 7, ["wrong architecture"]),
    (["bare.safetensors", "--model", "mlp", "--input-shape", "1,8,8", "--classes", "3"], 7, ["wrong architecture"]),
    (["bare.safetensors", "--model", "mlp", *DIGITS, "--params", '{"hidden": [64]}'], 7, ["wrong architecture"]),
    (["missing.safetensors", "--model", "mlp", *DIGITS], 7, ["no such model file"]),
    (["bare.safetensors"], 2, ["names no task", "--model"]),
    (["bare.safetensors", "--model", "mlp"], 2, ["--input-shape"]),
    (["bare.safetensors", "--classes", "10"], 2, ["go with --model"]),
    (["bare.safetensors", "--model", "mlp", "--input-shape", "1,x", "--classes", "10"], 2, ["--input-shape"]),
    (["bare.safetensors", "--model", "mlp", *DIGITS, "--params", "[1]"], 2, ["--params"]),
    (["bare.safetensors", "--model", "resnet", *DIGITS], 4, ["unknown net"]),
])
def test_bad_architecture_and_options_are_one_line(world: tuple[Home, str], args: list[str], code: int,
                                                   words: list[str]) -> None:
    home, _ = world
    before = snapshot(home.root)
    one_line_error(run(home, str(home.root / args[0]), "--miner", "alice", *args[1:]), code, *words)
    assert snapshot(home.root) == before


def test_a_task_missing_from_the_ledger_is_one_line(world: tuple[Home, str], tmp_path: Path) -> None:
    home, _ = world
    other = open_home(tmp_path / "other")
    save_key(other, ALICE)
    one_line_error(run(other, str(home.artifacts / "alice.safetensors"), "--miner", "alice"), 2, "no ledger")


def test_unknown_miner_is_one_line(world: tuple[Home, str]) -> None:
    home, _ = world
    one_line_error(run(home, str(home.artifacts / "alice.safetensors"), "--miner", "carol"), 3, "no key file")


@pytest.mark.parametrize("damage", ["short_secret", "loose_mode", "not_json"])
def test_broken_key_files_are_one_line(tmp_path: Path, world: tuple[Home, str], damage: str) -> None:
    home, _ = world
    mallory = open_home(tmp_path / "m")
    save_key(mallory, Identity.from_seed("mallory", b"mallory"))
    path = key_path(mallory, "mallory")
    if damage == "short_secret":
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "secret_key": "ab" * 16}))
    elif damage == "loose_mode":
        os.chmod(path, 0o644)
    else:
        path.write_text("{{{")
    before = snapshot(mallory.root)
    result = run(mallory, str(home.artifacts / "alice.safetensors"), "--miner", "mallory")
    one_line_error(result, 3, str(path))
    assert snapshot(mallory.root) == before


@pytest.mark.parametrize("command", [["watermark", "--help"], ["watermark", "check", "--help"]])
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 0 and "Usage" in result.output


def test_importing_the_command_does_not_load_torch() -> None:
    """Every `dlbc-ray` start imports this module; torch waits for the command that reads weights."""
    code = "import sys, dlbc_ray.cli.watermark; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
