"""A saved task's test split is the validators' alone: the pool's folder and files are private whatever the
home's mode or the umask (issue 10's kind (d): a miner sharing the head machine must not read it)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from dlbc_ray.actors.pool import TaskPool
from dlbc_ray.models.data import Split
from tests.builders import World


def test_saved_task_data_is_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "tasks").mkdir(mode=0o755)  # left loose by an older version or by hand
    old = os.umask(0o022)
    try:
        split = Split(np.zeros((4, 1, 8, 8), np.float32), np.arange(4) % 2)
        TaskPool(home / "tasks").save("ab" * 32, World().task(), split, split)
    finally:
        os.umask(old)
    assert stat.S_IMODE((home / "tasks").stat().st_mode) == 0o700
    for path in (home / "tasks").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
