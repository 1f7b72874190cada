"""Benchmarks as Ray jobs: upload the working directory, run a script, keep its result.

A job reports its result by printing ONE line to stdout::

    DLBC_RESULT {"benchmark": "...", ...}

(``emit_result`` prints it). When the job succeeds, the runner reads the job's logs, takes
the last such line, and saves ``{submission_id}.json`` in the results folder, because Ray
forgets jobs and their logs when the head restarts.

Ray boundary notes (Ray 2.60):
- The Jobs API runs any command it is sent: it must listen on a private address only.
  With token auth the client sends ``Authorization: Bearer <token>``. We pass the header
  ourselves when given a token; Ray adds its own header only when none is set and this
  process was imported with ``RAY_AUTH_MODE=token`` (its token loader caches one token
  per process, which is wrong for a second cluster).
- ``JobSubmissionClient`` silently replaces the address it is given with
  ``RAY_API_SERVER_ADDRESS`` or ``RAY_ADDRESS`` from the environment; we hide those two
  while connecting, so the address the caller names is the one used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlbc_ray.errors import ConfigError, RuntimeFailure

RESULT_PREFIX = "DLBC_RESULT "
# Never uploaded: environments, VCS data, caches, weights, ledgers, data and plots.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".venv", "venv", ".git", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
    "*.egg-info", "build", "dist", "*.safetensors", "*.ckpt", "*.pt", "*.pth", "*.sqlite", "*.sqlite3", "*.db",
    "*.npz", "*.png", "*.pdf", "plots", "bench-results", ".dlbc-home",
)
# Never uploaded whatever the caller asks: signing keys and Ray tokens (a job's files are readable by every
# job on the cluster), wherever they sit under the working directory.
SECRET_EXCLUDES: tuple[str, ...] = ("*.key", "auth_token", "*.key.tmp")
_ADDRESS_OVERRIDES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_SUBMISSION_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class JobResult:
    """What became of one submitted job; ``result`` and ``result_path`` only once it succeeded."""

    submission_id: str
    address: str
    status: str
    message: str = ""
    result: dict[str, Any] | None = None
    result_path: Path | None = None


def emit_result(result: dict[str, Any]) -> None:
    """For job scripts: print the one result line the runner collects."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True, allow_nan=False) + "\n")
    sys.stdout.flush()


def parse_result(logs: str) -> dict[str, Any] | None:
    """The last ``DLBC_RESULT {...}`` line of a job's logs, or None."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                data = json.loads(line[len(RESULT_PREFIX):])
            except (json.JSONDecodeError, RecursionError):  # a job's logs are anyone's text
                return None
            return data if isinstance(data, dict) else None
    return None


# -------------------------------------------------------------------- the client


@contextlib.contextmanager
def _explicit_address() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in _ADDRESS_OVERRIDES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str, *, token: str | None = None) -> Any:
    """A JobSubmissionClient for ``address`` (http://host:port), or a one-line error."""
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with _explicit_address():
            client = JobSubmissionClient(address, headers=headers)
    except AuthenticationError as e:
        raise ConfigError(f"the Ray Jobs API at {address} refused our token: {_one_line(e).split(' Token ')[0]}; "
                          "pass the cluster's token (--token-file, RAY_AUTH_TOKEN)", reason="ray_token") from None
    except (ConnectionError, requests.ConnectionError):
        raise RuntimeFailure(f"no Ray Jobs API at {address}: nothing answered (is the cluster up, and is this "
                             "the dashboard's address, port 8265 by default?)", reason="unreachable") from None
    except (RuntimeError, ValueError, requests.RequestException) as e:
        raise RuntimeFailure(f"no Ray Jobs API at {address} ({_one_line(e)})", reason="unreachable") from None
    _quiet_ray_loggers()
    return client


def _quiet_ray_loggers() -> None:
    """Ray narrates every upload at INFO, and warns that it skips .git and .venv (as we asked)."""
    for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                 "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray._private.runtime_env.working_dir").setLevel(logging.ERROR)


