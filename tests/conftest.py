"""Shared fixtures. Ray starts once per session (3-6 s), never per test.

Ray reads its auth mode at import time, so the test session decides it here, as the
CLI does: token auth on, with the token in a 0600 file of the test home.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from dlbc_ray.runtime.home import Home, open_home  # noqa: E402

# Tests assert behaviour, never timing (that is benchmarks/): no per-example deadline, which on 2 shared
# cores failed a difficulty property once (543 ms against Hypothesis' default 200 ms) with nothing wrong.
settings.register_profile("dlbc", deadline=None)
settings.load_profile("dlbc")


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return open_home(tmp_path_factory.mktemp("ray-session"))


@pytest.fixture(scope="session")
def ray_session(ray_home: Home) -> Iterator[None]:
    """One real local Ray cluster for every integration test (address='local': never join another)."""
    import ray

    from dlbc_ray.runtime.network import configure_ray_auth

    from dlbc_ray.runtime.localhead import keep_loopback_driver

    configure_ray_auth(ray_home, local=True)
    keep_loopback_driver()  # the test cluster, like every head the project starts, listens on loopback only
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1",
             namespace="dlbc-test", log_to_driver=False, logging_level="WARNING",
             resources={"dlbc_miner": 16, "dlbc_validator": 16})
    yield
    ray.shutdown()


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return open_home(tmp_path / "home")
