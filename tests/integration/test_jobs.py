"""Benchmarks through the Ray Jobs API, against a second, private Ray head started for this module.

The head runs with token auth, its dashboard on 127.0.0.1, every port free-picked, its own
temp dir, and loopback as its node address, so it never meets the session's Ray. It is
stopped by signalling exactly the process group this module started (`ray stop` would
stop every Ray on the machine, the session's too).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dlbc_ray.runtime import localhead
from dlbc_ray.errors import ConfigError, RuntimeFailure
from dlbc_ray.runtime.jobs import (
    DEFAULT_EXCLUDES,
    JobResult,
    emit_result,
    fetch_benchmark,
    parse_result,
    save_result,
    submit_benchmark,
)

# Ray 2.60's own log tailer passes ssl=None to aiohttp.
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90


@dataclass(frozen=True)
class Head:
    url: str
    token: str
    token_path: Path
    temp_dir: Path


def write_token(path: Path) -> str:
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def wait_for_jobs_api(url: str, token: str, log: Path) -> None:
    import requests

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"no Jobs API at {url} after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    """A second Ray head, the product's own private loopback head (dlbc_ray.runtime.localhead)."""
    if not Path(sys.executable).with_name("ray").exists():
        pytest.skip(f"no ray executable beside {sys.executable}")
    # Short: Ray's unix socket paths under the temp dir must stay under 108 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="dlbc-jobs-", dir="/tmp"))
    token_path = temp_dir / "auth_token"
    token = write_token(token_path)
    local = localhead.start(temp_dir, token_path, num_cpus=1, object_store_bytes=100_000_000)
    try:
        wait_for_jobs_api(local.dashboard, token, temp_dir / "head.log")
        yield Head(local.dashboard, token, token_path, temp_dir)
    finally:
        leftovers = localhead.stop(local)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftovers, f"processes of the test head outlived it: {leftovers}"


def small_job(tmp_path: Path, body: str) -> Path:
    """A tiny working dir holding one script job.py, so a job uploads bytes, not the repository."""
    (tmp_path / "w").mkdir(parents=True)
    (tmp_path / "w" / "job.py").write_text(body)
    return tmp_path / "w" / "job.py"


# ---------------------------------------------------------------- with the head


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_bench_round_runs_as_a_job_and_its_result_is_saved(head: Head, tmp_path: Path) -> None:
    logs: list[str] = []
    result = submit_benchmark(REPO / "examples" / "bench_round.py", head.url, working_dir=REPO, wait=True,
                              results_dir=tmp_path / "results", on_log=logs.append, args=["--quick"],
                              token=head.token, timeout_s=120)
    assert result.status == "SUCCEEDED" and result.result_path is not None
    import json

    saved = json.loads(result.result_path.read_text())
    assert saved["submission_id"] == result.submission_id and saved["result"] == result.result
    assert saved["entrypoint"] == "python examples/bench_round.py --quick"
    assert saved["result"]["benchmark"] == "bench_round" and saved["result"]["size_mb"] == 8
    assert saved["result"]["hash_weights_s"]["median"] > 0 and saved["result"]["verify_us"]["median"] > 0
    # The job imported the dlbc_ray it was sent (working_dir is on its PYTHONPATH), not this checkout.
    assert "runtime_resources" in saved["result"]["dlbc_ray"]
    assert any("DLBC_RESULT" in chunk for chunk in logs)


@pytest.mark.ray
def test_failed_jobs_and_jobs_without_a_result_are_one_line_errors(head: Head, tmp_path: Path) -> None:
    failing = small_job(tmp_path / "a", "raise SystemExit('benchmark broke')\n")
    silent = small_job(tmp_path / "b", "print('done, but no result')\n")
    # Both run at once (--no-wait), then each is followed to its end.
    ids = [submit_benchmark(s, head.url, working_dir=s.parent, wait=False, results_dir=tmp_path / "r",
                            token=head.token).submission_id for s in (failing, silent)]
    with pytest.raises(RuntimeFailure, match=rf"^job {ids[0]} FAILED: .*") as caught:
        fetch_benchmark(ids[0], head.url, results_dir=tmp_path / "r", token=head.token, timeout_s=60)
    assert caught.value.reason == "job_failed" and "\n" not in str(caught.value)
    with pytest.raises(RuntimeFailure, match=rf"^job {ids[1]} succeeded but printed no 'DLBC_RESULT {{json}}' line"):
        fetch_benchmark(ids[1], head.url, results_dir=tmp_path / "r", token=head.token, timeout_s=60)
    assert not (tmp_path / "r").exists()


@pytest.mark.ray
def test_a_wrong_or_missing_token_is_refused_before_anything_runs(head: Head, tmp_path: Path) -> None:
    script = REPO / "examples" / "bench_round.py"
    with pytest.raises(ConfigError, match=rf"the Ray Jobs API at {head.url} refused our token: .*Invalid"):
        submit_benchmark(script, head.url, working_dir=REPO, results_dir=tmp_path, token="0" * 64)
    # Without one, Ray sends whatever its process-wide loader holds (or nothing): not this cluster's.
    with pytest.raises(ConfigError, match="refused our token"):
        submit_benchmark(script, head.url, working_dir=REPO, results_dir=tmp_path, token=None)


