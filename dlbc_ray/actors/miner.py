"""A miner: trains the task's Lightning module as its proof of useful work, marks it, signs it.

Each miner trains through its own Secure Mapping Layer (PoLe) and embeds its own DNN
watermark (DLBC), so its model is useless to, and provably not made by, anyone else.
A plain class: tests build it directly; ``spawn`` makes it a Ray actor.

Every method of an actor answers anyone who holds its handle, underscored or not, so
nothing here hands out a secret: the mark key and the mapping layer are derived by
module functions from the identity, and the mapping seed is revealed only against the
proposer's signed close of the round this miner submitted in.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import torch

from dlbc_ray import crypto
from dlbc_ray.actors import inbound
from dlbc_ray.actors.mining import (check_inputs, kept_marks, mapped_net, own_marks, private_shard, reporter,
                                    settled, stop_rule, train_parallel, training_workers, worker_device)
from dlbc_ray.actors.task_code import install as install_task_code
from dlbc_ray.config import MinerConfig, ProtectionConfig
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.consensus.transcript import TranscriptHeader, compute_hyperparameters, compute_training_seed
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import BadSignature, RevealRefused, RoundRefused
from dlbc_ray.models import sml, watermark
from dlbc_ray.models.data import Split
from dlbc_ray.models.baas_fusion import common_seed
from dlbc_ray.models.nets import build_task_net, count_parameters
from dlbc_ray.models.transcript_files import Keeper
from dlbc_ray.models.weights import load_into
from dlbc_ray.schema import Reveal, Signed, Submission, Task
from dlbc_ray.schema.round_messages import MinedSubmission, MinerStats, RoundContext, WindowClose

if TYPE_CHECKING:
    from dlbc_ray.models.transcript import Opening

__all__ = ["Miner", "Sealed", "check_close", "check_inputs", "claimed_score", "kept_marks", "mapped_net", "mine_round",
           "own_marks", "private_shard", "settled", "torch_threads", "train_round", "training_seed", "training_workers",
           "worker_device"]

# Lightning (with torchmetrics, scipy, matplotlib and torch._dynamo behind it) is imported by the
# miner's own process when it starts (``Miner.__init__``), never by the driver that spawns it:
# there its import was seconds of serial start-up before the first block.


def torch_threads(num_cpus: float | None) -> int:
    """Threads matching the CPUs Ray reserved (Ray sets OMP_NUM_THREADS=1 inside actors)."""
    return max(1, math.floor(num_cpus or 1))


def claimed_score(val_accuracy: float) -> int:
    """The miner's own validation score; 0 when it kept no validation split (NaN)."""
    return 0 if math.isnan(val_accuracy) else round(val_accuracy * SCORE_SCALE)


def training_seed(identity: Identity, task_id: str) -> int:
    return int.from_bytes(hashlib.sha256(identity.derive("train") + task_id.encode()).digest()[:4], "big")


@dataclass(frozen=True)
class Sealed:
    """A submission this miner made: the round it was made in, and the seed it reveals once that round closes."""

    ctx: RoundContext
    seed: bytes | None


def check_close(close: Signed[WindowClose], ctx: RoundContext, proposer: str) -> WindowClose:
    """The close of round ``ctx``, signed by ``proposer`` for ``ctx``'s chain, or RevealRefused naming what is wrong."""
    try:
        message = crypto.verify(close, chain_id=ctx.chain_id, expected_signer=proposer)
    except BadSignature as e:
        raise RevealRefused(f"window close refused: {e}", reason=e.reason) from None
    if message.task_id != ctx.task_id:
        raise RevealRefused(f"window close is for task {message.task_id[:12]}, not {ctx.task_id[:12]}",
                            reason="wrong_task")
    if message.round_id != ctx.round_id:
        raise RevealRefused(f"window close is for round {message.round_id[:12]}, not {ctx.round_id[:12]}",
                            reason="wrong_round")
    return message


MINED_ROUNDS_KEPT = 4096  # rounds a miner remembers having mined (ids only: about 0.5 MB)

