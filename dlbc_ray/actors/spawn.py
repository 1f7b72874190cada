"""The one place where plain classes become Ray actors, with resources from config.

Coordinators take no CPU (``num_cpus=0``); the ledger restarts forever and rebuilds
from disk; miners and validators reserve what their config says, so cluster node
types (custom resources ``dlbc_miner`` / ``dlbc_validator``) decide where they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from dlbc_ray.actors._ray import Member
from dlbc_ray.actors.consensus import Consensus
from dlbc_ray.actors.ledger import Ledger
from dlbc_ray.actors.miner import Miner
from dlbc_ray.actors.validator import Validator
from dlbc_ray.config import ConsensusConfig, MinerConfig, ProtectionConfig, ValidatorConfig
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import Block

NAMESPACE = "dlbc"
LEDGER_NAME = "dlbc-ledger"
CONSENSUS_NAME = "dlbc-consensus"


def _placement(name: str | None, detached: bool) -> dict[str, Any]:
    """Named, detached actors for a long-lived network; anonymous ones for demos and tests."""
    return ({"name": name, "namespace": NAMESPACE} if name else {}) | ({"lifetime": "detached"} if detached else {})


def spawn_ledger(path: str, genesis: Block | None, *, named: bool = False, detached: bool = False,
                 **options: Any) -> Any:
    cls = ray.remote(Ledger).options(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=4,
                                     **_placement(LEDGER_NAME if named else None, detached), **options)
    return cls.remote(path, genesis=genesis)


def spawn_miner(cfg: MinerConfig, identity: Identity, protection: ProtectionConfig, *, named: bool = False,
                detached: bool = False, **options: Any) -> Member:
    # max_concurrency=2: reveal() must answer while mine() is still running for a late task.
    cls = ray.remote(Miner).options(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus,
                                    resources=dict(cfg.resources) or None, max_restarts=cfg.max_restarts,
                                    max_concurrency=2,
                                    **_placement(f"dlbc-miner-{identity.name}" if named else None, detached),
                                    **options)
    return Member(identity.name, identity.public_key, cls.remote(cfg, identity=identity, protection=protection))


def spawn_validator(cfg: ValidatorConfig, identity: Identity, protection: ProtectionConfig, *,
                    named: bool = False, detached: bool = False, **options: Any) -> Member:
    cls = ray.remote(Validator).options(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus,
                                        resources=dict(cfg.resources) or None, max_restarts=cfg.max_restarts,
                                        **_placement(f"dlbc-validator-{identity.name}" if named else None,
                                                     detached), **options)
    return Member(identity.name, identity.public_key, cls.remote(cfg, identity=identity, protection=protection))


def spawn_consensus(cfg: ConsensusConfig, identity: Identity, ledger: Any, miners: Sequence[Member],
                    validators: Sequence[Member], *, named: bool = False, detached: bool = False,
                    max_restarts: int = 0, **options: Any) -> Any:
    # Threaded: status() and report() answer while a round runs in mine().
    cls = ray.remote(Consensus).options(num_cpus=0, max_concurrency=16, max_restarts=max_restarts,
                                        **_placement(CONSENSUS_NAME if named else None, detached), **options)
    return cls.remote(cfg, identity=identity, ledger=ledger, miners=list(miners), validators=list(validators))
