"""The parts of a miner's round, as module functions: what ``actors.miner`` trains with.

Module functions, not methods: every method of an actor, underscored or not, answers whoever
holds its handle, and a closure over the miner would carry its identity with it. Here: the
PoLe stop rule, the data-parallel run (``actors.data_parallel``), the input checks and private
shards, the miner's Secure Mapping Layer and watermark, and the progress reporter.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dlbc_ray.config import MinerConfig, ProtectionConfig
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.consensus.transcript import TranscriptHeader
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models import fusion, sml, watermark
from dlbc_ray.models.baas_fusion import common_seed
from dlbc_ray.models.data import Split, split_hash
from dlbc_ray.models.nets import net_info
from dlbc_ray.models.protect import mapping_layer, mapping_seed, mark_secret, watermark_key
from dlbc_ray.models.weights import load_into, to_numpy
from dlbc_ray.schema import Task
from dlbc_ray.schema.round_messages import ProgressEvent, RoundContext

if TYPE_CHECKING:
    from dlbc_ray.models.training import EpochStat


def training_workers(cfg: MinerConfig) -> int:
    """Data-parallel workers a miner trains with: ``cfg.workers``, or one per whole GPU it is given. One trains
    in the miner's own process, on one device (a fractional GPU too); more train through Ray Train."""
    return max(cfg.workers, math.floor(cfg.num_gpus))


def goal(spec: Task, margin: float) -> float | None:
    """PoLe: the own validation score at which a standing task's training stops; None for other tasks."""
    return spec.target / SCORE_SCALE + margin if spec.kind == "standing" else None


def stop_rule(cancelled: set[str], spec: Task, task_id: str, margin: float) -> Any:
    """PoLe: stop as soon as the standing target is reached; any task: stop once its window is closed."""
    target = goal(spec, margin)

    def stop(stat: EpochStat) -> bool:
        return task_id in cancelled or (target is not None and stat.val_accuracy >= target)

    return stop


def train_parallel(cfg: MinerConfig, protection: ProtectionConfig, channels: dict[str, Any], cancelled: set[str],
                   spec: Task, task_id: str, data: Split, mapped: torch.nn.Module, marks: list[Any], settings: Any,
                   header: TranscriptHeader, report: Any) -> tuple[Any, Any]:
    """Ray Train's workers train ``mapped`` data-parallel (``actors/data_parallel.py``); the transcript header
    records how many, so validators replay each step shard by shard (``models.distributed``). ``channels``
    holds the run's channel while it trains, so ``Miner.cancel`` reaches its workers."""
    from dlbc_ray.actors import data_parallel
    from dlbc_ray.models.distributed import usable_workers

    workers = usable_workers(header.examples, cfg.batch_size, training_workers(cfg))
    # the miner's actor holds no GPU: its workers do; they validate (and may stop) once an epoch
    settings = replace(settings, accelerator=worker_device(cfg), checks_per_epoch=1)
    job = data_parallel.Job(net=mapped, data=data, settings=settings, regularizers=tuple(marks),
                            header=header.model_copy(update={"workers": workers}), audit=protection.transcript,
                            workers=workers, report=report, goal=goal(spec, cfg.target_margin), code=spec.code)
    place = data_parallel.Placement(use_gpu=cfg.num_gpus >= 1, cpus_per_worker=cfg.num_cpus or 1.0,
                                    strategy=cfg.placement, timeout_s=cfg.train_call_timeout_s)
    channels[task_id] = channel = data_parallel.open_channel()
    try:
        if task_id in cancelled:  # closed while the channel opened
            channel.stop.remote()
        return data_parallel.train(job, channel, place)
    finally:
        del channels[task_id]


def worker_device(cfg: MinerConfig) -> str:
    """A data-parallel miner's device class: its workers hold one whole GPU each, or train on CPU."""
    return "gpu" if cfg.num_gpus >= 1 else "cpu"


def check_inputs(spec: Task, task_id: str, data: Split | None, ctx: RoundContext) -> Split:
    """``data``, when it is this round's task's training data (or a shard of it), else InvalidTask."""
    if task_id != ctx.task_id:
        raise InvalidTask(f"round is for task {ctx.task_id[:12]}, got {task_id[:12]}", reason="wrong_task")
    if data is None:
        raise InvalidTask("no training data for this task", reason="data")
    if not ctx.shards and split_hash(data) != spec.dataset.train_hash:
        raise InvalidTask("training data does not match the task's train_hash", reason="data_hash")
    return data


