"""Verdict rules that need no model: envelope, timing, duplicates, replays, and provenance figures.

Validators apply them before touching weights; the consensus actor applies the
envelope rules on arrival, so nothing that would break a ledger rule enters a block.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from dlbc_ray import crypto
from dlbc_ray.consensus.provenance import compute_derived_reason
from dlbc_ray.schema import Signed, Submission, Verdict
from dlbc_ray.schema.round_messages import SubmissionArrival
from dlbc_ray.schema.submission import Reveal

Judgement = tuple[Verdict, str]
EnvelopeFault = tuple[str, Verdict, str]  # (the ledger's reason, the validator's verdict, message)


def find_envelope_fault(signed: Signed[Submission], task_id: str, chain_id: str) -> EnvelopeFault | None:
    """Signed for this chain by the miner it names, for this task, with a correctly formed commit.

    One rule for everyone: validators turn a fault into their verdict, the consensus
    actor drops such a submission on arrival, and the ledger refuses a block holding one.
    """
    s = signed.message
    if signed.chain_id != chain_id:
        return "submission_chain", Verdict.WRONG_CHAIN, f"signed for chain {signed.chain_id[:12]}"
    if signed.signer != s.miner:
        return "submission_signer", Verdict.BAD_SIGNATURE, "not signed by the miner it names"
    if not crypto.is_valid_signature(signed):
        return "submission_signature", Verdict.BAD_SIGNATURE, "signature does not verify for the named miner"
    if s.task_id != task_id:
        return "submission_task", Verdict.WRONG_TASK, f"submitted for task {s.task_id[:12]}"
    if s.commit != crypto.compute_commit(s.model_hash, s.miner, s.task_id):
        return "commit", Verdict.BAD_COMMIT, "commit is not H(model_hash | miner | task_id)"
    return None


def check_envelope(signed: Signed[Submission], task_id: str, chain_id: str) -> Judgement | None:
    """The validator's verdict on a submission's envelope (``find_envelope_fault``), or None."""
    fault = find_envelope_fault(signed, task_id, chain_id)
    return None if fault is None else (fault[1], fault[2])


def check_timing(arrival: SubmissionArrival, deadline_ms: int) -> Judgement | None:
    if arrival.arrived_ms > deadline_ms:
        return Verdict.LATE, f"arrived {arrival.arrived_ms - deadline_ms} ms after the deadline"
    return None


def check_reuse(model_hash: str, earlier_in_round: Container[str], won_before: Container[str]) -> Judgement | None:
    """Identical weights count only once: for the earliest submission, and never after they won."""
    if model_hash in won_before:
        return Verdict.REPLAY, "these weights already won an earlier block"
    if model_hash in earlier_in_round:
        return Verdict.DUPLICATE, "identical weights were submitted earlier in this round"
    return None


def check_reveal(submission: Submission, reveal: Signed[Reveal] | None, commitment: str | None,
                 chain_id: str) -> Judgement | None:
    """The revealed mapping seed must be the miner's, for this submission, and match its commitment."""
    if submission.sml_commitment is None:
        return None
    if reveal is None:
        return Verdict.BAD_REVEAL, "no mapping seed was revealed"
    r = reveal.message
    if reveal.chain_id != chain_id:
        return Verdict.BAD_REVEAL, f"reveal signed for another chain {reveal.chain_id[:12]}"
    if reveal.signer != submission.miner or not crypto.is_valid_signature(reveal):
        return Verdict.BAD_REVEAL, "reveal not signed by the miner"
    if (r.task_id, r.commit) != (submission.task_id, submission.commit) or commitment != submission.sml_commitment:
        return Verdict.BAD_REVEAL, "revealed seed does not match the commitment"
    return None


def check_provenance(matches: Sequence[tuple[str, Sequence[float], float]]) -> Judgement | None:
    """``derived`` when the submission computes what one of the named models computes.

    ``matches``: per earlier model (a name for the detail line), the unit match above chance per hidden
    layer and the label agreement on the probes (``models.fingerprint``); the rule is ``consensus.provenance``.
    """
    for name, units, agreement in matches:
        reason = compute_derived_reason(units, agreement)
        if reason is not None:
            return Verdict.DERIVED, f"derived from {name}: {reason}"
    return None
