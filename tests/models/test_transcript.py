"""Training transcripts on real Lightning runs: an honest one passes its audit, each known-bad one fails on its own.

Every bad transcript is a consistent commitment (its root matches what it serves) unless the
attack is the commitment itself, so each fails only for what it fakes.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from dlbc_ray import crypto
from dlbc_ray.consensus.transcript import (
    AuditFailure,
    AuditParams,
    Expected,
    MerkleProof,
    TranscriptHeader,
    compute_audit_segments,
    compute_state_hash,
    compute_training_seed,
    find_divergence,
)
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ActorUnavailable
from dlbc_ray.models.data import Split, holdout, load_builtin
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.step import StepSystem
from dlbc_ray.models.training import EpochStat, TrainSettings, train
from dlbc_ray.models.replay import (
    Committed,
    Derived,
    audit,
    audit_submission,
    committed,
    describe,
    replay,
    step_hashes,
)
from dlbc_ray.models.transcript import (
    Checkpoint,
    CheckpointStore,
    DerivedOrder,
    Kept,
    Transcript,
    epoch_order,
    finish,
    plan,
    recorder_for,
)
from dlbc_ray.models.weights import to_numpy
from dlbc_ray.schema import Submission

TASK, ROUND = "a" * 64, "b" * 64
MINER = Identity.from_seed("miner", bytes(32)).public_key
HYPER = {"batch_size": 64, "lr": 1e-2, "optimizer": "adam", "weight_decay": 0.0, "val_fraction": 0.1}
NET = ("mlp", {"hidden": (32,), "dropout": 0.1})
EPOCHS = 2
PARAMS = AuditParams(max_checkpoints=12, segments=2)
SEED = compute_training_seed(TASK, MINER, ROUND)


@pytest.fixture(scope="module")
def data() -> Split:
    return load_builtin("digits").train


def _net(data: Split, init_seed: int = 0, net: tuple[str, dict] = NET) -> torch.nn.Module:
    return build_net(net[0], net[1], tuple(data.x.shape[1:]), 10, seed=init_seed)


def _run(data: Split, *, order_seed: int = SEED, init_seed: int = 0, threads: int = 1, epochs: int = EPOCHS,
         net: tuple[str, dict] = NET, checks: int = 1,
         stop_when: Callable[[EpochStat], bool] | None = None) -> tuple[Transcript, dict[str, np.ndarray]]:
    """One run recorded the way a miner records it; ``order_seed``/``init_seed`` let a cheater deviate."""
    fit, _ = holdout(data, HYPER["val_fraction"], SEED)
    header = plan(TASK, MINER, ROUND, examples=len(fit), max_epochs=EPOCHS, hyper=HYPER, threads=threads,
                  device="cpu", params=PARAMS)
    recorder = recorder_for(header, PARAMS)
    recorder.seed = order_seed  # an honest miner leaves it: the header's seed
    settings = TrainSettings(epochs=epochs, batch_size=64, lr=1e-2, seed=SEED, num_threads=threads,
                             checks_per_epoch=checks)
    result = train(_net(data, init_seed, net), data, settings, callbacks=[recorder], stop_when=stop_when,
                   order=lambda n, _seed: DerivedOrder(n, order_seed))
    return finish(header, recorder), result.weights


def _derived(data: Split, model_hash: str, *, epochs: int = EPOCHS, net: tuple[str, dict] = NET) -> Derived:
    fit, _ = holdout(data, HYPER["val_fraction"], SEED)
    expected = Expected(task_id=TASK, miner=MINER, round_id=ROUND, examples=len(fit), max_epochs=EPOCHS,
                        epochs=epochs, hyperparameters=HYPER)
    return Derived(make_system=lambda: StepSystem(_net(data, 0, net), lr=1e-2, optimizer="adam"), fit=fit,
                   initial=to_numpy(_net(data, 0, net)), finish=lambda w: w, model_hash=model_hash, expected=expected)


@pytest.fixture(scope="module")
def honest(data: Split) -> tuple[Transcript, dict[str, np.ndarray]]:
    return _run(data)


def _audit(transcript: Transcript | Committed, weights: dict[str, np.ndarray], data: Split,
           seed: bytes = b"s" * 32, params: AuditParams = PARAMS, **derive: object):
    subject = committed(transcript) if isinstance(transcript, Transcript) else transcript
    return audit(subject, _derived(data, crypto.hash_weights(weights), **derive), params, seed)  # type: ignore[arg-type]


def _full(transcript: Transcript) -> AuditParams:
    return AuditParams(max_checkpoints=PARAMS.max_checkpoints, segments=len(transcript.leaves))


def _seed_sampling(n_segments: int, segment: int) -> bytes:
    """An audit seed whose draw includes ``segment`` (the tests of one detector must reach it)."""
    for i in itertools.count():
        seed = i.to_bytes(32, "big")
        if segment in compute_audit_segments(seed, n_segments, PARAMS.segments):
            return seed
    raise AssertionError


def _forged(transcript: Transcript, changes: dict[int, Checkpoint]) -> Transcript:
    """A consistent commitment to ``transcript`` with some checkpoints swapped (leaves and root recomputed)."""
    store = CheckpointStore()
    checkpoints = [changes.get(i) or transcript.checkpoint(i) for i in range(len(transcript.leaves))]
    for checkpoint in checkpoints:
        store.put(checkpoint)
    return Transcript(transcript.header, [c.leaf(i) for i, c in enumerate(checkpoints)], store)


def _blend(a: Checkpoint, b: Checkpoint, step: int) -> Checkpoint:
    mix = lambda x, y: {k: ((x[k].astype(np.float64) + y[k]) / 2).astype(x[k].dtype) for k in x}  # noqa: E731
    return Checkpoint(step, mix(a.weights, b.weights), mix(a.optimizer, b.optimizer))


# ------------------------------------------------------------------ honest


def test_an_honest_transcript_passes_a_full_audit(honest, data: Split) -> None:
    transcript, weights = honest
    outcome, cost = _audit(transcript, weights, data, params=_full(transcript))
    assert outcome.passed, outcome
    assert cost.replayed_steps == transcript.header.steps


def test_an_honest_transcript_passes_every_sampled_audit(honest, data: Split) -> None:
    transcript, weights = honest
    for i in range(3):
        outcome, cost = _audit(transcript, weights, data, seed=bytes([i]) * 32)
        assert outcome.passed, outcome
        assert len(cost.segments) == PARAMS.segments + 1


def test_a_run_stopped_inside_an_epoch_replays_and_claims_the_epochs_it_began(data: Split) -> None:
    """PoLe checks its target several times an epoch and stops right after the validation that reached it:
    the transcript ends inside the second epoch, replays bit for bit, and the claim is the epochs begun."""
    seen: list[EpochStat] = []

    def second_check_of_epoch_two(stat: EpochStat) -> bool:
        seen.append(stat)
        return stat.epoch == 2
    transcript, weights = _run(data, checks=4, stop_when=second_check_of_epoch_two)
    per_epoch = transcript.header.steps_per_epoch
    assert per_epoch < transcript.header.steps < 2 * per_epoch  # stopped at its first check of epoch 2
    assert [s.epoch for s in seen][:4] == [1, 1, 1, 1] and seen[-1].epoch == 2
    outcome, cost = _audit(transcript, weights, data, params=_full(transcript), epochs=2)
    assert outcome.passed, outcome
    assert cost.replayed_steps == transcript.header.steps
    for claimed in (1, 3):  # the epochs claimed must be the ones begun
        outcome, _ = _audit(transcript, weights, data, epochs=claimed)
        assert not outcome.passed and outcome.reason is AuditFailure.WRONG_HEADER


def test_recording_and_replaying_import_no_lightning() -> None:
    """Validators replay with models.step on plain torch: the transcript's own modules must not pull in
    Lightning (torchmetrics, SciPy's signal package, matplotlib: ~1.6 s of CPU per validator process)."""
    code = ("import sys; import dlbc_ray.models.transcript, dlbc_ray.models.step; "
            "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'torchmetrics') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def test_checkpoints_are_bounded_and_the_order_is_the_derived_one(honest, data: Split) -> None:
    transcript, _ = honest
    assert PARAMS.max_checkpoints // 2 < len(transcript.leaves) <= PARAMS.max_checkpoints
    fit, _ = holdout(data, HYPER["val_fraction"], SEED)
    assert list(DerivedOrder(len(fit), SEED)) == epoch_order(SEED, 0, len(fit)).tolist()
    assert not np.array_equal(epoch_order(SEED, 0, len(fit)), epoch_order(SEED, 1, len(fit)))


def test_a_run_on_two_threads_replays_on_a_one_thread_validator(data: Split) -> None:
    cnn = ("cnn", {})  # its convolutions sum in another order on 2 threads (about 1e-8 apart on 1)
    transcript, weights = _run(data, threads=2, epochs=1, net=cnn)
    assert transcript.header.threads == 2
    assert len(transcript.leaves) > PARAMS.max_checkpoints // 2  # a shorter run is thinned less: same audit share
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome, _ = _audit(transcript, weights, data, params=_full(transcript), epochs=1, net=cnn)
    finally:
        torch.set_num_threads(before)
    assert outcome.passed, outcome


def test_checkpoints_kept_in_a_folder_audit_the_same(honest, data: Split, tmp_path) -> None:
    transcript, weights = honest
    store = CheckpointStore(tmp_path / "ckpt")
    for i in range(len(transcript.leaves)):
        store.put(transcript.checkpoint(i))
    on_disk = Transcript(transcript.header, transcript.leaves, store)
    assert on_disk.root == transcript.root and store.nbytes() > 0
    assert _audit(on_disk, weights, data, params=_full(transcript))[0].passed


# ------------------------------------------------------------------ known-bad transcripts


def test_a_skipped_segment_fails(honest, data: Split) -> None:
    transcript, weights = honest
    j = 3  # the miner did not train segment 3: checkpoint 4 is checkpoint 3 again
    start = transcript.checkpoint(j)
    fake = _forged(transcript, {j + 1: Checkpoint(transcript.leaves[j + 1].step, start.weights, start.optimizer)})
    seed = _seed_sampling(len(fake.leaves) - 1, j)
    outcome, _ = _audit(fake, weights, data, seed=seed)
    assert outcome.reason is AuditFailure.REPLAY_MISMATCH and outcome.segment == j
    assert outcome.expected != outcome.replayed


def test_a_checkpoint_interpolated_between_its_neighbours_fails(honest, data: Split) -> None:
    transcript, weights = honest
    j = 4
    middle = _blend(transcript.checkpoint(j - 1), transcript.checkpoint(j + 1), transcript.leaves[j].step)
    fake = _forged(transcript, {j: middle})
    outcome, _ = _audit(fake, weights, data, seed=_seed_sampling(len(fake.leaves) - 1, j - 1))
    assert outcome.reason is AuditFailure.REPLAY_MISMATCH and outcome.segment == j - 1


def test_a_forged_merkle_proof_fails(honest, data: Split) -> None:
    transcript, weights = honest
    other = _forged(transcript, {2: _blend(transcript.checkpoint(1), transcript.checkpoint(3), transcript.leaves[2].step)})

    def fetch(i: int):  # checkpoint 2 comes from another tree, under its own (valid there) proof
        return other.opening(i) if i == 2 else transcript.opening(i)

    seed = _seed_sampling(len(transcript.leaves) - 1, 2)
    outcome, _ = _audit(replace(committed(transcript), fetch=fetch), weights, data, seed=seed)
    assert outcome.reason is AuditFailure.BAD_PROOF and outcome.segment == 2


def test_a_checkpoint_that_is_not_its_leaf_fails(honest, data: Split) -> None:
    transcript, weights = honest
    def fetch(i: int):
        leaf, proof, ckpt = transcript.opening(i)
        return (leaf, proof, transcript.checkpoint(i - 1) if i == 2 else ckpt)
    outcome, _ = _audit(replace(committed(transcript), fetch=fetch), weights, data,
                        seed=_seed_sampling(len(transcript.leaves) - 1, 2))
    assert outcome.reason is AuditFailure.MALFORMED_CHECKPOINT


def test_a_data_order_other_than_the_derived_one_fails(data: Split) -> None:
    transcript, weights = _run(data, order_seed=SEED + 1)  # the header still claims the derived seed
    outcome, _ = _audit(transcript, weights, data)
    assert outcome.reason is AuditFailure.REPLAY_MISMATCH


def test_a_header_naming_another_seed_fails(honest, data: Split) -> None:
    transcript, weights = honest
    lying = Transcript(transcript.header.model_copy(update={"seed": SEED + 1}), transcript.leaves, transcript.store)
    assert _audit(lying, weights, data)[0].reason is AuditFailure.WRONG_HEADER


def test_a_transcript_from_another_initialisation_fails(data: Split) -> None:
    transcript, weights = _run(data, init_seed=1)
    assert _audit(transcript, weights, data)[0].reason is AuditFailure.WRONG_INIT


@pytest.fixture(scope="module")
def victim(data: Split) -> dict[str, np.ndarray]:
    """Another miner's model: trained in another order, so no segment of ours leads to it."""
    return _run(data, order_seed=SEED + 7)[1]


def test_a_copied_model_with_the_thiefs_own_transcript_fails(honest, victim, data: Split) -> None:
    transcript, _ = honest  # a real run of the thief's own, then the victim's model submitted
    for i in range(3):
        assert _audit(transcript, victim, data, seed=bytes([i]) * 32)[0].reason is AuditFailure.FINAL_MISMATCH


def test_a_copied_model_with_a_fabricated_last_checkpoint_fails_whatever_the_seed(honest, victim, data: Split) -> None:
    transcript, _ = honest
    last = len(transcript.leaves) - 1
    fake = _forged(transcript, {last: Checkpoint(transcript.leaves[last].step, victim, transcript.checkpoint(last).optimizer)})
    for i in range(3):
        outcome, _ = _audit(fake, victim, data, seed=bytes([i]) * 32)
        assert outcome.reason is AuditFailure.REPLAY_MISMATCH and outcome.segment == last - 1


# ------------------------------------------------------------------ bad input, never an exception


def test_a_miner_that_does_not_answer_gets_missing_checkpoint(honest, data: Split) -> None:
    transcript, weights = honest
    def silent(i: int):
        raise ActorUnavailable("miner timed out", reason="timeout")
    assert _audit(replace(committed(transcript), fetch=silent), weights, data)[0].reason is AuditFailure.MISSING_CHECKPOINT
    assert _audit(replace(committed(transcript), fetch=lambda i: None), weights, data)[0].reason is AuditFailure.MISSING_CHECKPOINT


def test_garbage_openings_are_named_not_raised(honest, data: Split) -> None:
    transcript, weights = honest
    for garbage in ("x", (1, 2, 3), (transcript.leaves[0], "proof", None)):
        outcome, _ = _audit(replace(committed(transcript), fetch=lambda i, g=garbage: g), weights, data)
        assert outcome.reason in (AuditFailure.BAD_PROOF, AuditFailure.MALFORMED_CHECKPOINT)


def test_a_checkpoint_of_another_architecture_fails_by_name(honest, data: Split) -> None:
    transcript, weights = honest
    j = 2
    wrong = Checkpoint(transcript.leaves[j].step, {"w": np.zeros((3, 3), np.float32)}, {})
    fake = _forged(transcript, {j: wrong})
    outcome, _ = _audit(fake, weights, data, seed=_seed_sampling(len(fake.leaves) - 1, j))
    assert outcome.reason is AuditFailure.REPLAY_MISMATCH and "unreplayable" in (outcome.replayed or "")


def test_no_transcript_and_a_root_that_does_not_match(honest, data: Split) -> None:
    transcript, weights = honest
    assert _audit(replace(committed(transcript), root=None), weights, data)[0].reason is AuditFailure.NO_TRANSCRIPT
    assert _audit(replace(committed(transcript), root="0" * 64), weights, data)[0].reason is AuditFailure.ROOT_MISMATCH


def test_unvalidated_messages_from_the_wire_are_named_not_raised(honest, data: Split) -> None:
    """Ray unpickles pydantic models without their validators: a path of non-hex must not crash the proof check."""
    transcript, weights = honest
    def fetch(i: int):
        leaf, proof, ckpt = transcript.opening(i)
        return leaf, MerkleProof.model_construct(index=i, size=proof.size, path=("zz",) * len(proof.path)), ckpt
    assert _audit(replace(committed(transcript), fetch=fetch), weights, data)[0].reason is AuditFailure.BAD_PROOF
    bad_header = TranscriptHeader.model_construct(**{**transcript.header.model_dump(), "seed": -1})
    assert _audit(replace(committed(transcript), header=bad_header), weights, data)[0].reason is AuditFailure.NO_TRANSCRIPT
    assert _audit(replace(committed(transcript), checkpoints_root=b"x"), weights, data)[0].reason is AuditFailure.NO_TRANSCRIPT


def test_a_dispute_bisects_to_the_one_step_a_referee_recomputes(honest, data: Split) -> None:
    """Verde: a validator whose replay goes wrong from some step on (a lazy or faulty one) and an honest one
    agree at the segment's start and differ at its end; bisection over their per-step hashes names the
    first wrong step, and one step replayed from the agreed state settles who is right."""
    transcript, weights = honest
    d = _derived(data, crypto.hash_weights(weights))
    j = 1
    start, end = transcript.checkpoint(j), transcript.leaves[j + 1].step
    truth = step_hashes(d.make_system, d.fit, transcript.header, start, end)
    wrong_from = start.step + 2
    claim = {s: (h if s < wrong_from else "0" * 64) for s, h in truth.items()}
    first = find_divergence(start.step, end, lambda s: truth[s] == claim[s])
    assert first == wrong_from
    agreed = replay(d.make_system, d.fit, transcript.header, start, first - 1)
    one = replay(d.make_system, d.fit, transcript.header, agreed, first)
    assert compute_state_hash(one.leaf(0)) == truth[first] != claim[first]


def test_a_validator_reaches_the_miner_only_through_ask_and_names_silence(honest, data: Split) -> None:
    transcript, weights = honest
    sub = _submission(transcript, weights)
    derived = _derived(data, crypto.hash_weights(weights))
    served = lambda i: (transcript.header, transcript.checkpoints_root, transcript.opening(i))  # noqa: E731
    assert audit_submission(sub, derived, PARAMS, b"s" * 32, served)[0].passed

    def silent(i: int):
        raise ActorUnavailable("miner did not answer within 30 s", reason="timeout")
    outcome, _ = audit_submission(sub, derived, PARAMS, b"s" * 32, silent)
    assert outcome.reason is AuditFailure.MISSING_CHECKPOINT and "timeout" in describe(outcome)
    outcome, _ = audit_submission(_submission(transcript, weights, root=None), derived, PARAMS, b"s" * 32, served)
    assert outcome.reason is AuditFailure.NO_TRANSCRIPT
    outcome, _ = audit_submission(sub, derived, PARAMS, b"s" * 32, lambda i: "garbage")
    assert not outcome.passed


def test_a_failed_audit_reads_as_one_short_line_with_its_evidence(honest, data: Split) -> None:
    transcript, weights = honest
    outcome, _ = _audit(transcript, {k: v + 1 for k, v in weights.items()}, data)
    line = describe(outcome)
    assert line.startswith("final_mismatch: ") and "expected" in line and len(line) <= 200 and "\n" not in line
    assert describe(_audit(transcript, weights, data)[0]) == ""


def _submission(transcript: Transcript, weights: dict[str, np.ndarray], root: str | None = "") -> Any:
    """A submission as it would be signed; only the fields the audit reads are meaningful."""
    model_hash = crypto.hash_weights(weights)
    fields = dict(task_id=TASK, miner=MINER, model_hash=model_hash, commit=crypto.compute_commit(model_hash, MINER, TASK),
                  num_params=1, claimed_score=0, epochs=EPOCHS, train_ms=1, examples=1,
                  transcript_root=transcript.root if root == "" else root)
    if "transcript_root" in Submission.model_fields:
        return Submission(**fields)
    return SimpleNamespace(**fields)  # before the schema carries the field


def test_a_miner_keeps_a_bounded_number_and_size_of_transcripts(honest) -> None:
    transcript, _ = honest
    kept = Kept(size=3, max_bytes=10 * transcript.store.nbytes())
    for i in range(5):
        kept.put(f"c{i}", transcript)
    assert [kept.get(f"c{i}") is not None for i in range(5)] == [False, False, True, True, True]
    small = Kept(size=8, max_bytes=transcript.store.nbytes() + 1)
    small.put("a", transcript)
    small.put("b", transcript)
    assert small.get("a") is None and small.get("b") is transcript and small.nbytes() <= small.max_bytes
