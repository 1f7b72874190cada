"""Assembling a network on Ray and driving it: identities, genesis, actors, rounds.

Everything here is callable from Python (``run_demo``); the CLI only adds display.
Checks that can fail on user input run before anything is written to the home.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from dlbc_ray import crypto
from dlbc_ray.actors._ray import Member, get, is_ready
from dlbc_ray.actors.consensus import StandingTemplate
from dlbc_ray.actors.rounds import TaskData, miner_policy, now_ms
from dlbc_ray.actors.names import NAMESPACE
from dlbc_ray.config import NetworkConfig, TaskDefaults
from dlbc_ray.consensus import make_genesis
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConfigError, DLBCError
from dlbc_ray.home import Home, check_chain_choice
from dlbc_ray.keystore import key_path, load_key, load_or_create_key
from dlbc_ray.localhead import LOOPBACK, check_token_file, keep_loopback_driver
from dlbc_ray.ledger import Chain, ledger_status, verify_chain
from dlbc_ray.schema import Allocation, ChainParams, DatasetSpec, ModelSpec, Signed, Task
from dlbc_ray.schema.rounds import RoundReport, RoundStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identities:
    consensus: Identity
    requester: Identity
    treasury: Identity
    miners: list[Identity]
    validators: list[Identity]

    def names(self) -> dict[str, str]:
        everyone = [self.consensus, self.requester, self.treasury, *self.miners, *self.validators]
        return {i.public_key: i.name for i in everyone}


@dataclass
class Network:
    ledger: Any
    consensus: Any
    miners: list[Member]
    validators: list[Member]
    identities: Identities
    chain_id: str
    owns_ray: bool = False

    def actors(self) -> list[Any]:
        return [self.consensus, self.ledger, *(m.handle for m in self.miners + self.validators)]


@dataclass
class DemoResult:
    reports: list[RoundReport]
    chain_valid: bool
    names: dict[str, str]
    chain_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ identities


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def check_home(home: Home, cfg: NetworkConfig, *, pole: bool = False, new_chain: bool = False) -> ChainParams | None:
    """Refuse a home whose existing chain this config cannot continue, or whose ledger vanished; writes nothing."""
    check_chain_choice(home, new_chain=new_chain)
    if ledger_status(home.ledger) != "chain":
        return None
    params = _check_validators(home, cfg)
    if pole and params.retarget is None:
        raise ConfigError(f"the chain in {home.root} was made without PoLe difficulty; use a fresh --home",
                          reason="pole")
    if pole and params.treasury != load_key(home, "treasury").public_key:
        raise ConfigError(f"key 'treasury' in {home.keys} is not this chain's treasury", reason="pole")
    if pole and params.retarget and params.retarget.target_interval_s != cfg.pole.target_interval_s:
        raise ConfigError(f"the chain in {home.root} keeps blocks {params.retarget.target_interval_s:g} s apart; "
                          f"--target-interval {cfg.pole.target_interval_s:g} needs a fresh --home", reason="pole")
    return params


def _check_validators(home: Home, cfg: NetworkConfig) -> ChainParams:
    chain = Chain.open(home.ledger, create=False, verify=False)
    params = chain.state.params
    chain.close()
    wanted = _names("validator", cfg.validators)
    if len(params.validators) != len(wanted):
        raise ConfigError(f"the chain in {home.root} has {len(params.validators)} validators; "
                          f"--validators {cfg.validators} cannot continue it", reason="validator_set")
    keys = [load_key(home, n).public_key for n in wanted if key_path(home, n).exists()]
    if set(keys) - set(params.validators) or len(keys) != len(wanted):
        raise ConfigError(f"validator keys in {home.keys} do not match the chain's validator set",
                          reason="validator_set")
    if load_key(home, "consensus").public_key != params.proposer:
        raise ConfigError(f"key 'consensus' in {home.keys} is not this chain's proposer", reason="proposer")
    return params


def load_identities(home: Home, cfg: NetworkConfig) -> Identities:
    """Keys for every role: all existing ones are checked first, then missing ones created (0600)."""
    miners, validators = _names("miner", cfg.miners), _names("validator", cfg.validators)
    everyone = ["consensus", "requester", "treasury", *miners, *validators]
    loaded = {n: load_key(home, n) for n in everyone if key_path(home, n).exists()}
    keys = {n: loaded.get(n) or load_or_create_key(home, n) for n in everyone}
    return Identities(consensus=keys["consensus"], requester=keys["requester"], treasury=keys["treasury"],
                      miners=[keys[n] for n in miners], validators=[keys[n] for n in validators])


def genesis_params(ids: Identities, cfg: NetworkConfig, created_ms: int) -> ChainParams:
    allocations = [Allocation(account=ids.requester.public_key, amount=cfg.genesis_balance)]
    allocations += [Allocation(account=m.public_key, amount=cfg.miner_stake) for m in ids.miners if cfg.miner_stake]
    allocations += [Allocation(account=ids.treasury.public_key, amount=cfg.pole.treasury)] if cfg.pole.treasury else []
    return ChainParams(proposer=ids.consensus.public_key, validators=tuple(v.public_key for v in ids.validators),
                       max_faulty=cfg.consensus.max_faulty, validator_fee_bps=cfg.consensus.validator_fee_bps,
                       theft_penalty=cfg.protection.theft_penalty, retarget=cfg.pole.retarget(),
                       treasury=ids.treasury.public_key, block_reward=cfg.pole.block_reward,
                       allocations=tuple(allocations), created_ms=created_ms)


# ------------------------------------------------------------------------- Ray


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


@dataclass(frozen=True)
class Role:
    """Who plays a named miner or validator: another actor class (an adversary) and its extra arguments."""

    actor_class: type
    init: dict[str, Any] = field(default_factory=dict)


def assemble(cfg: NetworkConfig, home: Home, ids: Identities, genesis_ms: int | None = None,
             roles: dict[str, Role] | None = None) -> Network:
    """Spawn ledger, miners, validators and consensus; tell validators each miner's watermark key.

    ``roles`` swaps in other actor classes by identity name (the adversary suite's honest-
    looking miners and validators); everyone else is honest.
    """
    # torch loads here, in the driver only for the validators' and miners' classes, once Ray is already starting
    from dlbc_ray.actors.spawn import spawn_consensus, spawn_ledger, spawn_miner, spawn_validator

    roles = roles or {}
    options = lambda name: ({"actor_class": roles[name].actor_class, "init": roles[name].init}  # noqa: E731
                            if name in roles else {})
    check_resources(cfg)
    cfg = share_cpus(cfg)
    when = genesis_ms or now_ms()
    has_chain = ledger_status(home.ledger) == "chain"
    genesis = None if has_chain else make_genesis(genesis_params(ids, cfg, when), ids.consensus, when)
    ledger = spawn_ledger(str(home.ledger), genesis)
    proposer, marks = ids.consensus.public_key, miner_marks(ids)
    miners = [spawn_miner(cfg.miner, i, cfg.protection, proposer=proposer, **options(i.name)) for i in ids.miners]
    validators = [spawn_validator(cfg.validator, i, cfg.protection, marks=marks, **options(i.name))
                  for i in ids.validators]
    # Every actor is asked for before any is waited on: their processes start (and import) side by side.
    consensus = spawn_consensus(cfg.consensus, ids.consensus, ledger, miners, validators, treasury=ids.treasury,
                                policy=miner_policy(cfg.miner),
                                groups=miner_groups([m.name for m in miners], cfg.miners_per_task))
    chain_id = get(ledger.head.remote(), timeout=120, what="ledger start")["chain_id"]
    get([m.handle.info.remote() for m in miners] + [v.handle.info.remote() for v in validators], timeout=300,
        what="miner and validator start")
    return Network(ledger=ledger, consensus=consensus, miners=miners, validators=validators, identities=ids,
                   chain_id=chain_id)


def miner_marks(ids: Identities) -> dict[str, bytes]:
    """Every miner's watermark secret, derived here from the identities this process holds; validators get
    it at construction, so no miner ever answers for it."""
    from dlbc_ray.models.protect import mark_secret

    return {m.public_key: mark_secret(m) for m in ids.miners}


def teardown(net: Network) -> None:
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
    net.owns_ray = owns
    try:
        data = TaskData(train=ray.put(bundle.train), test=ray.put(bundle.test))
        clock.lap("data_wait_s")
        reports = []
        timeout = cfg.consensus.collect_timeout_s + cfg.consensus.validate_timeout_s + 120
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
