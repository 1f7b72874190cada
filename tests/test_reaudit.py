"""`dlbc-ray audit`'s library (``dlbc_ray.runtime.reaudit``) on a real miner's real transcript, kept in a temporary home.

The transcript, its submission and task come from ``tests/actors/test_transcript_miner.py``'s module fixture
(one real ``Miner.mine`` on digits); the home is a real folder with a real keystore.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlbc_ray.cli._app import INSECURE_ENV
from dlbc_ray.cli.app import app
from dlbc_ray.consensus.transcript import compute_hyperparameters
from dlbc_ray.errors import ConfigError, InvalidModelFile
from dlbc_ray.runtime.home import Home
from dlbc_ray.runtime.keystore import save_key
from dlbc_ray.models.protect import mapping_seed
from dlbc_ray.runtime.reaudit import audit_one, keep_transcript, kept_folder, load_transcript
from tests.actors.test_transcript_miner import CFG, MINER, MINIMAL, Mined, done
from tests.builders import fake_hash

__all__ = ["done"]  # the module fixture, shared
POLICY = compute_hyperparameters(CFG.batch_size, CFG.lr, CFG.optimizer, CFG.val_fraction)


def kept(done: Mined, root: Path, *, with_key: bool = True) -> Home:
    """A home holding ``done``'s transcript as its miner keeps it, and (``with_key``) the miner's key."""
    home = Home(root)
    transcript = done.miner._transcripts.get(done.submission.commit)
    seed = mapping_seed(MINER, done.ctx.task_id, done.ctx.round_id)  # public once revealed
    keep_transcript(kept_folder(home, done.submission.commit), transcript, seed.hex())
    if with_key:
        save_key(home, MINER)
    return home


def run(done: Mined, home: Home, segments: int):  # type: ignore[no-untyped-def]
    params = MINIMAL.protection.transcript.model_copy(update={"segments": segments})
    return audit_one(home, done.task.message, done.submission, done.bundle.train, round_id=done.ctx.round_id,
                     block_hash=fake_hash("block"), params=params, protection=MINIMAL.protection, policy=POLICY,
                     verdicts=("valid",))


def test_a_kept_honest_transcript_passes_and_says_what_it_replayed(done: Mined, tmp_path: Path) -> None:
    row = run(done, kept(done, tmp_path), segments=2)
    assert row.passed is True and row.reason == "bitwise", row
    assert len(row.segments) >= 2 and row.replayed_steps > 0  # Q sampled, and the last segment always and row.fetched_bytes > 0 and row.seconds > 0, row
    again = run(done, kept(done, tmp_path / "again"), segments=2)
    assert again.segments == row.segments  # sampled from the block and the commit: a re-run is repeatable


def test_a_checkpoint_altered_on_disk_fails_with_its_reason(done: Mined, tmp_path: Path) -> None:
    home = kept(done, tmp_path)
    folder = kept_folder(home, done.submission.commit)
    path = sorted(folder.glob("*.npz"), key=lambda p: int(p.stem))[1]
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    name = next(k for k in arrays if k.startswith("w/"))
    arrays[name] = arrays[name] + np.float32(1e-3)
    np.savez(path, **arrays)
    row = run(done, home, segments=1_000)  # every segment
    assert row.passed is False and row.reason.startswith(("bad_proof", "segment_mismatch", "malformed")), row


def test_without_the_miners_key_the_run_cannot_be_derived(done: Mined, tmp_path: Path) -> None:
    row = run(done, kept(done, tmp_path, with_key=False), segments=1)
    assert row.passed is None and row.reason.startswith("no_key"), row


def test_a_missing_or_malformed_kept_transcript_is_named(done: Mined, tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile) as caught:
        load_transcript(tmp_path / "nothing")
    assert caught.value.reason == "no_transcript"
    home = kept(done, tmp_path)
    (kept_folder(home, done.submission.commit) / "header.json").write_text("{not json")
    with pytest.raises(InvalidModelFile) as caught:
        load_transcript(kept_folder(home, done.submission.commit))
    assert caught.value.reason == "malformed_transcript"


def test_the_command_on_a_home_without_a_chain_says_so_in_one_line(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # --insecure-no-auth writes RAY_AUTH_MODE into os.environ: set both here so teardown restores them
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv(INSECURE_ENV, "")  # records "absent" for teardown
    monkeypatch.delenv(INSECURE_ENV)
    result = CliRunner().invoke(app, ["--insecure-no-auth", "audit", "1", "--home", str(tmp_path)])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "no ledger" in errors[0], result.output


def test_the_networks_own_settings_are_kept_in_the_home_and_read_back(tmp_path: Path) -> None:
    from dlbc_ray.config import MINIMAL as NETWORK
    from dlbc_ray.runtime.reaudit import keep_config, read_config

    home = Home(tmp_path)
    with pytest.raises(ConfigError) as caught:
        read_config(home)
    assert caught.value.reason == "no_config"  # never defaults in their place
    path = keep_config(home, NETWORK)
    assert read_config(home) == NETWORK and (path.stat().st_mode & 0o777) == 0o600
    path.write_text(path.read_text().replace('"lr": 0.01', '"lr": -1'))
    with pytest.raises(ConfigError) as caught:
        read_config(home)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
