"""A miner's data-parallel training: Ray Train's ``TorchTrainer`` running the task's Lightning module with
Lightning's Ray strategy, one worker per GPU (or per CPU slot), placed by Ray, on other nodes if need be.

The miner hands over one ``Job`` (what it would pass ``models.training.train``, plus its planned transcript
header) and gets back the same ``TrainResult`` and ``Transcript`` a single-device run gives: the workers
train on shards of the derived order's batches (``models.distributed``), every worker seeds each step
alike, and worker 0 records the transcript (after DDP's all-reduce every worker holds the same weights
and optimizer state). A ``Channel`` actor, one per run, carries the window's close in and the result
out. The mapped net and the mark regularizer travel to the workers (the miner's own processes) in the
run's config: through the cluster's object store, as the miner's weights do.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray import cloudpickle

from dlbc_ray.actors._ray import get
from dlbc_ray.errors import ActorUnavailable

if TYPE_CHECKING:
    from torch import nn

    from dlbc_ray.consensus.transcript import AuditParams, TranscriptHeader
    from dlbc_ray.models.data import Split
    from dlbc_ray.models.training import EpochStat, TrainResult, TrainSettings
    from dlbc_ray.models.transcript import Transcript

PLACEMENTS = ("PACK", "SPREAD")


@dataclass(frozen=True)
class Job:
    """One data-parallel run: ``models.training.train``'s arguments and the transcript's planned header."""

    net: nn.Module
    data: Split
    settings: TrainSettings
    regularizers: tuple[Any, ...]
    header: TranscriptHeader
    audit: AuditParams
    workers: int
    goal: float | None = None  # PoLe: stop once the validation score reaches it
    report: Callable[[EpochStat], None] | None = None  # progress, from worker 0
    code: Any = None  # the task's own code (Task.code), installed in each worker before the net is built


@dataclass(frozen=True)
class Placement:
    """Where the workers run: ``use_gpu`` gives each one whole GPU; ``strategy`` packs or spreads them."""

    use_gpu: bool
    timeout_s: float  # for each call between the workers and the channel (MinerConfig.train_call_timeout_s)
    cpus_per_worker: float = 1.0
    strategy: str = "PACK"


class Channel:
    """Between a miner and its workers for one run: the window's close in, the trained result out.
    An anonymous actor whose handle only the miner and its workers hold."""

    def __init__(self) -> None:
        self._stopped = False
        self._result: Any = None

    def stop(self) -> None:
        self._stopped = True

    def stopped(self) -> bool:
        return self._stopped

    def deliver(self, result: Any) -> None:
        self._result = result

    def collect(self) -> Any:
        return self._result


def open_channel() -> Any:
    return ray.remote(Channel).options(num_cpus=0).remote()


def train(job: Job, channel: Any, place: Placement) -> tuple[TrainResult, Transcript]:
    """Train ``job`` on ``job.workers`` Ray Train workers; the result and transcript worker 0 recorded."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    if place.strategy not in PLACEMENTS:
        raise ActorUnavailable(f"unknown placement '{place.strategy}'; use one of {', '.join(PLACEMENTS)}",
                               reason="placement")
    per_worker = {"CPU": place.cpus_per_worker} | ({"GPU": 1.0} if place.use_gpu else {})
    with tempfile.TemporaryDirectory(prefix="dlbc-train-") as storage:
        trainer = TorchTrainer(
            worker_loop, train_loop_config={"job": cloudpickle.dumps(job), "code": job.code, "channel": channel,
                                            "timeout_s": place.timeout_s},
            scaling_config=ScalingConfig(num_workers=job.workers, use_gpu=place.use_gpu,
                                         resources_per_worker=per_worker, placement_strategy=place.strategy),
            torch_config=TorchConfig(backend="nccl" if place.use_gpu else "gloo"),
            run_config=RunConfig(name="dlbc-miner", storage_path=storage, failure_config=FailureConfig(max_failures=0)))
        try:
            trainer.fit()
        except TrainingFailedError as e:
            raise ActorUnavailable(f"data-parallel training failed: {str(e)[:200]}", reason="train_workers") from None
    done = get(channel.collect.remote(), timeout=place.timeout_s, what="the training channel")
    if done is None:
        raise ActorUnavailable("data-parallel training ended without a result", reason="train_workers")
    return done


def worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the miner's Lightning fit on this worker's shards, through ``RayDDPStrategy``."""
    import pytorch_lightning as pl
    import ray.train
    import torch
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    from dlbc_ray.actors.task_code import install as install_task_code
    from dlbc_ray.models import transcript
    from dlbc_ray.models.data import holdout
    from dlbc_ray.models.distributed import Epochs, ShardedData
    from dlbc_ray.models.system import ClassifierSystem
    from dlbc_ray.models.training import TrainResult, quiet_lightning
    from dlbc_ray.models.weights import to_numpy

    install_task_code(config["code"])  # a net of the task's own package unpickles only once that is imported
    job, channel, timeout_s = cloudpickle.loads(config["job"]), config["channel"], config["timeout_s"]
    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    s = job.settings
    torch.set_num_threads(s.num_threads or 1)
    torch.manual_seed(s.seed)
    fit, val = holdout(job.data, s.val_fraction, s.seed)
    system = ClassifierSystem(job.net, lr=s.lr, weight_decay=s.weight_decay, optimizer=s.optimizer,
                              regularizers=job.regularizers, objective=s.objective)
    recorder = transcript.recorder_for(job.header, job.audit)
    epochs = Epochs(rank, workers, goal=job.goal, report=job.report if rank == 0 else None,
                    stopped=lambda: bool(get(channel.stopped.remote(), timeout=timeout_s, what="the training channel")))
    started = time.perf_counter()
    with quiet_lightning():
        trainer = prepare_trainer(pl.Trainer(
            max_epochs=s.epochs, accelerator=s.accelerator, devices="auto", strategy=RayDDPStrategy(),
            plugins=[RayLightningEnvironment()], use_distributed_sampler=False, callbacks=[epochs, recorder],
            limit_val_batches=None if len(val) else 0, enable_progress_bar=False, logger=False,
            enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0))
        trainer.fit(system, datamodule=ShardedData(fit, val, batch_size=s.batch_size, seed=s.seed, workers=workers,
                                                   rank=rank))
    if rank != 0:
        return
    history = tuple(epochs.history)
    result = TrainResult(weights=to_numpy(job.net), val_accuracy=history[-1].val_accuracy if history else math.nan,
                         epochs=len(history), seconds=time.perf_counter() - started, examples=len(fit),
                         history=history)
    get(channel.deliver.remote((result, transcript.finish(job.header, recorder))), timeout=timeout_s,
        what="the training channel")