class Miner:
    """Trains, watermarks, hashes and signs; weights leave through the object store."""

    def __init__(self, cfg: MinerConfig, *, identity: Identity, protection: ProtectionConfig, proposer: str,
                 keep_dir: str | None = None, chain_id: str | None = None) -> None:
        self.cfg, self.identity, self.protection, self.proposer = cfg, identity, protection, proposer
        self.chain_id = chain_id  # the network's chain (from the assembler): a round signed for another is refused
        self.threads = torch_threads(cfg.num_cpus)
        torch.set_num_threads(self.threads)
        from dlbc_ray.models import training  # noqa: F401  warm: Lightning loads now, not in the first round
        self.accelerator = "gpu" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self._cancelled: set[str] = set()  # task ids whose submission window closed: stop at the next epoch
        self._channels: dict[str, Any] = {}  # task id -> the channel to its data-parallel run's workers
        self._rounds: dict[str, RoundContext] = {}  # task id -> the round this miner is mining it in
        self._mined_rounds: dict[str, None] = {}  # round ids mined here, oldest first (MINED_ROUNDS_KEPT)
        self._claims = threading.Lock()  # mine() may run twice at once (max_concurrency=2)
        self._sealed: dict[str, Sealed] = {}  # commit -> what only the proposer's close of its round opens
        self._marks: dict[tuple[Any, ...], list[watermark.WatermarkRegularizer]] = {}  # per architecture, kept warm
        from dlbc_ray.models.transcript import Kept

        self._transcripts = Kept()  # commit -> training transcript (bounded, in memory), opened after the close
        # after the close, each opened transcript is also written to the home (``dlbc-ray audit``), off the round's path
        settings = json.dumps({"miner": cfg.model_dump(mode="json"), "protection": protection.model_dump(mode="json")})
        self._keeper = (Keeper(Path(keep_dir), cfg.keep_transcripts, cfg.keep_transcripts_mb << 20, settings)
                        if keep_dir and cfg.keep_transcripts else None)

    def info(self) -> dict[str, Any]:
        return {"name": self.identity.name, "public_key": self.identity.public_key, "threads": self.threads,
                "pid": os.getpid(),
                "device": self.accelerator, "num_cpus": self.cfg.num_cpus, "num_gpus": self.cfg.num_gpus}

    def cancel(self, close: Signed[WindowClose]) -> None:
        """The proposer closed the window: finish the epoch in progress and stop (runs beside ``mine``)."""
        close = inbound.wire(Signed[WindowClose], close, "close")  # parsed as declared, whoever sent it
        ctx = self._rounds.get(close.message.task_id)
        if ctx is None:
            raise RevealRefused(f"not mining task {close.message.task_id[:12]}", reason="not_mining")
        message = check_close(close, ctx, self.proposer)
        if not message.final:  # a standing window that closed for one wave reopens: keep training
            raise RevealRefused("window close is not final: the window may reopen", reason="not_final")
        self._cancelled.add(message.task_id)
        channel = self._channels.get(message.task_id)
        if channel is not None:  # a data-parallel run: its workers read the close at their next epoch
            channel.stop.remote()

    def reveal(self, close: Signed[WindowClose], commit: str) -> Signed[Reveal]:
        """The seed behind ``commit``'s mapping layer, only against the proposer's signed close of its round."""
        close, commit = inbound.wire(Signed[WindowClose], close, "close"), inbound.commit(commit, "commit")
        sealed = self._sealed.get(commit)
        if sealed is None:
            raise RevealRefused(f"this miner made no submission {commit[:12]}", reason="not_submitted")
        ctx = sealed.ctx
        if commit not in check_close(close, ctx, self.proposer).opens:  # a close of an earlier wave of the round
            raise RevealRefused(f"window close does not open submission {commit[:12]}", reason="not_opened")
        if sealed.seed is None:
            raise RevealRefused(f"submission {commit[:12]} has no mapping layer to reveal", reason="no_mapping")
        message = Reveal(task_id=ctx.task_id, commit=commit, sml_seed=sealed.seed.hex())
        if self._keeper is not None:
            self._keeper.keep(commit, self._transcripts.get(commit), sealed.seed)
        return crypto.sign(self.identity, message, ctx.chain_id)

    def transcript_opening(self, close: Signed[WindowClose], commit: str,
                           index: int) -> tuple[TranscriptHeader, str, Opening | None]:
        """``commit``'s transcript header, checkpoints root and checkpoint ``index`` with its Merkle proof, only
        against the proposer's signed close that opens it (checkpoints hold no secret, but not before the close)."""
        close, commit = inbound.wire(Signed[WindowClose], close, "close"), inbound.commit(commit, "commit")
        index = inbound.index(index, "index")
        sealed, kept = self._sealed.get(commit), self._transcripts.get(commit)
        if sealed is None or kept is None:
            raise RevealRefused(f"this miner keeps no transcript of {commit[:12]}", reason="not_submitted")
        if commit not in check_close(close, sealed.ctx, self.proposer).opens:
            raise RevealRefused(f"window close does not open submission {commit[:12]}", reason="not_opened")
        if self._keeper is not None and sealed.seed is None:  # no mapping layer, so no reveal: kept from here
            self._keeper.keep(commit, kept, None)
        return kept.header, kept.checkpoints_root, kept.opening(index)

    @ray.method(num_returns=2)
    def mine(self, task: Signed[Task], data: Split | None, ctx: Signed[RoundContext],
             progress: Any = None) -> tuple[MinedSubmission, dict[str, np.ndarray]]:
        """Train the task's model on ``data`` (or this miner's private shard) and return the signed
        submission and its weights: only for a round the proposer signed, every argument re-parsed first."""
        # a stranger's round trains nothing, nor does a round replayed: each proposer's round trains once
        spec, round_ = inbound.round_of(task, ctx, self.proposer, self.chain_id)
        claim_round(self, round_.round_id)
        return mine_round(self, spec, inbound.split(data, "data", optional=True), round_, progress)

    def drain_kept(self, timeout_s: float = 60.0) -> bool:
        """Finish writing the transcripts being kept in the home (before the actor is stopped); True when done."""
        return True if self._keeper is None else self._keeper.drain(min(max(0.0, float(timeout_s)), 600.0))

    def release_gpu(self) -> None:
        """Give this task's GPU memory back: the actor lives on, its cached blocks must not."""
        if self.accelerator == "gpu":
            gc.collect()
            torch.cuda.empty_cache()

    def gpu_memory(self) -> int:
        """Bytes this miner holds on its GPU now (0 on CPU)."""
        return int(torch.cuda.memory_allocated()) if self.accelerator == "gpu" else 0


