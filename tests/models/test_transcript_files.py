"""Transcripts a miner keeps in its home after the reveal (``models.transcript_files``), for ``dlbc-ray audit``.

A real miner's real transcript (``tests/actors/test_transcript_miner.py``'s module fixture), written to real
folders: private modes, whole-or-nothing writes, the oldest dropped beyond a count or a size, and a miner
built with a home folder keeping what it revealed, off the reveal's path.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from dlbc_ray.actors.miner import Miner
from dlbc_ray.models.protect import mapping_seed
from dlbc_ray.errors import InvalidModelFile
from dlbc_ray.models.transcript_files import Keeper, drop_oldest, keep_transcript, kept_settings, load_transcript
from tests.actors.test_transcript_miner import CFG, MINER, MINIMAL, PROPOSER, Mined, close, done
from tests.builders import signed_round

__all__ = ["done"]  # the module fixture, shared


def _transcript(done: Mined):  # type: ignore[no-untyped-def]
    return done.miner._transcripts.get(done.submission.commit)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_kept_transcript_is_private_whole_and_reads_back(done: Mined, tmp_path: Path) -> None:
    seed = mapping_seed(MINER, done.ctx.task_id, done.ctx.round_id).hex()
    folder = keep_transcript(tmp_path / "transcripts" / done.submission.commit, _transcript(done), seed)
    assert _mode(folder.parent) == _mode(folder) == 0o700
    assert {_mode(p) for p in folder.iterdir()} == {0o600}
    assert not list(folder.parent.glob(".*"))  # written under a temporary name, then renamed: nothing half-written
    transcript, revealed = load_transcript(folder)
    assert transcript.root == done.submission.transcript_root and revealed == bytes.fromhex(seed)
    assert len(list(folder.glob("*.npz"))) == len(transcript.leaves)


def test_the_oldest_go_first_beyond_the_count_and_the_size_and_the_newest_always_stays(done: Mined,
                                                                                     tmp_path: Path) -> None:
    root = tmp_path / "transcripts"
    for i in range(4):
        keep_transcript(root / f"{i:064x}", _transcript(done), None, keep=3)
        os.utime(root / f"{i:064x}", (time.time() + i, time.time() + i))  # distinct ages on coarse clocks
    assert sorted(p.name[-1] for p in root.iterdir()) == ["1", "2", "3"]
    assert drop_oldest(root, keep=None, max_bytes=1, spare=f"{3:064x}") == [f"{1:064x}", f"{2:064x}"]
    assert [p.name[-1] for p in root.iterdir()] == ["3"]  # over the size alone, but the newest stays
    assert drop_oldest(root, keep=0, max_bytes=None, spare=f"{3:064x}") == []


def test_a_keeper_writes_once_in_the_background_and_a_failed_write_costs_the_round_nothing(
        done: Mined, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keeper = Keeper(tmp_path / "t", keep=2, max_bytes=1 << 30)
    future = keeper.keep(done.submission.commit, _transcript(done), b"\x01" * 32)
    assert future is not None and future.result(timeout=60) is None
    assert keeper.keep(done.submission.commit, _transcript(done), b"\x01" * 32) is None  # each once
    assert (tmp_path / "t" / done.submission.commit / "header.json").is_file()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    failing = Keeper(blocked, keep=2, max_bytes=1 << 30).keep(done.submission.commit, _transcript(done), None)
    assert failing is not None and failing.result(timeout=60) is None  # logged, not raised
    assert "not kept" in caplog.text


def test_a_miner_given_a_home_folder_keeps_each_transcript_it_reveals(done: Mined, tmp_path: Path) -> None:
    keep_dir = tmp_path / "transcripts"
    miner = Miner(CFG, identity=MINER, protection=MINIMAL.protection, proposer=PROPOSER.public_key,
                  keep_dir=str(keep_dir))
    mined, _ = miner.mine(done.task, done.bundle.train, signed_round(PROPOSER, done.ctx))
    commit = mined.signed.message.commit
    assert not keep_dir.exists() or not any(keep_dir.iterdir())  # nothing before the close opens it
    reveal = miner.reveal(close(done.ctx, commit), commit)
    miner._keeper._pool.shutdown(wait=True)  # type: ignore[union-attr]
    transcript, seed = load_transcript(keep_dir / commit)
    assert transcript.root == mined.signed.message.transcript_root and seed.hex() == reveal.message.sml_seed
    settings = kept_settings(keep_dir / commit)  # what `dlbc-ray audit` replays it with, whatever the home says later
    assert settings == {"miner": CFG.model_dump(mode="json"), "protection": MINIMAL.protection.model_dump(mode="json")}


def test_kept_settings_are_optional_and_malformed_ones_are_named(done: Mined, tmp_path: Path) -> None:
    folder = keep_transcript(tmp_path / "t" / done.submission.commit, _transcript(done), None)
    assert kept_settings(folder) is None  # an older transcript: the network's settings apply
    for bad in ("{not json", '{"miner": {}}', "[1, 2]"):
        (folder / "settings.json").write_text(bad)
        with pytest.raises(InvalidModelFile) as caught:
            kept_settings(folder)
        assert caught.value.reason == "malformed_transcript" and "\n" not in str(caught.value)


def test_a_miner_told_to_keep_none_writes_nothing(tmp_path: Path) -> None:
    miner = Miner(CFG.model_copy(update={"keep_transcripts": 0}), identity=MINER, protection=MINIMAL.protection,
                  proposer=PROPOSER.public_key, keep_dir=str(tmp_path))
    assert miner._keeper is None
