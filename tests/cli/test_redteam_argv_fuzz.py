"""Every command and option fed odd argv (Hypothesis): never a traceback, never an "unexpected" error, a
failure is a few short lines and leaves the home as it was. No network starts: whatever would start or
reach one is replaced by a marker, and a command that reaches it has accepted its input.

Odd values: missing, empty, garbage, huge, negative, NaN, NUL bytes, lone surrogates (how Python hands
non-UTF-8 argv over), paths to a directory, /dev/zero, a 1 GB sparse file, binary junk, a symlink loop,
a deeply nested file; homes that are missing, a file, hold a corrupt or half-made ledger, or keys with
bad modes.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dlbc_ray.cli._app import UNEXPECTED_EXIT
from dlbc_ray.cli.app import app
from dlbc_ray.runtime.home import open_home
from dlbc_ray.runtime.keystore import create_key
from tests.cli.test_cli import write_chain

runner = CliRunner()
MAX_ERR_LINES, MAX_ERR_CHARS, MAX_OUT_CHARS = 3, 1500, 200_000


class Reached(Exception):
    """The command accepted its input and went on to start or reach a network."""


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    import dlbc_ray.attack.harness as attack
    import dlbc_ray.runtime.client as client
    import dlbc_ray.explorer.server as server
    import dlbc_ray.runtime.jobs as jobs
    from dlbc_ray.runtime import network, service

    def reached(*args: Any, **kwargs: Any) -> None:
        raise Reached("reached")

    for module, name in [(network, "run_demo"), (service, "up"), (service, "down"), (service, "connect"),
                         (service, "attach"), (client, "attach"), (attack, "run_attacks"), (server, "serve"),
                         (jobs, "connect")]:
        monkeypatch.setattr(module, name, reached)
    monkeypatch.setattr("dlbc_ray.explorer.ClusterPoller.start", lambda self: None)
    monkeypatch.delenv("DLBC_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("user")))  # not this machine's ~/.ray/auth_token
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)


# ------------------------------------------------------------------ the odd world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("odd")
    files = base / "files"
    files.mkdir()
    (files / "adir").mkdir()
    (files / "junk.yaml").write_bytes(bytes(range(256)) * 8)
    (files / "junk.bin").write_bytes(os.urandom(4096))
    (files / "deep.json").write_text("[" * 50_000)
    (files / "deep.yaml").write_text("a: " * 5000 + "1")
    (files / "bom.yaml").write_bytes(b"\xff\xfe" + "version: 1".encode("utf-16-le"))
    with open(files / "sparse.yaml", "wb") as f:
        f.truncate(1 << 30)  # 1 GB of holes: nothing must read it whole
    os.symlink("loop-b", files / "loop-a.yaml")
    os.symlink("loop-a.yaml", files / "loop-b")
    from safetensors.numpy import save_file

    save_file({"w": np.zeros((2, 2), np.float32)}, str(files / "bare.safetensors"))
    save_file({"w": np.full((2,), np.nan, np.float32)}, str(files / "nan.safetensors"),
              metadata={"task_id": "0" * 64, "miner": "\udcff".encode("utf-8", "surrogatepass").hex()})
    (files / "script.py").write_text("print(1)\n")
    (files / "token").write_bytes(b"\x80\x81 not utf-8")
    (files / "token").chmod(0o600)

    homes = base / "homes"
    homes.mkdir()
    chain = homes / "chain"
    chain.mkdir()
    write_chain(chain)
    for name in ("alice", "requester"):
        create_key(open_home(chain), name)
    corrupt = homes / "corrupt"
    corrupt.mkdir()
    (corrupt / "ledger.sqlite").write_bytes(b"garbage" * 500)
    half = homes / "half"
    half.mkdir()
    sqlite3.connect(half / "ledger.sqlite").close()  # an empty SQLite file: created, never given genesis
    loose = homes / "loose"
    shutil.copytree(chain, loose)
    (loose / "keys").chmod(0o777)
    dirledger = homes / "dirledger"
    (dirledger / "ledger.sqlite").mkdir(parents=True)
    (homes / "afile").write_text("x")
    from dlbc_ray.runtime.home import read_ledger

    ledger = read_ledger(open_home(chain))
    task = sorted(ledger.state.tasks)[0]
    spec = ledger.state.tasks[task].task
    ledger.close()
    from dlbc_ray.ledger import save_safetensors
    from dlbc_ray.models.nets import build_net
    from dlbc_ray.models.weights import to_numpy

    net = build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes)
    save_safetensors(to_numpy(net), files / "model.safetensors", metadata={"task_id": task})  # reads to the end
    return {"base": base, "files": files, "homes": homes, "task": task}


PATHS = ["model.safetensors", "adir", "junk.yaml", "junk.bin", "deep.json", "deep.yaml", "bom.yaml", "sparse.yaml", "loop-a.yaml",
         "bare.safetensors", "nan.safetensors", "script.py", "token", "missing.yaml", "/dev/zero", "/dev/null",
         "", "a\x00b.yaml", "\udcff.yaml", "x" * 5000 + ".yaml", "examples/tasks/iris-mlp.json",
         "examples/tasks/digits-mlp.yaml"]
HOMES = ["chain", "corrupt", "half", "loose", "dirledger", "afile", "missing", "fresh", "loop", "nul"]
NUMBERS = ["", " ", "0", "-1", "1", "2", "nan", "inf", "-inf", "1e309", "-0", "0x10", "9" * 40, "-" + "9" * 40,
           "1.5", "1_000", "٣"]
WORDS = ["", " ", "-", "--", "x", "alice", "requester", "nobody", "../../etc/passwd", "a\x00b", "\udcff\udcfe",
         "\ud800", "é" * 3, "x" * 5000, "0" * 64, "f" * 64, "0" * 8, "[" * 3000, '{"hidden": [1e308]}',
         '{"hidden": [-1]}', '{"hidden": NaN}', "1,8,8", "0,0", "8x", "http://127.0.0.1:1", "ftp://x",
         "http://[::1", "auto", "local", "127.0.0.1:1", "0.0.0.0", "::", "all", "tasks", "pole", "minimal",
         "@task", "@task8", "../../../tmp/escape", "raysubmit_x/../../x"]

# command -> (options with the kind of value each takes, positional kinds)
COMMANDS: dict[tuple[str, ...], tuple[dict[str, str], list[str]]] = {
    ("demo",): ({"--miners": "n", "--validators": "n", "--blocks": "n", "--epochs": "n", "--mode": "w",
                 "--target-interval": "n", "--preset": "w", "--new-chain": "flag", "--json": "flag",
                 "--explorer": "flag", "--explorer-port": "n"}, []),
    ("attack",): ({"--kind": "w", "--trials": "n", "--json": "flag"}, []),
    ("explorer",): ({"--host": "w", "--port": "n", "--address": "w"}, []),
    ("nets",): ({"--json": "flag"}, []),
    ("audit",): ({"--segments": "n", "--json": "flag"}, ["w"]),
    ("up",): ({"--address": "w", "--miners": "n", "--validators": "n", "--miner-gpus": "n",
               "--miners-per-task": "n", "--pole": "flag", "--new-chain": "flag", "--allow-task-code": "flag"}, []),
    ("down",): ({"--address": "w"}, []),
    ("status",): ({"--address": "w", "--json": "flag"}, []),
    ("submit",): ({"--as": "w", "--wait": "flag", "--address": "w", "--json": "flag"}, ["p"]),
    ("result",): ({"--output": "p", "--json": "flag"}, ["w"]),
    ("balance",): ({"--json": "flag"}, ["w"]),
    ("transfer",): ({"--as": "w", "--address": "w", "--json": "flag"}, ["w", "n"]),
    ("chain", "show"): ({"--json": "flag"}, []),
    ("chain", "verify"): ({"--workers": "n"}, []),
    ("keys", "new"): ({"--name": "w", "--json": "flag"}, []),
    ("keys", "show"): ({"--name": "w", "--json": "flag"}, []),
    ("watermark", "check"): ({"--miner": "w", "--json": "flag", "--model": "w", "--input-shape": "w",
                              "--classes": "n", "--params": "w"}, ["p"]),
    ("bench", "submit"): ({"--address": "w", "--no-wait": "flag", "--wait": "flag", "--working-dir": "p", "--token-file": "p",
                           "--timeout": "n", "--json": "flag"}, ["p"]),
    ("bench", "fetch"): ({"--address": "w", "--token-file": "p", "--timeout": "n", "--json": "flag"}, ["w"]),
}


def value(kind: str, files: Path) -> st.SearchStrategy[str]:
    if kind == "n":
        return st.one_of(st.sampled_from(NUMBERS), st.integers(-2**70, 2**70).map(str),
                         st.floats().map(repr))
    if kind == "p":
        return st.sampled_from(PATHS).map(lambda p: p if p.startswith(("/", "examples")) or not p
                                          else str(files / p))
    return st.one_of(st.sampled_from(WORDS), st.text(max_size=20))


@st.composite
def argv(draw: st.DrawFn, files: Path) -> tuple[list[str], str]:
    command = draw(st.sampled_from(sorted(COMMANDS)))
    options, positionals = COMMANDS[command]
    args = list(command)
    for option in draw(st.lists(st.sampled_from(sorted(options)), max_size=4, unique=True)):
        kind = options[option]
        args += [option] if kind == "flag" else [option, draw(value(kind, files))]
    for kind in positionals[:draw(st.sampled_from([len(positionals)] * 3 + list(range(len(positionals)))))]:
        args.append(draw(value(kind, files)))
    return args, draw(st.sampled_from(HOMES))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and mtime, but SQLite's -wal/-shm: a read-only reader of a WAL ledger makes them (they
    hold no data; the ledger file itself must not change)."""
    if "\x00" in str(root) or not root.is_dir():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and not p.name.endswith(("-wal", "-shm"))}


