"""The transcript rules (consensus/transcript.py): derivations, Merkle proofs, sampling and the audit judge."""

from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbc_ray import crypto
from dlbc_ray.consensus.transcript import (
    AuditFailure,
    AuditParams,
    AuditReport,
    CheckpointLeaf,
    Expected,
    MerkleProof,
    SegmentResult,
    TranscriptHeader,
    check_header,
    checkpoint_steps,
    compute_audit_segments,
    compute_checkpoints_root,
    compute_header_hash,
    compute_interval,
    compute_merkle_levels,
    compute_merkle_proof,
    compute_root_from_proof,
    compute_steps_per_epoch,
    compute_training_seed,
    compute_transcript_root,
    escape_probability,
    find_divergence,
    is_segment_match,
    is_valid_proof,
    judge_audit,
    sample_segments,
)
from dlbc_ray.crypto import Identity

MINER = Identity.from_seed("m", bytes(32)).public_key
TASK, ROUND = "a" * 64, "b" * 64
PARAMS = AuditParams()


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _leaves(n: int) -> list[CheckpointLeaf]:
    return [CheckpointLeaf(index=i, step=i * 3, weights_hash=_h(f"w{i}"), optimizer_hash=_h(f"o{i}")) for i in range(n)]


def _expected(**changes: object) -> Expected:
    base = dict(task_id=TASK, miner=MINER, round_id=ROUND, examples=1617, max_epochs=5, epochs=2,
                hyperparameters={"batch_size": 64, "lr": 0.01, "optimizer": "adam", "weight_decay": 0.0,
                                 "val_fraction": 0.1})
    return Expected(**{**base, **changes})  # type: ignore[arg-type]


def _header(**changes: object) -> TranscriptHeader:
    per_epoch = compute_steps_per_epoch(1617, 64)
    base = dict(task_id=TASK, miner=MINER, round_id=ROUND, seed=compute_training_seed(TASK, MINER, ROUND),
                interval=compute_interval(per_epoch * 2, PARAMS.max_checkpoints), steps=per_epoch * 2,
                steps_per_epoch=per_epoch, examples=1617, batch_size=64, lr=0.01, optimizer="adam",
                weight_decay=0.0, val_fraction=0.1, threads=1, device="cpu")
    return TranscriptHeader(**{**base, **changes})  # type: ignore[arg-type]


# ------------------------------------------------------------------ derivations


def test_the_training_seed_is_fixed_by_task_miner_and_round_alone() -> None:
    seed = compute_training_seed(TASK, MINER, ROUND)
    assert seed == compute_training_seed(TASK, MINER, ROUND)
    assert len({seed, compute_training_seed(TASK, MINER, "c" * 64), compute_training_seed("c" * 64, MINER, ROUND),
                compute_training_seed(TASK, Identity.from_seed("n", bytes([1]) * 32).public_key, ROUND)}) == 4
    assert 0 <= seed < 2**63


@given(st.integers(1, 10_000), st.integers(3, 512))
def test_the_interval_keeps_the_checkpoints_within_the_cap(max_steps: int, cap: int) -> None:
    k = compute_interval(max_steps, cap)
    for steps in (max_steps, max_steps // 2, 1):
        marks = checkpoint_steps(steps, k)
        assert len(marks) <= cap and marks[0] == 0 and marks[-1] == steps
        assert all(b - a <= k for a, b in zip(marks, marks[1:]))


@given(st.integers(0, 5_000), st.integers(3, 200))
def test_doubling_as_the_recorder_does_reaches_the_derived_interval(steps: int, cap: int) -> None:
    """The recorder keeps every k-th step and doubles k (dropping every other) when it would keep more
    than cap - 1; whatever the run's length, it ends on ``compute_interval`` and within the cap."""
    k, kept = 1, set()
    for step in range(steps + 1):
        if step % k == 0:
            kept.add(step)
            while len(kept) > cap - 1:
                k *= 2
                kept = {s for s in kept if s % k == 0}
    kept.add(steps)
    assert k == compute_interval(steps, cap)
    assert tuple(sorted(kept)) == checkpoint_steps(steps, k) and len(kept) <= cap
    assert len(kept) > (cap - 1) // 2 or k == 1  # never thinned below about half the cap


def test_zero_steps_is_one_checkpoint() -> None:
    assert checkpoint_steps(0, 4) == (0,)


# ------------------------------------------------------------------ Merkle proofs


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40))
def test_proofs_from_kept_levels_are_the_proofs(n: int) -> None:
    """A miner hashes its tree once and serves every proof from it: same paths, and its top is the root."""
    leaves = _leaves(n)
    levels = compute_merkle_levels(leaves)
    assert levels[-1][0].hex() == compute_checkpoints_root(leaves) and len(levels[0]) == n
    assert all(compute_merkle_proof(leaves, i, levels) == compute_merkle_proof(leaves, i) for i in range(n))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.data())
