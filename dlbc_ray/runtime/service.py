"""A network that stays up: `up`, `down`, attaching to it, and what users do with it.

``up`` starts the ledger, consensus, miners and validators as named, detached actors in
the ``dlbc`` namespace of a Ray cluster (an existing one, or a private local head that
it starts on 127.0.0.1). ``<home>/network.json`` records where it runs, so later
commands attach to it; the ledger stays on disk, so the next ``up`` resumes the chain.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from pydantic import Field, ValidationError

from dlbc_ray.runtime import localhead
from dlbc_ray.actors.names import CONSENSUS_NAME, LEDGER_NAME, NAMESPACE, miner_name, placement_group_name, validator_name
from dlbc_ray.actors.standing import StandingTemplate
from dlbc_ray.config import NetworkConfig
from dlbc_ray.errors import ConfigError, NetworkNotRunning
from dlbc_ray.runtime.home import Home
from dlbc_ray.runtime.network import assemble, standing_template
from dlbc_ray.runtime.identities import check_home, load_identities
from dlbc_ray.runtime.raystart import ensure_home_token, local_resources
from dlbc_ray.schema.base import FrozenModel, Millis

log = logging.getLogger(__name__)
RECORD = "network.json"
MAX_RECORD_BYTES = 64 * 1024
PROBE_TIMEOUT_S = 3.0  # a cluster's address that takes longer to accept a connection is taken as down


class NetworkRecord(FrozenModel):
    """Where a network started from this home runs."""

    address: str
    head_pid: int | None = Field(default=None, description="leader of a local head that `up` started")
    head_temp_dir: str | None = None
    dashboard: str | None = None
    miners: list[str]
    validators: list[str]
    groups: list[list[str]]
    started_ms: Millis


def read_record(home: Home) -> NetworkRecord | None:
    """The home's network record, None without one; a damaged one is a ConfigError naming the file."""
    path = home.root / RECORD
    if not path.exists():
        return None
    try:
        return NetworkRecord.model_validate_json(path.read_bytes()[:MAX_RECORD_BYTES + 1])
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the network record ({e.strerror})", reason="network_record") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise ConfigError(f"{path}: {where}: {first['msg']}"[:300] + "; `dlbc-ray down` or delete it to start over",
                          reason="network_record") from None


# --------------------------------------------------------------------- Ray


def start_head(home: Home, cfg: NetworkConfig) -> localhead.LocalHead:
    """A private head on 127.0.0.1 for this home, with the home's token (0600)."""
    use_home_token(home)
    # Short: Ray's unix socket paths under the temp dir must stay under 108 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="dlbc-ray-", dir="/tmp"))
    return localhead.start(temp_dir, home.ray_token, num_cpus=cfg.ray_num_cpus, resources=local_resources(cfg))


def use_home_token(home: Home) -> None:
    """Talk to this home's own local head with the home's token, whatever token the environment names."""
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(ensure_home_token(home))


