"""Signatures checked ahead over the cores give the serial verdicts, and never skip a rule's own checks."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from dlbc_ray import crypto
from dlbc_ray.crypto import sigpool
from dlbc_ray.consensus import compute_block_hash, validate_block
from dlbc_ray.consensus.validation import compute_roots
from dlbc_ray.errors import InvalidBlock
from dlbc_ray.ledger import Chain
from dlbc_ray.ledger.chain import block_signatures, prefetched
from dlbc_ray.schema import Block, Signed, Task
from dlbc_ray.schema.task import ModelSpec
from tests.builders import World, fake_hash, resign

SCORES = {0: [9000, 9100, 8900, 9050], 1: [8000] * 4, 2: [7000] * 4}


def reference_bytes(message: BaseModel) -> bytes:
    """The canonical encoding as specified, with no shortcut."""
    return json.dumps(message.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def blocks_of(world: World, n: int) -> list[Block]:
    out = []
    for _ in range(n):
        block, _ = world.round(SCORES, task=world.task(reward=5))
        world.apply(block)
        out.append(block)
    return out


def with_ballot(world: World, block: Block, index: int, ballot: Any) -> Block:
    ballots = list(block.ballots)
    ballots[index] = ballot
    return resign(block.model_copy(update={"ballots": tuple(ballots)}), world.proposer, roots=True)


@pytest.fixture(autouse=True)
def cold() -> None:
    crypto.clear_signature_cache()


def test_prefetched_verdicts_equal_serial_ones_and_a_forgery_is_refused_by_name(tmp_path: Path) -> None:
    world = World()
    chain = Chain.open(tmp_path / "l.sqlite")
    chain.import_block(world.genesis)
    before = world.state
    good = blocks_of(world, 3)
    vote = good[1].ballots[2]
    forged_vote = vote.model_copy(update={"signature": good[1].ballots[3].signature})
    batch = [good[0], with_ballot(world, good[1], 2, forged_vote), good[2]]
    signeds = [s for b in batch for s in block_signatures(b)]
    assert len(signeds) == 3 * 9  # header, 3 submissions, 4 ballots (one per validator, not per vote), the task

    crypto.prefetch_signatures(signeds)
    assert not sigpool._ROOTS and not sigpool._CANONICAL  # encodings are remembered within ``prefetched`` only
    root = crypto.signing_root(forged_vote.message, forged_vote.chain_id)
    assert sigpool._VERDICTS.get((forged_vote.signer, forged_vote.signature, root)) in (False, None)
    for s in signeds:
        serial = sigpool._verifies(s.signer, s.signature, crypto.signing_root(s.message, s.chain_id))
        assert crypto.is_valid_signature(s) is serial
    assert [crypto.is_valid_signature(s) for s in signeds].count(False) == 1

    with pytest.raises(InvalidBlock) as refused:
        chain.import_blocks(batch)
    assert (refused.value.reason, refused.value.height) == ("ballot_signature", 2)
    assert chain.height == 0  # all or nothing
    with pytest.raises(InvalidBlock) as again:
        validate_block(batch[1], process_after(before, batch[0]))
    assert again.value.reason == "ballot_signature"


def process_after(state: Any, block: Block) -> Any:
    from dlbc_ray.consensus import process_block
    return process_block(state, block, compute_block_hash(block.header))


@pytest.mark.parametrize("reason", ["ballot_chain", "ballot_signer"])
def test_a_cached_true_verdict_never_skips_the_chain_or_signer_rule(tmp_path: Path, reason: str) -> None:
    """A signature that verifies, but for another chain or by someone else, is refused by its rule's name."""
    world = World()
    chain = Chain.open(tmp_path / "l.sqlite")
    chain.import_block(world.genesis)
    (block,) = blocks_of(world, 1)
    vote = block.ballots[0]
    if reason == "ballot_chain":
        wrong = crypto.sign(world.validators[0], vote.message, fake_hash("another chain"))
    else:
        stranger = next(v for v in world.validators if v.public_key != vote.message.validator)
        wrong = crypto.sign(stranger, vote.message, world.chain_id)
    assert crypto.is_valid_signature(wrong)
    with pytest.raises(InvalidBlock) as refused:
        chain.import_blocks([with_ballot(world, block, 0, wrong)])
    assert refused.value.reason == reason and chain.height == 0


def test_prefetched_encodings_are_the_canonical_bytes_and_change_no_hash() -> None:
    world = World()
    blocks = blocks_of(world, 2)
    outside = [(compute_roots(b), compute_block_hash(b.header)) for b in blocks]
    with prefetched(blocks):
        inside = [(compute_roots(b), compute_block_hash(b.header)) for b in blocks]
        for b in blocks:
            for s in block_signatures(b):
                assert crypto.canonical_bytes(s.message) == reference_bytes(s.message)
                if type(s).model_fields["message"].annotation is type(s.message):
                    assert crypto.canonical_bytes(s) == reference_bytes(s)
            for leaf in (*b.submissions, *b.ballots, *b.txs):
                assert crypto.canonical_bytes(leaf) == reference_bytes(leaf)
    assert inside == outside


def test_an_envelope_with_text_beyond_ascii_encodes_as_specified() -> None:
    world = World()
    signed = world.task()
    task = signed.message.model_copy(update={"model": ModelSpec(name="mlp", params={"note": "naïve — ünïcode ✓"})})
    envelope = world.sign(world.requester, task)
    assert "ünïcode".encode() in crypto.canonical_bytes(envelope) == reference_bytes(envelope)


