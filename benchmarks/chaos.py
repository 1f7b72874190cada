"""Chaos: a long-lived network mines tasks while replies are lost and actors are killed; nothing may be lost.

    python benchmarks/chaos.py [--quick] [--json] [--tasks 24] [--runs 3] [--drop 0.05]

``--quick``: one run of 10 tasks and 8 kills, under ~2 minutes.

Each run starts ``dlbc-ray up --address local`` (a private Ray head, the MINIMAL network:
2 miners, 4 validators) with the fault hook on (``DLBC_FAULTS``): every reply at the Ray
call boundary, in every actor and in the submitting client, is lost with chance
``--drop`` after the callee ran. A killer thread kills a random actor (miner, validator,
consensus or ledger) every few seconds, as a crash would (Ray restarts it). Tasks of one
epoch are submitted with short deadlines; once all are submitted the killing stops and
the run waits until every task is settled on chain. Then, from the ledger file:

- the chain verifies from genesis (every rule, every signature);
- supply equals the genesis supply;
- stuck escrows: tasks open past their deadline, or submitted and never settled (target 0);
- double escrows: postings nobody submitted, or a task posted twice (target 0);
- lost blocks: a height seen committed during the run that is now missing or different (target 0).

``tests/integration/test_faults.py`` runs the same on the test session's cluster, shorter.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")  # decided before Ray is imported, as the CLI does
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_TOKEN = secrets.token_hex(32)

TASK = """version: 1
model: {{name: mlp, params: {{hidden: [32]}}}}
dataset: digits
target: 0.5
reward: {reward}
deadline: {deadline}
max_epochs: 1
"""


@dataclass(frozen=True)
class Plan:
    tasks: int = 24
    kills: int = 16  # actors killed during the run, kinds in turn
    drop: float = 0.05  # chance a reply is lost after the callee ran
    kill_every_s: tuple[float, float] = (4.0, 9.0)  # a kill at a random time in this range after the last
    deadline_s: float = 90.0  # each task's deadline after its submission
    submit_every_s: float = 1.5
    settle_timeout_s: float = 300.0
    seed: int = 0


@dataclass
class Chaos:
    """What the killer did and what the observer saw committed."""

    kills: list[tuple[float, str]] = field(default_factory=list)
    seen: dict[int, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)


def chaos_config() -> Any:
    """MINIMAL, with miners and validators that Ray restarts however often they are killed."""
    from dlbc_ray.config import MINIMAL

    return MINIMAL.model_copy(update={
        "miner": MINIMAL.miner.model_copy(update={"max_restarts": -1}),
        "validator": MINIMAL.validator.model_copy(update={"max_restarts": -1}),
    })


def victims(cfg: Any) -> list[list[str]]:
    """The actors to kill, by kind: miners, validators, the consensus, the ledger."""
    from dlbc_ray.actors.names import CONSENSUS_NAME, LEDGER_NAME, miner_name, validator_name

    return [[miner_name(f"miner-{i}") for i in range(cfg.miners)],
            [validator_name(f"validator-{i}") for i in range(cfg.validators)], [CONSENSUS_NAME], [LEDGER_NAME]]


def killer(chaos: Chaos, kinds: list[list[str]], plan: Plan, rng: random.Random) -> None:
    """Kill one actor at a time at random moments; kinds take turns, so four kills reach every kind."""
    from dlbc_ray.actors._ray import kill
    from dlbc_ray.actors.names import NAMESPACE

    order = rng.sample(kinds, len(kinds))
    t0 = time.monotonic()
    while len(chaos.kills) < plan.kills and not chaos.stop.wait(rng.uniform(*plan.kill_every_s)):
        name = rng.choice(order[len(chaos.kills) % len(order)])
        if kill(name, NAMESPACE):
            chaos.kills.append((time.monotonic() - t0, name))


def observer(chaos: Chaos, ledger: Path) -> None:
    """Record every (height, hash) the ledger file shows committed, twice a second."""
    while not chaos.stop.wait(0.5):
        record_heads(chaos, ledger)


def record_heads(chaos: Chaos, ledger: Path) -> None:
    from dlbc_ray.ledger.store import LedgerStore

    try:
        store = LedgerStore(ledger, create=False)
        try:
            start = max(chaos.seen, default=-1) + 1
            chaos.seen.update({row.height: row.hash for row in store.rows(start)})
        finally:
            store.close()
    except Exception:  # the ledger mid-write or mid-restart: the next look sees it
        return


def run_chaos(home: Any, cfg: Any, plan: Plan, *, requester: str = "requester") -> dict[str, Any]:
    """Submit ``plan.tasks`` tasks to the network up in ``home`` under kills; settle, then audit."""
    from dlbc_ray.runtime import client
    from dlbc_ray.actors.names import CONSENSUS_NAME, NAMESPACE
    from dlbc_ray.errors import InvalidTask

    rng = random.Random(plan.seed)
    chaos = Chaos()
    kills = threading.Thread(target=killer, args=(chaos, victims(cfg), plan, rng), daemon=True)
    watch = threading.Thread(target=observer, args=(chaos, home.ledger), daemon=True)
    kills.start()
    watch.start()
    submitted: list[str] = []
    late: list[str] = []  # submissions refused because their retries outlived the task's deadline
    t0 = time.monotonic()
    try:
        for i in range(plan.tasks):
            path = home.root / f"chaos-task-{i}.yaml"
            path.write_text(TASK.format(reward=10 + i, deadline=plan.deadline_s))
            try:
                submitted.append(client.submit(home, path, requester=requester, address=None))
            except InvalidTask as e:  # retried past its deadline through kills: refused whole, nothing escrowed
                if getattr(e, "reason", None) != "deadline":
                    raise
                late.append(str(e))
            time.sleep(plan.submit_every_s)
        kills.join(timeout=plan.settle_timeout_s)  # the kills go on into mining until all are done
    finally:
        chaos.stop.set()
    kills.join()
    watch.join()
    settled = wait_settled(home, submitted, time.monotonic() + plan.settle_timeout_s)
    record_heads(chaos, home.ledger)
    alive = answers(CONSENSUS_NAME, NAMESPACE)
    return {**audit(home, submitted, client.account(home, requester), chaos.seen), "kills": len(chaos.kills),
            "killed": sorted({n for _, n in chaos.kills}), "settled": settled, "alive": alive, "refused_late": len(late),
            "seconds": time.monotonic() - t0}


def wait_settled(home: Any, task_ids: list[str], deadline: float) -> bool:
    """Until every task is done or refunded on chain (read from the ledger file), or the deadline."""
    from dlbc_ray.ledger import Chain

    while time.monotonic() < deadline:
        chain = Chain.open(home.ledger, create=False, verify=False)
        try:
            tasks = chain.state.tasks
            if all(t in tasks and tasks[t].status != "open" for t in task_ids):
                return True
        finally:
            chain.close()
        time.sleep(1.0)
    return False


def answers(name: str, namespace: str, timeout_s: float = 120) -> bool:
    """Whether the actor answers again after the kills (a restarting actor refuses calls for a while)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(ray.get_actor(name, namespace=namespace).members.remote(), timeout=10)
            return True
        except Exception:
            time.sleep(1.0)
    return False


