"""Configuration: one small pydantic model per concern, with named presets.

Only the CLI reads files and environment variables; everything deeper receives
these objects. Presets: ``MINIMAL`` (fast tests) and ``DEFAULT`` (the demo).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dlbc_ray.consensus.ranking import RankingWeights
from dlbc_ray.consensus.transcript import AuditParams
from dlbc_ray.constants import BPS, SCORE_SCALE
from dlbc_ray.schema.block import RetargetParams
from dlbc_ray.errors import ConfigError
from dlbc_ray.schema.base import MAX_AMOUNT

MAX_DEVICES = 1_024  # CPUs or GPUs one actor may ask Ray for
MAX_EPOCHS = 10_000  # a task's max_epochs on the wire
MAX_DEADLINE_S = 3650 * 86_400  # ten years: every deadline stays a valid Millis


class _Config(BaseModel):
    # No NaN or inf anywhere: a config value reaches wire types, timeouts and Ray's resources.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class MinerConfig(_Config):
    """Resources and training choices of one miner (miners compete, so they may differ)."""

    num_cpus: float | None = Field(default=None, gt=0, description="CPUs Ray reserves and torch threads; "
                                   "None = an equal share of the node")
    num_gpus: float = Field(default=0.0, ge=0, le=MAX_DEVICES,
                            description="GPUs Ray allots (fractional allowed); 0 trains on CPU")
    resources: dict[str, float] = Field(default_factory=lambda: {"dlbc_miner": 1.0},
                                        description="custom Ray resources: cluster node types decide where miners run")
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-2, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    target_margin: float = Field(default=0.03, ge=0, lt=1, description="PoLe: stop once the own validation "
                                 "accuracy clears the standing target by this much (test accuracy may be lower)")
    target_checks: int = Field(default=4, ge=1, le=64, description="PoLe: validations per epoch on a standing "
                               "task, so a run stops nearer the step its target was reached (other tasks: one)")
    workers: int = Field(default=1, ge=1, le=MAX_DEVICES, description="data-parallel training workers (Ray Train, "
                         "one per GPU when num_gpus >= workers); 1 trains in the miner's own process")
    placement: Literal["PACK", "SPREAD"] = Field(default="PACK", description="how this miner's group and its "
                                                 "training workers are placed on nodes")
    train_call_timeout_s: float = Field(default=60.0, gt=0, le=86_400, description="data-parallel miners: how long "
                                        "each call between the Ray Train workers and the miner's channel may take")
    max_restarts: int = Field(default=3, ge=-1)
    data_dir: str | None = Field(default=None, description="BaaS: where this miner keeps its private data files; "
                                 "a task names a file by name only, never by a path on the requester's machine")
    keep_transcripts: int = Field(default=16, ge=0, le=10_000, description="training transcripts a miner keeps in "
                                  "its home after the reveal, for `dlbc-ray audit`; 0 keeps none (oldest go first)")
    keep_transcripts_mb: int = Field(default=512, ge=1, le=1_000_000, description="their size on disk at most, in "
                                     "MiB (the newest is always kept)")


class ValidatorConfig(_Config):
    # Validators evaluate while miners are idle, so by default they reserve no CPU.
    num_cpus: float = Field(default=0.0, ge=0, le=MAX_DEVICES)
    num_gpus: float = Field(default=0.0, ge=0, le=MAX_DEVICES)
    resources: dict[str, float] = Field(default_factory=lambda: {"dlbc_validator": 1.0})
    eval_batch_size: int = Field(default=1024, ge=1)
    fetch_timeout_s: float = Field(default=120.0, gt=0, le=86_400,
                                   description="how long a validator waits for a submission's weights")
    mark_key_cache_mb: float = Field(default=160.0, ge=0, le=1 << 20, description="memory for the miners' mark "
                                     "keys a validator keeps, least recently used evicted (a key is a seeded M x T "
                                     "Gaussian: 8 MiB for the mlp host, M = 8192, T = 256, so 160 MiB keeps all 16 "
                                     "keys a network of 16 miners reads, with room; an evicted key is derived again, "
                                     "bitwise the same, in ~25 ms of CPU on one thread, 67 ms wall on a loaded "
                                     "machine; keys held are read first, so each ballot past the budget derives "
                                     "only the keys it does not hold)")
    max_restarts: int = Field(default=3, ge=-1)
    data_dir: str | None = Field(default=None, description="BaaS: where this miner keeps its private data files; "
                                 "a task names a file by name only, never by a path on the requester's machine")


class ProtectionConfig(_Config):
    """Anti-theft and anti-cheating settings shared by miners and validators (they must agree)."""

    watermark: bool = Field(default=True, description="miners embed their DNN watermark (DLBC, Uchida)")
    watermark_bits: int = Field(default=256, ge=8, le=4096, description="T, capped at the host layer's size M")
    watermark_lambda: float = Field(default=0.01, gt=0, description="weight of the embedding loss")
    max_ber: float = Field(default=0.0, ge=0, le=0.5, description="the submitter's own mark must reach this BER")
    foreign_p: float = Field(default=1e-6, gt=0, lt=0.5, description="another miner's mark counts (stolen) when a "
                             "model that never saw that key would match so many bits with less than this chance")
    mark_margin: float = Field(default=0.5, ge=0, description="honest miners settle every bit at least this far "
                               "from the boundary (in w X units) so pruning or re-encoding cannot flip it")
    secure_mapping: bool = Field(default=True, description="miners train through a Secure Mapping Layer (PoLe)")
    copy_distance: float = Field(default=0.05, ge=0, description="median per-tensor relative L2 distance under "
                                 "which two models are one model twice (a thief may re-mark one layer, not all)")
    copy_owner_p: float = Field(default=1e-2, gt=0, lt=0.5, description="of a near pair, the model that carries the "
                                "other submitter's mark with less than this chance (and the other not) is the copy")
    copy_epsilon: int = Field(default=50, ge=0, description="score margin (x1e-4) a near copy must beat (SN9)")
    all_marks_up_to: int = Field(default=16, ge=0, description="validators read every registered miner's mark "
                                 "while at most this many are registered; beyond, only the round's submitters' and "
                                 "the owners' of the earlier models they compare against (consensus.marks)")
    theft_penalty: int = Field(default=100, ge=0, description="taken from a miner caught with a stolen model")
    transcript: AuditParams = Field(default_factory=AuditParams, description="how miners record training "
                                    "transcripts and validators audit them")


class ConsensusConfig(_Config):
    """Phase deadlines and the economics of a round."""

    collect_timeout_s: float = Field(default=600.0, gt=0, description="deadline for miners' submissions")
    reveal_timeout_s: float = Field(default=30.0, gt=0)
    validate_timeout_s: float = Field(default=120.0, gt=0, description="deadline for validators' votes")
    commit_timeout_s: float = Field(default=30.0, gt=0)
    max_faulty: int = Field(default=1, ge=0, description="f, lying validators tolerated; needs >= 3f + 1 validators")
    validator_fee_bps: int = Field(default=1_000, ge=0, le=10_000, description="share of a reward paid to voters")
    tick_s: float = Field(default=0.5, gt=0, description="how often the scheduler looks at the task pool")
    grace_s: float = Field(default=0.2, ge=0, description="PoLe: after the first submission claiming the "
                           "target, how long the window stays open for near-ties")
    max_attempts: int = Field(default=3, ge=1, description="rounds a task may fail (no quorum, no submissions)")
    allow_task_code: bool = Field(default=False, description="run tasks that ship their own code "
                                  "(`dlbc-ray up --allow-task-code`); off: such a task is refused at submission")
    ranking: RankingWeights = RankingWeights()


class PoleConfig(_Config):
    """PoLe: standing tasks whose accuracy target retunes so blocks come at a steady rate."""

    enabled: bool = Field(default=False, description="a long-lived network mines standing tasks when idle")
    target_interval_s: float = Field(default=5.0, gt=0, le=86_400, description="wanted mean time between blocks")
    window: int = Field(default=1, ge=1, description="retarget every this many standing blocks (1: ASERT, every block)")
    initial: float = Field(default=0.85, ge=0, le=1, description="accuracy target of the first window")
    floor: float = Field(default=0.5, ge=0, le=1)
    ceiling: float = Field(default=0.97, ge=0, le=1, description="below what the standing model can reach")
    max_step: float = Field(default=0.10, gt=0, le=1, description="largest change of the target per retarget")
    gain: float = Field(default=0.25, gt=0, le=1, description="controller gain: a block one interval late "
                        "multiplies the error rate by 2^gain (consensus/difficulty.py says how it was chosen)")
    block_reward: int = Field(default=100, ge=0, le=MAX_AMOUNT)
    treasury: int = Field(default=1_000_000, ge=0, le=MAX_AMOUNT,
                          description="genesis funds of the treasury that pays blocks")
    max_epochs: int = Field(default=60, ge=1, le=MAX_EPOCHS,
                            description="a standing round's cap; miners stop at the target")

    def retarget(self) -> RetargetParams:
        scale = lambda x: round(x * SCORE_SCALE)  # noqa: E731
        return RetargetParams(target_interval_s=self.target_interval_s, window=self.window,
                              initial=scale(self.initial), floor=scale(self.floor), ceiling=scale(self.ceiling),
                              max_step=max(1, scale(self.max_step)), gain_bps=max(1, round(self.gain * BPS)))


class TaskDefaults(_Config):
    """The built-in task the demo mines when nobody has posted one."""

    dataset: str = "digits"
    model: str = "mlp"
    model_params: dict[str, int | float | str | bool | list[int]] = Field(default_factory=dict)
    target: float = Field(default=0.85, ge=0, le=1)
    reward: int = Field(default=1_000, gt=0, le=MAX_AMOUNT)
    epochs: int = Field(default=5, ge=1, le=MAX_EPOCHS)
    deadline_s: float = Field(default=900.0, gt=0, le=MAX_DEADLINE_S)


class Limits(_Config):
    """Caps on what a task may ask for, checked before anything is parsed, loaded or allocated.

    Every miner and validator applies the same caps, so a task one of them refuses is refused by all.
    """

    max_task_file_bytes: int = Field(default=64 * 1024, ge=1, description="a task file is refused unread past this")
    max_depth: int = Field(default=8, ge=1, description="nesting of mappings and lists in a task file")
    max_nodes: int = Field(default=2_000, ge=1, description="values in a task file, every YAML alias expanded")
    max_aliases: int = Field(default=16, ge=0, description="YAML aliases (*name) in a task file")
    max_scalar_chars: int = Field(default=1_024, ge=1, description="longest single value (bounds integer digits)")
    max_dataset_bytes: int = Field(default=1 << 30, ge=1, description="a dataset's arrays once decompressed")
    max_classes: int = Field(default=1_000, ge=2, description="K: labels must be 0..K-1")
    max_params: int = Field(default=50_000_000, ge=1, description="scalar parameters of a task's net")
    max_memory_bytes: int = Field(default=4 << 30, ge=1, description="estimated training memory of a task's net "
                                  "(weights, gradients, two Adam moments, and one batch's activations)")
    activation_batch: int = Field(default=1_024, ge=1, description="batch size the memory estimate assumes "
                                  "(validators evaluate in batches this large)")


LIMITS = Limits()


class NetworkConfig(_Config):
    """A whole network: how many of each actor, and each concern's config."""

    miners: int = Field(default=3, ge=1, le=64)
    miners_per_task: int = Field(default=0, ge=0, le=64, description="miners per group; several groups mine several "
                                 "tasks at once. 0 = all miners mine every task together")
    validators: int = Field(default=4, ge=1, le=64)
    miner: MinerConfig = MinerConfig()
    validator: ValidatorConfig = ValidatorConfig()
    consensus: ConsensusConfig = ConsensusConfig()
    protection: ProtectionConfig = ProtectionConfig()
    pole: PoleConfig = PoleConfig()
    task: TaskDefaults = TaskDefaults()
    genesis_balance: int = Field(default=1_000_000, ge=0, le=MAX_AMOUNT,
                                 description="given to the demo requester at genesis")
    miner_stake: int = Field(default=1_000, ge=0, le=MAX_AMOUNT,
                             description="given to each miner at genesis; thefts cost from it")
    ray_num_cpus: int | None = Field(default=None, ge=1, description="logical CPUs of a local Ray; None = all")

    @model_validator(mode="after")
    def _enough_validators(self) -> NetworkConfig:
        f = self.consensus.max_faulty
        if self.validators < 3 * f + 1:
            raise ValueError(
                f"validators={self.validators} cannot reach a safe quorum: tolerating {f} faulty validator(s) "
                f"needs at least {3 * f + 1} (n >= 3f + 1)"
            )
        return self


DEFAULT = NetworkConfig()
MINIMAL = NetworkConfig(
    miners=2,
    validators=4,
    miner=MinerConfig(num_cpus=0.5),
    validator=ValidatorConfig(num_cpus=0.0),
    task=TaskDefaults(epochs=2, target=0.5),
    consensus=ConsensusConfig(collect_timeout_s=240, validate_timeout_s=120),
)
PRESETS: dict[str, NetworkConfig] = {"default": DEFAULT, "minimal": MINIMAL}


def config_error(error: ValidationError, *, prefix: str = "") -> ConfigError:
    """Turn pydantic's multi-line report into one line naming the first bad field."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{prefix}{where}: {message}", reason="config")


def network_config(base: NetworkConfig = DEFAULT, **changes: object) -> NetworkConfig:
    """``base`` with top-level fields replaced, validated; bad values raise ConfigError."""
    try:
        return NetworkConfig.model_validate({**base.model_dump(), **changes})
    except ValidationError as e:
        raise config_error(e) from None
