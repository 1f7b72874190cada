"""Nothing the demo starts listens beyond loopback (issue 10, finding 7).

The console script runs a demo network of the smallest config while this test lists,
every second, the listening TCP sockets of every process under it (the driver, GCS,
raylet, agents, workers), read from /proc: Linux only, no extra dependency.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Not `slow`: CI's fast path keeps this promise under test (about 110 s).
pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")]


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) if d.name.isdigit() else None
        except (OSError, IndexError):
            continue
        if ppid is not None:
            children.setdefault(ppid, []).append(int(d.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def host_of(hex_address: str, v6: bool) -> str:
    raw = bytes.fromhex(hex_address.split(":")[0])
    if v6:  # four host-order 32-bit words
        return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return socket.inet_ntop(socket.AF_INET, raw[::-1])


def listening(pids: list[int]) -> set[tuple[str, str, int]]:
    """(process name, host, port) of every TCP socket these processes hold in LISTEN state."""
    owner = {inode: pid for pid in pids for inode in socket_inodes(pid)}
    found = set()
    for table, v6 in (("tcp", False), ("tcp6", True)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[9]) in owner:  # 0A: TCP_LISTEN
                pid = owner[int(fields[9])]
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    name = "?"
                found.add((name, host_of(fields[1], v6), int(fields[1].split(":")[1], 16)))
    return found


def is_loopback(host: str) -> bool:
    ip = ipaddress.ip_address(host)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_loopback_helper() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1"))


def test_demo_network_listens_on_loopback_only(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "dlbc-ray"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["DLBC_HOME"] = str(tmp_path / "home")
    args = [str(exe), "demo", "--preset", "minimal", "--miners", "1", "--blocks", "1", "--json"]
    seen: set[tuple[str, str, int]] = set()
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= listening(descendants(proc.pid))
            time.sleep(1.0)
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
    # Whether the round commits is test_cli_demo's business; this test needs the network to have run.
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names and sum(n.startswith("ray::") for n in names) >= 2, \
        f"the network was never seen listening: {sorted(seen)}; exit {proc.returncode}: {stderr[-1500:]}"
    exposed = sorted(s for s in seen if not is_loopback(s[1]))
    assert not exposed, f"listening beyond loopback: {exposed}"