def check(result: Any, args: list[str], home: Path, before: dict[str, tuple[int, int]]) -> None:
    said = f"{args!r}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.output and "Traceback" not in result.stderr, said
    if isinstance(result.exception, Reached) or "unexpected Reached" in result.stderr:
        return
    assert result.exit_code != UNEXPECTED_EXIT, said
    assert result.exception is None or isinstance(result.exception, SystemExit), said
    assert len(result.stdout) <= MAX_OUT_CHARS, said
    if result.exit_code == 0:
        return
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= MAX_ERR_LINES and len(result.stderr) <= MAX_ERR_CHARS, said
    assert snapshot(home) == before, f"a failed command wrote into the home: {said}"


def invoke(world: dict[str, Any], tmp: Path, args: list[str], home_kind: str) -> None:
    if home_kind in ("missing", "fresh"):
        home = tmp / "home"
    elif home_kind == "loop":
        home = tmp / "loop"
        os.symlink("loop", home)
    elif home_kind == "nul":
        home = tmp / "a\x00b"
    else:
        home = tmp / home_kind
        src = world["homes"] / home_kind
        shutil.copytree(src, home, symlinks=True) if src.is_dir() else shutil.copy(src, home)
        if home_kind == "loose":
            (home / "keys").chmod(0o777)
    before = snapshot(home)
    args = [world["task"] if a == "@task" else world["task"][:8] if a == "@task8" else a for a in args]
    full = [*args, "--home", str(home)] if home_kind != "fresh" and args[0] != "nets" else args
    cwd = os.getcwd()
    os.chdir(Path(__file__).resolve().parents[2])  # examples/ and relative outputs resolve in the repo
    try:
        env = {"DLBC_HOME": str(home)} if home_kind == "fresh" else None
        result = runner.invoke(app, full, env=env)
    finally:
        os.chdir(cwd)
    check(result, full, home, before)


