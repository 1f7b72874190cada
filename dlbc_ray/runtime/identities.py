"""Who plays which role: every key a network needs, loaded or made in the home, and the genesis they sign.

Checks that can fail on user input (a home whose chain this config cannot continue) run
before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlbc_ray.config import NetworkConfig
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConfigError
from dlbc_ray.runtime.home import Home, check_chain_choice
from dlbc_ray.runtime.keystore import key_path, load_key, load_or_create_key
from dlbc_ray.ledger import Chain, ledger_status
from dlbc_ray.schema import Allocation, ChainParams


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
