"""A reveal whose reply is lost is asked again (revealing is idempotent): a lost reply must not cost an
honest miner its round as a bad_reveal. Ray is stubbed: a reply here has run already, ``lost`` ones time out."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from ray.exceptions import GetTimeoutError

from dlbc_ray import crypto
from dlbc_ray.actors import _ray
from dlbc_ray.actors._ray import Member
from dlbc_ray.actors.round_runner import RoundRunner, RoundState, TaskData
from dlbc_ray.config import MINIMAL
from dlbc_ray.schema import Reveal
from dlbc_ray.schema.round_messages import SubmissionArrival
from tests.builders import World


@dataclass
class Reply:
    value: Any
    lost: bool


@dataclass
class FakeMiner:
    """A miner handle whose first ``lose`` reveal replies are lost after the reveal was made."""

    world: World
    lose: int
    calls: list[str] = field(default_factory=list)

    @property
    def reveal(self) -> FakeMiner:
        return self

    def remote(self, close: Any, commit: str) -> Reply:
        self.calls.append(commit)
        message = Reveal(task_id=close.message.task_id, commit=commit, sml_seed="ab" * 32)
        lost, self.lose = self.lose > 0, self.lose - 1
        return Reply(self.world.sign(self.world.miners[0], message), lost)


@pytest.fixture(autouse=True)
def stub_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_get(ref: Reply, timeout: float | None = None) -> Any:
        if ref.lost:
            raise GetTimeoutError("lost (test)")
        return ref.value

    monkeypatch.setattr(_ray.ray, "get", fake_get)


@pytest.mark.parametrize(("lost", "revealed"), [(0, True), (1, True), (5, False)])
def test_a_lost_reveal_reply_is_asked_again(lost: int, revealed: bool) -> None:
    world = World()
    task = world.task()
    task_id = crypto.message_hash(task.message)
    sub = world.submission(world.miners[0], task)
    sub = world.sign(world.miners[0], sub.message.model_copy(update={"sml_commitment": "cd" * 32}))
    handle = FakeMiner(world, lose=lost)
    runner = RoundRunner(MINIMAL.consensus, task=task, data=TaskData(None, None),
                         miners=[Member("m0", world.miners[0].public_key, handle)], validators=[], base=world.state,
                         state=RoundState(task_id, world.round_id(task_id)), lock=threading.Lock(),
                         proposer=world.proposer)
    (arrival,) = runner.reveal([SubmissionArrival(signed=sub, arrived_ms=1)])
    assert (arrival.reveal is not None) is revealed
    assert len(handle.calls) == min(lost + 1, 2)  # asked once more at most: a refusal is not retried forever
