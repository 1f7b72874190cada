"""PoLe on a real network: standing blocks come faster than the target interval, so the difficulty rises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from dlbc_ray.config import MINIMAL, PoleConfig
from dlbc_ray.consensus.difficulty import compute_standing_difficulty
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.runtime.home import open_home
from dlbc_ray.ledger import Chain, verify_chain
from dlbc_ray.runtime.plots import pole_points

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def pole_net(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    from dlbc_ray.actors.round_runner import TaskData
    from dlbc_ray.models.data import load_builtin
    from dlbc_ray.runtime.network import assemble, load_identities, standing_template, teardown

    pole = PoleConfig(target_interval_s=60, window=2, initial=0.7, floor=0.5, ceiling=0.95, max_step=0.05)
    cfg = MINIMAL.model_copy(update={"pole": pole})
    home = open_home(tmp_path_factory.mktemp("pole-home"))
    net = assemble(cfg, home, load_identities(home, cfg))
    bundle = load_builtin("digits")
    yield home, net, TaskData(ray.put(bundle.train), ray.put(bundle.test)), standing_template(cfg, bundle)
    teardown(net)


def test_blocks_faster_than_the_target_interval_raise_the_difficulty(pole_net) -> None:
    from dlbc_ray.runtime.network import run_round

    home, net, data, template = pole_net
    committed = 0
    for _ in range(8):
        report = run_round(net, None, data, timeout_s=300, standing=template)
        committed += report.committed
        if committed == 4:
            break
    assert committed == 4
    points = pole_points(Chain.open(home.ledger, create=False))
    targets = [p[2] for p in points]
    assert targets[:2] == [0.7, 0.7] and targets[2] > 0.7  # retargeted at height window + 1, upward
    # The first interval spans the network's start-up (minutes on a loaded machine); the rule does not
    # count it. Every counted interval came faster than the target: that is why the target rose.
    assert all(p[1] < 60 for p in points[1:])
    chain = Chain.open(home.ledger, create=False)
    counted = chain.headers()[2].timestamp_ms - chain.headers()[1].timestamp_ms  # block 2's interval
    params = chain.state.params.retarget
    assert round(targets[2] * SCORE_SCALE) == compute_standing_difficulty(3, 7_000, (counted,), params)
    assert verify_chain(home.ledger).pole.height == 4
