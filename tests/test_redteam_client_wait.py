"""`submit --wait` polls a task's status after its reward is escrowed: a poll whose reply is lost (a read,
safe to repeat) must be a pause, not an error telling the user their submitted task failed to answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dlbc_ray.runtime import client
from dlbc_ray.actors import _ray
from dlbc_ray.runtime.home import open_home


class LoseFirst:
    def __init__(self) -> None:
        self.lost = 0

    def lose(self, what: str) -> bool:
        self.lost += 1
        return self.lost == 1


class Consensus:
    class task_view:  # noqa: N801 -- stands for the actor method
        @staticmethod
        def remote(task_id: str) -> dict[str, Any]:
            return {"task_id": task_id, "status": "done"}


def test_a_lost_status_reply_is_asked_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_ray.ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(_ray, "_plan", LoseFirst())
    monkeypatch.setattr(client, "attach", lambda home, address: Consensus())
    monkeypatch.setattr(client.time, "sleep", lambda s: None)
    view = client.wait_for(open_home(tmp_path), "ab" * 32, address=None, timeout_s=60)
    assert view["status"] == "done"
