"""Lost replies at each read-only call of a round (issue 10's kind (c)), through the one Ray boundary's hook.

A reply lost once (the callee ran; only its answer did not come back in time) must not become a verdict
against an honest miner: a read that is safe to repeat is asked again before anyone is judged. Each test
loses exactly the first reply of one call site (no Ray: ``ray.get`` answers at once, the hook drops).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dlbc_ray.actors import _ray
from dlbc_ray.actors.round_runner import TranscriptAsk
from dlbc_ray.actors.validator import Validator
from dlbc_ray.config import MINIMAL, ValidatorConfig
from dlbc_ray.crypto import Identity


@dataclass
class LoseFirst:
    """A fault plan that loses the first reply of each call site named in ``sites``, and none after."""

    sites: tuple[str, ...]
    lost: list[str] = field(default_factory=list)

    def lose(self, what: str) -> bool:
        hit = any(s in what for s in self.sites) and what not in self.lost
        if hit:
            self.lost.append(what)
        return hit


@pytest.fixture(autouse=True)
def answers_at_once(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_ray.ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(_ray.time, "sleep", lambda s: None)
    yield
    _ray.inject_faults(None)


@dataclass
class Handle:
    """A miner's handle whose ``transcript_opening.remote`` answers (as a ref) what the miner serves."""

    asked: list[int] = field(default_factory=list)

    @property
    def transcript_opening(self) -> Any:
        handle = self

        class Method:
            @staticmethod
            def remote(close: Any, commit: str, index: int) -> tuple[str, str, int]:
                handle.asked.append(index)
                return ("header", "root", index)

        return Method()


def test_a_lost_transcript_opening_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = LoseFirst(("transcript",))
    monkeypatch.setattr(_ray, "_plan", plan)
    handle = Handle()
    ask = TranscriptAsk(handle, "miner-0", close=None, commit="ab" * 32, timeout_s=5.0)  # type: ignore[arg-type]
    assert ask(3) == ("header", "root", 3)
    assert plan.lost and handle.asked == [3, 3]  # lost once, asked again, answered


def test_a_lost_weights_fetch_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = LoseFirst(("submission weights",))
    monkeypatch.setattr(_ray, "_plan", plan)
    monkeypatch.setattr(_ray.ray, "ObjectRef", dict)  # a plain dict stands for the ref the round passes
    judge = Validator(ValidatorConfig(), identity=Identity.from_seed("v", b"v"), protection=MINIMAL.protection,
                      marks={}, proposer=Identity.from_seed("consensus", b"consensus").public_key)
    weights = {"w": [1.0]}
    assert judge._fetch(weights) == weights
    assert plan.lost
