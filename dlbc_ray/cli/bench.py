"""`dlbc-ray bench`: run benchmark scripts on a Ray cluster through its Jobs API; keep their results."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dlbc_ray.cli._app import later_home, new_app, out, print_json
from dlbc_ray.errors import ConfigError
from dlbc_ray.runtime.home import Home
from dlbc_ray.runtime.localhead import check_token_file

app = new_app("Run benchmark scripts as Ray jobs and keep their results in the home.")

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
AddressOpt = Annotated[str, typer.Option("--address", help="The cluster's Jobs API (dashboard) URL; keep it private.")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the logs and save the result.")]
TokenOpt = Annotated[Path | None, typer.Option(
    "--token-file", help="The cluster's Ray token (default: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, the home's "
    "ray/auth_token, ~/.ray/auth_token).")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Give up following after this many seconds.")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="Home directory (default $DLBC_HOME or ~/.dlbc-ray).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (logs go to stderr).")]


def read_token(token_file: Path | None, home: Home) -> str | None:
    """The token to send: an explicit file, then Ray's own variables, then the usual files."""
    if token_file is not None:
        return _read(token_file)
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return _read(Path(os.environ["RAY_AUTH_TOKEN_PATH"]))
    for path in (home.ray_token, Path("~/.ray/auth_token").expanduser()):
        if path.is_file():
            return _read(path)
    return None


MAX_TOKEN_BYTES = 4096  # Ray's tokens are a few dozen characters; /dev/zero or a 1 GB file is not one


def _read(path: Path) -> str:
    """A token file as the head's is kept (a regular 0600 file), read within a size cap, printable ASCII."""
    path = check_token_file(path.expanduser())
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the Ray token ({e.strerror})", reason="ray_token") from None
    token = raw.strip()
    if len(raw) > MAX_TOKEN_BYTES or not token.isascii() or not token.decode().isprintable():
        raise ConfigError(f"{path}: not a Ray token (at most {MAX_TOKEN_BYTES} bytes of printable ASCII)",
                          reason="ray_token")
    if not token:
        raise ConfigError(f"{path}: the Ray token file is empty", reason="ray_token")
    return token.decode()


def _echo_logs(chunk: str) -> None:
    sys.stderr.write(chunk)
    sys.stderr.flush()


def _report(result: Any, json: bool) -> None:
    info = {"submission_id": result.submission_id, "address": result.address, "status": result.status,
            "result_path": str(result.result_path) if result.result_path else None, "result": result.result}
    if json:
        print_json(info)
    elif result.result_path is None:
        out.print(f"submitted [bold]{result.submission_id}[/] to {result.address}\n"
                  f"  collect it later: dlbc-ray bench fetch {result.submission_id} --address {result.address}")
    else:
        out.print(f"job [bold]{result.submission_id}[/] {result.status}; result saved to {result.result_path}")


@app.command("submit")
def submit(
    script: Annotated[Path, typer.Argument(help="The Python script to run as a job (inside --working-dir).")],
    script_args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script, after `--`.")] = None,
    address: AddressOpt = DEFAULT_ADDRESS,
    wait: WaitOpt = True,
    working_dir: Annotated[Path | None, typer.Option(
        "--working-dir", help="Folder uploaded as the job's working directory (default: the current one).")] = None,
    token_file: TokenOpt = None,
    timeout: TimeoutOpt = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Upload the working directory, run SCRIPT on the cluster, follow its logs, save its DLBC_RESULT."""
    from dlbc_ray.runtime.jobs import submit_benchmark

    h = later_home(home)  # made only when a result is saved into it
    result = submit_benchmark(script, address, working_dir=working_dir or Path.cwd(), wait=wait,
                              results_dir=h.results, on_log=_echo_logs, args=script_args or (),
                              token=read_token(token_file, h), timeout_s=timeout)
    _report(result, json)


@app.command("fetch")
def fetch(
    submission_id: Annotated[str, typer.Argument(help="The id `bench submit --no-wait` printed.")],
    address: AddressOpt = DEFAULT_ADDRESS,
    token_file: TokenOpt = None,
    timeout: TimeoutOpt = None,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Follow a job submitted with --no-wait to its end and save its result."""
    from dlbc_ray.runtime.jobs import check_submission_id, fetch_benchmark

    check_submission_id(submission_id)
    h = later_home(home)  # made only when a result is saved into it
    result = fetch_benchmark(submission_id, address, results_dir=h.results, token=read_token(token_file, h),
                             on_log=_echo_logs, timeout_s=timeout)
    _report(result, json)