@settings(max_examples=int(os.environ.get("DLBC_FUZZ_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_odd_argv_never_gives_a_traceback(world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                                          data: st.DataObject) -> None:
    args, home_kind = data.draw(argv(world["files"]))
    invoke(world, tmp_path_factory.mktemp("run"), args, home_kind)


# The cases the fuzzer found, pinned so they never come back (each failed before its fix).
FOUND = [
    ["watermark", "check", "bare.safetensors", "--miner", "alice", "--model", "mlp", "--input-shape", "8",
     "--classes", "3", "--params", "[" * 3000],
    ["bench", "fetch", "x", "--token-file", "token"],
]


@pytest.mark.parametrize("args", FOUND, ids=lambda a: " ".join(a[:2]))
def test_found_cases_stay_fixed(world: dict[str, Any], tmp_path: Path, args: list[str]) -> None:
    files = world["files"]
    fixed = [str(files / a) if a in PATHS and a else a for a in args]
    invoke(world, tmp_path, fixed, "chain")


@pytest.mark.parametrize(("args", "home_kind"), [
    (["balance"], "half"), (["chain", "show"], "half"), (["chain", "verify"], "half"),  # wrote a schema into it
    (["keys", "show"], "loop"), (["chain", "show"], "nul"), (["bench", "fetch", "x"], "loop"),
])
def test_found_homes_stay_fixed(world: dict[str, Any], tmp_path: Path, args: list[str], home_kind: str) -> None:
    invoke(world, tmp_path, args, home_kind)


@pytest.mark.parametrize("job", ["../../../tmp/escape", "raysubmit_x/../../x", ".hidden", "a\x00b", ""])
def test_a_job_id_that_is_a_path_is_refused_before_connecting(tmp_path: Path, job: str) -> None:
    """`bench fetch ID` names its result file after ID: a path there would write outside the home."""
    result = runner.invoke(app, ["bench", "fetch", job, "--home", str(tmp_path / "home")])
    assert "Reached" not in result.stderr and result.exit_code == 2, result.stderr
    assert "submission id" in result.stderr and not (tmp_path / "home").exists()


@pytest.mark.parametrize("encoding", ["ascii", "latin-1", "utf-8"])
def test_a_name_the_terminal_cannot_show_is_escaped_not_an_error(tmp_path: Path, encoding: str) -> None:
    """A real process: its stdout in the terminal's encoding (ASCII under a bare C locale), a home named
    in another script, and a home whose name is not UTF-8 at all."""
    import subprocess
    import sys

    for name in ("hé€", b"h\xff".decode("utf-8", "surrogateescape")):
        home = tmp_path / encoding / name
        create_key(open_home(home), "alice")
        env = {**os.environ, "PYTHONIOENCODING": encoding, "HOME": str(tmp_path)}
        env.pop("DLBC_HOME", None)
        done = subprocess.run([sys.executable, "-c", "from dlbc_ray.cli.app import main; main()", "keys", "show",
                               "--home", str(home)], env=env, capture_output=True, timeout=120)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr[-500:]
        assert b"alice" in done.stdout and not done.stderr, done.stderr[-500:]


def test_chain_verify_starts_no_more_processes_than_it_may(world: dict[str, Any], tmp_path: Path) -> None:
    """--workers is how many processes verify_chain spawns (one per checkpoint stretch): a long chain must
    not turn --workers 100000 into a fork bomb."""
    result = runner.invoke(app, ["chain", "verify", "--workers", "100000", "--home", str(world["homes"] / "chain")])
    assert result.exit_code == 2 and "--workers" in result.stderr, result.stderr


def test_the_fuzzer_knows_every_command_and_option() -> None:
    """A command or option added later is fuzzed too: COMMANDS must name every one the CLI has."""
    import typer

    from dlbc_ray.cli.app import app

    def walk(command: Any, path: tuple[str, ...]) -> Any:  # typer's own click: groups have ``commands``
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    unknown = {}
    for path, command in walk(typer.main.get_command(app), ()):
        options = {o for p in command.params if p.param_type_name == "option" for o in p.opts if o.startswith("--")}
        left = options - {"--home", "--help", "--debug"} - set(COMMANDS.get(path, ({}, []))[0])
        if path not in COMMANDS or left:
            unknown[" ".join(path)] = sorted(left)
    assert not unknown, f"add these to COMMANDS: {unknown}"
