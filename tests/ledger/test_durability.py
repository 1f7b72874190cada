"""A returned append survives a process kill, with either durability setting; a kill mid-commit leaves a whole chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dlbc_ray.errors import ConfigError
from dlbc_ray.ledger.store import LedgerStore

WRITER = """
import sys
from dlbc_ray.ledger.store import LedgerStore, StoredBlock
store = LedgerStore(sys.argv[1], synchronous=sys.argv[2])
body = b"x" * 9000  # about one realistic block
for height in range(100_000):
    store.append(StoredBlock(height, f"{height:064x}", f"{max(0, height - 1):064x}", body))
    print(height, flush=True)  # printed only once append returned: a promise the reopened ledger must keep
"""


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_every_returned_append_survives_a_kill_and_the_chain_stays_whole(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "ledger.sqlite"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), synchronous], stdout=subprocess.PIPE,
                             text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert child.stdout is not None
    returned = [int(child.stdout.readline()) for _ in range(60)]
    child.send_signal(signal.SIGKILL)  # most likely in the middle of the next append
    returned += [int(line) for line in child.stdout.read().split()]
    child.wait(timeout=30)
    store = LedgerStore(path, create=False)
    heights = [row.height for row in store.rows()]
    store.close()
    assert heights == list(range(len(heights)))  # no gap, nothing half-written
    assert max(returned) <= heights[-1] <= max(returned) + 1  # every returned append kept; at most one more landed


def test_an_unknown_durability_setting_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        LedgerStore(tmp_path / "l.sqlite", synchronous="OFF; DROP TABLE blocks")  # type: ignore[arg-type]
    assert "synchronous" in str(refused.value) and "\n" not in str(refused.value)