def private_shard(identity: Identity, spec: Task, task_id: str, ctx: RoundContext, data_dir: str | None) -> Split:
    """BaaS: this miner's own shard, loaded here from its own data folder; the rest is dropped at once."""
    from dlbc_ray.models.data import load_builtin, load_file, shard

    ds = spec.dataset
    if ds.uri and data_dir is None:
        raise InvalidTask(f"task data '{ds.uri}' is a file and this miner has no data_dir to find it in",
                          reason="data_dir")
    bundle = load_file(Path(data_dir or ".") / Path(ds.uri).name) if ds.uri else load_builtin(ds.name)
    if split_hash(bundle.train) != ds.train_hash:
        raise InvalidTask("the dataset this miner holds does not match the task's train_hash", reason="data_hash")
    if identity.public_key not in ctx.shards:
        raise InvalidTask("no shard was assigned to this miner", reason="shard")
    index = ctx.shards[identity.public_key][0]
    return shard(bundle.train, len(ctx.shards), index, iid=ds.partition == "iid", seed=common_seed(task_id),
                 alpha=ds.dirichlet_alpha)


def settled(net: torch.nn.Module, marks: list[watermark.WatermarkRegularizer], weights: dict[str, np.ndarray],
            margin: float) -> dict[str, np.ndarray]:
    """Make sure our own mark reads back before signing (short tasks may stop short of it)."""
    if not marks or float(np.min(watermark.signed_margins(weights, marks[0].key))) >= margin:
        return weights  # already readable to the margin: nothing to settle (settle would check the same)
    net.cpu()
    steps = watermark.settle(net, marks[0].key, margin=margin)
    return to_numpy(net) if steps else weights


def reporter(progress: Any, identity: Identity, task_id: str, epochs: int) -> Any:
    name, public_key = identity.name, identity.public_key  # the closure must not hold the identity

    def report(stat: EpochStat | None, stage: str = "epoch") -> None:
        if progress is None:
            return
        event = ProgressEvent(actor=name, public_key=public_key, task_id=task_id, stage=stage,
                              epoch=stat.epoch if stat else epochs, epochs=epochs,
                              val_accuracy=stat.val_accuracy if stat else None)
        progress.report.remote(event)  # fire and forget: progress must never slow training

    return report
def mapped_net(identity: Identity, protection: ProtectionConfig, net: torch.nn.Module, spec: Task,
               task_id: str, round_id: str) -> tuple[torch.nn.Module, bytes | None]:
    """The net behind ``identity``'s Secure Mapping Layer for one round of ``task_id``, and its seed."""
    if not protection.secure_mapping:
        return net, None
    seed = mapping_seed(identity, task_id, round_id)
    q, kind = mapping_layer(seed, net, spec.model.name, spec.dataset.input_shape)
    if spec.fusion != "winner":  # start from the shared init as seen through this miner's map
        first = net_info(spec.model.name).first_layer
        load_into(net, fusion.common_start(to_numpy(net), first, q, kind))
    return sml.MappedNet(net, sml.SecureMappingLayer(q, kind)), seed


def kept_marks(kept: dict[tuple[Any, ...], list[watermark.WatermarkRegularizer]], identity: Identity,
               protection: ProtectionConfig, net: torch.nn.Module, spec: Task) -> list[watermark.WatermarkRegularizer]:
    """``own_marks``, derived once per architecture into ``kept`` (the key's M x T normals are the same every
    round); a module function, as the key is secret and every method answers whoever holds the handle."""
    arch = (spec.model.name, tuple((name, tuple(p.shape)) for name, p in net.named_parameters()))
    if arch not in kept:
        kept[arch] = own_marks(identity, protection, net, spec)
    return kept[arch]


def own_marks(identity: Identity, protection: ProtectionConfig, net: torch.nn.Module,
              spec: Task) -> list[watermark.WatermarkRegularizer]:
    """The regularizer that embeds ``identity``'s watermark in ``net`` (none when marks are off)."""
    if not protection.watermark:
        return []
    key = watermark_key(mark_secret(identity), identity.public_key, net, spec.model.name, protection.watermark_bits)
    return [watermark.WatermarkRegularizer(key, protection.watermark_lambda)]
