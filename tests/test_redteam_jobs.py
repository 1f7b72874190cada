"""`bench submit` uploads a working directory to the cluster, where every job can read it: no signing key
and no Ray token may travel with it, wherever they sit under that directory (issue 10's kind (d))."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray._private.runtime_env.packaging import _get_excludes  # how Ray itself applies the excludes

from dlbc_ray.runtime import jobs
from dlbc_ray.runtime.home import open_home
from dlbc_ray.runtime.keystore import create_key


def uploaded(work: Path, excludes: list[str]) -> set[str]:
    """The files Ray would pack: a folder that matches is skipped whole, as its packaging walk does."""
    excluded = _get_excludes(work, excludes)
    files: set[str] = set()
    for path in sorted(work.iterdir()):
        if excluded(path):
            continue
        files |= {f"{path.name}/{f}" for f in uploaded_under(path, work, excluded)} if path.is_dir() else {path.name}
    return files


def uploaded_under(folder: Path, work: Path, excluded: Any) -> set[str]:
    found: set[str] = set()
    for path in sorted(folder.iterdir()):
        if not excluded(path):
            found |= {f"{path.name}/{f}" for f in uploaded_under(path, work, excluded)} if path.is_dir() \
                else {path.name}
    return found


class FakeClient:
    def __init__(self) -> None:
        self.runtime_env: dict[str, Any] = {}

    def submit_job(self, *, runtime_env: dict[str, Any], **kwargs: Any) -> None:
        self.runtime_env = runtime_env


@pytest.mark.parametrize("home_name", ["myhome", ".", "deep/er/home"])
def test_no_key_or_token_is_uploaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home_name: str) -> None:
    work = tmp_path / "work"
    home = open_home(work / home_name)
    create_key(home, "alice")
    home.ray_token.parent.mkdir(parents=True, exist_ok=True)
    home.ray_token.write_text("t" * 64)
    (work / "stray").mkdir()
    (work / "stray" / "bob.key").write_text("{}")
    (work / "stray" / "auth_token").write_text("t")
    (work / "bench.py").write_text("print(1)\n")
    (work / "pkg").mkdir()
    (work / "pkg" / "code.py").write_text("x = 1\n")
    client = FakeClient()
    monkeypatch.setattr(jobs, "connect", lambda address, token=None: client)
    jobs.submit_benchmark(work / "bench.py", "http://127.0.0.1:1", working_dir=work, wait=False,
                          results_dir=home.results, excludes=())
    shipped = uploaded(work, client.runtime_env["excludes"])
    assert {"bench.py", "pkg/code.py"} <= shipped
    assert not [s for s in shipped if s.endswith((".key", "auth_token"))], shipped


@pytest.mark.parametrize("line", ["[" * 100_000, '{"a": ' * 5000, "NaN", "\udcff", ""])
def test_a_jobs_result_line_of_any_text_is_no_result_not_a_crash(line: str) -> None:
    """Whatever a job prints after DLBC_RESULT (its logs are anyone's text) is a result or none."""
    assert jobs.parse_result(f"noise\n{jobs.RESULT_PREFIX}{line}\nmore noise") is None
