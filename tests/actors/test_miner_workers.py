"""How many workers a miner trains with, and what it and its placement-group bundle reserve (no Ray).

A miner given G whole GPUs trains on all of them (one Ray Train worker each); a fractional GPU or a
single one trains in the miner's own process on one device. A data-parallel miner's actor holds no
CPU or GPU: a bundle holding them would leave its workers nothing to be placed on.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dlbc_ray.actors.data_parallel import Channel
from dlbc_ray.actors.miner import training_workers, worker_device
from dlbc_ray.actors.spawn import miner_resources
from dlbc_ray.config import MinerConfig


@pytest.mark.parametrize("gpus,workers,expected", [(0.0, 1, 1), (0.5, 1, 1), (1.0, 1, 1), (1.5, 1, 1), (2.0, 1, 2),
                                                   (4.0, 1, 4), (0.0, 2, 2), (2.0, 3, 3), (8.0, 2, 8)])
def test_a_miner_trains_on_every_whole_gpu_it_is_given(gpus: float, workers: int, expected: int) -> None:
    assert training_workers(MinerConfig(num_cpus=1, num_gpus=gpus, workers=workers)) == expected


def test_a_single_worker_miner_reserves_what_it_always_did() -> None:
    cfg = MinerConfig(num_cpus=2, num_gpus=0.5, resources={"dlbc_miner": 1.0})
    assert miner_resources(cfg) == {"CPU": 2, "dlbc_miner": 1.0, "GPU": 0.5}
    assert miner_resources(MinerConfig(num_cpus=None)) == {"CPU": 1.0, "dlbc_miner": 1.0}


@pytest.mark.parametrize("cfg", [MinerConfig(num_cpus=1, num_gpus=2.0), MinerConfig(num_cpus=1, workers=2)])
def test_a_data_parallel_miner_leaves_its_cpus_and_gpus_to_its_workers(cfg: MinerConfig) -> None:
    own = miner_resources(cfg)
    assert own == {"CPU": 0.0, "dlbc_miner": 1.0}  # its custom resource still places it on a miner node
    assert worker_device(cfg) == ("gpu" if cfg.num_gpus >= 1 else "cpu")


def test_workers_and_placement_are_checked_where_the_config_is_read() -> None:
    with pytest.raises(ValidationError):
        MinerConfig(workers=0)
    with pytest.raises(ValidationError):
        MinerConfig(placement="STRICT_SPREAD_EVERYWHERE")
    assert MinerConfig().placement == "PACK" and MinerConfig(placement="SPREAD").placement == "SPREAD"


def test_the_channel_carries_the_close_in_and_the_result_out() -> None:
    channel = Channel()
    assert not channel.stopped() and channel.collect() is None
    channel.stop()
    channel.deliver(("result", "transcript"))
    assert channel.stopped() and channel.collect() == ("result", "transcript")
