"""`dlbc-ray audit` end to end on a demo home: the miners kept their transcripts there after the reveal, the
assembler kept the network's settings beside them, and the command re-runs the block's audits from them alone."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlbc_ray.cli.app import app

pytestmark = pytest.mark.ray


def test_the_audit_of_a_demo_block_is_rerun_from_the_home_and_every_submission_passes(ray_session: None,
                                                                                      tmp_path: Path) -> None:
    demo = CliRunner().invoke(app, ["demo", "--preset", "minimal", "--miners", "2", "--blocks", "1", "--home",
                                    str(tmp_path), "--json"], catch_exceptions=False)
    assert demo.exit_code == 0, demo.output
    kept = tmp_path / "transcripts"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700 and (kept / "config.json").is_file()
    folders = [p for p in kept.iterdir() if p.is_dir()]
    assert len(folders) == 2 and not [p for p in kept.iterdir() if p.name.startswith(".")]  # whole, none partial
    assert {stat.S_IMODE(f.stat().st_mode) for p in folders for f in p.iterdir()} == {0o600}
    result = CliRunner().invoke(app, ["audit", "1", "--home", str(tmp_path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert {r["commit"] for r in rows} == {p.name for p in folders}
    assert all(r["passed"] is True and r["reason"] == "bitwise" and r["segments"] and r["replayed_steps"] > 0
               and "valid" in r["verdicts"] for r in rows), rows
    (kept / "config.json").unlink()  # without the network's own settings the command refuses, in one line
    refused = CliRunner().invoke(app, ["audit", "1", "--home", str(tmp_path)])
    assert refused.exit_code != 0 and "Traceback" not in refused.output and "settings" in refused.output
