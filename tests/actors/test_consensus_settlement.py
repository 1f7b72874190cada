"""The consensus actor's settlement without Ray: a real Ledger on disk behind a call boundary that can lose replies.

Each test is one promise of issue 10 (findings 1 and 2): a refused refund never stops the
tick, a retried submit is never escrowed twice, task data is saved before its posting is
committed, and an open task the pool never knew is refunded once past its deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.exceptions import GetTimeoutError

from dlbc_ray import crypto
from dlbc_ray.actors import _ray
from dlbc_ray.actors._ray import Member
from dlbc_ray.actors.coordinator import Consensus
from dlbc_ray.actors.ledger import Ledger
from dlbc_ray.config import MINIMAL
from dlbc_ray.consensus import propose_task_block, propose_tx_block
from dlbc_ray.errors import ActorUnavailable, InvalidBlock
from dlbc_ray.schema import Block, PostTaskTx, Signed, Task
from tests.builders import World


@dataclass
class Reply:
    """What a fake ``.remote()`` returns: the callee has run already; ``lost`` replies time out."""

    value: Any = None
    error: Exception | None = None
    lost: bool = False


@dataclass
class FakeLedger:
    """The real ledger actor class, called in-process; ``lose`` and ``refuse`` inject faults per method."""

    actor: Ledger
    lose: dict[str, int] = field(default_factory=dict)  # method -> replies still to lose
    refuse: Callable[[Block], bool] = lambda block: False
    before_import: Callable[[Block], None] = lambda block: None
    calls: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return _Method(self, name)


@dataclass
class _Method:
    ledger: FakeLedger
    name: str

    def remote(self, *args: Any) -> Reply:
        self.ledger.calls.append(self.name)
        if self.name == "import_block":
            if self.ledger.refuse(args[0]):
                return Reply(error=InvalidBlock("block refused (test)", reason="refused"))
            self.ledger.before_import(args[0])
        try:
            value = getattr(self.ledger.actor, self.name)(*args)
        except Exception as e:
            return Reply(error=e)
        left = self.ledger.lose.get(self.name, 0)
        if left:
            self.ledger.lose[self.name] = left - 1
        return Reply(value, lost=bool(left))


def fake_get(ref: Any, timeout: float | None = None) -> Any:
    if ref.lost:
        raise GetTimeoutError("lost (test)")
    if ref.error is not None:
        raise ref.error
    return ref.value


class Recorder:
    """Stands in for the round executor: records which tasks a tick started."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def submit(self, fn: Callable[..., Any], group: Any, entry: Any) -> None:
        self.started.append(entry.task_id)


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ray.ray, "get", fake_get)
    monkeypatch.setattr(ray, "put", lambda value: value)


@pytest.fixture(scope="module")
def digits() -> Any:
    from dlbc_ray.models.data import load_builtin

    return load_builtin("digits")


@dataclass
class Rig:
    world: World
    ledger: FakeLedger
    home: Path
    digits: Any

    def consensus(self) -> Consensus:
        validators = [Member(v.name, v.public_key, object()) for v in self.world.validators]
        miners = [Member(m.name, m.public_key, object()) for m in self.world.miners]
        cfg = MINIMAL.consensus.model_copy(update={"commit_timeout_s": 1.0})  # patience with a silent ledger
        c = Consensus(cfg, identity=self.world.proposer, ledger=self.ledger, miners=miners,
                      validators=validators, home=str(self.home))
        c._workers = Recorder()  # type: ignore[assignment]
        return c

    def task(self, *, deadline_in_ms: int = 600_000, reward: int = 100) -> Signed[Task]:
        from dlbc_ray.runtime.network import dataset_spec
        from dlbc_ray.schema import ModelSpec

        now = time.time_ns() // 10**6
        self.world.nonce += 1
        task = Task(requester=self.world.requester.public_key, nonce=self.world.nonce, model=ModelSpec(name="mlp"),
                    dataset=dataset_spec(self.digits), target=5_000, reward=reward, deadline_ms=now + deadline_in_ms,
                    max_epochs=1, created_ms=now)
        return crypto.sign(self.world.requester, task, self.world.state.chain_id)

    def submit(self, c: Consensus, task: Signed[Task]) -> str:
        return c.submit_task(task, self.digits.train, self.digits.test)

    @property
    def state(self) -> Any:
        return self.ledger.actor.snapshot()

    def escrow_posts(self, task_id: str) -> int:
        return sum(1 for b in self.ledger.actor.blocks() for tx in b.txs
                   if isinstance(tx, PostTaskTx) and crypto.message_hash(tx.task.message) == task_id)


