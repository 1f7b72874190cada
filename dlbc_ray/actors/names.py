"""Names of a long-lived network's actors in the ``dlbc`` namespace, in one place."""

from __future__ import annotations

NAMESPACE = "dlbc"
LEDGER_NAME = "dlbc-ledger"
CONSENSUS_NAME = "dlbc-consensus"


def miner_name(name: str) -> str:
    return f"dlbc-miner-{name}"


def validator_name(name: str) -> str:
    return f"dlbc-validator-{name}"


def placement_group_name(index: int) -> str:
    return f"dlbc-miners-{index}"