def connect(home: Home, address: str | None) -> NetworkRecord | None:
    """Attach this process to the cluster: the given address, else the one this home's network uses."""
    record = read_record(home)
    target = address or (record.address if record else "auto")
    if ray.is_initialized():  # attached already (an in-process caller): a recorded network that stopped says so
        if target != "auto" and target != _attached_address():
            check_listening(target)
        return record
    if record and record.head_pid and target == record.address:
        use_home_token(home)
    check_listening(target)
    if localhead.is_loopback(target):
        localhead.keep_loopback_driver()
    try:
        ray.init(address=target, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
    except ray.exceptions.AuthenticationError:
        raise NetworkNotRunning(f"no Ray cluster this home can attach to at {target} (no auth token for it); "
                                "start a network with `dlbc-ray up`, or set RAY_AUTH_TOKEN_PATH to the cluster's "
                                "token", reason="no_cluster") from None
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = "start one with `ray start --head` or use `dlbc-ray up --address local`"
        raise NetworkNotRunning(f"no Ray cluster at {target}: {str(e).splitlines()[0][:100]}; {hint}",
                                reason="no_cluster") from None
    if not (record and record.head_pid and target == record.address):  # a head we did not start ourselves
        check_cluster_auth(target)
    return record


def _attached_address() -> str:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except (AttributeError, RuntimeError):
        return ""


def check_cluster_auth(target: str) -> None:
    """Refuse a cluster whose workers run without token auth (our driver's own mode says nothing about it)."""
    if os.environ.get("DLBC_INSECURE_NO_AUTH") == "1":
        return
    mode = localhead.cluster_auth_mode()
    if mode != "token":
        ray.shutdown()
        raise ConfigError(f"the Ray cluster at {target} runs without token auth ({mode}): anyone who reaches its "
                          "ports could run code in our actors; restart it with RAY_AUTH_MODE=token, or pass "
                          "--insecure-no-auth to use it anyway", reason="auth")


def check_listening(target: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """NetworkNotRunning at once when nothing listens at the cluster's address (Ray itself would retry for
    minutes); 'auto' is resolved as Ray resolves it. Only a plain host:port is probed."""
    address = target
    if target == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address("auto") or ""
        except (ImportError, AttributeError, ConnectionError, ValueError):
            return  # Ray's own lookup decides
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or "://" in host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError, OverflowError):
        raise NetworkNotRunning(f"no Ray cluster at {address[:100]}: nothing answers there; start a network with "
                                "`dlbc-ray up`", reason="no_cluster") from None


def consensus_handle() -> Any:
    try:
        return ray.get_actor(CONSENSUS_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def attach(home: Home, address: str | None = None) -> Any:
    """The running network's consensus actor, or NetworkNotRunning."""
    connect(home, address)
    handle = consensus_handle()
    if handle is None:
        raise NetworkNotRunning("no dlbc-ray network is up on this Ray cluster; start one with `dlbc-ray up`",
                                reason="not_up")
    return handle


def ship_code(task_file: Path, task: Any) -> None:
    """Upload the package a task file names (``code:``) to the attached cluster, as the task signs it."""
    if task.code is None:
        return
    from dlbc_ray.actors.task_code import upload
    from dlbc_ray.runtime.taskfile import read_task_file

    upload(Path(read_task_file(task_file).code or ""), task.code)


# --------------------------------------------------------------------- up / down


def up(cfg: NetworkConfig, home: Home, *, address: str, new_chain: bool = False,
       on_stage: Callable[[str], None] = lambda text: None) -> tuple[NetworkRecord, bool]:
    """Start the network; returns (record, started). Against a live network, changes nothing."""
    check_home(home, cfg, new_chain=new_chain)
    record = read_record(home)
    if record and consensus_running(home, record):
        return record, False
    head = start_head(home, cfg) if address == "local" else None
    if head:
        on_stage(f"started a local Ray head on {head.address}")
    came_up = False
    try:
        connect(home, head.address if head else address)
        if consensus_handle() is not None:
            came_up = True
            return NetworkRecord(address=address, miners=[], validators=[], groups=[], started_ms=0), False
        ids = load_identities(home, cfg)
        on_stage(f"starting {cfg.miners} miners and {cfg.validators} validators")
        groups = assemble(cfg, home, ids, detached=True, standing=_standing(cfg) if cfg.pole.enabled else None).groups
        came_up = True
    finally:
        if head and not came_up:  # a head we started for a network that never came up must not outlive us
            ray.shutdown()
            localhead.stop(head)
    record = NetworkRecord(address=head.address if head else address, head_pid=head.pid if head else None,
                           head_temp_dir=str(head.temp_dir) if head else None,
                           dashboard=head.dashboard if head else None, miners=[i.name for i in ids.miners],
                           validators=[i.name for i in ids.validators], groups=groups,
                           started_ms=time.time_ns() // 10**6)
    (home.root / RECORD).write_text(record.model_dump_json(indent=2))
    return record, True


def _head(record: NetworkRecord) -> localhead.LocalHead | None:
    if record.head_pid is None or record.head_temp_dir is None:
        return None
    return localhead.LocalHead(record.address, record.dashboard or "", record.head_pid, Path(record.head_temp_dir))


def consensus_running(home: Home, record: NetworkRecord) -> bool:
    """Whether the network this home recorded still answers (its local head may be long gone)."""
    head = _head(record)
    if head is not None and not localhead.is_running(head):
        return False
    try:
        connect(home, record.address)
    except NetworkNotRunning:
        return False
    return consensus_handle() is not None


def _standing(cfg: NetworkConfig) -> StandingTemplate:
    """PoLe's standing task for a long-lived network: the default task's model and built-in data."""
    from dlbc_ray.models.data import load_builtin

    return standing_template(cfg, load_builtin(cfg.task.dataset))


def down(home: Home, address: str | None = None) -> list[str]:
    """Stop every actor of the network (the ledger stays on disk) and a local head `up` started."""
    from ray.util.placement_group import get_placement_group, remove_placement_group

    record = read_record(home)
    head = _head(record) if record else None
    if head is not None and not localhead.is_running(head):  # the head is gone already (a reboot, a kill)
        localhead.stop(head)
        (home.root / RECORD).unlink(missing_ok=True)
        return []
    connect(home, address)
    stopped = []
    names = [CONSENSUS_NAME, LEDGER_NAME]
    if record:
        names += [miner_name(n) for n in record.miners] + [validator_name(n) for n in record.validators]
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            stopped.append(name)
        except ValueError:
            continue
    for index in range(len(record.groups) if record else 0):
        try:
            remove_placement_group(get_placement_group(placement_group_name(index)))
        except ValueError:
            continue
    if head is not None:
        ray.shutdown()
        localhead.stop(head)
        shutil.rmtree(head.temp_dir, ignore_errors=True)
        stopped.append("local Ray head")
    (home.root / RECORD).unlink(missing_ok=True)
    return stopped
