"""The Typer app and the one place where errors become exit codes.

``App.command`` wraps every command: a DLBCError prints one line on stderr and exits
with its class's ``exit_code`` (errors.py); any other exception is a bug, printed as one
line with a hint to rerun with ``--debug``, which shows the traceback. A user never sees one.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape

from dlbc_ray.config import config_error
from dlbc_ray.errors import ConfigError, DLBCError, InvalidBlock
from dlbc_ray.runtime.home import DEFAULT_HOME, Home, open_home

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

UNEXPECTED_EXIT = 70  # EX_SOFTWARE: not the user's input, a fault of ours or of what runs under us
INSECURE_ENV = "DLBC_INSECURE_NO_AUTH"  # set by --insecure-no-auth only; the library's sign that no auth was chosen
_options = {"debug": False}


def set_debug(debug: bool) -> None:
    _options["debug"] = debug


def fail(error: DLBCError) -> typer.Exit:
    where = f" at height {error.height} ({error.reason})" if isinstance(error, InvalidBlock) and error.height is not None else ""
    err.print(f"[bold red]error[/]{where}: {escape(one_line(str(error)))}", highlight=False)
    return typer.Exit(error.exit_code)


def one_line(text: str, limit: int = 500) -> str:
    """Whatever an error says, the user gets one line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


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
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as e:
            raise unexpected(e) from None

    return wrapper


def debugging() -> bool:
    """Whether the root command got ``--debug`` (its callback runs before any command)."""
    return _options["debug"]


def unexpected(error: Exception) -> typer.Exit:
    """One line for an exception nobody meant to raise; the traceback only with --debug."""
    if debugging():
        sys.stderr.write(traceback.format_exc())
    first = one_line((str(error).strip().splitlines() or [""])[0], 200)
    detail = f": {first}" if first else ""
    hint = "" if debugging() else "; rerun as `dlbc-ray --debug ...` to see the traceback"
    err.print(f"[bold red]error[/]: unexpected {type(error).__name__}{escape(detail)}{hint}", highlight=False)
    return typer.Exit(UNEXPECTED_EXIT)


def require_token_auth(*, insecure_no_auth: bool) -> None:
    """Run with Ray's token auth on, or off only when the user said ``--insecure-no-auth``.

    Ray reads ``RAY_AUTH_MODE`` when it is first imported; no command has imported it yet.
    """
    if insecure_no_auth:
        os.environ.update({"RAY_AUTH_MODE": "disabled", INSECURE_ENV: "1"})
        err.print("[yellow]warning[/]: --insecure-no-auth: Ray token auth is off; anyone who reaches this "
                  "cluster's ports can run code as you", highlight=False)
        return
    os.environ.pop(INSECURE_ENV, None)
    mode = os.environ.get("RAY_AUTH_MODE", "token")
    if mode.strip().lower() != "token":
        raise ConfigError(f"RAY_AUTH_MODE={mode[:40]!r} turns Ray's token auth off; unset it, or pass "
                          "--insecure-no-auth (dlbc-ray --insecure-no-auth COMMAND) to run without auth",
                          reason="auth")
    os.environ["RAY_AUTH_MODE"] = "token"


def _click_error(name: str) -> type[Exception]:
    """Click's exception class ``name`` as Typer raises it (Typer vendors its own copy of Click)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


def never_unencodable() -> None:
    """A path or name the terminal's encoding cannot show (an ASCII or Latin-1 locale, a non-UTF-8 file
    name) is printed escaped, never an UnicodeEncodeError after the command did its work."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":  # surrogateescape stays
            reconfigure(errors="backslashreplace")


class OneLineGroup(TyperGroup):
    """Click's own refusals (a value it cannot parse, an unknown option or command) as one line, exit 2."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        usage, click_error = _click_error("UsageError"), _click_error("ClickException")
        never_unencodable()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except usage as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # nothing ran: show the help as Typer does
                return super().main(args, prog_name, complete_var, standalone_mode=True, **extra)
            ctx = getattr(e, "ctx", None)
            hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            text = one_line(e.format_message(), 400).rstrip(".")  # type: ignore[attr-defined]
            err.print(f"[bold red]error[/]: {escape(text)}{escape(hint)}", highlight=False)
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        except click_error as e:
            err.print(f"[bold red]error[/]: {escape(one_line(e.format_message(), 400))}", highlight=False)  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        except typer.Abort:
            err.print("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class App(typer.Typer):
    """A Typer whose commands all go through ``guard``."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda fn: register(guard(fn))


def new_app(help_text: str) -> App:
    return App(help=help_text, no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False,
               rich_markup_mode="rich", cls=OneLineGroup)


def resolve_home(home: Path | None, *, create: bool = True) -> Home:
    """--home, else $DLBC_HOME, else ~/.dlbc-ray. Only the CLI reads the environment."""
    return open_home(home or Path(os.environ.get("DLBC_HOME") or DEFAULT_HOME), create=create)


def later_home(home: Path | None) -> Home:
    """The home, checked if it exists and not made yet if not: for a command that may write into it only at
    its end (a failure before then leaves no new folder behind)."""
    path = Path(home or os.environ.get("DLBC_HOME") or DEFAULT_HOME).expanduser()
    return open_home(path, create=False) if os.path.lexists(path) else Home(path.absolute())


def print_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
