"""Ed25519 identities on disk: one JSON file per name, mode 0600, in a 0700 folder.

A file with looser permissions, the wrong size of key, or a public key that does not
match its secret is refused with one line naming the file; secrets are never printed.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from dlbc_ray.crypto import SECRET_BYTES, Identity
from dlbc_ray.errors import ConfigError, KeyFileError
from dlbc_ray.home import Home

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class KeyInfo:
    name: str
    public_key: str
    path: Path


def key_path(home: Home, name: str) -> Path:
    if not _NAME.match(name):
        raise ConfigError(f"key name {name!r} must be 1-64 of a-z, 0-9, '_', '.', '-'", reason="key_name")
    return home.keys / f"{name}.key"


def save_key(home: Home, identity: Identity) -> Path:
    """Write a new key file with mode 0600; refuses to overwrite an existing one."""
    path = key_path(home, identity.name)
    home.keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {"version": 1, "name": identity.name, "public_key": identity.public_key,
              "secret_key": identity.secret_bytes().hex()}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"key {identity.name!r} already exists at {path}", reason="exists") from None
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return path


def create_key(home: Home, name: str) -> Identity:
    identity = Identity.generate(name)
    save_key(home, identity)
    return identity


def _read_record(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise KeyFileError(f"no key file {path}", reason="missing")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"key file {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path})", reason="mode")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyFileError(f"key file {path} is not a dlbc-ray key (not JSON)", reason="content") from None
    if not isinstance(record, dict):
        raise KeyFileError(f"key file {path} is not a dlbc-ray key", reason="content")
    return record


def load_key(home: Home, name: str) -> Identity:
    path = key_path(home, name)
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
    return identity


def load_or_create_key(home: Home, name: str) -> Identity:
    return load_key(home, name) if key_path(home, name).exists() else create_key(home, name)


def list_keys(home: Home) -> list[KeyInfo]:
    """Every key in the home, validated; public parts only."""
    if not home.keys.is_dir():
        return []
    return [KeyInfo(p.stem, load_key(home, p.stem).public_key, p) for p in sorted(home.keys.glob("*.key"))]
