"""A miner group's placement group follows MinerConfig.placement (PACK or SPREAD) and holds what each
miner's actor reserves: a data-parallel miner's bundle leaves CPUs and GPUs to its Ray Train workers.
On the suite's one-node Ray session (the multi-node layout itself: test_multinode.py)."""

from __future__ import annotations

import pytest

from dlbc_ray.config import MINIMAL, MinerConfig
from dlbc_ray.runtime.raystart import Placement

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("strategy", ["PACK", "SPREAD"])
def test_a_miner_group_is_placed_as_configured(ray_session: None, strategy: str) -> None:
    from ray.util import placement_group_table
    from ray.util.placement_group import remove_placement_group

    cfg = MINIMAL.model_copy(update={"miner": MinerConfig(num_cpus=0.25, placement=strategy)})
    placed = Placement.for_network(cfg, [["miner-0", "miner-1"]], detached=True)
    try:
        (pg,) = placed.groups
        row = placement_group_table(pg)
        assert row["strategy"] == strategy and row["state"] == "CREATED", row
        assert [b for b in row["bundles"].values()] == [{"CPU": 0.25, "dlbc_miner": 1.0}] * 2
    finally:
        for pg in placed.groups:
            remove_placement_group(pg)


def test_a_data_parallel_miners_bundle_holds_no_cpu_or_gpu(ray_session: None) -> None:
    from ray.util import placement_group_table
    from ray.util.placement_group import remove_placement_group

    cfg = MINIMAL.model_copy(update={"miner": MinerConfig(num_cpus=0.25, workers=2)})
    placed = Placement.for_network(cfg, [["miner-0"]], detached=True)
    try:
        assert list(placement_group_table(placed.groups[0])["bundles"].values()) == [{"dlbc_miner": 1.0}]
    finally:
        for pg in placed.groups:
            remove_placement_group(pg)
