"""Re-run a committed block's transcript audits from what a home keeps (``dlbc-ray audit HEIGHT|TASK_ID``).

In a round each validator audits each valid submission's training transcript (``models.replay``):
it samples segments, fetches those checkpoints from the miner, replays them and compares. A passing
audit leaves no evidence in the block; this module lets anyone holding the artifacts do it again
and see what was checked and what it cost. It reads, from the home:

- the chain: the block (by height, or the latest carrying TASK_ID), its task, its submissions;
- ``transcripts/<commit>/``: a transcript as its miner kept it after the reveal (``models.transcript_files``:
  header, leaves, one ``.npz`` per checkpoint, and the mapping seed it revealed);
- ``transcripts/config.json``: the network's own settings (``keep_config``, written by the assembler), so the
  replay uses the hyperparameters, marks and audit parameters the network ran with, not defaults;
- the miner's key, where the home holds it (a local network's home holds every identity): its
  watermark is part of the training a replay must redo;
- the task's built-in dataset (its training split checked against the task's hash).

Segments are sampled from the block's hash and the commit, so a re-run is repeatable (a round's
validators each drew their own from the window close, which is not on chain). Every problem is a row
with a reason, never a traceback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlbc_ray import crypto
from dlbc_ray.config import MinerConfig, NetworkConfig, ProtectionConfig, config_error
from dlbc_ray.consensus import compute_block_hash
from dlbc_ray.consensus.ballot import votes_by_commit
from dlbc_ray.consensus.transcript import compute_hyperparameters
from dlbc_ray.errors import ConfigError, DLBCError, InvalidModelFile
from dlbc_ray.models.transcript_files import keep_transcript, kept_settings, load_transcript, private_dir
from dlbc_ray.runtime.home import Home, read_ledger
from dlbc_ray.runtime.keystore import list_keys, load_key
from dlbc_ray.schema import Block, PostTaskTx, Submission, Task

KEPT = "transcripts"
CONFIG = "config.json"
MAX_CONFIG_BYTES = 256 * 1024
REAUDIT_DOMAIN = b"dlbc/reaudit/v1|"
__all__ = ["AuditRow", "audit_one", "find_block", "keep_config", "keep_transcript", "kept_folder", "load_transcript",
           "read_config", "reaudit", "training_split"]


@dataclass(frozen=True)
class AuditRow:
    """One submission's re-run audit: what was checked and what it cost (``passed`` None: not audited, why)."""

    commit: str
    miner: str
    verdicts: tuple[str, ...]  # what the block's validators voted
    passed: bool | None
    reason: str
    segments: tuple[int, ...] = ()
    replayed_steps: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0


def kept_folder(home: Home, commit: str) -> Path:
    return home.root / KEPT / commit


def keep_config(home: Home, cfg: NetworkConfig) -> Path:
    """The network's own settings beside its kept transcripts: ``dlbc-ray audit`` replays with them, not defaults."""
    path = private_dir(home.root / KEPT) / CONFIG
    path.write_text(cfg.model_dump_json(indent=1))
    path.chmod(0o600)
    return path


def read_config(home: Home) -> NetworkConfig:
    """The settings the network kept in this home (``keep_config``); ConfigError naming the file otherwise."""
    path = home.root / KEPT / CONFIG
    try:
        return NetworkConfig.model_validate_json(path.read_bytes()[:MAX_CONFIG_BYTES])
    except FileNotFoundError:
        raise ConfigError(f"{path}: no network settings kept in this home (a network started from it writes "
                          "them): its audits cannot be replayed as it ran them", reason="no_config") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the network settings ({e.strerror})", reason="no_config") from None
    except ValidationError as e:
        raise config_error(e, prefix=f"{path}: ") from None


def find_block(home: Home, target: str) -> tuple[Block, Task]:
    """The block at height ``target``, or the latest block of task ``target``, with its task."""
    chain = read_ledger(home, "run `dlbc-ray demo` or `dlbc-ray up` first")
    try:
        blocks = chain.blocks(0, None)
    finally:
        chain.close()
    if target.isdigit():
        found = [b for b in blocks if b.header.height == int(target)]
    else:
        found = [b for b in blocks if b.header.task_id == target][-1:]
    if not found or found[0].header.task_id is None:
        raise InvalidModelFile(f"no task block {target!r} on this home's chain", reason="no_block")
    block = found[0]
    tasks = {crypto.message_hash(tx.task.message): tx.task.message for b in blocks for tx in b.txs
             if isinstance(tx, PostTaskTx)}
    return block, tasks[block.header.task_id]