def claim_round(miner: Miner, round_id: str) -> None:
    """RoundRefused for a round ``miner`` already trains or trained: a copy of the proposer's signed round (the
    object store is shared) would otherwise keep its slots busy for as long as anyone replays it. A module
    function: no caller reaches it through Ray (claiming a round ahead of its miner would block it)."""
    with miner._claims:
        if round_id in miner._mined_rounds:
            raise RoundRefused(f"round {round_id[:12]} is already mined here; a round trains once",
                               reason="round_repeat")
        miner._mined_rounds[round_id] = None
        while len(miner._mined_rounds) > MINED_ROUNDS_KEPT:
            del miner._mined_rounds[next(iter(miner._mined_rounds))]


def mine_round(miner: Miner, spec: Task, data: Split | None, ctx: RoundContext,
               progress: Any = None) -> tuple[MinedSubmission, dict[str, np.ndarray]]:
    """``Miner.mine`` once its round is checked: a module function, so no caller reaches it through Ray
    (the attack suite's cheaters call it directly: a cheater runs its own code)."""
    install_task_code(spec.code)  # the task's own code, checked against its signed hash (actors/task_code.py)
    task_id = crypto.message_hash(spec)
    data = private_shard(miner.identity, spec, task_id, ctx, miner.cfg.data_dir) if ctx.shards else data
    return train_round(miner, spec, task_id, check_inputs(spec, task_id, data, ctx), ctx, progress)


