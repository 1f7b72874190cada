"""Ed25519 identities on disk: one JSON file per name, mode 0600, in a 0700 folder.

The folder must be a real directory owned by this user with no group or other access,
and a key file a regular file (never a symlink) whose recorded name is its file name:
otherwise ``bob.key -> treasury.key`` would sign as the treasury. Anything else is
refused with one line naming the file; secrets are never printed or logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dlbc_ray.crypto import SECRET_BYTES, Identity
from dlbc_ray.errors import ConfigError, KeyFileError
from dlbc_ray.runtime.home import Home

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_MAX_KEY_FILE_BYTES = 4096


@dataclass(frozen=True)
class KeyInfo:
    name: str
    public_key: str
    path: Path


def key_path(home: Home, name: str) -> Path:
    if not _NAME.match(name):
        raise ConfigError(f"key name {name!r} must be 1-64 of a-z, 0-9, '_', '.', '-'", reason="key_name")
    return home.keys / f"{name}.key"


def _check_private(path: Path, st: os.stat_result, *, what: str, kind: str, is_kind: Callable[[int], bool],
                   kind_reason: str, mode: int) -> None:
    """One rule for the folder and each file: the right kind of entry, ours, closed to group and others."""
    if not is_kind(st.st_mode):
        raise KeyFileError(f"{what} {path} is not {kind}", reason=kind_reason)
    if st.st_uid != os.getuid():
        raise KeyFileError(f"{what} {path} is owned by uid {st.st_uid}, not by this user ({os.getuid()})",
                           reason="owner")
    have = stat.S_IMODE(st.st_mode)
    if have & 0o077:
        raise KeyFileError(f"{what} {path} has mode {have:04o}; it must be {mode:04o} (chmod {mode:o} {path})",
                           reason="mode")


def check_keys_folder(folder: Path) -> None:
    """Refuse a keys folder that is a symlink, not a directory, not ours, or open to others."""
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        raise KeyFileError(f"no keys folder {folder}", reason="missing") from None
    if stat.S_ISLNK(st.st_mode):
        raise KeyFileError(f"keys folder {folder} is a symlink; keys must live in a real folder", reason="symlink")
    _check_private(folder, st, what="keys folder", kind="a directory", is_kind=stat.S_ISDIR,
                   kind_reason="keys_folder", mode=0o700)


def _keys_folder(home: Home, *, create: bool) -> Path:
    if create and not os.path.lexists(home.keys):
        with contextlib.suppress(FileExistsError):
            home.keys.mkdir(mode=0o700)
    check_keys_folder(home.keys)
    return home.keys


def save_key(home: Home, identity: Identity) -> Path:
    """Write a new key file, 0600 in a 0700 folder, atomically; refuses to overwrite any existing entry."""
    path = key_path(home, identity.name)
    folder = _keys_folder(home, create=True)
    record = {"version": 1, "name": identity.name, "public_key": identity.public_key,
              "secret_key": identity.secret_bytes().hex()}
    temp = folder / f".{identity.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.link(temp, path)  # fails on any existing entry, a dangling symlink included
    except FileExistsError:
        raise KeyFileError(f"key {identity.name!r} already exists at {path}", reason="exists") from None
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(folder)
    return path


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_key(home: Home, name: str) -> Identity:
    identity = Identity.generate(name)
    save_key(home, identity)
    return identity


def _read_record(path: Path) -> dict[str, object]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyFileError(f"no key file {path}", reason="missing") from None
    except OSError:
        if path.is_symlink():
            raise KeyFileError(f"key file {path} is a symlink; a key must be a regular file", reason="symlink") from None
        raise KeyFileError(f"cannot read key file {path}", reason="unreadable") from None
    try:  # checked on the open descriptor (no race with a swap), before fdopen refuses a directory
        _check_private(path, os.fstat(fd), what="key file", kind="a regular file", is_kind=stat.S_ISREG,
                       kind_reason="content", mode=0o600)
    except KeyFileError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(_MAX_KEY_FILE_BYTES + 1)
        except OSError as e:
            raise KeyFileError(f"cannot read key file {path} ({e.strerror})", reason="unreadable") from None
    try:
        record = json.loads(raw) if len(raw) <= _MAX_KEY_FILE_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # 4 KB of '[' nests past the decoder
        raise KeyFileError(f"key file {path} is not a dlbc-ray key (not JSON)", reason="content") from None
    if not isinstance(record, dict):
        raise KeyFileError(f"key file {path} is not a dlbc-ray key", reason="content")
    return record


def load_key(home: Home, name: str) -> Identity:
    path = key_path(home, name)
    _keys_folder(home, create=False)
    record = _read_record(path)
    try:
        secret = bytes.fromhex(str(record["secret_key"]))
    except (KeyError, ValueError):
        raise KeyFileError(f"key file {path} holds no hex secret_key", reason="content") from None
    if len(secret) != SECRET_BYTES:
        raise KeyFileError(f"key file {path} holds a {len(secret)}-byte secret; Ed25519 needs {SECRET_BYTES}",
                           reason="content")
    identity = Identity(name, secret)
    if record.get("public_key") != identity.public_key:
        raise KeyFileError(f"key file {path}: public_key does not match its secret", reason="content")
    if record.get("name") != name:
        raise KeyFileError(f"key file {path} holds the key named {str(record.get('name'))[:64]!r}, "
                           f"not {name!r}; a key is loaded only under its own name", reason="name")
    return identity


def load_or_create_key(home: Home, name: str) -> Identity:
    return load_key(home, name) if os.path.lexists(key_path(home, name)) else create_key(home, name)


def list_keys(home: Home) -> list[KeyInfo]:
    """Every key in the home, validated; public parts only."""
    if not os.path.lexists(home.keys):
        return []
    _keys_folder(home, create=False)
    return [KeyInfo(p.stem, load_key(home, p.stem).public_key, p) for p in sorted(home.keys.glob("*.key"))]
