"""Starting or sizing the Ray cluster a network runs on: token auth, a private loopback head, resources."""

from __future__ import annotations

import logging
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from dlbc_ray.actors.names import NAMESPACE, placement_group_name
from dlbc_ray.config import NetworkConfig
from dlbc_ray.errors import ConfigError
from dlbc_ray.runtime.home import Home
from dlbc_ray.runtime.localhead import LOOPBACK, check_token_file, keep_loopback_driver


def configure_ray_auth(home: Home, *, local: bool) -> None:
    """Token auth for a cluster we start ourselves, with a token kept in the home (mode 0600).

    The mode must be ``token`` (``dlbc_ray.cli`` decides it before Ray is imported); any
    other is refused unless the CLI's ``--insecure-no-auth`` set ``DLBC_INSECURE_NO_AUTH``.
    Connecting to another cluster uses whatever token the user configured for it.
    """
    if not local:
        return
    mode = os.environ.setdefault("RAY_AUTH_MODE", "token")
    if mode.strip().lower() != "token":
        if os.environ.get("DLBC_INSECURE_NO_AUTH") == "1":
            return
        raise ConfigError(f"RAY_AUTH_MODE={mode[:40]!r} would start Ray without token auth; unset it, or pass "
                          "--insecure-no-auth", reason="auth")
    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    given = os.environ.get("RAY_AUTH_TOKEN_PATH")
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(check_token_file(Path(given)) if given else ensure_home_token(home))


def ensure_home_token(home: Home) -> Path:
    """The home's Ray token file, made (random, 0600 in a 0700 folder) if missing; refused if others can read it."""
    path = home.ray_token
    if os.path.lexists(path):
        return check_token_file(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def start_local_ray(home: Home, cfg: NetworkConfig, *, object_store_mb: int | None = None) -> bool:
    """A private single-node Ray for this process, on 127.0.0.1 only; returns whether we started it.

    Without ``_node_ip_address`` Ray's servers bind every interface; Ray rewrites a loopback
    node address to the machine's IP unless ``keep_loopback_driver`` says otherwise.
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    configure_ray_auth(home, local=True)
    keep_loopback_driver()
    ray.init(address="local", num_cpus=cfg.ray_num_cpus or os.cpu_count(), include_dashboard=False,
             _node_ip_address=LOOPBACK, dashboard_host=LOOPBACK,
             namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False,
             resources=local_resources(cfg), object_store_memory=object_store_mb * 2**20 if object_store_mb else None)
    return True


def local_resources(cfg: NetworkConfig) -> dict[str, float]:
    """A single-node cluster we start hosts every miner and validator."""
    return {"dlbc_miner": float(cfg.miners), "dlbc_validator": float(cfg.validators)}


def check_resources(cfg: NetworkConfig) -> None:
    """Refuse, up front, a cluster that can never host these actors."""
    have = ray.cluster_resources()
    for what, need in [*((k, v * cfg.miners) for k, v in cfg.miner.resources.items()),
                       *((k, v * cfg.validators) for k, v in cfg.validator.resources.items()),
                       ("GPU", cfg.miner.num_gpus * cfg.miners)]:
        if need and have.get(what, 0.0) < need:
            raise ConfigError(f"this Ray cluster has {have.get(what, 0.0):g} '{what}' but the network needs {need:g}; "
                              f"start nodes with that resource (see cluster.yaml)", reason="resources")


def share_cpus(cfg: NetworkConfig) -> NetworkConfig:
    """Miners with no explicit num_cpus split the free CPUs equally (validators idle meanwhile)."""
    if cfg.miner.num_cpus is not None:
        return cfg
    total = float(ray.available_resources().get("CPU", 1.0))
    share = max(0.1, math.floor(100 * total / cfg.miners) / 100)
    return cfg.model_copy(update={"miner": cfg.miner.model_copy(update={"num_cpus": share})})


class _PlacedRestartable(logging.Filter):
    """Ray warns that a restartable actor in a placement group dies with the group. Ours are
    detached groups removed only by `down`, which ends those actors on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "restartable detached actor with a placement group" not in record.getMessage()


@dataclass(frozen=True)
class Placement:
    """Where a network's actors run: anywhere (a demo), or a long-lived network's layout: ledger and
    consensus pinned to this node, each miner group gang-placed in a detached placement group, packed onto
    as few nodes as fit or spread across nodes (``MinerConfig.placement``)."""

    here: dict[str, Any] = field(default_factory=dict)
    groups: tuple[Any, ...] = ()

    @classmethod
    def for_network(cls, cfg: NetworkConfig, groups: list[list[str]], *, detached: bool) -> Placement:
        if not detached:
            return cls()
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        logging.getLogger("ray.actor").addFilter(_PlacedRestartable())
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        placed = []
        for index, group in enumerate(groups):
            bundles = [miner_bundle(cfg) for _ in group]
            pg = placement_group(bundles, strategy=cfg.miner.placement, name=placement_group_name(index),
                                 lifetime="detached")
            if not pg.wait(timeout_seconds=120):
                raise ConfigError(f"the cluster cannot place miner group {index}: each miner needs {bundles[0]}",
                                  reason="resources")
            placed.append(pg)
        return cls(here={"scheduling_strategy": here}, groups=tuple(placed))

    def miner(self, group: int, slot: int) -> dict[str, Any]:
        """The scheduling options of the ``slot``-th miner of miner group ``group``."""
        if not self.groups:
            return {}
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=self.groups[group], placement_group_bundle_index=slot)}


def miner_bundle(cfg: NetworkConfig) -> dict[str, float]:
    """A miner's bundle is what its actor reserves (a data-parallel miner's workers are placed by Ray Train)."""
    from dlbc_ray.actors.spawn import miner_resources

    return miner_resources(cfg.miner)
