"""The CLI's promises about failure: one line, never a traceback (unless --debug), and no run without Ray auth."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlbc_ray.cli import keys
from dlbc_ray.cli._app import UNEXPECTED_EXIT
from dlbc_ray.cli.app import app
from dlbc_ray.errors import InvalidTask
from dlbc_ray.runtime.home import open_home
from dlbc_ray.runtime.keystore import create_key

runner = CliRunner()


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def broken_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something deep broke\nwith a second line")

    monkeypatch.setattr(keys, "list_keys", explode)


def test_unexpected_error_is_one_line_with_a_hint(broken_keys: None, tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "show", "--home", str(tmp_path)])
    assert result.exit_code == UNEXPECTED_EXIT
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: unexpected RuntimeError: something deep broke") and "--debug" in lines[0]
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(broken_keys: None, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "keys", "show", "--home", str(tmp_path)])
    assert result.exit_code == UNEXPECTED_EXIT
    assert "Traceback (most recent call last)" in result.stderr and "explode" in result.stderr
    assert stderr_lines(result)[-1].startswith("error: unexpected RuntimeError")


def test_every_project_error_is_one_line_with_its_exit_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise InvalidTask("task.yaml: field 'x'\n" + "y" * 5000, reason="x")

    monkeypatch.setattr(keys, "list_keys", refuse)
    result = runner.invoke(app, ["keys", "show", "--home", str(tmp_path)])
    assert result.exit_code == InvalidTask.exit_code
    (line,) = stderr_lines(result)
    assert line.startswith("error: task.yaml: field 'x'") and len(line) <= 520


def test_typer_never_prints_locals() -> None:
    """Signing keys are in scope of every command: a pretty traceback must not show them."""
    assert app.pretty_exceptions_show_locals is False


# Finding 7 of issue 10: token auth must not fail open.


@pytest.mark.parametrize("mode", ["disabled", "none", ""])
def test_auth_off_is_refused_without_the_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    result = runner.invoke(app, ["demo", "--preset", "minimal", "--home", str(tmp_path / "home")])
    assert result.exit_code == 2
    (line,) = stderr_lines(result)
    assert "RAY_AUTH_MODE" in line and "--insecure-no-auth" in line
    assert not (tmp_path / "home").exists()


def test_insecure_no_auth_is_explicit_and_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("DLBC_INSECURE_NO_AUTH", "0")  # restored after the test; the flag sets it
    create_key(open_home(tmp_path), "alice")
    result = runner.invoke(app, ["--insecure-no-auth", "keys", "show", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (warning,) = stderr_lines(result)
    assert warning.startswith("warning: --insecure-no-auth") and "alice" in result.stdout


def test_an_environment_variable_alone_does_not_turn_auth_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("DLBC_INSECURE_NO_AUTH", "1")
    result = runner.invoke(app, ["keys", "show", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "RAY_AUTH_MODE" in result.stderr
