"""The demo end to end: through CliRunner on the session's Ray, and through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlbc_ray.cli.app import app
from dlbc_ray.ledger import verify_chain

pytestmark = pytest.mark.ray


def test_demo_mines_and_a_second_run_continues_the_chain(ray_session: None, tmp_path: Path) -> None:
    args = ["demo", "--preset", "minimal", "--miners", "2", "--blocks", "1", "--home", str(tmp_path), "--json"]
    first = CliRunner().invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert out["chain_valid"] and [b["height"] for b in out["blocks"]] == [1]
    block = out["blocks"][0]
    assert {"height", "hash", "prev_hash", "task_id", "winner", "score", "round_seconds"} <= set(block)
    second = json.loads(CliRunner().invoke(app, args, catch_exceptions=False).stdout)
    assert [b["height"] for b in second["blocks"]] == [2]
    assert second["blocks"][0]["prev_hash"] == block["hash"]
    assert verify_chain(tmp_path / "ledger.sqlite").height == 2


def test_console_script_runs_its_own_local_network(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "dlbc-ray"
    env = {**os.environ, "DLBC_HOME": str(tmp_path / "home")}
    env.pop("RAY_AUTH_TOKEN_PATH", None)  # the CLI must set up auth for the cluster it starts by itself
    # The minimal preset's target (0.5) is one a single 2-epoch miner always reaches.
    result = subprocess.run([str(exe), "demo", "--preset", "minimal", "--miners", "1", "--blocks", "1", "--json"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["chain_valid"] and out["blocks"][0]["winner"]
    token = tmp_path / "home" / "ray" / "auth_token"
    assert token.exists() and (token.stat().st_mode & 0o077) == 0
    assert "Traceback" not in result.stderr


def test_console_script_bad_input_is_one_line(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "dlbc-ray"
    result = subprocess.run([str(exe), "demo", "--validators", "2", "--home", str(tmp_path / "h")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "3f + 1" in result.stderr
    assert not (tmp_path / "h").exists()


def test_up_on_a_private_loopback_head_then_status_submit_and_down(tmp_path: Path) -> None:
    """`up --address local`: a head bound to 127.0.0.1 that later commands attach to (Ray rewrites
    loopback addresses to the machine's IP unless told not to). It runs on the home's own token,
    whatever token the environment names for other clusters."""
    exe = str(Path(sys.executable).parent / "dlbc-ray")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["RAY_AUTH_TOKEN"] = "another cluster's token, which the private head must not use"
    home = ["--home", str(tmp_path / "home")]

    def cli(*args: str, env: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *args, *home], capture_output=True, text=True, env=env, timeout=300)

    up = cli("up", "--address", "local", "--miners", "1", "--validators", "4")
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        status = cli("status", "--json")
        assert status.returncode == 0, status.stderr[-2000:]
        info = json.loads(status.stdout)
        names = info["members"]["miners"] + info["members"]["validators"]
        assert names == ["miner-0"] + [f"validator-{i}" for i in range(4)] and set(info["health"]) == set(names)
        again = cli("up", "--address", "local")
        assert again.returncode == 0 and "already" in (again.stdout + again.stderr)
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr[-2000:]
    # With no network recorded, `status` looks for any cluster ("auto": here the test session's own),
    # and, holding no token for it, says so in one line.
    after = cli("status", env={k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"})
    assert after.returncode != 0 and after.stderr.count("\n") == 1 and "Traceback" not in after.stderr
