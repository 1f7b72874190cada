"""`dlbc-ray attack`: play the protocol's threats against a local network and show what caught them."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dlbc_ray.attack.harness import KINDS, KNOWN_GAPS, check_kinds
from dlbc_ray.cli._app import err, out, print_json, resolve_home
from dlbc_ray.errors import ConfigError, DLBCError
from dlbc_ray.runtime.home import open_home

if TYPE_CHECKING:
    from dlbc_ray.attack.harness import KindResult, TrialResult

MAX_TRIALS = 1_000  # rounds per kind: each is a real round on a live network


def attack(
    kind: Annotated[str, typer.Option(help=f"'all' ({', '.join(KINDS)}), 'gaps' (known gaps: "
                                           f"{', '.join(KNOWN_GAPS) or 'none at present'}) or one kind.")] = "all",
    trials: Annotated[int, typer.Option(help="Rounds per kind.")] = 2,
    home: Annotated[Path | None, typer.Option("--home", help="Home directory (default $DLBC_HOME or ~/.dlbc-ray); "
                                                             "the attack network's chain goes in HOME/attacks/.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per kind.")] = False,
) -> None:
    """Attack a local network (2 honest miners, 1 adversary, 4 validators) and count what the defenses caught."""
    kinds = check_kinds(kind)
    if not 1 <= trials <= MAX_TRIALS:
        raise ConfigError(f"--trials must be 1..{MAX_TRIALS} (got {str(trials)[:20]})", reason="trials")
    where = open_home(resolve_home(home).root / "attacks" / time.strftime("%Y%m%d-%H%M%S"))
    with err.status("loading Ray and PyTorch...") as spinner:
        from dlbc_ray.attack.harness import run_attacks  # torch and Ray load only for commands that run a network

        results = run_attacks(kinds, trials, where, on_trial=_trial_line,
                              on_stage=lambda text: spinner.update(text + "..."))
    if json:
        print_json([r.as_json() for r in results])
    else:
        out.print(table(results))
        out.print(f"attack chain kept in {where.root}", highlight=False)
    beaten = [r.kind for r in results if not r.passed]
    if beaten:
        raise DLBCError(f"defenses failed against: {', '.join(beaten)}", reason="attack")


def table(results: list[KindResult]) -> Table:
    t = Table("kind", "trials", "detected", "honest winner kept", "false positives", "how",
              title="attacks (each trial is one real round)")
    for r in results:
        style = "" if r.passed else "red"
        how = ", ".join(f"{h} x{n}" if n > 1 else h for h, n in Counter(r.how).items())
        t.add_row(r.kind, str(r.trials), str(r.detected), str(r.honest_winner_kept), str(r.false_positives),
                  escape(how), style=style)
    return t


def _trial_line(r: TrialResult) -> None:
    verdict = "caught" if r.detected else "[red]NOT caught[/]"
    kept = "" if r.honest_winner_kept else ", [red]honest winner lost[/]"
    fp = f", [red]{r.false_positives} honest miner(s) refused[/]" if r.false_positives else ""
    err.print(f"{r.kind} #{r.index + 1}: {verdict} ({escape(r.how)}){kept}{fp} in {r.seconds:.1f} s")
