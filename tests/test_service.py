"""``up`` never leaves a local head behind when its network does not come up (Ray itself is stubbed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dlbc_ray.runtime import localhead, service
from dlbc_ray.config import NetworkConfig
from dlbc_ray.errors import ConfigError
from dlbc_ray.runtime.home import Home


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    calls: dict[str, Any] = {"stopped": [], "spawn": None}
    head = localhead.LocalHead("127.0.0.1:1", "", 1, tmp_path)
    monkeypatch.setattr(service, "check_home", lambda *a, **k: None)
    ids = SimpleNamespace(miners=[SimpleNamespace(name="m0")], validators=[])
    monkeypatch.setattr(service, "load_identities", lambda *a, **k: ids)
    monkeypatch.setattr(service, "start_head", lambda home, cfg: head)
    monkeypatch.setattr(service, "connect", lambda home, address: None)
    monkeypatch.setattr(service, "consensus_handle", lambda: None)
    monkeypatch.setattr(service.ray, "shutdown", lambda: None)
    monkeypatch.setattr(localhead, "stop", lambda h: calls["stopped"].append(h))

    def assemble(cfg: Any, home: Any, ids: Any, **kwargs: Any) -> Any:
        assert kwargs["detached"] is True  # up's actors outlive the driver: the one spawn path, detached
        if calls["spawn"] is not None:
            raise calls["spawn"]
        return SimpleNamespace(groups=[["m0"]])

    monkeypatch.setattr(service, "assemble", assemble)
    return calls


@pytest.mark.parametrize("error", [ConfigError("no", reason="x"), KeyboardInterrupt()])
def test_a_network_that_fails_to_come_up_stops_the_head_it_started(stubbed: dict[str, Any], tmp_path: Path,
                                                                    error: BaseException) -> None:
    stubbed["spawn"] = error
    with pytest.raises(type(error)):
        service.up(NetworkConfig(), Home(tmp_path / "home"), address="local")
    assert len(stubbed["stopped"]) == 1
    assert not (tmp_path / "home" / service.RECORD).exists()


def test_a_network_that_comes_up_keeps_its_head(stubbed: dict[str, Any], tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.root.mkdir(parents=True)
    record, started = service.up(NetworkConfig(), home, address="local")
    assert started and stubbed["stopped"] == [] and (home.root / service.RECORD).exists()
