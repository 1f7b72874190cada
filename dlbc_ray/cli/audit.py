"""`dlbc-ray audit HEIGHT|TASK_ID`: a committed block's transcript audits, run again from the home's artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dlbc_ray.cli._app import out, print_json, resolve_home


def audit(
    target: Annotated[str, typer.Argument(help="A block height, or a task id (its latest block).")],
    segments: Annotated[int | None, typer.Option("--segments", min=1, max=1024,
                                                 help="Segments to replay per submission (default: the network's Q).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    home: Annotated[Path | None, typer.Option("--home", help="Home directory (default $DLBC_HOME or ~/.dlbc-ray).")] = None,
) -> None:
    """Replay sampled segments of each submission's kept training transcript; say what was checked and its cost."""
    from dlbc_ray.runtime.reaudit import as_dicts, reaudit

    block, rows = reaudit(resolve_home(home, create=False), target, segments=segments)
    if json:
        print_json({"height": block.header.height, "task_id": block.header.task_id, "rows": as_dicts(rows)})
        return
    table = Table("commit", "miner", "block's votes", "audit", "segments", "steps", "bytes", "seconds")
    for r in rows:
        verdict = "-" if r.passed is None else "[green]passed[/]" if r.passed else "[red]failed[/]"
        votes = ", ".join(sorted(set(r.verdicts))) or "-"
        table.add_row(r.commit[:12], r.miner[:12], votes, f"{verdict} {escape(r.reason)}",
                      " ".join(map(str, r.segments)) or "-", str(r.replayed_steps), str(r.fetched_bytes),
                      f"{r.seconds:.2f}")
    out.print(f"block {block.header.height}, task {(block.header.task_id or '')[:12]}")
    out.print(table)
