"""`up`, `down`, `status`, `submit`, `result`, `balance`, `transfer`: a network you submit work to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dlbc_ray.cli._app import err, out, print_json, resolve_home
from dlbc_ray.config import DEFAULT, network_config
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import ConfigError, ConsensusError

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Home directory (default $DLBC_HOME or ~/.dlbc-ray).")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray cluster (default: where this home's network runs).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AsOpt = Annotated[str, typer.Option("--as", help="Key name in the home that signs.")]
NewChainOpt = Annotated[bool, typer.Option("--new-chain", help="Start a new chain in a home that holds a chain's "
                                                               "keys but lost its ledger.")]


def up(
    address: Annotated[str, typer.Option(help="'auto' joins a running Ray cluster; 'local' starts a private "
                                              "head on 127.0.0.1; or host:port.")] = "auto",
    miners: Annotated[int, typer.Option(help="Miner actors.")] = 3,
    validators: Annotated[int, typer.Option(help="Validator actors (needs >= 3f+1).")] = 4,
    miner_gpus: Annotated[float, typer.Option(help="GPUs per miner (fractional allowed; 0 = CPU).")] = 0.0,
    miners_per_task: Annotated[int, typer.Option(help="Miners per group; groups mine tasks in parallel. "
                                                      "0 = all miners on every task.")] = 0,
    pole: Annotated[bool, typer.Option("--pole", help="When no task waits, mine PoLe's standing task.")] = False,
    allow_task_code: Annotated[bool, typer.Option("--allow-task-code", help="Run tasks that ship their own code "
                                                  "(a package shipped through Ray; miners and validators run "
                                                  "it). Off: such tasks are refused.")] = False,
    home: HomeOpt = None,
    new_chain: NewChainOpt = False,
) -> None:
    """Start a long-lived network (named, detached actors in the 'dlbc' namespace)."""
    from dlbc_ray.runtime import service

    miner = DEFAULT.miner.model_copy(update={"num_gpus": miner_gpus})
    try:
        cfg = network_config(miners=miners, validators=validators, miners_per_task=miners_per_task,
                             miner=miner.model_dump(), pole={**DEFAULT.pole.model_dump(), "enabled": pole},
                             consensus={**DEFAULT.consensus.model_dump(), "allow_task_code": allow_task_code})
    except ConfigError as e:
        raise ConfigError(f"--{e.message}", reason=e.reason) from None
    h = resolve_home(home)
    with err.status("starting the network...") as spinner:
        record, started = service.up(cfg, h, address=address, new_chain=new_chain,
                                     on_stage=lambda s: spinner.update(s + "..."))
    if not started:
        out.print(f"a dlbc-ray network is already up on {record.address}; nothing changed")
        return
    groups = " | ".join(", ".join(g) for g in record.groups)
    out.print(f"network up on {record.address}: miner groups ({groups}), {len(record.validators)} validators",
              markup=False)
    if record.dashboard:
        out.print(f"Ray dashboard and Jobs API: {record.dashboard} (loopback only)")


def down(home: HomeOpt = None, address: AddressOpt = None) -> None:
    """Stop the network; the ledger stays on disk and the next `up` resumes from it."""
    from dlbc_ray.runtime import service

    stopped = service.down(resolve_home(home, create=False), address)
    out.print(f"stopped {len(stopped)} actors" if stopped else "no network was running")


def status(home: HomeOpt = None, address: AddressOpt = None, json: JsonOpt = False) -> None:
    """Chain head, ranked task queue with its factors, rounds in flight, members, balances."""
    from dlbc_ray.runtime import client

    info = client.status(resolve_home(home, create=False), address=address)
    if json:
        print_json(info)
        return
    out.print(f"height {info['height']}  head {info['head'][:16]}  open tasks {info['open_tasks']}  "
              f"escrow {info['escrow']}")
    queue = Table("task", "status", "reward", "score", "compute", "network", "data", "aging", "waited s",
                  title="task queue (rank order)")
    for q in info["queue"]:
        queue.add_row(q["task_id"][:12], q["status"], str(q["reward"]), f"{q['score']:.3g}",
                      f"{q['complexity_factor']:.3g}", f"{q['network_factor']:.3g}", f"{q['data_factor']:.3g}",
                      f"{q['aging_factor']:.3g}", f"{q['waited_s']:.0f}")
    out.print(queue)
    for r in info["rounds"]:
        out.print(f"round for task {r['task_id'][:12]}: {r['phase']}")
    members = Table("actor", "health", "cpus", "gpus", "device", title="members")
    for name, h in info["health"].items():
        members.add_row(name, "[red]unreachable[/]" if "error" in h else "ok", str(h.get("num_cpus", "")),
                        str(h.get("num_gpus", "")), str(h.get("device", "")))
    out.print(members)
    alive = [n for n in info.get("nodes", []) if n["alive"]]
    out.print(f"nodes: {len(alive)} alive of {len(info.get('nodes', []))}")
    out.print("balances: " + ", ".join(f"{k} {v}" for k, v in sorted(info["balances"].items())))


def submit(
    task_file: Annotated[Path, typer.Argument(help="Task file (YAML or JSON; see examples/tasks/).")],
    as_: AsOpt = "requester",
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the task's block is committed.")] = False,
    home: HomeOpt = None, address: AddressOpt = None, json: JsonOpt = False,
) -> None:
    """Sign a task, escrow its reward on chain, and queue it for mining."""
    from dlbc_ray.runtime import client

    h = resolve_home(home, create=False)
    task_id = client.submit(h, task_file, requester=as_, address=address)
    if not wait:
        if json:
            print_json({"task_id": task_id})
        else:
            out.print(f"task {task_id} submitted; reward in escrow")
        return
    err.print(f"task {task_id} submitted; waiting for its block")
    with Live(Text("queued"), console=err, transient=True, refresh_per_second=4) as live:
        view = client.wait_for(h, task_id, address=address, timeout_s=24 * 3600,
                               on_view=lambda v: live.update(_task_line(v)))
    info = {"task_id": task_id, "status": view["status"], **_report_summary(view.get("report"))}
    if json:
        print_json(info)
    else:
        out.print(_result_line(info, client.names(h)))
    if view["status"] != "done":
        raise ConsensusError(f"task {task_id[:12]} ended {view['status']}", reason=view["status"])


def _task_line(view: dict[str, Any]) -> Text:
    parts = [f"task {view['task_id'][:12]}: {view['status']}"]
    round_ = view.get("round")
    if round_:
        parts.append(f"phase {round_['phase']}")
        for a in round_["actors"].values():
            if a["epochs"]:
                parts.append(f"{a['name']} {a['epoch']}/{a['epochs']}")
    return Text("  ".join(parts))


def _report_summary(report: dict[str, Any] | None) -> dict[str, Any]:
    if not report:
        return {}
    score = report.get("score")
    return {"height": report["height"], "block": report["block_hash"], "winner": report["winner"],
            "score": None if score is None else score / SCORE_SCALE, "round_seconds": report["round_seconds"]}


def _result_line(info: dict[str, Any], names: dict[str, str]) -> str:
    if info.get("winner"):
        winner = names.get(info["winner"], info["winner"][:12])
        return f"task {info['task_id'][:12]} mined in block {info['height']}: winner {winner}, accuracy {info['score']:.4f}"
    return f"task {info['task_id'][:12]}: {info['status']}, no winner (reward refunded)"


def result(
    task_id: Annotated[str, typer.Argument(help="Task id (a unique prefix of 8+ characters will do).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where to write the model file.")] = None,
    home: HomeOpt = None, json: JsonOpt = False,
) -> None:
    """The task's winner, score and block, and its model as safetensors that works on raw inputs."""
    from dlbc_ray.runtime import client

    h = resolve_home(home, create=False)
    info = client.result(h, task_id, output=output)
    if json:
        print_json(info)
        return
    out.print(_result_line(info, client.names(h)) if info.get("height") else
              f"task {info['task_id'][:12]}: {info['status']} (not mined yet)")
    if "model_file" in info:
        out.print(f"model: {info['model_file']} (load with examples/use_result.py)")