def audit(home: Any, submitted: list[str], requester_key: str, seen: dict[int, str]) -> dict[str, Any]:
    from dlbc_ray.consensus.escrow import audit_escrow
    from dlbc_ray.ledger import Chain, verify_chain

    state = verify_chain(home.ledger)  # raises at the first height that breaks a rule
    chain = Chain.open(home.ledger, create=False, verify=False)
    try:
        result = audit_escrow(state, chain.blocks(), submitted, {requester_key}, seen, time.time_ns() // 10**6)
    finally:
        chain.close()
    statuses = [state.tasks[t].status for t in submitted if t in state.tasks]
    return {"ok": result.ok, "height": state.height, "supply": result.supply, "genesis_supply": result.genesis_supply,
            "stuck": len(result.stuck) + len(result.unsettled), "double_escrow": len(result.extra),
            "unposted": len(result.unposted), "lost_blocks": len(result.lost_heights),
            "mined": statuses.count("done"), "refunded": statuses.count("refunded"), "submitted": len(submitted)}


def drops_in(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def run_once(plan: Plan) -> dict[str, Any]:
    """One run on a private head: up, chaos, audit, down."""
    from dlbc_ray.runtime import service
    from dlbc_ray.actors._ray import inject_faults
    from dlbc_ray.runtime.home import open_home

    home = open_home(tempfile.mkdtemp(prefix="dlbc-chaos-"))
    home.ray_token.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.ray_token.write_text(SHARED_TOKEN)  # Ray caches one auth token per process: every head shares it
    home.ray_token.chmod(0o600)
    log = home.root / "drops.log"
    cfg = chaos_config()
    spec = f"drop={plan.drop},seed={plan.seed},log={log}"
    inject_faults(spec, here=False)  # the actors lose replies from their start; this driver once it is up
    try:
        service.up(cfg, home, address="local")
        inject_faults(spec)
        try:
            fig = run_chaos(home, cfg, plan)
        finally:
            service.down(home)
    finally:
        inject_faults(None)
    return {**fig, "dropped": drops_in(log), "blocks": fig["height"]}


TARGETS = {"stuck": 0, "double_escrow": 0, "lost_blocks": 0, "unposted": 0}


def report(runs: list[dict[str, Any]], plan: Plan) -> str:
    def med(key: str) -> str:
        values = [r[key] for r in runs]
        return f"{statistics.median(values):g} (min {min(values):g}, max {max(values):g})"

    lines = [f"chaos: {plan.tasks} tasks per run, {len(runs)} run(s), drop={plan.drop}, a kill every "
             f"{plan.kill_every_s[0]:g}-{plan.kill_every_s[1]:g} s; median over runs (spread)",
             f"  kills survived     {med('kills'):<28} target: every one (consensus answers after: "
             f"{all(r['alive'] for r in runs)})",
             f"  replies dropped    {med('dropped'):<28} target: > 0 (faults really injected)",
             f"  blocks             {med('blocks'):<28} (tasks mined {med('mined')}, refunded {med('refunded')}, "
             f"refused as late {med('refused_late')})",
             f"  stuck escrows      {med('stuck'):<28} target: 0",
             f"  double escrows     {med('double_escrow'):<28} target: 0",
             f"  lost blocks        {med('lost_blocks'):<28} target: 0",
             f"  supply conserved   {all(r['supply'] == r['genesis_supply'] for r in runs)!s:<28} target: True",
             f"  chain verifies     True{'':<24} (verify_chain raised otherwise)",
             f"  run seconds        {med('seconds')}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=24)
    parser.add_argument("--runs", type=int, default=None, help="runs, median reported (default 3; 1 with --quick)")
    parser.add_argument("--drop", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a run of 10 tasks and 8 kills (under ~2 minutes)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    plan = Plan(tasks=args.tasks, drop=args.drop, seed=args.seed)
    if args.quick:
        plan = Plan(tasks=10, kills=8, kill_every_s=(2.0, 5.0), deadline_s=60.0, drop=args.drop, seed=args.seed)
    runs = []
    for i in range(args.runs or (1 if args.quick else 3)):
        print(f"  run {i + 1}...", file=sys.stderr, flush=True)
        runs.append(run_once(Plan(**{**asdict(plan), "seed": plan.seed + i})))
    failed = [r for r in runs if not r["ok"] or not r["settled"] or not r["alive"]]
    print(json.dumps({"plan": asdict(plan), "runs": runs}) if args.json else report(runs, plan))
    if failed:
        raise SystemExit(f"{len(failed)} run(s) broke a guarantee: {failed[0]}")


if __name__ == "__main__":
    main()
