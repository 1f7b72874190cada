"""A private Ray head on loopback: GCS, dashboard and Jobs API on 127.0.0.1, token auth on.

Used by ``dlbc-ray up --address local`` and by tests that need a second cluster. It must
coexist with other Ray clusters on the machine, so every port is picked free and the
temp dir is its own; ``stop`` ends this head alone (``ray stop`` would end them all).
Facts of Ray 2.60 this relies on: ``--node-ip-address=127.0.0.1`` is rewritten to the
machine's IP unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; SIGTERM to the
``ray start --block`` leader stops its children, at once with a zero drain timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dlbc_ray.errors import ConfigError, NetworkNotRunning

LOOPBACK = "127.0.0.1"

PORT_FLAGS = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "runtime-env-agent-port", "node-manager-port", "object-manager-port", "metrics-export-port",
              "ray-client-server-port")


@dataclass(frozen=True)
class LocalHead:
    address: str  # GCS, for ray.init
    dashboard: str  # dashboard and Jobs API
    pid: int  # the `ray start --block` leader; its process group is the head's
    temp_dir: Path


def is_loopback(address: str) -> bool:
    """Whether a GCS address (``host:port``) names this machine's loopback."""
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def keep_loopback_driver() -> None:
    """Let this process attach to a head on 127.0.0.1 as a loopback node.

    Ray 2.60's driver rewrites a loopback bootstrap address, and its own node address, to
    the machine's IP (``services.resolve_ip_for_localhost``), where a head bound to
    127.0.0.1 does not answer. Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at
    import, so the environment (for child processes) and the constant (for this one) are
    set together. Only for loopback heads: a driver of a real cluster keeps its real IP.
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def free_ports(n: int) -> list[int]:
    """n distinct ports the OS calls free now (held open together, so no duplicates)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def check_token_file(path: Path) -> Path:
    """Refuse a Ray token file that is missing, not a regular file, or readable by others (it must be 0600)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"Ray token file {path}: {e.strerror}", reason="ray_token") from None
    except ValueError:  # a NUL byte in the name
        raise ConfigError(f"Ray token file {path!r}: not a valid path", reason="ray_token") from None
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"Ray token file {path} is not a regular file", reason="ray_token")
    if mode & 0o077:
        raise ConfigError(f"Ray token file {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path})",
                          reason="ray_token")
    return path


def head_env(token_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path), "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    return env


def start(temp_dir: Path, token_path: Path, *, num_cpus: int | None = None, resources: dict[str, float] | None = None,
          object_store_bytes: int | None = None, timeout_s: float = 90) -> LocalHead:
    """Start the head and wait until its GCS and dashboard answer; the log is ``temp_dir/head.log``."""
    check_token_file(token_path)
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp_dir / 'ray'}",
           "--disable-usage-stats", "--min-worker-port=0", "--max-worker-port=0",
           *(f"--{flag}={port}" for flag, port in ports.items())]
    cmd += [f"--num-cpus={num_cpus}"] if num_cpus else []
    cmd += [f"--resources={json.dumps(resources)}"] if resources else []
    cmd += [f"--object-store-memory={object_store_bytes}"] if object_store_bytes else []
    temp_dir.mkdir(parents=True, exist_ok=True)
    log = temp_dir / "head.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=head_env(token_path), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    head = LocalHead(f"127.0.0.1:{ports['port']}", f"http://127.0.0.1:{ports['dashboard-port']}", proc.pid, temp_dir)
    if not _wait(proc, [ports["port"], ports["dashboard-port"]], timeout_s):
        stop(head)
        raise NetworkNotRunning(f"the local Ray head did not start within {timeout_s:.0f} s; see {log}",
                                reason="head")
    return head


def _wait(proc: subprocess.Popen[bytes], ports: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if all(_listening(p) for p in ports):
            return True
        time.sleep(0.25)
    return False


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(head: LocalHead, timeout_s: float = 30) -> list[int]:
    """SIGTERM the leader (it stops its children), then SIGKILL whatever of this head is left."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(head.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(head.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in set(live_group(head.pid)) | set(pids_mentioning(head.temp_dir)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while live_group(head.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return live_group(head.pid)


def is_running(head: LocalHead) -> bool:
    return _alive(head.pid) and _listening(int(head.address.rsplit(":", 1)[1]))


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc/PID/stat, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2])


def live_group(pgid: int) -> list[int]:
    """Running pids of the head's process group (a zombie has exited and only awaits reaping)."""
    pids = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]
    return [pid for pid in pids if (stat := _proc_stat(pid)) is not None and stat[1] == pgid and stat[0] != "Z"]


def pids_mentioning(temp_dir: Path) -> list[int]:
    """Pids whose command line names this head's private temp dir (workers may leave its group)."""
    found = []
    for d in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if d.name.isdigit() and str(temp_dir).encode() in (d / "cmdline").read_bytes():
                found.append(int(d.name))
    return found


def cluster_auth_mode(timeout_s: float = 60.0) -> str:
    """The auth mode the connected cluster's own workers run with: ``token`` or ``disabled``.

    Our driver's mode says nothing about the cluster's: a driver in token mode attaches to a
    cluster that runs without auth, silently, and every actor it then starts (signing keys
    included) is open to whoever reaches that cluster's ports. One task asks a worker there.
    """
    import ray

    from dlbc_ray.actors._ray import get

    probe = ray.remote(num_cpus=0, max_retries=0)(_auth_mode_here)
    return str(get(probe.remote(), timeout=timeout_s, what="the cluster's auth mode"))


def _auth_mode_here() -> str:
    from ray._private.authentication.authentication_utils import get_authentication_mode_name
    from ray._raylet import get_authentication_mode

    return str(get_authentication_mode_name(get_authentication_mode()))
