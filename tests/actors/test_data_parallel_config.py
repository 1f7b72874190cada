"""A data-parallel miner's channel timeout comes from its config (no constant in actors/data_parallel.py).

Ray Train itself runs in tests/integration/test_data_parallel_miner.py (slow); here ``data_parallel.train`` is
replaced by a recorder of what the miner hands it, so only the wiring from ``MinerConfig`` is under test.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from dlbc_ray.actors import data_parallel, miner
from dlbc_ray.config import MinerConfig, ProtectionConfig
from dlbc_ray.models.data import Split
from dlbc_ray.models.training import TrainSettings


class Header(SimpleNamespace):
    def model_copy(self, update: dict[str, Any]) -> Header:
        return Header(**{**vars(self), **update})


@pytest.mark.parametrize("timeout_s", [7.5, 900.0])
def test_the_workers_channel_calls_wait_as_long_as_the_miner_config_says(monkeypatch: pytest.MonkeyPatch,
                                                                        timeout_s: float) -> None:
    handed: dict[str, Any] = {}
    monkeypatch.setattr(data_parallel, "open_channel", lambda: "channel")
    monkeypatch.setattr(data_parallel, "train", lambda job, channel, place: handed.update(job=job, place=place))
    cfg = MinerConfig(workers=2, num_cpus=0.5, train_call_timeout_s=timeout_s)
    spec = SimpleNamespace(kind="task", target=0, code=None)
    data = Split(x=np.zeros((128, 4), np.float32), y=np.zeros(128, np.int64))
    miner.train_parallel(cfg, ProtectionConfig(), {}, set(), spec, "task", data, None, [], TrainSettings(),
                         Header(examples=128, workers=1), None)
    assert handed["place"].timeout_s == timeout_s and handed["job"].workers == 2


def test_placement_has_no_built_in_timeout() -> None:
    fields = {f.name: f for f in dataclasses.fields(data_parallel.Placement)}
    assert fields["timeout_s"].default is dataclasses.MISSING


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_a_timeout_that_is_no_positive_finite_time_is_refused(bad: float) -> None:
    with pytest.raises(ValidationError):
        MinerConfig(train_call_timeout_s=bad)
