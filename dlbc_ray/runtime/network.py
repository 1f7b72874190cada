"""Assembling a network on Ray and driving it: identities, genesis, actors, rounds.

Everything here is callable from Python (``run_demo``); the CLI only adds display.
Checks that can fail on user input run before anything is written to the home.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray

from dlbc_ray import crypto
from dlbc_ray.actors._ray import Member, get, is_ready
from dlbc_ray.actors.coordinator import StandingTemplate
from dlbc_ray.actors.round_parts import round_budget_s
from dlbc_ray.actors.round_runner import TaskData, miner_policy, now_ms
from dlbc_ray.config import NetworkConfig, TaskDefaults
from dlbc_ray.consensus import make_genesis
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import DLBCError
from dlbc_ray.runtime.home import Home
from dlbc_ray.ledger import ledger_status, stored_chain_id, verify_chain
from dlbc_ray.runtime.identities import Identities, check_home, genesis_params, load_identities
from dlbc_ray.runtime.raystart import (Placement, check_resources, configure_ray_auth, ensure_home_token,
                                       local_resources, share_cpus, start_local_ray)
from dlbc_ray.schema import DatasetSpec, ModelSpec, Signed, Task
from dlbc_ray.schema.round_messages import RoundReport, RoundStatus

log = logging.getLogger(__name__)
__all__ = ["DemoResult", "Identities", "Network", "Role", "TaskData", "assemble", "check_home", "configure_ray_auth",
           "dataset_spec", "ensure_home_token", "genesis_params", "load_identities", "local_resources", "make_task",
           "run_demo", "run_round", "standing_template", "start_local_ray", "teardown"]


@dataclass
class Network:
    ledger: Any
    consensus: Any
    miners: list[Member]
    validators: list[Member]
    identities: Identities
    chain_id: str
    groups: list[list[str]] = field(default_factory=list)

    def actors(self) -> list[Any]:
        return [self.consensus, self.ledger, *(m.handle for m in self.miners + self.validators)]


@dataclass
class DemoResult:
    reports: list[RoundReport]
    chain_valid: bool
    names: dict[str, str]
    chain_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Role:
    """Who plays a named miner or validator: another actor class (an adversary) and its extra arguments."""

    actor_class: type
    init: dict[str, Any] = field(default_factory=dict)


def assemble(cfg: NetworkConfig, home: Home, ids: Identities, genesis_ms: int | None = None,
             roles: dict[str, Role] | None = None, *, detached: bool = False,
             standing: StandingTemplate | None = None) -> Network:
    """Spawn ledger, miners, validators and consensus; tell validators each miner's watermark key.

    The one spawn path. ``detached``: a long-lived network (``dlbc-ray up``): named actors
    that outlive this driver, ledger and consensus pinned to this node, each miner group
    gang-placed, consensus finding the others by name and mining by itself (``standing``:
    PoLe's task when idle). Otherwise anonymous actors that end with this driver, all
    started side by side (a demo, a test). ``roles`` swaps in other actor classes by
    identity name (the adversary suite's honest-looking miners and validators).
    """
    # torch loads here, in the driver only for the validators' and miners' classes, once Ray is already starting
    from dlbc_ray.actors.spawn import spawn_consensus, spawn_ledger, spawn_miner, spawn_validator
    from dlbc_ray.runtime.reaudit import keep_config

    roles = roles or {}
    options = lambda name: ({"actor_class": roles[name].actor_class, "init": roles[name].init}  # noqa: E731
                            if name in roles else {})
    check_resources(cfg)
    cfg = share_cpus(cfg)
    when = genesis_ms or now_ms()
    genesis = None if ledger_status(home.ledger) == "chain" else make_genesis(genesis_params(ids, cfg, when),
                                                                              ids.consensus, when)
    groups = miner_groups([m.name for m in ids.miners], cfg.miners_per_task)
    place = Placement.for_network(cfg, groups, detached=detached)
    kept = {"named": detached, "detached": detached}
    ledger = spawn_ledger(str(home.ledger), genesis, **kept, **place.here)
    if detached:  # consensus finds the ledger by name as it starts: it must answer first
        get(ledger.head.remote(), timeout=120, what="ledger start")
    proposer, marks, by_name = ids.consensus.public_key, miner_marks(ids), {m.name: m for m in ids.miners}
    chain = genesis.header.chain_id if genesis is not None else stored_chain_id(home.ledger)  # rounds of it only
    keep_dir = str(keep_config(home, cfg).parent) if cfg.miner.keep_transcripts else None  # for `dlbc-ray audit`
    miners = [spawn_miner(cfg.miner, by_name[name], cfg.protection, proposer=proposer, chain_id=chain,
                          keep_dir=keep_dir, **kept, **place.miner(index, slot), **options(name))
              for index, group in enumerate(groups) for slot, name in enumerate(group)]
    validators = [spawn_validator(cfg.validator, i, cfg.protection, marks=marks, proposer=proposer, chain_id=chain,
                                  ledger=ledger, **kept, **options(i.name))
                  for i in ids.validators]
    if detached:  # ... and the miners and validators
        _wait_started(miners, validators)
    named = lambda ms: [Member(m.name, m.public_key, None) for m in ms] if detached else ms  # noqa: E731
    # Anonymous: every actor is asked for before any is waited on, so their processes start (and import) side by side.
    consensus = spawn_consensus(cfg.consensus, ids.consensus, None if detached else ledger, named(miners),
                                named(validators), groups=groups, home=str(home.root) if detached else None,
                                max_restarts=-1 if detached else 0, treasury=ids.treasury, standing=standing,
                                policy=miner_policy(cfg.miner), **kept, **place.here)
    chain_id = get(ledger.head.remote(), timeout=120, what="ledger start")["chain_id"]
    if detached:
        get(consensus.members.remote(), timeout=120, what="consensus start")  # constructed, scheduler running
    else:
        _wait_started(miners, validators)
    return Network(ledger=ledger, consensus=consensus, miners=miners, validators=validators, identities=ids,
                   chain_id=chain_id, groups=groups)


def _wait_started(miners: list[Member], validators: list[Member]) -> None:
    get([m.handle.info.remote() for m in miners + validators], timeout=300, what="miner and validator start")


def miner_marks(ids: Identities) -> dict[str, bytes]:
    """Every miner's watermark secret, derived here from the identities this process holds; validators get
    it at construction, so no miner ever answers for it."""
    from dlbc_ray.models.protect import mark_secret

    return {m.public_key: mark_secret(m) for m in ids.miners}


def teardown(net: Network) -> None:
    """Stop every actor; miners first finish writing the transcripts they keep in the home (``dlbc-ray audit``)."""
    try:
        get([m.handle.drain_kept.remote() for m in net.miners], timeout=90, what="kept transcripts")
    except DLBCError as e:  # a dead or stuck miner: its last transcript is lost to `dlbc-ray audit`, nothing else
        log.warning("miners did not finish keeping transcripts: %s", e)
    for handle in net.actors():
        ray.kill(handle)


# ----------------------------------------------------------------------- tasks


def miner_groups(names: list[str], per_task: int) -> list[list[str]]:
    """Disjoint groups of ``per_task`` miners (0 = one group of all): each group mines one task at a time."""
    size = per_task or len(names)
    return [names[i:i + size] for i in range(0, len(names), size)]


def dataset_spec(bundle: Any) -> DatasetSpec:
    from dlbc_ray.models.data import split_hash

    return DatasetSpec(name=bundle.name, train_hash=split_hash(bundle.train), test_hash=split_hash(bundle.test),
                       n_train=len(bundle.train), n_test=len(bundle.test), input_shape=bundle.input_shape,
                       n_classes=bundle.n_classes)


def make_task(requester: Identity, defaults: TaskDefaults, bundle: Any, *, nonce: int, created_ms: int,
              chain_id: str) -> Signed[Task]:
    """The built-in task: a registry model on a bundled dataset, signed by the requester for ``chain_id``."""
    task = Task(requester=requester.public_key, nonce=nonce, model=ModelSpec(name=defaults.model,
                params=dict(defaults.model_params)), dataset=dataset_spec(bundle),
                target=round(defaults.target * SCORE_SCALE), reward=defaults.reward,
                deadline_ms=created_ms + int(defaults.deadline_s * 1e3), max_epochs=defaults.epochs,
                created_ms=created_ms)
    return crypto.sign(requester, task, chain_id)


def standing_template(cfg: NetworkConfig, bundle: Any) -> StandingTemplate:
    """PoLe's standing task: the demo task's model and data, trained until the chain's difficulty."""
    return StandingTemplate(model=ModelSpec(name=cfg.task.model, params=dict(cfg.task.model_params)),
                            dataset=dataset_spec(bundle), max_epochs=cfg.pole.max_epochs)


def run_round(net: Network, task: Signed[Task] | None, data: TaskData, *, timeout_s: float,
              on_status: Callable[[RoundStatus], None] | None = None, poll_s: float = 0.25,
              standing: StandingTemplate | None = None) -> RoundReport:
    """One round on the network (a task, or PoLe's standing task), polling its status for a live display."""
    ref = net.consensus.mine_standing.remote(standing, data) if standing else net.consensus.mine.remote(task, data)
    deadline = time.monotonic() + timeout_s
    while on_status is not None and time.monotonic() < deadline:
        ready = is_ready(ref, timeout=poll_s)
        on_status(get(net.consensus.status.remote(), timeout=30, what="consensus status"))
        if ready:
            break
    return get(ref, timeout=max(1.0, deadline - time.monotonic()), what="consensus round")


def run_demo(cfg: NetworkConfig, home: Home, *, blocks: int, mode: str = "tasks", new_chain: bool = False,
             on_status: Callable[[RoundStatus], None] | None = None,
             on_round: Callable[[RoundReport], None] | None = None,
             on_stage: Callable[[str], None] = lambda text: None) -> DemoResult:
    """Mine ``blocks`` blocks with a fresh local network, then verify the chain.

    ``mode`` "tasks": the requester posts the built-in task each round; "pole": the
    network mines PoLe's standing task, whose target follows the chain's difficulty.
    """
    from dlbc_ray.models.data import load_builtin

    check_home(home, cfg, pole=mode == "pole", new_chain=new_chain)
    ids = load_identities(home, cfg)
    clock = Stopwatch()
    on_stage("starting a local Ray cluster")
    owns = start_local_ray(home, cfg)
    clock.lap("ray_start_s")
    on_stage(f"starting {cfg.miners} miners, {cfg.validators} validators, the ledger and consensus")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlbc-data") as loader:
        loading = loader.submit(clock.timed, "data_load_s", load_builtin, cfg.task.dataset, cache_dir=home.datasets)
        net = assemble(cfg, home, ids)  # the data loads meanwhile: the actors' processes are starting
        clock.lap("actors_s")
        bundle = loading.result()
    try:
        data = TaskData(train=ray.put(bundle.train), test=ray.put(bundle.test))
        clock.lap("data_wait_s")
        reports = []
        timeout = round_budget_s(cfg.consensus)  # a round's own timeouts, the dispute trip included
        standing = standing_template(cfg, bundle) if mode == "pole" else None
        attempts = 3 * blocks if standing else blocks  # a standing round may end without a block; PoLe retries
        while len(reports) < attempts and sum(r.committed for r in reports) < blocks:
            task = None if standing else make_task(ids.requester, cfg.task, bundle, nonce=time.time_ns(),
                                                   created_ms=now_ms(), chain_id=net.chain_id)
            reports.append(run_round(net, task, data, timeout_s=timeout, on_status=on_status, standing=standing))
            if reports[-1].committed and "first_block_s" not in clock.laps:
                clock.lap("first_round_s")
                clock.laps["first_block_s"] = clock.total()
            if on_round:
                on_round(reports[-1])
    finally:
        on_stage("stopping the network")
        teardown(net)
        if owns:
            ray.shutdown()
    on_stage("verifying the chain")
    result = _finish(home, reports, ids)
    result.extra["startup"] = clock.laps
    return result


class Stopwatch:
    """Named laps since the last one (seconds), for the demo's time-to-first-block figures."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self.last = now - self.last, now

    def total(self) -> float:
        return time.perf_counter() - self.started

    def timed(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, its own duration recorded as ``name`` (it may run beside the laps)."""
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.laps[name] = time.perf_counter() - t0


def _finish(home: Home, reports: list[RoundReport], ids: Identities) -> DemoResult:
    try:
        verify_chain(home.ledger)
    except DLBCError as e:  # reported, not raised: the rounds' results still stand
        return DemoResult(reports, chain_valid=False, names=ids.names(), chain_error=str(e))
    return DemoResult(reports, chain_valid=True, names=ids.names())
