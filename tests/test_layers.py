"""The package's layers, read from every import statement (function-level ones too).

schema -> crypto -> consensus -> config -> ledger -> models -> actors -> runtime -> attack -> ui (cli, explorer):
a module imports only from its own layer or those left of it. The consensus rules stay pure:
no Ray, no torch, no NumPy, no files, sockets, processes or clocks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dlbc_ray"
ORDER = ["base", "schema", "crypto", "consensus", "config", "ledger", "models", "actors", "runtime", "attack", "ui"]
RUNTIME = {"runtime", "network", "service", "client", "localhead", "jobs", "home", "keystore", "taskfile", "untrusted",
           "plots"}
IMPURE = {"ray", "torch", "pytorch_lightning", "lightning", "numpy", "sqlite3", "os", "pathlib", "io", "shutil",
          "tempfile", "subprocess", "socket", "time", "random", "threading", "multiprocessing", "urllib", "requests"}


def layer(module: str) -> str | None:
    """The layer of a ``dlbc_ray`` module, or None for anything outside the package."""
    parts = module.split(".")
    if parts[0] != "dlbc_ray":
        return None
    top = parts[1] if len(parts) > 1 else ""
    if top in ("", "constants", "errors", "py"):
        return "base"
    if top in ("crypto", "canonical"):
        return "crypto"
    if top in RUNTIME:
        return "runtime"
    if top in ("attack", "attack_judging"):
        return "attack"
    if top in ("cli", "explorer"):
        return "ui"
    return top


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        found.append((dotted, path))
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports: ``from a import b`` names both ``a`` and ``a.b`` (b may be a module)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.lineno, node.module))
            names += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return names


def test_every_module_has_a_known_layer() -> None:
    unknown = [m for m, _ in modules() if layer(m) not in ORDER]
    assert not unknown, f"place these in a layer (tests/test_layers.py): {unknown}"


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = []
    for module, path in modules():
        mine = ORDER.index(layer(module) or "base")
        for line, name in imports(path):
            theirs = layer(name)
            if theirs is not None and ORDER.index(theirs) > mine:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({layer(module)}) imports {name} ({theirs})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("module,path", [(m, p) for m, p in modules() if layer(m) == "consensus"],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_consensus_rules_are_pure(module: str, path: Path) -> None:
    impure = [f"line {line}: {name}" for line, name in imports(path) if name.split(".")[0] in IMPURE]
    assert not impure, f"{module} must stay pure (no Ray, torch, NumPy or I/O): {impure}"
    calls = [n.lineno for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id in ("open", "print", "input")]
    assert not calls, f"{module} does I/O at lines {calls}"


def test_the_layer_map_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a schema module importing an actor is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from dlbc_ray.actors.miner import Miner\n")
    assert (2, "dlbc_ray.actors.miner") in imports(bad)
    assert ORDER.index(layer("dlbc_ray.actors.miner") or "") > ORDER.index(layer("dlbc_ray.schema.block") or "")
    assert layer("dlbc_ray.runtime.network") == layer("dlbc_ray.runtime.network") == "runtime"
