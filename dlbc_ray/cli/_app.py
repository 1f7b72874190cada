"""The Typer app and the one place where errors become exit codes.

``App.command`` wraps every command: a DLBCError prints one line on stderr and exits
with the error's code; no traceback reaches the user for a user error.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from dlbc_ray.config import config_error
from dlbc_ray.errors import DLBCError, InvalidBlock
from dlbc_ray.home import DEFAULT_HOME, Home, open_home

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(error: DLBCError) -> typer.Exit:
    where = f" at height {error.height} ({error.reason})" if isinstance(error, InvalidBlock) and error.height is not None else ""
    err.print(f"[bold red]error[/]{where}: {error}", highlight=False)
    return typer.Exit(error.exit_code)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DLBCError as e:
            raise fail(e) from None
        except ValidationError as e:
            raise fail(config_error(e)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


class App(typer.Typer):
    """A Typer whose commands all go through ``guard``."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda fn: register(guard(fn))


def new_app(help_text: str) -> App:
    return App(help=help_text, no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False,
               rich_markup_mode="rich")


def resolve_home(home: Path | None, *, create: bool = True) -> Home:
    """--home, else $DLBC_HOME, else ~/.dlbc-ray. Only the CLI reads the environment."""
    return open_home(home or Path(os.environ.get("DLBC_HOME") or DEFAULT_HOME), create=create)


def print_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
