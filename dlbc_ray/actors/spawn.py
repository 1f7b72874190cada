"""The one place where plain classes become Ray actors, with resources from config.

Coordinators take no CPU (``num_cpus=0``); the ledger restarts forever and rebuilds
from disk; miners and validators reserve what their config says, so cluster node
types (custom resources ``dlbc_miner`` / ``dlbc_validator``) decide where they run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ray

from dlbc_ray.actors._ray import Member, fault_options
from dlbc_ray.actors.coordinator import Consensus
from dlbc_ray.actors.ledger import Ledger
from dlbc_ray.actors.miner import Miner, training_workers
from dlbc_ray.actors.validator import Validator
from dlbc_ray.actors.winners import LedgerWinners
from dlbc_ray.config import ConsensusConfig, MinerConfig, ProtectionConfig, ValidatorConfig
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import Block

from dlbc_ray.actors.names import CONSENSUS_NAME, LEDGER_NAME, NAMESPACE, miner_name, validator_name

VALIDATOR_CONCURRENCY = 8  # rounds a validator judges side by side, plus its health checks

__all__ = ["NAMESPACE", "miner_resources", "spawn_consensus", "spawn_ledger", "spawn_miner", "spawn_validator"]


def _placement(name: str | None, detached: bool) -> dict[str, Any]:
    """Named, detached actors for a long-lived network; anonymous ones for demos and tests."""
    return (({"name": name, "namespace": NAMESPACE} if name else {}) | ({"lifetime": "detached"} if detached else {})
            | fault_options())


def spawn_ledger(path: str, genesis: Block | None, *, named: bool = False, detached: bool = False,
                 **options: Any) -> Any:
    cls = ray.remote(Ledger).options(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=4,
                                     **_placement(LEDGER_NAME if named else None, detached), **options)
    return cls.remote(path, genesis=genesis)


def miner_resources(cfg: MinerConfig) -> dict[str, float]:
    """What a miner actor itself reserves (and its placement-group bundle): its CPUs, GPUs and custom resources.
    A data-parallel miner (``miner.training_workers`` > 1) only coordinates: its Ray Train workers reserve
    the CPUs and GPUs, placed by Ray (a bundle holding them would leave the workers nothing)."""
    if training_workers(cfg) > 1:
        return {"CPU": 0.0, **cfg.resources}
    return {"CPU": cfg.num_cpus or 1.0, **cfg.resources} | ({"GPU": cfg.num_gpus} if cfg.num_gpus else {})


def spawn_miner(cfg: MinerConfig, identity: Identity, protection: ProtectionConfig, *, proposer: str,
                chain_id: str | None = None, keep_dir: str | None = None, named: bool = False, detached: bool = False, actor_class: type = Miner,
                init: dict[str, Any] | None = None, **options: Any) -> Member:
    """``actor_class`` (a Miner subclass, e.g. an adversary) gets ``init`` as extra constructor arguments;
    ``proposer`` is the only key whose signed rounds it trains for and whose window close opens its reveals, on
    ``chain_id`` only (the network's chain; the same keys may run another); ``keep_dir``: where it keeps
    its opened transcripts for ``dlbc-ray audit`` (the home's ``transcripts``, on the miner's node)."""
    # max_concurrency=2: reveal() must answer while mine() is still running for a late task.
    own = miner_resources(cfg)  # a data-parallel miner reserves neither CPU nor GPU: its workers do
    cls = ray.remote(actor_class).options(num_cpus=cfg.num_cpus if own["CPU"] else 0, num_gpus=own.get("GPU", 0.0),
                                    resources=dict(cfg.resources) or None, max_restarts=cfg.max_restarts,
                                    max_concurrency=2,
                                    **_placement(miner_name(identity.name) if named else None, detached),
                                    **options)
    return Member(identity.name, identity.public_key,
                  cls.remote(cfg, identity=identity, protection=protection, proposer=proposer, keep_dir=keep_dir,
                             chain_id=chain_id, **(init or {})))


def spawn_validator(cfg: ValidatorConfig, identity: Identity, protection: ProtectionConfig, *,
                    marks: Mapping[str, bytes], proposer: str, chain_id: str | None = None, ledger: Any = None,
                    named: bool = False,
                    detached: bool = False, actor_class: type = Validator, init: dict[str, Any] | None = None,
                    **options: Any) -> Member:
    """``marks``: every miner's watermark secret by public key, handed over here and by no method; ``proposer``:
    the only key whose signed rounds this validator judges (no mark oracle for anyone else), on ``chain_id``
    only; ``ledger``: the
    ledger actor, where a validator that restarts or joins later reads earlier blocks' winners back
    (``actors.winners``), so a disguised copy of one is still ``derived``."""
    winners = LedgerWinners(ledger, cfg.fetch_timeout_s) if ledger is not None else None
    # Every miner group's round is judged at once (one queue here serialised a 4-group network), and health
    # checks (info) still answer meanwhile; validate() guards its caches with a lock.
    cls = ray.remote(actor_class).options(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus,
                                        resources=dict(cfg.resources) or None, max_restarts=cfg.max_restarts,
                                        max_concurrency=VALIDATOR_CONCURRENCY,
                                        **_placement(validator_name(identity.name) if named else None,
                                                     detached), **options)
    return Member(identity.name, identity.public_key,
                  cls.remote(cfg, identity=identity, protection=protection, marks=dict(marks), proposer=proposer,
                             winners=winners, chain_id=chain_id, **(init or {})))


def spawn_consensus(cfg: ConsensusConfig, identity: Identity, ledger: Any, miners: Sequence[Member],
                    validators: Sequence[Member], *, groups: Sequence[Sequence[str]] | None = None,
                    home: str | None = None, named: bool = False, detached: bool = False, max_restarts: int = 0,
                    treasury: Identity | None = None, standing: Any = None,
                    policy: Mapping[str, object] | None = None, **options: Any) -> Any:
    # Threaded: status() and report() answer while rounds run.
    cls = ray.remote(Consensus).options(num_cpus=0, max_concurrency=32, max_restarts=max_restarts,
                                        **_placement(CONSENSUS_NAME if named else None, detached), **options)
    return cls.remote(cfg, identity=identity, ledger=ledger, miners=list(miners), validators=list(validators),
                      groups=[list(g) for g in groups] if groups else None, home=home, autostart=named,
                      treasury=treasury, standing=standing, policy=policy)
