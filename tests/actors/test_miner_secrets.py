"""Secrets are sealed: no method of a miner hands out its mark secret or mapping seed, and a reveal
(or a stop) answers only the proposer's signed close of the round it submitted in (no Ray: ``Miner``
built directly; Ray exposes every method of the class, underscored or not, so the whole class is
checked). The Ray side, a rival's handle, is in tests/integration/test_attacks.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from ray import cloudpickle  # how Ray serializes an actor's answer (no cluster is started)

from dlbc_ray import crypto
from dlbc_ray.actors.miner import Miner
from dlbc_ray.config import MINIMAL
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import RevealRefused
from dlbc_ray.models.data import DatasetBundle, load_builtin
from dlbc_ray.models.protect import mapping_seed, mark_secret
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Signed, Task
from dlbc_ray.schema.round_messages import MinedSubmission, RoundContext, WindowClose
from tests.builders import T0, fake_hash, signed_round

REQUESTER, MINER, RIVAL = (Identity.from_seed(n, n.encode()) for n in ("requester", "miner", "rival"))
PROPOSER = Identity.from_seed("consensus", b"consensus")
CHAIN = fake_hash("chain")
DEADLINE = T0 + 60_000
# Every method Ray would expose on a miner's handle; a new one must be reviewed here first.
REVIEWED = {"__init__", "info", "cancel", "reveal", "mine", "release_gpu", "gpu_memory", "transcript_opening",
            "drain_kept"}  # drain_kept: waits for the home's transcript writes, answers a bool


@dataclass(frozen=True)
class Mined:
    miner: Miner
    bundle: DatasetBundle
    task: Signed[Task]
    ctx: RoundContext
    mined: MinedSubmission
    weights: dict[str, Any]

    @property
    def commit(self) -> str:
        return self.mined.signed.message.commit


@pytest.fixture(scope="module")
def done() -> Mined:
    bundle = load_builtin("digits")
    task = make_task(REQUESTER, MINIMAL.task, bundle, nonce=1, created_ms=T0, chain_id=CHAIN)
    ctx = RoundContext(chain_id=CHAIN, round_id=fake_hash("round"), task_id=crypto.message_hash(task.message),
                       base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=DEADLINE)
    miner = new_miner()
    mined, weights = miner.mine(task, bundle.train, signed_round(PROPOSER, ctx))
    return Mined(miner, bundle, task, ctx, mined, weights)


def new_miner() -> Miner:
    return Miner(MINIMAL.miner, identity=MINER, protection=MINIMAL.protection, proposer=PROPOSER.public_key)


def close(ctx: RoundContext, signer: Identity = PROPOSER, chain: str = CHAIN, *, opens: tuple[str, ...] = (),
          **changes: Any) -> Signed[WindowClose]:
    """The round's final close, opening the seeds of ``opens``."""
    message = WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=DEADLINE, opens=opens,
                          final=True).model_copy(update=changes)
    return crypto.sign(signer, message, chain)


def secrets_of(ctx: RoundContext) -> list[bytes]:
    """The miner's secrets, raw and as hex, as they would appear inside a pickled answer."""
    raw = [mark_secret(MINER), mapping_seed(MINER, ctx.task_id, ctx.round_id), MINER.secret_bytes()]
    return raw + [r.hex().encode() for r in raw]


def test_a_miner_exposes_only_reviewed_methods() -> None:
    assert {name for name, _ in inspect.getmembers(Miner, inspect.isfunction)} == REVIEWED
    assert not hasattr(Miner, "watermark_secret") and not hasattr(Miner, "mapping_seed")


def test_no_answer_of_a_miner_carries_a_secret(done: Mined) -> None:
    answers = [done.miner.info(), done.miner.gpu_memory(), done.miner.release_gpu(), done.miner.drain_kept(-1.0),
               (done.mined, done.weights)]
    for answer in answers:
        blob = cloudpickle.dumps(answer)
        assert not any(secret in blob for secret in secrets_of(done.ctx)), answer


Forge = Callable[[Mined], tuple[Signed[WindowClose], str]]
REFUSALS: dict[str, Forge] = {
    "wrong_signer": lambda d: (close(d.ctx, signer=RIVAL), d.commit),
    "bad_signature": lambda d: (close(d.ctx, signer=RIVAL).model_copy(update={"signer": PROPOSER.public_key}),
                                d.commit),
    "wrong_chain": lambda d: (close(d.ctx, chain=fake_hash("another chain")), d.commit),
    "wrong_task": lambda d: (close(d.ctx, task_id=fake_hash("another task")), d.commit),
    "wrong_round": lambda d: (close(d.ctx, round_id=fake_hash("an earlier round")), d.commit),
    "not_submitted": lambda d: (close(d.ctx), fake_hash("a commit it never made")),
}


@pytest.mark.parametrize("reason", REFUSALS)
def test_a_reveal_without_the_proposers_close_of_its_round_is_refused(done: Mined, reason: str) -> None:
    forged, commit = REFUSALS[reason](done)
    with pytest.raises(RevealRefused) as caught:
        done.miner.reveal(forged, commit)
    assert caught.value.reason == reason


def test_a_miner_that_has_not_submitted_reveals_nothing_even_to_the_proposer(done: Mined) -> None:
    with pytest.raises(RevealRefused) as caught:
        new_miner().reveal(close(done.ctx, opens=(done.commit,)), done.commit)
    assert caught.value.reason == "not_submitted"


def test_the_proposers_close_opens_the_seed_the_submission_committed_to(done: Mined) -> None:
    reveal = done.miner.reveal(close(done.ctx, opens=(done.commit,)), done.commit)
    assert crypto.verify(reveal, chain_id=CHAIN, expected_signer=MINER.public_key).sml_seed == \
        mapping_seed(MINER, done.ctx.task_id, done.ctx.round_id).hex()


@pytest.mark.parametrize("reason", ["wrong_signer", "bad_signature", "wrong_chain", "wrong_round"])
def test_only_the_proposers_close_stops_a_miner(done: Mined, reason: str) -> None:
    miner = new_miner()
    miner._rounds[done.ctx.task_id] = done.ctx  # mining this round
    with pytest.raises(RevealRefused):
        miner.cancel(REFUSALS[reason](done)[0])
    assert not miner._cancelled
    miner.cancel(close(done.ctx))
    assert miner._cancelled == {done.ctx.task_id}


def test_a_retried_round_gets_a_new_mapping_seed() -> None:
    """The seed revealed when a round closes must not also protect the same task's next round."""
    task_id = "a" * 64
    assert mapping_seed(MINER, task_id, "1" * 64) != mapping_seed(MINER, task_id, "2" * 64)
