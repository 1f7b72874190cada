"""`dlbc-ray nets`: the nets a task can name here (built-ins, installed plugins) with their parameters."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dlbc_ray.cli._app import out, print_json


def nets(json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List every net: registered built-ins, and packages' nets from the 'dlbc_ray.nets' entry points."""
    from dlbc_ray.models.nets import available

    rows = [_row(info, name, problem) for info, name, problem in available()]
    if json:
        print_json(rows)
        return
    table = Table("net", "parameters (defaults)", "source", "description")
    for row in rows:
        params = ", ".join(f"{k}={_value(v)}" for k, v in row["params"].items()) or "-"
        what = f"[red]{escape(row['problem'])}[/]" if row["problem"] else escape(row["description"])
        table.add_row(escape(row["name"]), escape(params), escape(row["source"]), what)
    out.print(table)
    out.print("A task may also name an installed factory marked with @net_factory as "
              "[bold]package.module:factory[/].", highlight=False)


def _row(info: Any, name: str, problem: str) -> dict[str, Any]:
    if info is None:
        return {"name": name, "source": "entry point", "params": {}, "description": "", "problem": problem}
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in info.defaults.items()}
    return {"name": name, "source": info.source, "params": params, "description": info.description,
            "watermark_layer": info.watermark_layer or None, "first_layer": info.first_layer or None,
            "problem": problem}


def _value(value: Any) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
