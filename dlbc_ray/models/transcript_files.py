"""A training transcript kept on disk after the reveal, where ``dlbc-ray audit`` finds it (``runtime.reaudit``).

A miner keeps its transcripts in memory for the round's audits (``models.transcript.Kept``); once the
window closed and its seed is revealed it also writes each to ``<home>/transcripts/<commit>/``:
``header.json``, ``leaves.json``, one ``<step>.npz`` per checkpoint (no pickles) and ``reveal.json``
(the mapping seed, public by then). Folders 0700, files 0600; the oldest go beyond a count and a size.
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dlbc_ray.consensus.transcript import CheckpointLeaf, TranscriptHeader
from dlbc_ray.errors import DLBCError, InvalidModelFile

log = logging.getLogger(__name__)
SETTINGS = "settings.json"
MAX_SETTINGS = 256 * 1024


def keep_transcript(folder: Path, transcript: Any, sml_seed: str | None, *, keep: int | None = None,
                    max_bytes: int | None = None, settings: str | None = None) -> Path:
    """Write a finished ``models.transcript.Transcript`` where ``dlbc-ray audit`` finds it (after the reveal:
    the mapping seed is public by then). Written whole under a temporary name, then renamed (a reader never
    sees half a transcript); folders 0700, files 0600. With ``keep``/``max_bytes``: then the oldest kept
    transcripts beside it go until at most ``keep`` of them and ``max_bytes`` remain (this one always stays)."""
    from dlbc_ray.models.transcript import CheckpointStore

    private_dir(folder.parent)
    partial = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    store = CheckpointStore(private_dir(partial))
    for leaf in transcript.leaves:
        checkpoint = transcript.store.get(leaf.step)
        if checkpoint is not None:
            store.put(checkpoint)
    (partial / "header.json").write_text(transcript.header.model_dump_json())
    (partial / "leaves.json").write_text(json.dumps([leaf.model_dump() for leaf in transcript.leaves]))
    (partial / "reveal.json").write_text(json.dumps({"sml_seed": sml_seed}))
    if settings is not None:  # the miner's and protection settings it trained under (``dlbc-ray audit`` replays with them)
        (partial / SETTINGS).write_text(settings)
    for path in partial.iterdir():
        path.chmod(0o600)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    if keep is not None or max_bytes is not None:
        drop_oldest(folder.parent, keep=keep, max_bytes=max_bytes, spare=folder.name)
    return folder


def drop_oldest(root: Path, *, keep: int | None, max_bytes: int | None, spare: str = "") -> list[str]:
    """Remove the oldest kept transcripts under ``root`` (by modification time) beyond ``keep`` folders or
    ``max_bytes`` in all; ``spare`` (the one just written) stays. Returns the commits dropped."""
    kept = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: (p.name == spare, p.stat().st_mtime))
    sizes = {p.name: sum(f.stat().st_size for f in p.iterdir() if f.is_file()) for p in kept}
    dropped = []
    while kept and kept[0].name != spare and (
            (keep is not None and len(kept) > keep) or (max_bytes is not None and sum(sizes.values()) > max_bytes)):
        gone = kept.pop(0)
        shutil.rmtree(gone, ignore_errors=True)
        sizes.pop(gone.name)
        dropped.append(gone.name)
    return dropped


def kept_settings(folder: Path) -> dict[str, Any] | None:
    """The settings a kept transcript was made under (``{"miner": ..., "protection": ...}``), None without them."""
    try:
        found = json.loads((folder / SETTINGS).read_text()[:MAX_SETTINGS])
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InvalidModelFile(f"{folder / SETTINGS}: unreadable settings ({str(e)[:80]})",
                               reason="malformed_transcript") from None
    if not isinstance(found, dict) or not {"miner", "protection"} <= set(found):
        raise InvalidModelFile(f"{folder / SETTINGS}: not a miner's settings", reason="malformed_transcript")
    return found


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def load_transcript(folder: Path) -> tuple[Any, bytes | None]:
    """The kept transcript and its revealed mapping seed; InvalidModelFile names what is missing or malformed."""
    from dlbc_ray.models.transcript import CheckpointStore, Transcript

    try:
        header = TranscriptHeader.model_validate_json((folder / "header.json").read_text())
        leaves = [CheckpointLeaf.model_validate(x) for x in json.loads((folder / "leaves.json").read_text())]
        seed = json.loads((folder / "reveal.json").read_text()).get("sml_seed")
        return Transcript(header, leaves, CheckpointStore(folder)), bytes.fromhex(seed) if seed else None
    except FileNotFoundError as e:
        raise InvalidModelFile(f"{folder}: no kept transcript ({Path(str(e.filename)).name} missing)",
                               reason="no_transcript") from None
    except (ValueError, TypeError, AttributeError) as e:  # pydantic's ValidationError is a ValueError
        raise InvalidModelFile(f"{folder}: malformed kept transcript ({str(e).splitlines()[0][:100]})",
                               reason="malformed_transcript") from None


class Keeper:
    """Writes a miner's opened transcripts to ``folder/<commit>`` on one background thread (a write never delays
    a reveal or an audit), each once; the oldest go beyond ``keep`` transcripts or ``max_bytes``."""

    def __init__(self, folder: Path, keep: int, max_bytes: int, settings: str | None = None) -> None:
        self.folder, self.count, self.max_bytes, self.settings = folder, keep, max_bytes, settings
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="keep-transcripts")
        self._done: dict[str, None] = {}  # commits written or being written, oldest first

    def keep(self, commit: str, transcript: Any, seed: bytes | None) -> Future[None] | None:
        if transcript is None or commit in self._done:
            return None
        if len(self._done) > 4 * self.count + 64:  # remembered only to write each once: forget the oldest half
            self._done = dict.fromkeys(list(self._done)[len(self._done) // 2:])
        self._done[commit] = None
        return self._pool.submit(self._write, commit, transcript, seed.hex() if seed else None)

    def drain(self, timeout_s: float) -> bool:
        """Wait for the writes asked so far (one thread: a no-op queued last runs last); False on timeout."""
        try:
            self._pool.submit(lambda: None).result(timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def _write(self, commit: str, transcript: Any, seed: str | None) -> None:
        try:
            keep_transcript(self.folder / commit, transcript, seed, keep=self.count, max_bytes=self.max_bytes,
                            settings=self.settings)
        except (OSError, DLBCError) as e:  # a full or read-only disk costs `dlbc-ray audit` this one, never the round
            log.warning("transcript %s not kept in %s: %s", commit[:12], self.folder, e)
