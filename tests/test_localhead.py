"""Which addresses get the loopback treatment (Ray would rewrite them to the machine's IP), and the token file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dlbc_ray.errors import ConfigError
from dlbc_ray.runtime.home import open_home
from dlbc_ray.runtime.localhead import check_token_file, is_loopback, start


@pytest.mark.parametrize("address", ["127.0.0.1:6379", "127.0.1.1:1", "localhost:6379", "[::1]:6379"])
def test_loopback_addresses(address: str) -> None:
    assert is_loopback(address)


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "192.0.2.2:6379", "head.example:6379", "1127.0.0.1:1"])
def test_other_addresses_keep_rays_own_handling(address: str) -> None:
    assert not is_loopback(address)


# Finding 7 of issue 10: the Ray token file is 0600 or refused; auth never fails open.


def test_token_file_open_to_others_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "auth_token"
    token.write_text("t" * 64)
    token.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        check_token_file(token)
    message = str(info.value)
    assert str(token) in message and "mode 0644" in message and f"chmod 600 {token}" in message
    token.chmod(0o600)
    assert check_token_file(token) == token


def test_home_token_is_made_private_and_refused_once_loosened(tmp_path: Path) -> None:
    from dlbc_ray.runtime.network import ensure_home_token

    home = open_home(tmp_path / "home")
    token = ensure_home_token(home)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    token.chmod(0o640)
    with pytest.raises(ConfigError, match="mode 0640"):
        ensure_home_token(home)


def test_local_cluster_auth_never_fails_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlbc_ray.runtime.network import configure_ray_auth

    home = open_home(tmp_path / "home")
    monkeypatch.delenv("DLBC_INSECURE_NO_AUTH", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(ConfigError, match="RAY_AUTH_MODE"):
        configure_ray_auth(home, local=True)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    loose = tmp_path / "given_token"
    loose.write_text("t" * 64)
    loose.chmod(0o604)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(loose))
    with pytest.raises(ConfigError, match="mode 0604"):
        configure_ray_auth(home, local=True)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    configure_ray_auth(home, local=True)
    assert Path(os.environ["RAY_AUTH_TOKEN_PATH"]) == home.ray_token


def test_local_head_refuses_a_loose_token_before_starting(tmp_path: Path) -> None:
    token = tmp_path / "auth_token"
    token.write_text("t" * 64)
    token.chmod(0o666)
    with pytest.raises(ConfigError, match="mode 0666"):
        start(tmp_path / "head", token)
    assert not (tmp_path / "head").exists()


def test_the_demo_cluster_starts_no_dashboard_ui_and_forwards_no_worker_logs(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The first block waits on CPU: the demo's private cluster leaves out what nothing of it uses (the dashboard
    UI's modules; worker logs copied to the driver), on loopback only. Ray 2.60 still starts its minimal
    dashboard head, the dashboard agent, the runtime-env agent, the log monitor and the autoscaler monitor
    for any cluster ``ray.init`` starts (about 5 s of CPU together); public ``ray.init`` arguments cannot drop them.
    ``dlbc-ray up`` keeps the dashboard: its Jobs API serves ``bench submit`` (tests/integration/test_jobs.py)."""
    from dlbc_ray.config import MINIMAL
    from dlbc_ray.runtime import raystart

    seen: dict[str, object] = {}
    for name, value in (("RAY_AUTH_MODE", "token"), ("RAY_AUTH_TOKEN", "t" * 64), ("RAY_USAGE_STATS_ENABLED", "0")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(raystart, "keep_loopback_driver", lambda: None)
    monkeypatch.setattr(raystart.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(raystart.ray, "init", lambda **kwargs: seen.update(kwargs))
    assert raystart.start_local_ray(open_home(tmp_path / "home"), MINIMAL) is True
    assert seen["include_dashboard"] is False and seen["log_to_driver"] is False
    assert seen["_node_ip_address"] == seen["dashboard_host"] == "127.0.0.1" and seen["address"] == "local"

