"""Auth off is never silent (issue 10's kind (f)): a driver in token mode attaches to a Ray cluster that runs
WITHOUT auth as readily as to one with it, so `dlbc-ray up/submit/status --address` there would run
the network, signing keys and all, on a cluster anyone who reaches its ports controls.

A real head on 127.0.0.1 started with RAY_AUTH_MODE=disabled (its own temp dir; only its own processes are
stopped afterwards); clients run as subprocesses so this test process never attaches to Ray.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlbc_ray.runtime import localhead
from dlbc_ray.runtime.home import open_home


@pytest.fixture(scope="module")
def open_cluster() -> Iterator[str]:
    port = localhead.free_ports(1)[0]
    temp = Path(tempfile.mkdtemp(prefix="dlbc-rt-", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    ray_cli = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen([ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not localhead._listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the unauthenticated head did not start"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # ours alone: the session this test started
        proc.wait(timeout=60)
        for pid in localhead.pids_mentioning(temp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def client_env(tmp_path: Path) -> dict[str, str]:
    token = tmp_path / "token"
    token.write_text("t" * 64)
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


def test_the_clusters_own_auth_mode_is_read(open_cluster: str, tmp_path: Path) -> None:
    code = ("import logging, ray; from dlbc_ray.runtime import localhead; "
            f"ray.init(address={open_cluster!r}, logging_level=logging.ERROR, log_to_driver=False); "
            "print('MODE', localhead.cluster_auth_mode())")
    done = subprocess.run([sys.executable, "-c", code], env=client_env(tmp_path), capture_output=True, text=True,
                          timeout=180)
    assert "MODE disabled" in done.stdout, done.stderr[-800:]  # the driver itself was in token mode


def test_a_cluster_without_auth_is_refused_by_name(open_cluster: str, tmp_path: Path) -> None:
    home = open_home(tmp_path / "home")
    done = subprocess.run([sys.executable, "-c", "from dlbc_ray.cli.app import main; main()", "status", "--address",
                           open_cluster, "--home", str(home.root)], env=client_env(tmp_path), capture_output=True,
                          text=True, timeout=180)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1, done.stderr[-800:]
    assert "auth" in lines[0] and "--insecure-no-auth" in lines[0], lines[0]