def test_every_leaf_proves_against_the_root_crypto_computes(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    root = compute_checkpoints_root(leaves)
    assert root == crypto.merkle_root(crypto.canonical_bytes(leaf) for leaf in leaves)
    i = data.draw(st.integers(0, n - 1))
    assert is_valid_proof(leaves[i], compute_merkle_proof(leaves, i), root)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.data())
def test_a_forged_proof_never_verifies(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    root = compute_checkpoints_root(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = compute_merkle_proof(leaves, i)
    other = leaves[i].model_copy(update={"weights_hash": _h("x")})
    assert not is_valid_proof(other, proof, root)  # another checkpoint under the same path
    if proof.path:
        k = data.draw(st.integers(0, len(proof.path) - 1))
        path = list(proof.path)
        path[k] = _h("forged")
        assert not is_valid_proof(leaves[i], proof.model_copy(update={"path": tuple(path)}), root)
        assert compute_root_from_proof(leaves[i], proof.model_copy(update={"path": proof.path[:-1]})) is None
    assert compute_root_from_proof(leaves[i], proof.model_copy(update={"path": (*proof.path, _h("extra"))})) is None
    j = (i + 1) % n
    assert not is_valid_proof(leaves[j], compute_merkle_proof(leaves, j).model_copy(update={"index": i}), root)


def test_a_proof_for_another_size_or_index_is_refused() -> None:
    leaves = _leaves(5)
    proof = compute_merkle_proof(leaves, 4)
    assert compute_root_from_proof(leaves[4], proof.model_copy(update={"size": 4})) is None
    assert compute_root_from_proof(leaves[4], MerkleProof(index=5, size=5, path=())) is None


# ------------------------------------------------------------------ sampling


@given(st.binary(min_size=32, max_size=32), st.integers(1, 200), st.integers(1, 10))
def test_the_audit_samples_distinct_segments_and_always_the_last(seed: bytes, n: int, q: int) -> None:
    chosen = compute_audit_segments(seed, n, q)
    assert len(set(chosen)) == len(chosen) == min(q, n - 1) + 1
    assert chosen[-1] == n - 1 and all(0 <= s < n for s in chosen)
    assert chosen == compute_audit_segments(seed, n, q)


def test_sampling_is_close_to_uniform() -> None:
    counts = [0] * 10
    for i in range(2_000):
        for s in sample_segments(hashlib.sha256(str(i).encode()).digest(), 10, 1):
            counts[s] += 1
    assert min(counts) > 140 and max(counts) < 260  # 200 expected each; ~5 sigma either side


def test_escape_probability_matches_the_hypergeometric_count() -> None:
    assert escape_probability(0, 63, 2) == 1.0
    assert escape_probability(63, 63, 1) == 0.0
    assert escape_probability(10, 62, 1) == pytest.approx(52 / 62)
    assert escape_probability(10, 62, 2) == pytest.approx(math.comb(52, 2) / math.comb(62, 2))


# ------------------------------------------------------------------ header


def test_the_derived_header_passes() -> None:
    assert check_header(_header(), _expected(), PARAMS) is None


def test_steps_must_lie_in_the_last_epoch_claimed() -> None:
    """A run may stop inside its last epoch (PoLe checks its target several times an epoch); the steps
    must still fall in the claimed epoch: not one step short of it, nor one into the next."""
    per_epoch = compute_steps_per_epoch(1617, 64)

    def header(steps: int) -> TranscriptHeader:
        return _header(steps=steps, interval=compute_interval(steps, PARAMS.max_checkpoints))
    assert all(check_header(header(s), _expected(), PARAMS) is None for s in (per_epoch + 1, 2 * per_epoch - 1))
    for steps in (per_epoch, 2 * per_epoch + 1):
        problem = check_header(header(steps), _expected(), PARAMS)
        assert problem is not None and "steps" in problem
    assert check_header(header(5 * per_epoch + 1), _expected(epochs=6), PARAMS) is not None  # past max_epochs


@pytest.mark.parametrize(("change", "named"), [
    ({"seed": 7}, "seed"), ({"batch_size": 32}, "batch_size"), ({"lr": 0.5}, "lr"), ({"optimizer": "sgd"}, "optimizer"),
    ({"examples": 1600}, "examples"), ({"miner": Identity.from_seed("n", bytes([2]) * 32).public_key}, "miner"),
    ({"round_id": "c" * 64}, "round_id"), ({"steps_per_epoch": 3}, "steps_per_epoch"), ({"interval": 2}, "interval"),
    ({"steps": 10}, "steps"),
])
def test_each_header_field_the_round_fixes_is_checked(change: dict[str, object], named: str) -> None:
    problem = check_header(_header(**change), _expected(), PARAMS)
    assert problem is not None and named in problem


# ------------------------------------------------------------------ the judge


def _report(**changes: object) -> AuditReport:
    header, leaves = _header(), _leaves(4)
    croot = compute_checkpoints_root(leaves)
    base = dict(committed_root=compute_transcript_root(compute_header_hash(header), croot), header=header,
                checkpoints_root=croot, init=("i", "i"), segments=(SegmentResult(1, "e", "e", 0.0),), final=("f", "f"))
    return AuditReport(**{**base, **changes})  # type: ignore[arg-type]


def test_an_honest_report_passes() -> None:
    assert judge_audit(_report(), PARAMS).passed


@pytest.mark.parametrize(("change", "reason"), [
    ({"committed_root": None}, AuditFailure.NO_TRANSCRIPT),
    ({"header": None}, AuditFailure.NO_TRANSCRIPT),
    ({"committed_root": "0" * 64}, AuditFailure.ROOT_MISMATCH),
    ({"checkpoints_root": "0" * 64}, AuditFailure.ROOT_MISMATCH),
    ({"header_problem": "seed differs"}, AuditFailure.WRONG_HEADER),
    ({"fetch_problems": ((3, AuditFailure.MISSING_CHECKPOINT, "timeout"),)}, AuditFailure.MISSING_CHECKPOINT),
    ({"fetch_problems": ((3, AuditFailure.BAD_PROOF, "x"),)}, AuditFailure.BAD_PROOF),
    ({"fetch_problems": ((3, AuditFailure.MALFORMED_CHECKPOINT, "x"),)}, AuditFailure.MALFORMED_CHECKPOINT),
    ({"init": ("i", "j")}, AuditFailure.WRONG_INIT),
    ({"init": None}, AuditFailure.WRONG_INIT),
    ({"segments": (SegmentResult(1, "e", "r", 1e-9),)}, AuditFailure.REPLAY_MISMATCH),
    ({"final": ("f", "g")}, AuditFailure.FINAL_MISMATCH),
    ({"final": None}, AuditFailure.FINAL_MISMATCH),
])
def test_each_failure_is_its_own_reason(change: dict[str, object], reason: AuditFailure) -> None:
    outcome = judge_audit(_report(**change), PARAMS)
    assert not outcome.passed and outcome.reason is reason


def test_a_replay_mismatch_carries_its_evidence() -> None:
    outcome = judge_audit(_report(segments=(SegmentResult(0, "e", "e", 0.0), SegmentResult(2, "e2", "r2", 0.3))), PARAMS)
    assert (outcome.segment, outcome.expected, outcome.replayed) == (2, "e2", "r2")


def test_the_earliest_failure_wins() -> None:
    outcome = judge_audit(_report(header_problem="x", init=("a", "b"), final=("c", "d")), PARAMS)
    assert outcome.reason is AuditFailure.WRONG_HEADER


def test_tolerance_applies_only_across_device_classes() -> None:
    near = SegmentResult(0, "e", "r", 1e-8)
    assert not is_segment_match(near, exact=True, tolerance=1e-6)
    assert is_segment_match(near, exact=False, tolerance=1e-6)
    assert not is_segment_match(SegmentResult(0, "e", "r", 1e-5), exact=False, tolerance=1e-6)
    assert not is_segment_match(SegmentResult(0, "e", "r", float("nan")), exact=False, tolerance=1.0)
    tolerant = AuditParams(tolerance=1e-6)
    assert judge_audit(_report(segments=(near,), exact=False), tolerant).passed
    assert not judge_audit(_report(segments=(near,), exact=True), tolerant).passed


# ------------------------------------------------------------------ disputes


@given(st.integers(0, 1_000), st.integers(1, 5_000), st.data())
def test_bisection_finds_the_first_divergent_step_in_log_comparisons(lo: int, width: int, data: st.DataObject) -> None:
    hi = lo + width
    first = data.draw(st.integers(lo + 1, hi))
    asked: list[int] = []

    def agree_at(step: int) -> bool:
        asked.append(step)
        assert lo < step < hi  # never asks what both already committed to
        return step < first

    assert find_divergence(lo, hi, agree_at) == first
    assert len(asked) <= math.ceil(math.log2(width)) if width > 1 else not asked
