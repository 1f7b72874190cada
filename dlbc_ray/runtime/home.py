"""The home directory: identities, the ledger, model artifacts, caches and plots.

``--home`` or ``DLBC_HOME`` picks it (the CLI decides); default ``~/.dlbc-ray``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dlbc_ray.errors import ConfigError

if TYPE_CHECKING:
    from dlbc_ray.ledger import Chain

DEFAULT_HOME = Path("~/.dlbc-ray")


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def ray_token(self) -> Path:
        return self.root / "ray" / "auth_token"


def open_home(path: Path | str, *, create: bool = True) -> Home:
    """Check (and with ``create``, make) a usable home; one-line ConfigError otherwise.

    Subfolders are made by whoever first writes into them, so a command that fails on
    bad input leaves an existing home exactly as it was.
    """
    try:
        root = Path(path).expanduser().resolve()
        root.stat() if root.exists() else None
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte, ~nosuchuser, a long name
        raise ConfigError(f"home {str(path)!r} is not a usable path ({one_line_reason(e)})", reason="home") from None
    if root.exists() and not root.is_dir():
        raise ConfigError(f"home {root} is not a directory", reason="home")
    if not root.exists():
        if not create:
            raise ConfigError(f"home {root} does not exist", reason="home")
        root.mkdir(parents=True, mode=0o700)
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(f"home {root} is not readable and writable by this user", reason="home")
    return Home(root)


def one_line_reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error).split(":")[0][:80]


def check_chain_choice(home: Home, *, new_chain: bool) -> None:
    """Start a new chain only where none was lost: a home with a chain's keys and no ledger needs ``--new-chain``.

    A ledger file without genesis (its creation was cut short) holds no chain and is
    repaired by writing genesis into it. A home without the proposer's key never held
    a chain, so a new one starts there silently (a fresh demo or attack home).
    """
    from dlbc_ray.ledger import ledger_status

    status = ledger_status(home.ledger)
    if status == "chain" and new_chain:
        raise ConfigError(f"--new-chain: {home.root} already holds a chain; move {home.ledger} away to start "
                          "another", reason="new_chain")
    if status == "absent" and (home.keys / "consensus.key").exists() and not new_chain:
        raise ConfigError(f"{home.root} holds the keys of a chain but its ledger {home.ledger} is gone; rerun with "
                          "--new-chain to start a new chain with these keys (balances restart from genesis)",
                          reason="ledger_missing")


def read_ledger(home: Home, hint: str = "start a network with `dlbc-ray up`") -> Chain:
    """The home's chain for a command that only reads it.

    A ledger cut short before genesis is refused with the command that repairs it before the
    store opens it (opening gives such a file a schema: a read must leave the home as it was).
    Not SQLite's ``mode=ro``: a read-only reader of a WAL ledger leaves its -shm file behind.
    """
    from dlbc_ray.ledger import Chain, ledger_status
    from dlbc_ray.ledger.chain import half_made

    status = ledger_status(home.ledger)
    if status == "absent":
        raise ConfigError(f"no ledger in {home.root}; {hint}", reason="missing_ledger")
    if status == "empty":
        raise half_made(home.ledger)
    return Chain.open(home.ledger, create=False, verify=False)
