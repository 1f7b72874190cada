"""Live state for the explorer: rounds in flight, each miner's validation curve, the network's status.

Two sources feed one ``LiveState``: the demo's own status callbacks (``dlbc-ray demo
--explorer``), or a thread that polls a network started with ``dlbc-ray up`` through the
same calls as ``dlbc-ray status``. The curves exist only in memory: the explorer never writes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dlbc_ray.runtime.home import Home

MAX_TRACKED_TASKS = 200  # curves kept in memory, oldest dropped first


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LiveState:
    """What the explorer has seen of the running network; thread-safe."""

    def __init__(self, source: str = "none") -> None:
        self.source = source
        self._lock = threading.Lock()
        self._rounds: list[dict[str, Any]] = []
        self._curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self._reports: dict[str, dict[str, Any]] = {}
        self._network: dict[str, Any] | None = None
        self._detail = "no network is being watched"
        self._rounds_done = 0
        self._updated_ms = 0

    def observe_rounds(self, rounds: list[dict[str, Any]], rounds_done: int | None = None) -> None:
        """Rounds now in flight (``RoundStatus`` dumps); each miner's (epoch, val accuracy) joins its curve."""
        with self._lock:
            self._rounds = [r for r in rounds if r.get("task_id") and r.get("phase") != "idle"]
            for r in self._rounds:
                curves = self._curves.setdefault(r["task_id"], {})
                for actor in r.get("actors", {}).values():
                    if actor.get("epochs") and actor.get("epoch") and actor.get("val_accuracy") is not None:
                        record_point(curves.setdefault(actor["name"], []), actor["epoch"], actor["val_accuracy"])
            while len(self._curves) > MAX_TRACKED_TASKS:
                self._curves.pop(next(iter(self._curves)))
            if rounds_done is not None:
                self._rounds_done = rounds_done
            self._updated_ms = now_ms()

    def observe_report(self, report: dict[str, Any]) -> None:
        """A finished round (``RoundReport`` dump): where its time went."""
        with self._lock:
            self._reports[report["task_id"]] = report
            while len(self._reports) > MAX_TRACKED_TASKS:
                self._reports.pop(next(iter(self._reports)))
            self._updated_ms = now_ms()

    def observe_network(self, status: dict[str, Any] | None, detail: str = "") -> None:
        """``dlbc-ray status --json``'s object, or None with why there is none."""
        with self._lock:
            self._network, self._detail, self._updated_ms = status, detail, now_ms()

    def curve(self, task_id: str) -> dict[str, list[tuple[int, float]]]:
        with self._lock:
            return {name: list(points) for name, points in self._curves.get(task_id, {}).items()}

    def report(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._reports.get(task_id)

    def reports(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._reports.values())

    def network(self) -> tuple[dict[str, Any] | None, str]:
        with self._lock:
            return self._network, self._detail

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"source": self.source, "up": self._network is not None or self.source == "demo",
                    "detail": self._detail, "rounds": list(self._rounds), "rounds_done": self._rounds_done,
                    "updated_ms": self._updated_ms}


def record_point(points: list[tuple[int, float]], epoch: int, accuracy: float) -> None:
    """Add or replace the point of ``epoch``; points stay in epoch order."""
    kept = [p for p in points if p[0] != epoch]
    kept.append((epoch, float(accuracy)))
    points[:] = sorted(kept)


class DemoFeed:
    """Callbacks for ``run_demo`` that keep a LiveState current while the demo mines."""

    def __init__(self, live: LiveState) -> None:
        self.live = live
        live.observe_network(None, "the demo's network (it stops when the demo ends)")

    def status(self, status: Any) -> None:
        self.live.observe_rounds([status.model_dump(mode="json")], rounds_done=status.rounds_done)

    def round_done(self, report: Any) -> None:
        self.live.observe_report(report.model_dump(mode="json"))


class ClusterPoller(threading.Thread):
    """Polls the network recorded in the home (``network.json``) every ``interval_s``; a daemon thread."""

    def __init__(self, home: Home, live: LiveState, *, address: str | None = None, interval_s: float = 1.0) -> None:
        super().__init__(name="explorer-cluster-poller", daemon=True)
        self.home, self.live, self.address, self.interval_s = home, live, address, interval_s
        self._stop = threading.Event()
        self._watched: set[str] = set()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:  # a poll that breaks is shown on the Network page; the next one may work
                self.live.observe_network(None, f"network status failed: {type(e).__name__}: {str(e)[:200]}")
            self._stop.wait(self.interval_s)

    def poll(self) -> None:
        from dlbc_ray.runtime import service
        from dlbc_ray.errors import DLBCError

        if self.address is None and service.read_record(self.home) is None:
            self.live.observe_network(None, "no network is up for this home (no network.json); "
                                            "showing the ledger only")
            return
        try:
            from dlbc_ray.runtime import client

            status = client.status(self.home, address=self.address)
        except DLBCError as e:
            self.live.observe_network(None, f"network not reachable: {e}")
            return
        self.live.observe_network(status)
        self.live.observe_rounds(status["rounds"])
        self._collect_reports({r["task_id"] for r in status["rounds"] if r.get("task_id")})

    def _collect_reports(self, running: set[str]) -> None:
        """Rounds seen running that are gone now: fetch their reports (where each round's time went)."""
        from dlbc_ray.actors._ray import get
        from dlbc_ray.errors import DLBCError
        from dlbc_ray.runtime.service import attach

        finished, self._watched = self._watched - running, self._watched | running
        for task_id in finished:
            try:
                view = get(attach(self.home, self.address).task_view.remote(task_id), timeout=10, what="task view")
            except DLBCError:
                continue
            if view.get("report"):
                self.live.observe_report(view["report"])
                self._watched.discard(task_id)
