"""Replaying training transcripts and auditing them: what a validator runs after the reveal.

The replay and the audit themselves are ``models.transcript_audit`` (re-exported here); this module
is the validator's side of one submission: what it derives itself (``derive_for``: init, mapping
layer, mark, holdout, settle), how it asks the miner (``audit_submission``) and one arrival's audit
in a round (``audit_arrival``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from dlbc_ray.config import ProtectionConfig
from dlbc_ray.consensus.transcript import (
    AuditFailure,
    AuditOutcome,
    AuditParams,
    Expected,
    TranscriptHeader,
    compute_audit_seed,
    compute_training_seed,
)
from dlbc_ray.errors import ActorUnavailable, DLBCError
from dlbc_ray.models import fusion, sml, watermark
from dlbc_ray.models.baas_fusion import common_seed
from dlbc_ray.models.data import Split, holdout
from dlbc_ray.models.nets import build_task_net, net_info
from dlbc_ray.models.protect import mapping_layer, watermark_key
from dlbc_ray.models.step import StepSystem
from dlbc_ray.models.transcript import Opening
from dlbc_ray.models.transcript_audit import (  # re-exported: callers import the audit from here
    AuditCost,
    Committed,
    Derived,
    Refereed,
    audit,
    committed,
    deterministic_cpu,
    referee_segment,
    relative_distance,
    replay,
    step_hashes,
)
from dlbc_ray.models.weights import load_into, to_numpy
from dlbc_ray.schema import Submission, Task
from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival

__all__ = ["AuditCost", "Committed", "Derived", "Refereed", "Secrets", "Served", "TranscriptAudits", "audit",
           "audit_arrival", "audit_submission", "committed", "derive_for", "describe", "deterministic_cpu",
           "referee_arrival", "referee_segment", "relative_distance", "replay", "step_hashes"]


# ------------------------------------------------------------------ the validator's side of a submission


@dataclass(frozen=True)
class Secrets:
    """What the validator holds for one submission once its round closed: the revealed mapping seed
    and the miner's watermark secret (from the network's assembler), with the settings they need."""

    sml_seed: bytes | None
    mark: bytes | None
    protection: ProtectionConfig


def derive_for(spec: Task, task_id: str, round_id: str, train: Split, submission: Submission, secrets: Secrets,
               hyper: Mapping[str, object]) -> Derived:
    """Everything a validator needs to replay ``submission``'s transcript, derived as the miner trained it:
    the task's init (shared for fusion), the miner's mapping layer and mark, the derived holdout, and the
    watermark settle that turns the last checkpoint into the signed model."""
    seed = compute_training_seed(task_id, submission.miner, round_id)
    fit, _ = holdout(train, float(hyper["val_fraction"]), seed)  # type: ignore[arg-type]
    init_seed = common_seed(task_id) if spec.fusion != "winner" else 0

    def fresh() -> torch.nn.Module:
        return build_task_net(spec, seed=init_seed)

    def trainable() -> torch.nn.Module:
        net = fresh()
        if secrets.sml_seed is None:
            return net
        q, kind = mapping_layer(secrets.sml_seed, net, spec.model.name, spec.dataset.input_shape)
        if spec.fusion != "winner":
            load_into(net, fusion.common_start(to_numpy(net), net_info(spec.model.name).first_layer, q, kind))
        return sml.MappedNet(net, sml.SecureMappingLayer(q, kind))

    settling = fresh()  # the key's shapes, and the net ``finish`` settles (each call loads every tensor first)
    key = (watermark_key(secrets.mark, submission.miner, settling, spec.model.name, secrets.protection.watermark_bits)
           if secrets.mark is not None and secrets.protection.watermark else None)
    marks = [watermark.WatermarkRegularizer(key, secrets.protection.watermark_lambda)] if key is not None else []
    # One system for every segment: ``replay`` loads all of its weights and a new optimizer's state each time,
    # so a segment never sees another's (no net, mapping layer or system built per segment)
    system = StepSystem(trainable(), lr=float(hyper["lr"]), weight_decay=float(hyper["weight_decay"]),  # type: ignore[arg-type]
                        optimizer=str(hyper["optimizer"]), regularizers=marks, objective=spec.metric)
    initial = to_numpy(system.net)

    def finish(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if key is None:
            return weights
        net = load_into(settling, weights)
        steps = watermark.settle(net, key, margin=secrets.protection.mark_margin)
        return to_numpy(net) if steps else weights

    expected = Expected(task_id=task_id, miner=submission.miner, round_id=round_id, examples=len(fit),
                        max_epochs=spec.max_epochs, epochs=submission.epochs, hyperparameters=hyper)
    return Derived(make_system=lambda: system, fit=fit, initial=initial, finish=finish,
                   model_hash=submission.model_hash, expected=expected)


Served = tuple[TranscriptHeader, str, Opening | None]  # what ``Miner.transcript_opening`` answers


def audit_submission(submission: Submission, derived: Derived, params: AuditParams, seed: bytes,
                     ask: Callable[[int], Served], sample: tuple[int, ...] | None = None) -> tuple[AuditOutcome, AuditCost]:
    """A validator's audit of one submission, reaching the miner only through ``ask(index)``; a miner that
    does not answer (any DLBCError: refused, timed out, dead) is a named failure, never an exception."""
    if submission.transcript_root is None:
        return AuditOutcome(False, AuditFailure.NO_TRANSCRIPT, "the submission commits to no transcript"), AuditCost()
    try:
        served = ask(0)
        header, checkpoints_root = served[0], served[1]
    except DLBCError as e:
        return AuditOutcome(False, AuditFailure.MISSING_CHECKPOINT, f"the miner did not serve its transcript "
                            f"({e.reason})"), AuditCost()
    except (TypeError, IndexError, KeyError):
        header = checkpoints_root = None

    return audit(Committed(submission.transcript_root, header, checkpoints_root, _fetcher(ask)), derived, params, seed,
                 sample)


def _fetcher(ask: Callable[[int], Served]) -> Callable[[int], Opening | None]:
    def fetch(index: int) -> Opening | None:
        answer = ask(index)
        return answer[2] if isinstance(answer, tuple) and len(answer) == 3 else None

    return fetch


def describe(outcome: AuditOutcome) -> str:
    """One line for a vote's detail: the reason, what was seen, and the evidence hashes (short)."""
    if outcome.passed or outcome.reason is None:
        return ""
    evidence = "" if outcome.expected is None else f" (expected {outcome.expected[:16]}, replayed {(outcome.replayed or '')[:16]})"
    return f"{outcome.reason.value}: {outcome.detail}{evidence}"[:200]