@pytest.fixture
def rig(tmp_path: Path, digits: Any) -> Iterator[Rig]:
    world = World()
    actor = Ledger(str(tmp_path / "ledger.sqlite"), genesis=world.genesis)
    yield Rig(world, FakeLedger(actor), tmp_path, digits)
    actor.chain.close()


def wait_past(deadline_ms: int) -> None:
    time.sleep(max(0.0, (deadline_ms - time.time_ns() // 10**6 + 5) / 1e3))


def close_on_chain(rig: Rig, task: Signed[Task]) -> None:
    """The task's refund committed behind the pool's back (a commit whose reply was lost)."""
    task_id = crypto.message_hash(task.message)
    block = propose_task_block(rig.state, task, [], [], rig.world.proposer, time.time_ns() // 10**6, "ab" * 32)[0]
    rig.ledger.actor.import_block(block)
    assert rig.state.tasks[task_id].status == "refunded"


# ---------------------------------------------------------------- finding 1: liveness


def test_a_task_settled_behind_the_pools_back_does_not_stop_the_tick(rig: Rig) -> None:
    c = rig.consensus()
    stale = rig.task(deadline_in_ms=300)
    stale_id, other_id = rig.submit(c, stale), rig.submit(c, rig.task())
    wait_past(stale.message.deadline_ms)
    close_on_chain(rig, stale)
    assert c.tick() == 1  # before the fix: the refund was refused and raised out of tick, forever
    assert c._workers.started == [other_id]  # type: ignore[attr-defined]
    assert c.task_view(stale_id)["status"] == "expired"


def test_a_refused_refund_is_noted_once_and_other_tasks_still_start(rig: Rig,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    c = rig.consensus()
    doomed = rig.task(deadline_in_ms=300)
    doomed_id = rig.submit(c, doomed)
    wait_past(doomed.message.deadline_ms)
    rig.ledger.refuse = lambda block: block.header.task_id == doomed_id
    first, second = rig.task(), rig.task()
    with caplog.at_level(logging.WARNING, logger="dlbc_ray.actors.coordinator"):
        rig.submit(c, first)
        assert c.tick() == 1
        for group in c.groups:
            group.busy = False
        rig.submit(c, second)
        c.settler.retry_at.clear()  # even asked again at once, the refusal stays one log line
        assert c.tick() == 1
    assert len(c._workers.started) == 2  # type: ignore[attr-defined]
    assert c.task_view(doomed_id)["settlement"] == "refused"
    assert sum("refused" in r.getMessage() for r in caplog.records) == 1
    assert rig.state.tasks[doomed_id].status == "open"


def test_a_refused_refund_is_asked_again_later_not_every_tick(rig: Rig) -> None:
    c = rig.consensus()
    doomed = rig.task(deadline_in_ms=300)
    doomed_id = rig.submit(c, doomed)
    wait_past(doomed.message.deadline_ms)
    rig.ledger.refuse = lambda block: block.header.task_id == doomed_id
    c.tick()
    imports = rig.ledger.calls.count("import_block")
    c.tick()
    assert rig.ledger.calls.count("import_block") == imports
    rig.ledger.refuse = lambda block: False
    c.settler.retry_at[doomed_id] = 0.0  # the back-off is over
    c.tick()
    assert rig.state.tasks[doomed_id].status == "refunded" and "settlement" not in c.task_view(doomed_id)


def test_a_lost_refund_reply_neither_stalls_nor_refunds_twice(rig: Rig) -> None:
    c = rig.consensus()
    task = rig.task(deadline_in_ms=300)
    task_id = rig.submit(c, task)
    wait_past(task.message.deadline_ms)
    height = rig.state.height
    rig.ledger.lose = {"import_block": 1}
    c.tick()
    assert rig.state.tasks[task_id].status == "refunded" and rig.state.height == height + 1
    c.tick()
    assert rig.state.height == height + 1


# ------------------------------------------------- finding 2: stuck and double escrow


def test_a_retried_submit_is_queued_not_escrowed_twice(rig: Rig) -> None:
    c = rig.consensus()
    task = rig.task(reward=250)
    before = rig.state.balance(rig.world.requester.public_key)
    rig.ledger.lose = {"import_block": 100}  # every reply to the posting is lost: the submitter sees a failure
    with pytest.raises(ActorUnavailable):
        rig.submit(c, task)
    rig.ledger.lose = {}
    task_id = crypto.message_hash(task.message)
    assert rig.state.tasks[task_id].status == "open"  # ... although the posting was committed
    assert rig.submit(c, task) == task_id  # the client's retry: the same signed task
    assert rig.submit(c, task) == task_id
    assert rig.escrow_posts(task_id) == 1
    assert rig.state.balance(rig.world.requester.public_key) == before - 250
    assert task_id in c.pool and c.task_view(task_id)["status"] == "queued"


def test_a_lost_posting_reply_is_retried_by_the_actor_itself(rig: Rig) -> None:
    c = rig.consensus()
    task = rig.task()
    rig.ledger.lose = {"import_block": 1}
    task_id = rig.submit(c, task)
    assert rig.escrow_posts(task_id) == 1 and task_id in c.pool


def test_a_retry_of_a_settled_task_returns_its_id_and_changes_nothing(rig: Rig) -> None:
    c = rig.consensus()
    task = rig.task(deadline_in_ms=300)
    task_id = rig.submit(c, task)
    wait_past(task.message.deadline_ms)
    c.tick()
    height = rig.state.height
    assert rig.submit(c, task) == task_id and rig.state.height == height


def test_task_data_is_saved_before_its_posting_is_committed(rig: Rig) -> None:
    c = rig.consensus()
    task = rig.task()
    task_id = crypto.message_hash(task.message)
    saved: list[bool] = []
    folder = rig.home / "tasks"
    rig.ledger.before_import = lambda block: saved.append(
        (folder / f"{task_id}.npz").is_file() and (folder / f"{task_id}.json").is_file())
    rig.ledger.lose = {"import_block": 100}  # the actor 'dies' after the commit: nobody hears of it
    with pytest.raises(ActorUnavailable):
        rig.submit(c, task)
    rig.ledger.lose = {}
    assert saved and all(saved)
    rig.ledger.before_import = lambda block: None
    restarted = rig.consensus()  # a new actor on the same home adopts the open task from its saved data
    assert restarted.task_view(task_id)["status"] == "queued"
    assert restarted.tick() == 1


def test_a_refused_posting_leaves_no_data_behind(rig: Rig) -> None:
    c = rig.consensus()
    task = rig.task(reward=10**9)  # more than the requester has
    with pytest.raises(Exception, match="balance|has"):
        rig.submit(c, task)
    assert not list((rig.home / "tasks").glob("*.npz"))


def test_an_open_task_unknown_to_the_pool_is_refunded_past_its_deadline(rig: Rig) -> None:
    c = rig.consensus()
    task = rig.task(deadline_in_ms=300)
    task_id = crypto.message_hash(task.message)
    before = rig.state.balance(rig.world.requester.public_key)
    posting = propose_tx_block(rig.state, [PostTaskTx(task=task)], rig.world.proposer, time.time_ns() // 10**6)
    rig.ledger.actor.import_block(posting)  # posted on chain, no data in the home, never pooled
    c.tick()
    assert task_id not in c.pool and rig.state.tasks[task_id].status == "open"  # not yet due
    wait_past(task.message.deadline_ms)
    c.tick()
    state = rig.state
    assert state.tasks[task_id].status == "refunded" and task_id not in state.escrow
    assert state.balance(rig.world.requester.public_key) == before


def test_a_constructor_that_cannot_reach_the_ledger_still_comes_up(rig: Rig) -> None:
    rig.ledger.lose = {"snapshot": 100}
    c = rig.consensus()  # a raising constructor is never restarted by Ray
    rig.ledger.lose = {}
    assert c.tick() == 0


def test_a_pooled_task_the_chain_never_saw_is_dropped(rig: Rig) -> None:
    c = rig.consensus()
    task = rig.task()
    task_id = crypto.message_hash(task.message)
    c.pool.add(task_id, task, rig.digits.train, rig.digits.test)
    assert c.tick() == 0 and task_id not in c.pool
    assert c.task_view(task_id)["settlement"] == "not_on_chain"