def test_an_envelope_that_is_not_plain_hex_is_encoded_in_full() -> None:
    """The shortcut applies to hex strings around a message of the declared type only; anything else takes the long way."""
    world = World()
    signed = world.task()
    odd = Signed[Task].model_construct(message=signed.message, chain_id="ünï\"code", signer=signed.signer,
                                       signature=signed.signature)
    untyped = Signed.model_construct(message=signed.message, chain_id=signed.chain_id, signer=signed.signer,
                                     signature=signed.signature)
    for envelope in (odd, untyped):
        assert crypto.canonical_bytes(envelope) == reference_bytes(envelope)


def test_a_message_changed_after_its_block_is_encoded_afresh() -> None:
    """Encodings are remembered by object for one block only; a frozen model's dict can still change in place."""
    world = World()
    (block,) = blocks_of(world, 1)
    task = block.txs[0].task.message
    with prefetched([block]):
        assert crypto.canonical_bytes(task) == reference_bytes(task)
    task.model.params["changed"] = 1
    assert crypto.canonical_bytes(task) == reference_bytes(task)


# ------------------------------------------------------------ background verification


@pytest.fixture
def blocked_pool() -> Any:
    """Every pool thread held busy: background chunks queue up and nobody starts them until released."""
    pool = sigpool.hash_pool()
    release, started = threading.Event(), threading.Semaphore(0)

    def hold() -> None:
        started.release()
        release.wait(30)

    holds = [pool.submit(hold) for _ in range(pool._max_workers)]
    for _ in holds:
        assert started.acquire(timeout=30)
    yield release
    release.set()
    for h in holds:
        h.result(timeout=30)


def test_a_rule_verifies_itself_a_chunk_no_pool_thread_has_started(tmp_path: Path, blocked_pool: Any) -> None:
    """Work stealing: with every pool thread busy, the rules still get every verdict (and the forgery's False)."""
    world = World()
    chain = Chain.open(tmp_path / "l.sqlite")
    chain.import_block(world.genesis)
    good = blocks_of(world, 2)
    forged = good[1].ballots[1].model_copy(update={"signature": good[1].ballots[2].signature})
    with pytest.raises(InvalidBlock) as refused:
        chain.import_blocks([good[0], with_ballot(world, good[1], 1, forged)])
    assert (refused.value.reason, refused.value.height) == ("ballot_signature", 2)
    assert not sigpool._PENDING  # nothing left waiting for a pool thread once the scope ended
    chain.import_blocks(good)
    assert chain.height == 2


def test_each_signature_is_verified_once_however_many_threads_ask(monkeypatch: pytest.MonkeyPatch,
                                                                   blocked_pool: Any) -> None:
    world = World()
    signeds = [s for b in blocks_of(world, 2) for s in block_signatures(b)]
    crypto.clear_signature_cache()  # building the blocks checked their tasks' signatures
    calls: list[tuple[str, str, bytes]] = []
    real = sigpool._verifies

    def counted(signer: str, signature: str, root: bytes) -> bool:
        calls.append((signer, signature, root))
        return real(signer, signature, root)

    monkeypatch.setattr(sigpool, "_verifies", counted)
    with crypto.prefetched(signeds):
        assert len(sigpool._PENDING) == len(signeds) and not calls  # queued, none started
        answers: list[list[bool]] = []
        askers = [threading.Thread(target=lambda: answers.append([crypto.is_valid_signature(s) for s in signeds]))
                  for _ in range(4)]
        for t in askers:
            t.start()
        blocked_pool.set()  # the pool joins in while the askers run
        for t in askers:
            t.join(30)
    assert answers == [[True] * len(signeds)] * 4
    assert sorted(calls) == sorted(set(calls)) and len(calls) == len(signeds)


def test_chunks_nobody_needed_are_dropped_and_verdicts_stay_right(blocked_pool: Any) -> None:
    world = World()
    (block,) = blocks_of(world, 1)
    signeds = block_signatures(block)
    with crypto.prefetched(signeds):
        pass  # a block refused before any signature rule ran
    assert not sigpool._PENDING
    blocked_pool.set()
    sigpool.hash_pool().submit(lambda: None).result(timeout=30)  # the pool has passed the dropped chunks
    forged = signeds[5].model_copy(update={"signature": signeds[6].signature})
    assert [crypto.is_valid_signature(s) for s in signeds] == [True] * len(signeds)
    assert not crypto.is_valid_signature(forged)


@pytest.mark.parametrize("signature", ["zz" * 64, "00" * 10, "", "é" * 128])
def test_a_malformed_block_signature_is_refused_by_name(tmp_path: Path, signature: str) -> None:
    """An unparsed block (Ray hands models over without validation) with a signature that is not hex never verifies."""
    world = World()
    chain = Chain.open(tmp_path / "l.sqlite")
    chain.import_block(world.genesis)
    (block,) = blocks_of(world, 1)
    with pytest.raises(InvalidBlock) as refused:
        chain.import_blocks([block.model_copy(update={"signature": signature})])
    assert (refused.value.reason, refused.value.height, chain.height) == ("block_signature", 1, 0)


@pytest.mark.parametrize("chunk_size", [0, 1, 3, 4, 100])
def test_any_chunk_size_gives_the_serial_verdicts_and_refuses_a_forgery(chunk_size: int) -> None:
    """One block's signatures are split finer (both pool threads take part): the verdicts may not depend on it."""
    world = World()
    (block,) = blocks_of(world, 1)
    signeds = block_signatures(block)
    forged = signeds[3].model_copy(update={"signature": signeds[4].signature})
    batch = [*signeds[:3], forged, *signeds[4:]]
    crypto.clear_signature_cache()
    with crypto.prefetched(batch, chunk_size):
        verdicts = [crypto.is_valid_signature(s) for s in batch]
    assert verdicts == [True] * 3 + [False] + [True] * (len(signeds) - 4)
    assert not sigpool._PENDING