def balance(
    name: Annotated[str | None, typer.Argument(help="Key name or public key; all accounts if omitted.")] = None,
    home: HomeOpt = None, json: JsonOpt = False,
) -> None:
    """Balances as of the chain's head (read from the home's ledger)."""
    from dlbc_ray.runtime import client

    h = resolve_home(home, create=False)
    info = client.balances(h)
    accounts = info["accounts"]
    if name is not None:
        key = client.account(h, name)
        accounts = [a for a in accounts if a["account"] == key] or [{"account": key, "name": name, "balance": 0}]
    if json:
        print_json({**info, "accounts": accounts})
        return
    for a in accounts:
        out.print(f"{(a['name'] or a['account'][:16]):<16} {a['balance']:>12}", highlight=False)
    if name is None:
        out.print(f"{'in escrow':<16} {info['escrow']:>12}\n{'supply':<16} {info['supply']:>12}", highlight=False)


def transfer(
    to: Annotated[str, typer.Argument(help="Recipient: key name or public key.")],
    amount: Annotated[int, typer.Argument(help="Amount (integer units).")],
    as_: AsOpt = "requester",
    home: HomeOpt = None, address: AddressOpt = None, json: JsonOpt = False,
) -> None:
    """A signed transfer, included in the next block."""
    from dlbc_ray.runtime import client

    block = client.transfer(resolve_home(home, create=False), to, amount, sender=as_, address=address)
    if json:
        print_json(block)
    else:
        out.print(f"transferred {amount} to {to} in block {block['height']}")
