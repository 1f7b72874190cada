"""A task's own code on the cluster: shipped as a Ray ``runtime_env`` package, installed where it runs.

The requester's client uploads the package to the cluster's storage (the GCS, where Ray keeps
``runtime_env`` packages) under ``code_uri``, a py_modules URI named by the hash the signed
task carries. Miners, validators and the coordinator are long-lived actors, and Ray fixes a
worker's ``runtime_env`` when its process starts, so a node does what Ray's py_modules
plugin does for a new worker (fetch the URI, unpack it, put it first on ``sys.path``) inside
the running process, and first refuses code whose files do not hash to the signed hash.
One version of a package is loaded per process at a time; loading another drops the first.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from pathlib import Path

from dlbc_ray.errors import ActorUnavailable, InvalidTask
from dlbc_ray.models import plugins
from dlbc_ray.models.taskcode import archive, check_allowed, check_code, code_hash, code_uri, import_name, unpack
from dlbc_ray.schema.task import CodeSpec

ROOT = Path(tempfile.gettempdir()) / "dlbc-task-code"
_LOCK = threading.Lock()
_LOADED: dict[str, tuple[str, str]] = {}  # import name -> (hash, sys.path entry) loaded in this process


def upload(path: Path, code: CodeSpec) -> str:
    """Put the package at ``path`` into the cluster's storage under its URI (once); needs a connected driver."""
    from ray.experimental.internal_kv import _internal_kv_exists, _internal_kv_put

    if code_hash(path) != code.hash:
        raise InvalidTask(f"{path}: task code changed since the task file was read; submit it again",
                          reason="code_mismatch")
    uri = code_uri(code.hash, code.package)
    try:
        if not _internal_kv_exists(uri):
            _internal_kv_put(uri, archive(path))
    except (ConnectionError, RuntimeError) as e:
        raise ActorUnavailable(f"cannot upload task code to the cluster: {str(e)[:100]}", reason="upload") from None
    return uri


def install(code: CodeSpec | None, *, allowed: bool = True) -> None:
    """Make ``code`` importable in this process, refused unless allowed and hashing to the signed hash."""
    check_allowed(code, allowed)
    if code is None:
        return
    name = import_name(code.package)
    with _LOCK:
        if _LOADED.get(name, ("", ""))[0] == code.hash:
            return
        _unload(name)  # first: the hash check refuses a name this process already imports (check_import_name)
        entry = _fetch(code)
        sys.path.insert(0, str(entry))
        _LOADED[name] = (code.hash, str(entry))


def install_local(path: Path) -> None:
    """Make the package folder or wheel at ``path`` importable here (the requester's own process)."""
    path = Path(path).resolve()
    name = import_name(path.name)
    with _LOCK:
        entry = str(path if path.suffix == ".whl" else path.parent)
        if _LOADED.get(name, ("", ""))[1] == entry:
            return
        _unload(name)
        sys.path.insert(0, entry)
        _LOADED[name] = ("local", entry)



def _fetch(code: CodeSpec) -> Path:
    """The unpacked package under ``ROOT/<hash>``, fetched from the cluster unless it is there already."""
    from ray.experimental.internal_kv import _internal_kv_get

    home = ROOT / code.hash
    entry = home / code.package if code.package.endswith(".whl") else home
    shipped = home / code.package
    if shipped.exists() and code_hash(shipped) == code.hash:
        return entry
    try:
        data = _internal_kv_get(code_uri(code.hash, code.package))
    except (ConnectionError, RuntimeError) as e:
        raise ActorUnavailable(f"cannot fetch task code {code.package}: {str(e)[:100]}", reason="upload") from None
    if data is None:
        raise InvalidTask(f"task code {code.package} ({code.hash[:16]}) was never uploaded to this cluster",
                          reason="code_missing")
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=ROOT.mkdir(parents=True, exist_ok=True) or ROOT))
    try:
        unpack(data, code.package, scratch)
        check_code(scratch / code.package, code.hash, allowed=True)
        shutil.rmtree(home, ignore_errors=True)
        scratch.rename(home)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return entry


def _unload(name: str) -> None:
    """Forget another version of package ``name``: its modules, its path entry and the nets it registered."""
    _, old = _LOADED.pop(name, ("", ""))
    if old in sys.path:
        sys.path.remove(old)
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]
    plugins.forget_package(name)
