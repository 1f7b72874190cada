"""A task's own code: a local package folder or wheel, named by one hash that the signed task carries.

The hash covers every file that Ray would ship (``py_modules``): relative paths and bytes, in
sorted order, caches and VCS folders left out; a wheel is hashed as its bytes. A node that is
about to run the code hashes what it received and refuses it when the hash differs from the
task's. Nothing here runs the code. Wiring it into tasks and actors is described in
``runtime_env`` and in the notes of issue 12.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dlbc_ray.errors import InvalidTask

CODE_DOMAIN = b"dlbc/task-code/v1|"
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
MAX_CODE_BYTES = 16 * 2**20
ENABLE_HINT = "start the network with `dlbc-ray up --allow-task-code` to run it"


def code_files(root: Path) -> list[Path]:
    """The files a package folder ships, sorted by their path relative to ``root`` (symlinks refused)."""
    files = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p in SKIPPED_DIRS or p.endswith(".egg-info") for p in parts) or path.suffix in SKIPPED_SUFFIXES:
            continue
        if path.is_symlink():
            raise InvalidTask(f"{path}: task code may not hold symbolic links", reason="bad_code")
        if path.is_file():
            files.append(path)
    return files


def code_hash(path: Path) -> str:
    """Hex SHA-256 of a package folder (paths and bytes) or of a ``.whl`` file, under a domain tag."""
    path = Path(path)
    digest = hashlib.sha256(CODE_DOMAIN)
    if path.is_file() and path.suffix == ".whl":
        _check_size(path, path.stat().st_size)
        digest.update(b"wheel|" + path.read_bytes())
        return digest.hexdigest()
    if not path.is_dir() or not (path / "__init__.py").is_file():
        raise InvalidTask(f"{path}: task code must be a package folder (with __init__.py) or a .whl file",
                          reason="bad_code")
    files = code_files(path)
    _check_size(path, sum(f.stat().st_size for f in files))
    digest.update(b"package|" + path.name.encode() + b"\0")
    for file in files:
        data = file.read_bytes()
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def check_code(path: Path, expected: str, *, allowed: bool) -> None:
    """Refuse to run task code unless the operator allowed it and it hashes to what the task signed."""
    if not allowed:
        raise InvalidTask(f"this task ships its own code; {ENABLE_HINT}", reason="task_code_off")
    found = code_hash(path)
    if found != expected:
        raise InvalidTask(f"{path}: task code hashes to {found[:16]}, the task signed {expected[:16]}; a file changed",
                          reason="code_mismatch")


def runtime_env(path: Path) -> dict[str, Any]:
    """The Ray ``runtime_env`` that ships the package to an actor or task started with it.

    Ray takes local folders only in ``ray.init``; for one actor or task the package must be
    uploaded first (to the cluster's GCS, under Ray's own content-hash URI), as ``ray.init``
    does. Needs a connected driver. (A Ray call: it belongs behind ``actors/_ray.py``.)
    """
    import tempfile

    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

    with tempfile.TemporaryDirectory(prefix="dlbc-code-") as scratch:
        return upload_py_modules_if_needed({"py_modules": [str(Path(path).resolve())]}, include_gitignore=False,
                                           scratch_dir=scratch)


def _check_size(path: Path, size: int) -> None:
    if size > MAX_CODE_BYTES:
        raise InvalidTask(f"{path}: task code of {size:,} bytes is over the {MAX_CODE_BYTES:,}-byte limit",
                          reason="too_large")