@pytest.mark.ray
def test_cli_submit_no_wait_then_fetch(head: Head, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also: Ray's RAY_ADDRESS / RAY_API_SERVER_ADDRESS must not silently redirect us elsewhere."""
    import json

    from typer.testing import CliRunner

    from dlbc_ray.cli.bench import app

    script = small_job(tmp_path, "import sys\nfrom dlbc_ray.runtime.jobs import emit_result\n"
                           "emit_result({'args': sys.argv[1:]})\n")
    monkeypatch.chdir(script.parent)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9")
    home = ["--home", str(tmp_path / "home"), "--address", head.url, "--token-file", str(head.token_path)]
    runner = CliRunner()
    submitted = runner.invoke(app, ["submit", "job.py", *home, "--no-wait", "--json", "--", "--quick", "x"])
    assert submitted.exit_code == 0, submitted.output
    submission_id = json.loads(submitted.stdout)["submission_id"]
    fetched = runner.invoke(app, ["fetch", submission_id, *home, "--json"])
    assert fetched.exit_code == 0, fetched.output
    info = json.loads(fetched.stdout)
    assert info["status"] == "SUCCEEDED" and info["result"] == {"args": ["--quick", "x"]}
    assert Path(info["result_path"]) == tmp_path / "home" / "results" / f"{submission_id}.json"
    assert os.environ["RAY_ADDRESS"] == "http://127.0.0.1:9"  # hidden while connecting, then restored


# ------------------------------------------------------------- without a head


def test_unreachable_address_is_one_line(tmp_path: Path) -> None:
    (port,) = localhead.free_ports(1)
    with pytest.raises(RuntimeFailure, match=rf"^no Ray Jobs API at http://127.0.0.1:{port}: nothing answered"):
        submit_benchmark(REPO / "examples" / "bench_round.py", f"http://127.0.0.1:{port}", working_dir=REPO,
                         results_dir=tmp_path)


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    monkeypatch.setenv("HOME", str(tmp_path))  # not this machine's ~/.ray/auth_token (whatever its mode)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("ab" * 32)
    (tmp_path / ".ray" / "auth_token").chmod(0o600)

    from dlbc_ray.cli.bench import app

    (port,) = localhead.free_ports(1)
    runner = CliRunner()
    missing = runner.invoke(app, ["submit", str(tmp_path / "nope.py"), "--home", str(tmp_path / "h")])
    assert missing.exit_code == ConfigError.exit_code
    assert missing.output == f"error: {tmp_path}/nope.py: no such script (a regular .py file)\n"
    down = runner.invoke(app, ["submit", str(REPO / "examples" / "bench_round.py"), "--working-dir", str(REPO),
                               "--home", str(tmp_path / "h"), "--address", f"http://127.0.0.1:{port}"])
    assert down.exit_code == RuntimeFailure.exit_code
    assert down.output.startswith(f"error: no Ray Jobs API at http://127.0.0.1:{port}") and down.output.count("\n") == 1


def test_script_must_be_inside_the_uploaded_directory(tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_text("")
    with pytest.raises(ConfigError, match="is not inside the working directory"):
        submit_benchmark(tmp_path / "outside.py", "http://127.0.0.1:1", working_dir=REPO, results_dir=tmp_path)


def test_result_line_round_trips_and_the_last_one_wins(capsys: pytest.CaptureFixture[str]) -> None:
    emit_result({"a": 1})
    emit_result({"a": 2, "nested": {"x": [1, 2]}})
    logs = "noise\n" + capsys.readouterr().out + "DLBC_RESULT not json\n"
    assert parse_result(logs) is None  # a broken last line is not silently replaced by an older one
    assert parse_result(logs.rsplit("DLBC_RESULT not json", 1)[0]) == {"a": 2, "nested": {"x": [1, 2]}}
    assert parse_result("no result here\n") is None and parse_result("DLBC_RESULT [1, 2]\n") is None


def test_save_result_is_atomic_json(tmp_path: Path) -> None:
    path = save_result(tmp_path / "results", "job-1", {"result": {"x": 1}})
    assert path.name == "job-1.json" and path.read_text().startswith("{") and list(path.parent.iterdir()) == [path]


def test_excludes_keep_environments_weights_and_ledgers_out() -> None:
    assert {".venv", ".git", "*.safetensors", "*.sqlite", "*.npz", "__pycache__"} <= set(DEFAULT_EXCLUDES)


def test_job_result_is_frozen() -> None:
    result = JobResult("id", "http://x", "PENDING")
    with pytest.raises(AttributeError):
        result.status = "SUCCEEDED"  # type: ignore[misc]
