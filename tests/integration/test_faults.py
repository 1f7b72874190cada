"""Faults on a real long-lived network: replies lost after the callee ran, miners, validators, the consensus
and the ledger killed at random moments while tasks are submitted and mined. Nothing may be lost:
the chain verifies, supply is conserved, every submitted task is mined or refunded, none is escrowed
twice, and every block seen committed is still there. ``benchmarks/chaos.py`` runs the same, longer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.chaos import Plan, chaos_config, drops_in, run_chaos
from dlbc_ray.runtime import service
from dlbc_ray.actors._ray import inject_faults
from dlbc_ray.runtime.home import Home, open_home

pytestmark = pytest.mark.ray

PLAN = Plan(tasks=10, kills=8, drop=0.05, kill_every_s=(2.0, 5.0), deadline_s=40.0, submit_every_s=1.0,
            settle_timeout_s=120.0, seed=10)


@pytest.fixture(scope="module")
def chaos_net(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, Any]]:
    home = open_home(tmp_path_factory.mktemp("chaos-home"))
    cfg = chaos_config()
    spec = f"drop={PLAN.drop},seed={PLAN.seed},log={home.root / 'drops.log'}"
    inject_faults(spec, here=False)  # the actors lose replies from their start; this driver once it is up
    try:
        service.up(cfg, home, address="auto")
        inject_faults(spec)
        yield home, cfg
        service.down(home)
    finally:
        inject_faults(None)


def test_lost_replies_and_killed_actors_lose_nothing(chaos_net: tuple[Home, Any]) -> None:
    home, cfg = chaos_net
    fig = run_chaos(home, cfg, PLAN)
    assert fig["kills"] == PLAN.kills and set(fig["killed"]) & {"dlbc-consensus", "dlbc-ledger"} == {
        "dlbc-consensus", "dlbc-ledger"}
    assert any(n.startswith("dlbc-miner") for n in fig["killed"])
    assert any(n.startswith("dlbc-validator") for n in fig["killed"])
    assert drops_in(home.root / "drops.log") > 0  # the hook really lost replies
    assert fig["settled"] and fig["alive"], fig
    assert fig["supply"] == fig["genesis_supply"], fig
    assert fig["stuck"] == 0 and fig["unposted"] == 0, fig
    assert fig["double_escrow"] == 0, fig
    assert fig["lost_blocks"] == 0, fig
    # A submission whose retries outlive its deadline is refused whole (nothing escrowed): rare, load-bound
    assert fig["mined"] + fig["refunded"] + fig["refused_late"] == PLAN.tasks and fig["mined"] > 0, fig
    assert fig["refused_late"] <= PLAN.tasks // 2, fig
    assert fig["ok"], fig
