"""The fault hook at the Ray call boundary: off by default, drops replies after the callee ran, carried to actors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dlbc_ray.actors import _ray
from dlbc_ray.errors import ActorUnavailable, ConfigError


@pytest.fixture(autouse=True)
def faults_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(_ray.FAULTS_ENV, raising=False)
    _ray.inject_faults(None)
    yield
    _ray.inject_faults(None)


def test_off_by_default_and_nothing_travels_to_actors() -> None:
    assert _ray._plan is None and _ray.fault_options() == {}


def test_a_dropped_reply_is_a_timeout_after_the_callee_ran(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ran: list[int] = []

    def fake_get(ref: int, timeout: float | None = None) -> int:
        ran.append(ref)
        return ref * 2

    monkeypatch.setattr(_ray.ray, "get", fake_get)
    log = tmp_path / "drops"
    _ray.inject_faults(f"drop=1,seed=3,log={log}")
    with pytest.raises(ActorUnavailable) as caught:
        _ray.get(21, timeout=5, what="ledger")
    assert caught.value.reason == "timeout" and ran == [21]  # the call took effect; only its answer is lost
    assert log.read_text().split()[1:] == ["ledger"]
    _ray.inject_faults("drop=0")
    assert _ray.get(21, timeout=5, what="ledger") == 42


def test_retrying_gets_past_a_dropped_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ray.ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(_ray.time, "sleep", lambda s: None)
    _ray.inject_faults("drop=0.5,seed=1")
    calls: list[int] = []
    value = _ray.get_retrying(lambda: calls.append(1) or 7, timeout=1, what="x", patience_s=60)
    assert value == 7 and len(calls) >= 1


def test_retrying_gives_up_after_its_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ray.ray, "get", lambda ref, timeout=None: ref)
    _ray.inject_faults("drop=1")
    with pytest.raises(ActorUnavailable):
        _ray.get_retrying(lambda: 7, timeout=1, what="x", patience_s=0.3)


def test_the_plan_travels_to_actors_spawned_afterwards() -> None:
    _ray.inject_faults("drop=0.25,seed=9")
    assert _ray.fault_options() == {"runtime_env": {"env_vars": {_ray.FAULTS_ENV: "drop=0.25,seed=9"}}}


def test_a_driver_can_arm_its_actors_but_not_itself() -> None:
    _ray.inject_faults("drop=1", here=False)
    assert _ray._plan is None and _ray.fault_options()["runtime_env"]["env_vars"] == {_ray.FAULTS_ENV: "drop=1"}


@pytest.mark.parametrize("spec", ["drop", "drop=2", "drop=x", "lose=0.1", "seed=1.5"])
def test_a_bad_plan_is_one_named_error(spec: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _ray.parse_faults(spec)
    assert caught.value.reason == "faults" and _ray.FAULTS_ENV in str(caught.value)
