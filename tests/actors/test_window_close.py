"""A standing round reopens its window after a refuted claim: the close its first wave was shown must
open only that wave's seeds and stop nobody. Otherwise a first-wave miner holding it could read a
second-wave rival's mapping seed, or stop every rival still training, while the window is open."""

from __future__ import annotations

import pytest

from dlbc_ray import crypto
from dlbc_ray.errors import RevealRefused
from dlbc_ray.schema.round_messages import WindowClose
from tests.actors.test_miner_secrets import CHAIN, DEADLINE, PROPOSER, Mined, done, new_miner  # noqa: F401


def _close(d: Mined, *, opens: tuple[str, ...], final: bool) -> object:
    message = WindowClose(task_id=d.ctx.task_id, round_id=d.ctx.round_id, closed_ms=DEADLINE, opens=opens,
                          final=final)
    return crypto.sign(PROPOSER, message, CHAIN)


def test_a_close_opens_only_the_commits_it_names(done: Mined) -> None:
    earlier_wave = _close(done, opens=(crypto.sha256_hex(b"a first-wave rival"),), final=False)
    with pytest.raises(RevealRefused) as caught:
        done.miner.reveal(earlier_wave, done.commit)  # type: ignore[arg-type]
    assert caught.value.reason == "not_opened"
    assert done.miner.reveal(_close(done, opens=(done.commit,), final=False), done.commit)  # type: ignore[arg-type]


def test_only_the_final_close_stops_a_miner(done: Mined) -> None:
    miner = new_miner()
    miner._rounds[done.ctx.task_id] = done.ctx
    with pytest.raises(RevealRefused) as caught:
        miner.cancel(_close(done, opens=(done.commit,), final=False))  # type: ignore[arg-type]
    assert caught.value.reason == "not_final" and not miner._cancelled
    miner.cancel(_close(done, opens=(), final=True))  # type: ignore[arg-type]
    assert miner._cancelled == {done.ctx.task_id}


def test_a_close_opens_nothing_and_stops_nobody_by_default() -> None:
    close = WindowClose(task_id="a" * 64, round_id="b" * 64, closed_ms=1)
    assert close.opens == () and close.final is False