def _gist(message: str, limit: int = 400) -> str:
    """Ray's job message is a sentence plus the last logs: keep the sentence and the last log line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "no message from Ray"
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# ------------------------------------------------------------------- submitting


def submit_benchmark(
    script: Path, address: str, *, working_dir: Path, wait: bool = True, results_dir: Path,
    on_log: Callable[[str], None] = lambda chunk: None, args: Sequence[str] = (), token: str | None = None,
    timeout_s: float | None = None, excludes: Sequence[str] = DEFAULT_EXCLUDES,
) -> JobResult:
    """Upload ``working_dir``, run ``python SCRIPT ARGS`` there as a job, and (with ``wait``) collect it.

    The job runs on the head node with the cluster's Python; ``working_dir`` is its
    current directory and is on its PYTHONPATH, so it imports the uploaded ``dlbc_ray``.
    """
    relative = _script_in(script, working_dir)
    client = connect(address, token=token)
    submission_id = f"dlbc-bench-{script.stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    entrypoint = shlex.join(["python", relative.as_posix(), *args])
    runtime_env = {"working_dir": str(working_dir), "excludes": upload_excludes(working_dir, results_dir, excludes),
                   "env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}}
    try:
        client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
                          metadata={"dlbc": "benchmark", "script": relative.as_posix()})
    except (RuntimeError, ValueError, OSError) as e:
        raise RuntimeFailure(f"the Ray Jobs API at {address} did not take the job: {_one_line(e)}",
                             reason="submit") from None
    if not wait:
        return JobResult(submission_id, address, "PENDING")
    return _collect(client, submission_id, address, results_dir=results_dir, on_log=on_log, timeout_s=timeout_s)


def fetch_benchmark(submission_id: str, address: str, *, results_dir: Path, token: str | None = None,
                    on_log: Callable[[str], None] = lambda chunk: None, timeout_s: float | None = None) -> JobResult:
    """Follow a job submitted earlier (``--no-wait``) to its end and save its result."""
    check_submission_id(submission_id)
    client = connect(address, token=token)
    return _collect(client, submission_id, address, results_dir=results_dir, on_log=on_log, timeout_s=timeout_s)


def check_submission_id(submission_id: str) -> str:
    """A job id names the result file: letters, digits, '_', '-', '.', never a path (``../x``) or a dotfile."""
    if not _SUBMISSION_ID.fullmatch(submission_id):
        raise ConfigError(f"submission id {submission_id[:80]!r} is not a Ray job id (1-128 of A-Z, a-z, 0-9, "
                          "'_', '-', '.'; not starting with '.')", reason="submission_id")
    return submission_id


def _is(path: Path, kind: Callable[[int], bool]) -> bool:
    """Whether ``path`` is a file or folder (``kind``); a name too long, a NUL byte or a loop is not one."""
    try:
        return kind(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def upload_excludes(working_dir: Path, results_dir: Path, excludes: Sequence[str]) -> list[str]:
    """``excludes``, every key file and token, and the home itself when it lies inside the working directory
    (its keys, ledger and artifacts are not the benchmark's to ship)."""
    found = [*excludes, *SECRET_EXCLUDES]
    try:
        inside = results_dir.parent.resolve().relative_to(working_dir.resolve())
    except (ValueError, OSError, RuntimeError):
        return found
    return found + ([f"/{inside.as_posix()}/"] if inside.parts else [])


def _script_in(script: Path, working_dir: Path) -> Path:
    if not _is(script, stat.S_ISREG):
        raise ConfigError(f"{str(script)[:200]}: no such script (a regular .py file)", reason="missing_script")
    if not _is(working_dir, stat.S_ISDIR):
        raise ConfigError(f"{str(working_dir)[:200]}: working directory does not exist", reason="working_dir")
    try:
        return script.resolve().relative_to(working_dir.resolve())
    except (ValueError, RuntimeError, OSError):
        raise ConfigError(f"{script} is not inside the working directory {working_dir}; only that directory "
                          "is uploaded", reason="working_dir") from None


def _collect(client: Any, submission_id: str, address: str, *, results_dir: Path,
             on_log: Callable[[str], None], timeout_s: float | None) -> JobResult:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    _follow_logs(client, submission_id, on_log, deadline)
    info = _wait_terminal(client, submission_id, deadline)
    status, message = str(info.status), info.message or ""
    if status != "SUCCEEDED":
        raise RuntimeFailure(f"job {submission_id} {status}: {_gist(message)}", reason="job_failed")
    result = parse_result(_call(client.get_job_logs, submission_id))
    if result is None:
        raise RuntimeFailure(f"job {submission_id} succeeded but printed no '{RESULT_PREFIX}{{json}}' line",
                             reason="no_result")
    record = {"submission_id": submission_id, "address": address, "status": status,
              "entrypoint": info.entrypoint, "start_time_ms": info.start_time, "end_time_ms": info.end_time,
              "result": result}
    path = save_result(results_dir, submission_id, record)
    return JobResult(submission_id, address, status, message, result, path)


def _follow_logs(client: Any, submission_id: str, on_log: Callable[[str], None], deadline: float | None) -> None:
    """Stream log chunks to ``on_log`` until the job ends; a dropped stream falls back to polling."""
    import aiohttp

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            on_log(chunk)

    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        asyncio.run(asyncio.wait_for(tail(), timeout))
    except TimeoutError:
        raise RuntimeFailure(f"job {submission_id} still runs after the timeout; follow it later by its "
                             "submission id", reason="timeout") from None
    except (RuntimeError, OSError, aiohttp.ClientError):
        pass  # the stream broke (head busy, a proxy); the status poll that follows still finds the end


def _wait_terminal(client: Any, submission_id: str, deadline: float | None, poll_s: float = 0.5) -> Any:
    while True:
        info = _call(client.get_job_info, submission_id)
        if str(info.status) in _TERMINAL:
            return info
        if deadline is not None and time.monotonic() > deadline:
            raise RuntimeFailure(f"job {submission_id} is still {info.status} after the timeout",
                                 reason="timeout")
        time.sleep(poll_s)


def _call(fn: Callable[[str], Any], submission_id: str) -> Any:
    try:
        return fn(submission_id)
    except (RuntimeError, ConnectionError) as e:
        raise RuntimeFailure(f"lost the Ray Jobs API while following {submission_id}: {_one_line(e)}",
                             reason="unreachable") from None


def save_result(results_dir: Path, submission_id: str, record: dict[str, Any]) -> Path:
    """Write ``{submission_id}.json`` atomically (a torn file never looks like a result)."""
    check_submission_id(submission_id)
    results_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the home, if this is its first write
    results_dir.mkdir(exist_ok=True, mode=0o700)
    path = results_dir / f"{submission_id}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
