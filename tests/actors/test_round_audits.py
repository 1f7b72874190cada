"""What a round hands its validators to audit transcripts: each commit's own close and a way to ask its own
miner (through the one Ray boundary, the round's reveal timeout); nothing for private shards or without the
network's policy. Ray is stubbed: a call's reply is its arguments; live rounds are tests/integration/test_attacks.py."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from ray import cloudpickle

from dlbc_ray import crypto
from dlbc_ray.actors import _ray
from dlbc_ray.actors._ray import Member
from dlbc_ray.actors.round_runner import RoundAudits, RoundRunner, RoundState, TaskData, TranscriptAsk, miner_policy
from dlbc_ray.config import MINIMAL, MinerConfig
from dlbc_ray.consensus.transcript import compute_hyperparameters
from dlbc_ray.schema.round_messages import SubmissionArrival
from tests.builders import World


@dataclass
class FakeMiner:
    """A miner handle that records what it was asked and answers with it."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def transcript_opening(self) -> FakeMiner:
        return self

    @property
    def reveal(self) -> FakeMiner:
        return self

    def remote(self, *args: Any) -> tuple[Any, ...]:
        self.calls.append(args)
        return args


@pytest.fixture(autouse=True)
def stub_ray(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    timeouts: list[float | None] = []

    def fake_get(ref: Any, timeout: float | None = None) -> Any:
        timeouts.append(timeout)
        return ref

    monkeypatch.setattr(_ray.ray, "get", fake_get)
    return timeouts


def runner(world: World, miners: list[Member], *, policy: Any, shards: bool = False) -> RoundRunner:
    task = world.task()
    task_id = crypto.message_hash(task.message)
    run = RoundRunner(MINIMAL.consensus, task=task, data=TaskData("train-ref", None), miners=miners, validators=[],
                      base=world.state, state=RoundState(task_id, world.round_id(task_id)), lock=threading.Lock(),
                      proposer=world.proposer, policy=policy)
    if shards:
        run.ctx = run.ctx.model_copy(update={"shards": {m.public_key: (i, 10) for i, m in enumerate(miners)}})
    return run


def arrivals(world: World, run: RoundRunner, n: int) -> list[SubmissionArrival]:
    return [SubmissionArrival(signed=world.submission(world.miners[i], run.task, label=str(i)), arrived_ms=1)
            for i in range(n)]


def test_each_commit_is_audited_against_its_own_waves_close_and_asks_its_own_miner(
        stub_ray: list[float | None]) -> None:
    world = World()
    handles = [FakeMiner(), FakeMiner()]
    members = [Member(f"m{i}", world.miners[i].public_key, h) for i, h in enumerate(handles)]
    run = runner(world, members, policy=miner_policy(MINIMAL.miner))
    first, second = arrivals(world, run, 2)
    run.reveal([first])  # wave 1
    run.reveal([second])  # wave 2 (a standing round reopened)
    audits = run.transcript_audits([first, second])
    assert isinstance(audits, RoundAudits) and audits.train == "train-ref"
    assert audits.policy == compute_hyperparameters(MINIMAL.miner.batch_size, MINIMAL.miner.lr,
                                                    MINIMAL.miner.optimizer, MINIMAL.miner.val_fraction)
    for arrival, handle in zip([first, second], handles):
        commit = arrival.signed.message.commit
        signature, ask = audits.openers[commit]
        close = run.closes[commit]
        assert signature == close.signature and close.message.opens == (commit,)
        assert ask(3) == (close, commit, 3) and handle.calls[-1] == (close, commit, 3)
    assert stub_ray[-1] == MINIMAL.consensus.reveal_timeout_s
    ask = cloudpickle.loads(cloudpickle.dumps(audits.openers[first.signed.message.commit][1]))  # as Ray sends it
    assert ask.commit == first.signed.message.commit and ask.close == run.closes[ask.commit]


def test_no_audits_without_a_policy_or_for_private_shards() -> None:
    world = World()
    members = [Member("m0", world.miners[0].public_key, FakeMiner())]
    for run in (runner(world, members, policy=None), runner(world, members, policy={"lr": 0.1}, shards=True)):
        (arrival,) = arrivals(world, run, 1)
        run.reveal([arrival])
        assert run.transcript_audits([arrival]) is None


def test_a_commit_without_a_close_or_a_known_miner_gets_no_opener() -> None:
    """The validator then audits it as unanswered (models.replay's ``_nobody``): never someone else's miner."""
    world = World()
    run = runner(world, [Member("m0", world.miners[0].public_key, FakeMiner())], policy={"lr": 0.1})
    mine, stranger = arrivals(world, run, 2)
    audits = run.transcript_audits([mine, stranger])
    assert audits is not None and audits.openers == {}
    run.reveal([mine, stranger])
    audits = run.transcript_audits([mine, stranger])
    assert audits is not None and set(audits.openers) == {mine.signed.message.commit}


def test_the_policy_is_the_miners_config() -> None:
    cfg = MinerConfig(batch_size=32, lr=0.05, optimizer="sgd", val_fraction=0.2)
    assert miner_policy(cfg) == {"batch_size": 32, "lr": 0.05, "optimizer": "sgd", "weight_decay": 0.0,
                                 "val_fraction": 0.2}


def test_an_ask_goes_through_the_boundary_and_names_the_miner(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.exceptions import GetTimeoutError

    from dlbc_ray.errors import ActorUnavailable

    def late(ref: Any, timeout: float | None = None) -> Any:
        raise GetTimeoutError("late (test)")

    monkeypatch.setattr(_ray.ray, "get", late)
    world = World()
    ask = TranscriptAsk(FakeMiner(), "miner-7", world.sign(world.proposer, world.task().message), "ab" * 32, 2.0)
    with pytest.raises(ActorUnavailable, match="miner-7"):
        ask(0)