def train_round(miner: Miner, spec: Task, task_id: str, data: Split, ctx: RoundContext,
                progress: Any = None) -> tuple[MinedSubmission, dict[str, np.ndarray]]:
    """Train, record, mark, hash and sign on inputs ``mine_round`` checked (a cheater calls it on data of its
    own: the attack suite's distiller trains on another model's labels and commits that run's transcript)."""
    miner._rounds[task_id] = ctx
    seed = common_seed(task_id) if spec.fusion != "winner" else 0  # fusion needs one shared init
    net = build_task_net(spec, seed=seed)
    mapped, sml_seed = mapped_net(miner.identity, miner.protection, net, spec, task_id, ctx.round_id)
    report = reporter(progress, miner.identity, task_id, spec.max_epochs)
    marks = kept_marks(miner._marks, miner.identity, miner.protection, net, spec)
    from dlbc_ray.models import transcript
    from dlbc_ray.models.training import TrainSettings, train

    # the seed is public (task, miner, round): validators replay the run in the same data order
    settings = TrainSettings(epochs=spec.max_epochs, batch_size=miner.cfg.batch_size, lr=miner.cfg.lr,
                             optimizer=miner.cfg.optimizer,
                             seed=compute_training_seed(task_id, miner.identity.public_key, ctx.round_id),
                             accelerator=miner.accelerator, devices=1, val_fraction=miner.cfg.val_fraction,
                             num_threads=miner.threads, objective=spec.metric,
                             checks_per_epoch=miner.cfg.target_checks if spec.kind == "standing" else 1)
    parallel = training_workers(miner.cfg) > 1
    header, recorder = transcript.start(
        task_id, miner.identity.public_key, ctx.round_id, data, max_epochs=spec.max_epochs, threads=miner.threads,
        hyper=compute_hyperparameters(miner.cfg.batch_size, miner.cfg.lr, miner.cfg.optimizer, miner.cfg.val_fraction),
        device=worker_device(miner.cfg) if parallel else miner.accelerator, params=miner.protection.transcript)
    if parallel:
        result, kept = train_parallel(miner.cfg, miner.protection, miner._channels, miner._cancelled, spec, task_id,
                                      data, mapped, marks, settings, header, report)
        load_into(net, result.weights)  # trained elsewhere: the mark is settled and hashed here
    else:
        result = train(mapped, data, settings, regularizers=marks, on_epoch=report,
                       stop_when=stop_rule(miner._cancelled, spec, task_id, miner.cfg.target_margin),
                       callbacks=[recorder], order=transcript.DerivedOrder)
        kept = transcript.finish(header, recorder)
    weights = settled(net, marks, result.weights, miner.protection.mark_margin)
    t0 = time.perf_counter()
    model_hash = crypto.hash_weights(weights)
    t1 = time.perf_counter()
    submission = Submission(
        task_id=task_id, miner=miner.identity.public_key, model_hash=model_hash,
        commit=crypto.compute_commit(model_hash, miner.identity.public_key, task_id),
        num_params=count_parameters(net), claimed_score=claimed_score(result.val_accuracy),
        epochs=result.epochs, train_ms=round(result.seconds * 1e3), examples=result.examples,
        sml_commitment=sml.seed_commitment(sml_seed) if sml_seed is not None else None,
        transcript_root=kept.root,
    )
    signed = crypto.sign(miner.identity, submission, ctx.chain_id)
    miner._sealed[submission.commit] = Sealed(ctx, sml_seed)
    miner._transcripts.put(submission.commit, kept)
    t2 = time.perf_counter()
    stats = MinerStats(train_s=result.seconds, epochs=result.epochs, hash_ms=(t1 - t0) * 1e3,
                       sign_ms=(t2 - t1) * 1e3, put_ms=0.0, device=miner.accelerator)
    report(None, stage="submitted")
    del mapped, net
    miner.release_gpu()
    return MinedSubmission(signed=signed, stats=stats), weights
