"""`dlbc-ray demo`: a local network mines blocks on the built-in task, with live progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dlbc_ray.cli._app import err, out, print_json, resolve_home
from dlbc_ray.config import PRESETS, NetworkConfig, network_config
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import ConfigError, ConsensusError
from dlbc_ray.runtime.plots import plot_rounds, time_split
from dlbc_ray.schema.round_messages import RoundReport, RoundStatus

if TYPE_CHECKING:
    from dlbc_ray.runtime.network import DemoResult


class LiveView:
    """Renders the consensus actor's status: the phase, then each actor's stage and progress."""

    def __init__(self, blocks: int) -> None:
        self.blocks, self.started = blocks, time.monotonic()
        self.live = Live(Text("starting the network..."), console=err, refresh_per_second=8, transient=True)

    def stage(self, text: str) -> None:
        self.live.update(Text(f"{text} ({time.monotonic() - self.started:.0f} s)"))

    def update(self, status: RoundStatus) -> None:
        table = Table("actor", "stage", "epoch", "val acc", box=None, pad_edge=False)
        for a in status.actors.values():
            epoch = f"{a.epoch}/{a.epochs}" if a.epochs else ""
            acc = f"{a.val_accuracy:.3f}" if a.val_accuracy is not None else ""
            table.add_row(a.name, a.stage, epoch, acc)
        head = Text(f"block {status.rounds_done + 1}/{self.blocks}  phase: {status.phase}  "
                    f"({time.monotonic() - self.started:.0f} s)", style="bold")
        self.live.update(Group(head, table))

    def done(self, report: RoundReport) -> None:
        word = f"block {report.height} committed" if report.committed else f"round failed: {report.failure}"
        err.print(f"{word} in {report.round_seconds:.1f} s")


def summary(result: DemoResult) -> Table:
    table = Table("height", "hash", "task", "winner", "test acc", "round s", "train s", "eval s", "other s",
                  title="mined blocks")
    for r in result.reports:
        if not r.committed:
            table.add_row("-", "-", r.task_id[:10], "[red]no block[/] (see below)", "", f"{r.round_seconds:.1f}")
            continue
        train, evaluate, other = time_split(r)
        winner = result.names.get(r.winner or "", "none (refund)") if r.winner else "none (refund)"
        table.add_row(str(r.height), (r.block_hash or "")[:12], r.task_id[:10], winner,
                      f"{(r.score or 0) / SCORE_SCALE:.4f}" if r.score is not None else "-",
                      f"{r.round_seconds:.1f}", f"{train:.1f}", f"{evaluate:.2f}",
                      f"{other:.1f} ({other / max(r.round_seconds, 1e-9):.0%})")
    return table


def as_json(result: DemoResult) -> dict[str, Any]:
    blocks = [{"height": r.height, "hash": r.block_hash, "prev_hash": r.prev_hash, "task_id": r.task_id,
               "winner": r.winner, "winner_name": result.names.get(r.winner or ""),
               "score": None if r.score is None else r.score / SCORE_SCALE, "round_seconds": round(r.round_seconds, 3),
               "timings": r.timings} for r in result.reports if r.committed]
    failures = [{"task_id": r.task_id, "reason": r.failure} for r in result.reports if not r.committed]
    return {"blocks": blocks, "failures": failures, "chain_valid": result.chain_valid,
            "startup": {k: round(v, 3) for k, v in result.extra.get("startup", {}).items()}}


def startup_line(startup: dict[str, float]) -> str:
    """Where the wait for the first block went, in one line (empty when no block was committed)."""
    if "first_block_s" not in startup:
        return ""
    parts = [("Ray", "ray_start_s"), ("actors", "actors_s"), ("first round", "first_round_s")]
    return (f"first block {startup['first_block_s']:.1f} s after the network started: "
            + ", ".join(f"{label} {startup[key]:.1f} s" for label, key in parts if key in startup))


def demo(
    miners: Annotated[int, typer.Option(help="Number of miner actors.")] = 3,
    validators: Annotated[int, typer.Option(help="Number of validator actors (needs >= 3f+1).")] = 4,
    blocks: Annotated[int, typer.Option(help="Blocks to mine.")] = 2,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per task (default from the preset).")] = None,
    mode: Annotated[str, typer.Option(help="'tasks': the requester posts the built-in task; 'pole': PoLe's "
                                           "standing task, its target retuned for steady blocks.")] = "tasks",
    target_interval: Annotated[float | None, typer.Option(help="PoLe: wanted seconds between blocks "
                                                               "(fixed when the chain is created).")] = None,
    preset: Annotated[str, typer.Option(help=f"Config preset: {', '.join(PRESETS)}.")] = "default",
    home: Annotated[Path | None, typer.Option("--home", help="Home directory (default $DLBC_HOME or ~/.dlbc-ray).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end.")] = False,
    new_chain: Annotated[bool, typer.Option("--new-chain", help="Start a new chain in a home that holds a chain's "
                                                                "keys but lost its ledger.")] = False,
    explorer: Annotated[bool, typer.Option("--explorer", help="Serve the web explorer (127.0.0.1) while the demo "
                                                              "mines, and after it until Ctrl-C.")] = False,
    explorer_port: Annotated[int, typer.Option(help="The explorer's TCP port.")] = 8080,
) -> None:
    """Start a local Ray network and mine blocks on the built-in task (MLP on sklearn digits)."""
    cfg = _config(preset, miners=miners, validators=validators, blocks=blocks, epochs=epochs,
                  mode=mode, target_interval=target_interval)
    h = resolve_home(home)
    view = LiveView(blocks)
    web = _start_explorer(h, explorer_port) if explorer else None
    on_status, on_round = view.update, view.done
    if web is not None:
        on_status = lambda s: (view.update(s), web.feed.status(s))  # noqa: E731
        on_round = lambda r: (view.done(r), web.feed.round_done(r))  # noqa: E731
    with view.live:
        view.stage("loading Ray and PyTorch")
        from dlbc_ray.runtime.network import run_demo  # torch and Ray load only for commands that run a network

        result = run_demo(cfg, h, blocks=blocks, mode=mode, new_chain=new_chain, on_status=on_status,
                          on_round=on_round, on_stage=view.stage)
    committed = [r for r in result.reports if r.committed]
    if json:
        print_json(as_json(result))
    else:
        out.print(summary(result))
        for r in result.reports:
            if not r.committed:
                out.print(f"round for task {r.task_id[:10]} ended without a block: {r.failure}", highlight=False)
        if committed:
            out.print(f"plot: {plot_rounds(result.reports, h.plots / 'demo.png')}")
        if committed and mode == "pole":
            out.print(f"plot: {_pole_plot(h, cfg.pole.target_interval_s)}")
        if line := startup_line(result.extra.get("startup", {})):
            out.print(line, highlight=False)
        out.print("chain valid" if result.chain_valid else f"[red]chain INVALID: {result.chain_error}[/]")
    if web is not None:
        _keep_serving(web)
    if not result.chain_valid:
        raise ConsensusError(result.chain_error, reason="demo")
    if len(committed) < blocks:
        raise ConsensusError(f"only {len(committed)} of the {blocks} blocks asked for were committed", reason="demo")


def _start_explorer(home: Any, port: int) -> Any:
    from dlbc_ray.cli.explorer import open_browser
    from dlbc_ray.explorer.server import DemoExplorer

    web = DemoExplorer(home, "127.0.0.1", port)
    address = web.start()
    err.print(f"explorer: {address} (read-only)", highlight=False)
    open_browser(address)
    return web


def _keep_serving(web: Any) -> None:
    """The explorer stays up after the demo, so its blocks can be browsed, until Ctrl-C or SIGTERM."""
    import signal
    import threading

    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    err.print(f"explorer still at {web.url}; Ctrl-C to stop", highlight=False)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        web.stop()


def _pole_plot(home: Any, target_interval_s: float) -> Path:
    from dlbc_ray.runtime.home import read_ledger
    from dlbc_ray.runtime.plots import plot_pole, pole_points

    chain = read_ledger(home)
    try:
        return plot_pole(pole_points(chain), target_interval_s, home.plots / "pole.png")
    finally:
        chain.close()


def _config(preset: str, *, miners: int, validators: int, blocks: int, epochs: int | None, mode: str = "tasks",
            target_interval: float | None = None) -> NetworkConfig:
    if mode not in ("tasks", "pole"):
        raise ConfigError(f"--mode {mode!r} is not 'tasks' or 'pole'", reason="mode")
    if target_interval is not None and target_interval <= 0:
        raise ConfigError(f"--target-interval must be more than 0 seconds (got {target_interval:g})",
                          reason="target_interval")
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}", reason="preset")
    if blocks < 1:
        raise ConfigError(f"--blocks must be at least 1 (got {blocks})", reason="blocks")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be at least 1 (got {epochs})", reason="epochs")
    base = PRESETS[preset]
    task = base.task.model_copy(update={"epochs": epochs}) if epochs else base.task
    pole = base.pole.model_copy(update={"target_interval_s": target_interval}) if target_interval else base.pole
    try:
        return network_config(base, miners=miners, validators=validators, task=task.model_dump(),
                              pole=pole.model_dump())
    except ConfigError as e:
        raise ConfigError(f"--{e.message}", reason=e.reason) from None