def reaudit(home: Home, target: str, *, segments: int | None = None, protection: ProtectionConfig | None = None,
            miner: MinerConfig | None = None) -> tuple[Block, list[AuditRow]]:
    """Every submission of the block, audited again from the home's artifacts where they are kept, with the
    settings its miner trained under (kept with its transcript), else the network's (``read_config``); ``protection``
    and ``miner`` given here are the fallback instead of the network's."""
    block, task = find_block(home, target)
    if protection is None or miner is None:
        kept = read_config(home)
        protection, miner = protection or kept.protection, miner or kept.miner
    voted = votes_by_commit(b.message for b in block.ballots)
    train: Any = None
    rows = []
    for signed in block.submissions:
        sub = signed.message
        verdicts = tuple(v.verdict.value for _, v in voted.get(sub.commit, ()))
        try:
            own = kept_settings(kept_folder(home, sub.commit))  # what this transcript was made under, when kept
            p, m = (ProtectionConfig.model_validate(own["protection"]), MinerConfig.model_validate(own["miner"])) \
                if own else (protection, miner)
            params = p.transcript if segments is None else p.transcript.model_copy(update={"segments": segments})
            train = train if train is not None else training_split(home, task)
            rows.append(audit_one(home, task, sub, train, round_id=str(block.header.round_id),
                                  block_hash=compute_block_hash(block.header), params=params, protection=p,
                                  policy=compute_hyperparameters(m.batch_size, m.lr, m.optimizer, m.val_fraction),
                                  verdicts=verdicts))
        except ValidationError as e:
            rows.append(AuditRow(sub.commit, sub.miner, verdicts, None, f"malformed_transcript: {config_error(e)}"[:200]))
        except DLBCError as e:
            rows.append(AuditRow(sub.commit, sub.miner, verdicts, None, f"{e.reason}: {e}"[:200]))
    return block, rows


def audit_one(home: Home, task: Task, sub: Submission, train: Any, *, round_id: str, block_hash: str, params: Any,
              protection: ProtectionConfig, policy: Mapping[str, object], verdicts: tuple[str, ...] = ()) -> AuditRow:
    """One submission: derive the run as validators do, replay the sampled segments of the kept transcript."""
    from dlbc_ray.models.protect import mark_secret
    from dlbc_ray.models.replay import Secrets, audit, committed, derive_for

    if sub.transcript_root is None:
        return AuditRow(sub.commit, sub.miner, verdicts, None, "no_transcript: the submission commits to none")
    transcript, sml_seed = load_transcript(kept_folder(home, sub.commit))
    keys = {k.public_key: k.name for k in list_keys(home)}
    if sub.miner not in keys:
        return AuditRow(sub.commit, sub.miner, verdicts, None, "no_key: the miner's key (its watermark) is not in "
                        "this home, so its training cannot be derived")
    mark = mark_secret(load_key(home, keys[sub.miner]))
    derived = derive_for(task, sub.task_id, round_id, train, sub, Secrets(sml_seed, mark, protection), policy)
    seed = hashlib.sha256(REAUDIT_DOMAIN + f"{block_hash}|{sub.commit}".encode()).digest()
    outcome, cost = audit(committed(transcript), derived, params, seed)
    reason = "bitwise" if outcome.passed else f"{outcome.reason.value if outcome.reason else '?'}: {outcome.detail}"
    return AuditRow(sub.commit, sub.miner, verdicts, outcome.passed, reason[:200], cost.segments, cost.replayed_steps,
                    cost.fetched_bytes, cost.seconds)


def training_split(home: Home, task: Task) -> Any:
    """The task's training split, from a built-in dataset, checked against the task's hash."""
    from dlbc_ray.models.data import load_builtin, split_hash

    try:
        train = load_builtin(task.dataset.name, cache_dir=home.datasets).train
    except (DLBCError, KeyError, ValueError):
        raise InvalidModelFile(f"dataset {task.dataset.name!r} is not built in: its training split is not in "
                               "this home", reason="no_data") from None
    if split_hash(train) != task.dataset.train_hash:
        raise InvalidModelFile(f"dataset {task.dataset.name!r} here does not hash to the task's training split",
                               reason="data_hash")
    return train


def as_dicts(rows: list[AuditRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
