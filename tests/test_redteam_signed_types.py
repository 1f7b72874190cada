"""One chain in every signature, for every signed type there is (issue 10's kind (b)).

Every wire type with a signing DOMAIN is listed with where a copy signed for another chain is refused
and by which reason; a new signed type fails the first test until someone says where that happens.
Each is then signed for one chain and checked under another (the signing root binds the chain id),
and each named reason is looked for in the test file that must break exactly that rule.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pydantic
import pytest

import dlbc_ray.schema as schema
from dlbc_ray import crypto
from dlbc_ray.consensus.verdicts import check_reveal
from dlbc_ray.schema import Reveal, Transfer
from dlbc_ray.schema.round_messages import RoundContext, WindowClose
from tests.builders import T0, World, fake_hash

TESTS = Path(__file__).parent
# signed type -> (who refuses a copy signed for another chain, its reason or verdict, the test file expecting it)
CROSS_CHAIN: dict[str, tuple[str, str, str]] = {
    "Task": ("ledger", "task_chain", "consensus/test_validation_rules.py"),
    "Transfer": ("ledger", "transfer_chain", "consensus/test_validation_rules.py"),
    "Submission": ("ledger", "submission_chain", "consensus/test_validation_rules.py"),
    "Ballot": ("ledger (evidence ballots too)", "ballot_chain", "consensus/test_validation_rules.py"),
    "FusionVote": ("ledger", "fusion_vote_chain", "consensus/test_validation_rules.py"),
    "BlockHeader": ("ledger", "chain_id", "consensus/test_validation.py"),
    "WindowClose": ("miner (reveal, cancel)", "wrong_chain", "actors/test_miner_secrets.py"),
    "RoundContext": ("miner (mine), validator (validate, fuse)", "round_chain", "consensus/test_round_context.py"),
    "Reveal": ("validator (check_reveal)", "Verdict.BAD_REVEAL", "consensus/test_verdicts.py"),
    "ChainParams": ("genesis: the chain id is the hash of these parameters", "chain_id",
                    "consensus/test_validation.py"),
}


def signed_types() -> set[str]:
    found = set()
    for info in pkgutil.iter_modules(schema.__path__):
        module = importlib.import_module(f"dlbc_ray.schema.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, pydantic.BaseModel) and isinstance(getattr(cls, "DOMAIN", None), bytes):
                found.add(name)
    return found


def test_every_signed_type_says_where_another_chains_copy_is_refused() -> None:
    assert signed_types() == set(CROSS_CHAIN), f"say where these are refused: {signed_types() ^ set(CROSS_CHAIN)}"


@pytest.mark.parametrize("name", sorted(CROSS_CHAIN))
def test_each_reason_is_expected_by_a_test(name: str) -> None:
    _, reason, path = CROSS_CHAIN[name]
    expected = reason if "." in reason else f'"{reason}"'
    assert expected in (TESTS / path).read_text(), f"{path} never expects {reason!r}"


def samples(world: World) -> list[pydantic.BaseModel]:
    task = world.task()
    sub = world.submission(world.miners[0], task)
    ballot = world.ballot(world.validators[0], [sub], [9000])
    return [task.message, sub.message, ballot.message, world.genesis.header, world.params,
            Transfer(sender=world.requester.public_key, recipient=world.miners[0].public_key, amount=5, nonce=0),
            WindowClose(task_id=sub.message.task_id, round_id=fake_hash("r"), closed_ms=T0, opens=()),
            RoundContext(chain_id=world.chain_id, round_id=fake_hash("r"), task_id=sub.message.task_id, base_height=0,
                         base_hash=fake_hash("h"), eval_seed=0, submit_deadline_ms=T0),
            Reveal(task_id=sub.message.task_id, commit=sub.message.commit, sml_seed="ab" * 32)]


def test_a_signature_for_one_chain_never_verifies_on_another() -> None:
    world, other = World(), fake_hash("another chain with the same keys")
    kinds = set()
    for message in samples(world):
        kinds.add(type(message).__name__)
        assert crypto.signing_root(message, world.chain_id) != crypto.signing_root(message, other)
        signed = crypto.sign(world.requester, message, world.chain_id)
        assert crypto.is_valid_signature(signed)
        assert not crypto.is_valid_signature(signed.model_copy(update={"chain_id": other})), type(message).__name__
    assert kinds >= set(CROSS_CHAIN) - {"FusionVote"}  # a fusion vote is signed by the same sign(): see the ledger test


def test_a_reveal_from_another_chain_is_named_as_such() -> None:
    world = World()
    seed = "ab" * 32
    from dlbc_ray.models import sml

    sub = world.submission(world.miners[0], world.task()).message
    sub = sub.model_copy(update={"sml_commitment": sml.seed_commitment(bytes.fromhex(seed))})
    reveal = crypto.sign(world.miners[0], Reveal(task_id=sub.task_id, commit=sub.commit, sml_seed=seed),
                         fake_hash("another chain"))
    verdict, detail = check_reveal(sub, reveal, sub.sml_commitment, world.chain_id)
    assert "chain" in detail, detail
