"""Numeric and address options of the commands that start things: any odd value is refused in one
line naming the option (Click's own parse errors too), before any network starts and before anything
is written (no Ray needed: what would start a network is replaced by a marker that says it was reached)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dlbc_ray.runtime import network, service
from dlbc_ray.cli._app import UNEXPECTED_EXIT
from dlbc_ray.cli.app import app

runner = CliRunner()


class Reached(Exception):
    """The command accepted its input and went on to start something."""


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def reached(*args: Any, **kwargs: Any) -> None:
        raise Reached("reached")

    for module, name in [(network, "run_demo"), (service, "up"), (service, "connect")]:
        monkeypatch.setattr(module, name, reached)
    import dlbc_ray.attack.harness as attack

    monkeypatch.setattr(attack, "run_attacks", reached, raising=False)


def went_on(result: Any) -> bool:
    """The command accepted its input (the guard reports the marker as an unexpected error)."""
    return isinstance(result.exception, Reached) or "unexpected Reached" in result.stderr


def is_usage_error(result: Any, option: str) -> bool:
    """Click's own refusal of a value it cannot parse (exit 2, the option named in its one line)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.exit_code == 2 and len(lines) == 1 and "Invalid value for" in lines[0] and option in lines[0]


def refused_in_one_line(args: list[str], home: Path, *words: str) -> None:
    result = runner.invoke(app, [*args, "--home", str(home)])
    assert not went_on(result), f"{args} reached the network"
    assert result.exit_code not in (0, UNEXPECTED_EXIT), result.stderr
    assert "Traceback" not in result.output and not home.exists(), result.stderr
    if is_usage_error(result, args[-2]):
        return
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert all(w in lines[0] for w in words), lines[0]


ODD_NUMBERS = ["nan", "inf", "-inf", "1e309", "-1", "9" * 40]


@pytest.mark.parametrize("value", ODD_NUMBERS)
@pytest.mark.parametrize(("args", "word"), [
    (["up", "--miner-gpus"], "num_gpus"), (["demo", "--mode", "pole", "--target-interval"], "target"),
    (["demo", "--epochs"], "epochs"), (["attack", "--trials"], "trials"), (["up", "--miners-per-task"], "miners"),
])
def test_an_odd_number_is_refused_by_name(tmp_path: Path, args: list[str], word: str, value: str) -> None:
    refused_in_one_line([*args, value], tmp_path / "home", word)


@pytest.mark.parametrize("host", ["", " ", "a\x00b", "../../etc/passwd", "9" * 300, "héllo", "-x", "a..b"])
def test_an_odd_explorer_host_is_refused_by_name(tmp_path: Path, host: str) -> None:
    refused_in_one_line(["explorer", "--host", host], tmp_path / "home", "--host")


@pytest.mark.parametrize("port", ["0", "-1", "65536", "99999999999"])
def test_an_odd_explorer_port_is_refused_by_name(tmp_path: Path, port: str) -> None:
    refused_in_one_line(["explorer", "--port", port], tmp_path / "home", "port")


OPTIONS = [["up", "--miner-gpus"], ["up", "--miners"], ["up", "--validators"], ["up", "--miners-per-task"],
           ["demo", "--epochs"], ["demo", "--blocks"], ["demo", "--miners"], ["demo", "--mode", "pole",
                                                                            "--target-interval"],
           ["attack", "--trials"]]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(OPTIONS),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-2**80, 2**80).map(str),
                       st.text(max_size=12)))
def test_any_value_is_refused_in_one_line_or_accepted(tmp_path: Path, option: list[str], value: str) -> None:
    """Never an unexpected error: a value is either refused by name in one line or goes on to start."""
    result = runner.invoke(app, [*option, value, "--home", str(tmp_path / "home")])
    if went_on(result):
        return
    assert result.exit_code not in (0, UNEXPECTED_EXIT), (option, value, result.stderr)
    assert "Traceback" not in result.output, (option, value, result.stderr)
    if not is_usage_error(result, option[-1]):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, (option, value, result.stderr)


@pytest.mark.parametrize(("args", "words"), [
    (["demo", "--epochs", "x"], ["--epochs"]), (["nope"], ["nope"]), (["demo", "--bogus"], ["--bogus"]),
    (["keys", "new"], ["--name"]), (["chain", "show", "--bogus"], ["--bogus"]),
])
def test_clicks_own_refusals_are_one_line(tmp_path: Path, args: list[str], words: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith("error: ") and all(w in line for w in words) and "--help" in line


def test_no_arguments_still_shows_the_help() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 2 and "Usage" in result.output and "demo" in result.output
