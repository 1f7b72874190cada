"""A task's own code: a local package folder or wheel, named by one hash that the signed task carries.

The hash covers every file that Ray would ship (``py_modules``): relative paths and bytes, in
sorted order, caches and VCS folders left out; a wheel is hashed as its bytes. A node that is
about to run the code hashes what it received and refuses it when the hash differs from the
task's. Nothing here runs the code or talks to Ray: ``dlbc_ray.actors.task_code`` ships
the archive to the cluster's storage under ``code_uri`` (a Ray ``runtime_env`` py_modules
URI) and installs it in a node's process after checking this hash.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import sys
import zipfile
from pathlib import Path

from dlbc_ray.errors import InvalidTask
from dlbc_ray.schema.task import CodeSpec

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
        check_import_name(path)
        digest.update(b"wheel|" + path.read_bytes())
        return digest.hexdigest()
    if not path.is_dir() or not (path / "__init__.py").is_file():
        raise InvalidTask(f"{path}: task code must be a package folder (with __init__.py) or a .whl file",
                          reason="bad_code")
    check_import_name(path)
    files = code_files(path)
    _check_size(path, sum(f.stat().st_size for f in files))
    digest.update(b"package|" + path.name.encode() + b"\0")
    for file in files:
        data = file.read_bytes()
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def import_name(package: str) -> str:
    """The top-level module a folder or wheel (``name-1.0-py3-none-any.whl``) provides."""
    return package.split("-")[0] if package.endswith(".whl") else package


def check_import_name(path: Path) -> None:
    """Refuse a package whose import name is a module this Python ships or an installed distribution provides:
    first on ``sys.path`` it would replace that module in every later import of the process (``json``,
    ``safetensors`` inside a validator). The package's own copy at ``path`` is no clash, nor is another copy of
    a task package that is merely importable from a folder (a requester's checkout, an earlier task's code)."""
    name = import_name(path.name)
    if not name.isidentifier():
        raise InvalidTask(f"{path}: '{name}' is not a Python import name", reason="bad_code")
    if name in sys.stdlib_module_names or (name in importlib.metadata.packages_distributions()
                                           and not _own_copy(name, path)):
        raise InvalidTask(f"{path}: task code named '{name}' would shadow the module '{name}' this Python already "
                          "has; rename the package", reason="shadows_module")


def _own_copy(name: str, path: Path) -> bool:
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # loaded already, without a spec (e.g. __main__): not this package
        return False
    return found is not None and _inside(found.origin, path)


def _inside(origin: str | None, path: Path) -> bool:
    if origin is None:
        return False
    root, found = path.resolve(), Path(origin).resolve()
    return found == root or root in found.parents


def check_allowed(code: CodeSpec | None, allowed: bool) -> None:
    """Refuse a task that ships code where the operator did not allow it, in one line that says how to."""
    if code is not None and not allowed:
        raise InvalidTask(f"this task ships its own code ({code.package}); {ENABLE_HINT}", reason="task_code_off")


def check_code(path: Path, expected: str, *, allowed: bool) -> None:
    """Refuse to run task code unless the operator allowed it and it hashes to what the task signed."""
    check_allowed(CodeSpec(package=Path(path).name, hash=expected), allowed)
    found = code_hash(path)
    if found != expected:
        raise InvalidTask(f"task code {Path(path).name} hashes to {found[:16]}, the task signed {expected[:16]}; "
                          "a file changed", reason="code_mismatch")


def code_uri(expected: str, package: str) -> str:
    """Where the cluster keeps the package: a Ray ``runtime_env`` ``py_modules`` URI named by the signed hash."""
    name = f"_ray_pkg_{expected[:32]}"
    return f"gcs://{name}/{package}" if package.endswith(".whl") else f"gcs://{name}.zip"


def code_spec(path: Path) -> tuple[str, str]:
    """``(package, hash)`` of a package folder or wheel: its import or file name, and ``code_hash``."""
    path = Path(path)
    return path.name, code_hash(path)


def archive(path: Path) -> bytes:
    """What is shipped: the wheel's bytes, or a zip of exactly the files ``code_hash`` covers, under the
    package's own folder name (as Ray zips a ``py_modules`` folder), with fixed timestamps."""
    path = Path(path)
    if path.suffix == ".whl":
        return path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in code_files(path):
            info = zipfile.ZipInfo(f"{path.name}/{file.relative_to(path).as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, file.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def unpack(data: bytes, package: str, dest: Path) -> Path:
    """Write a shipped archive under ``dest`` and return what to put on ``sys.path``'s front: the folder that
    holds the package, or the wheel itself (pure-Python wheels import from the zip). Refuses escaping names."""
    dest.mkdir(parents=True, exist_ok=True)
    if len(data) > MAX_CODE_BYTES:
        raise InvalidTask(f"task code {package}: {len(data):,} bytes is over the limit", reason="too_large")
    if package.endswith(".whl"):
        (dest / package).write_bytes(data)
        return dest / package
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if any(n.startswith(("/", "\\")) or ".." in Path(n).parts or Path(n).parts[:1] != (package,)
                   for n in names) or sum(i.file_size for i in zf.infolist()) > MAX_CODE_BYTES:
                raise InvalidTask(f"task code {package}: the archive holds paths outside the package",
                                  reason="bad_code")
            zf.extractall(dest)
    except zipfile.BadZipFile:
        raise InvalidTask(f"task code {package}: not a zip archive", reason="bad_code") from None
    return dest


def _check_size(path: Path, size: int) -> None:
    if size > MAX_CODE_BYTES:
        raise InvalidTask(f"{path}: task code of {size:,} bytes is over the {MAX_CODE_BYTES:,}-byte limit",
                          reason="too_large")