@dataclass(frozen=True)
class TranscriptAudits:
    """What a round hands its validators so they audit transcripts: the training split, the network's
    hyperparameter policy and, per commit, the close signature that opened it and how to ask its miner.
    Absent (None) when nobody can replay, as for private BaaS shards."""

    train: Split
    policy: Mapping[str, object]
    openers: Mapping[str, tuple[str, Callable[[int], Served]]] = field(default_factory=dict)


def audit_arrival(spec: Task, ctx: RoundContext, submissions_root: str, arrival: SubmissionArrival,
                  audits: TranscriptAudits, *, mark: bytes | None, protection: ProtectionConfig,
                  validator: str, sample: tuple[int, ...] | None = None) -> tuple[AuditOutcome, AuditCost]:
    """One validator's audit of one arrival: its own segments (seeded by its key; ``sample`` forces them, for
    tests), the revealed seed, the miner's mark; every failure is an outcome with a reason."""
    sub = arrival.signed.message
    close_signature, ask = audits.openers.get(sub.commit, ("", _nobody))
    try:
        derived = _derive(spec, ctx, arrival, audits, mark, protection)
    except DLBCError as e:
        return AuditOutcome(False, AuditFailure.WRONG_INIT, f"cannot derive the run: {e}"[:150]), AuditCost()
    seed = compute_audit_seed(ctx.base_hash, submissions_root, close_signature, sub.commit, validator)
    return audit_submission(sub, derived, protection.transcript, seed, ask, sample)


def _derive(spec: Task, ctx: RoundContext, arrival: SubmissionArrival, audits: TranscriptAudits, mark: bytes | None,
            protection: ProtectionConfig) -> Derived:
    """The run an arrival's transcript must replay: the round's data, its revealed seed, the miner's mark."""
    sml_seed = bytes.fromhex(arrival.reveal.message.sml_seed) if arrival.reveal else None
    return derive_for(spec, ctx.task_id, ctx.round_id, audits.train, arrival.signed.message,
                      Secrets(sml_seed, mark, protection), audits.policy)


def referee_arrival(spec: Task, ctx: RoundContext, arrival: SubmissionArrival, audits: TranscriptAudits,
                    segment: int, *, mark: bytes | None, protection: ProtectionConfig) -> Refereed:
    """A dispute's one segment of one arrival, replayed as its audit would (``referee_segment``); a miner that does
    not answer, or a run that cannot be derived, is the problem named (the challenge stands)."""
    sub = arrival.signed.message
    _, ask = audits.openers.get(sub.commit, ("", _nobody))
    try:
        derived = _derive(spec, ctx, arrival, audits, mark, protection)
        served = ask(0)
        header, checkpoints_root = served[0], served[1]
    except DLBCError as e:
        return Refereed(None, None, f"cannot open the segment: {e.reason}", True)
    except (TypeError, IndexError, KeyError):
        return Refereed(None, None, "the miner served something that is not an opening", True)
    return referee_segment(Committed(sub.transcript_root, header, checkpoints_root, _fetcher(ask)), derived, segment)


def _nobody(index: int) -> Served:
    raise ActorUnavailable("the round named no miner to ask for this transcript", reason="no_miner")
