"""A small real network (3 miners, 4 validators, Lightning training) shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dlbc_ray.config import MINIMAL, NetworkConfig
from dlbc_ray.runtime.home import Home, open_home


@dataclass
class Live:
    cfg: NetworkConfig
    home: Home
    net: Any
    bundle: Any
    data: Any


@pytest.fixture(scope="module")
def live(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    import ray

    from dlbc_ray.actors.coordinator import TaskData
    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.runtime.network import assemble, load_identities, teardown

    cfg = MINIMAL.model_copy(update={"miners": 3})
    home = open_home(tmp_path_factory.mktemp("live-home"))
    net = assemble(cfg, home, load_identities(home, cfg))
    bundle = load_builtin("digits")
    yield Live(cfg, home, net, bundle, TaskData(train=ray.put(bundle.train), test=ray.put(bundle.test)))
    teardown(net)
