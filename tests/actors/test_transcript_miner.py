"""A real miner's training transcript, audited the way a validator audits it (no Ray: ``Miner`` built directly).

The validator side derives everything itself (init, mapping layer from the revealed seed, the
miner's mark, the holdout, the settle) and reaches the miner only through ``transcript_opening``,
which answers only the proposer's close that opens the submission.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from dlbc_ray import crypto
from dlbc_ray.actors.miner import Miner
from dlbc_ray.config import MINIMAL
from dlbc_ray.consensus.transcript import AuditFailure, AuditParams, compute_hyperparameters
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ActorUnavailable, RevealRefused
from dlbc_ray.models.data import DatasetBundle, load_builtin
from dlbc_ray.models.protect import mapping_seed, mark_secret
from dlbc_ray.models.replay import Committed, Secrets, audit, derive_for
from dlbc_ray.models.transcript import Checkpoint
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Signed, Submission, Task, Verdict
from dlbc_ray.schema.round_messages import RoundContext, WindowClose
from tests.builders import T0, fake_hash, signed_round

REQUESTER, MINER, RIVAL = (Identity.from_seed(n, n.encode()) for n in ("requester", "miner", "rival"))
PROPOSER = Identity.from_seed("consensus", b"consensus")
CHAIN = fake_hash("chain")
DEADLINE = T0 + 60_000
CFG = MINIMAL.miner


@dataclass(frozen=True)
class Mined:
    miner: Miner
    bundle: DatasetBundle
    task: Signed[Task]
    ctx: RoundContext
    submission: Submission
    weights: dict[str, Any]


def close(ctx: RoundContext, commit: str, signer: Identity = PROPOSER) -> Signed[WindowClose]:
    message = WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=DEADLINE, opens=(commit,), final=True)
    return crypto.sign(signer, message, CHAIN)


@pytest.fixture(scope="module")
def done() -> Mined:
    bundle = load_builtin("digits")
    task = make_task(REQUESTER, MINIMAL.task, bundle, nonce=1, created_ms=T0, chain_id=CHAIN)
    ctx = RoundContext(chain_id=CHAIN, round_id=fake_hash("round"), task_id=crypto.message_hash(task.message),
                       base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=DEADLINE)
    miner = Miner(CFG, identity=MINER, protection=MINIMAL.protection, proposer=PROPOSER.public_key)
    mined, weights = miner.mine(task, bundle.train, signed_round(PROPOSER, ctx))
    return Mined(miner, bundle, task, ctx, mined.signed.message, weights)


def _committed(done: Mined) -> Committed:
    opened = close(done.ctx, done.submission.commit)
    header, checkpoints_root, _ = done.miner.transcript_opening(opened, done.submission.commit, 0)
    return Committed(done.submission.transcript_root, header, checkpoints_root,
                     lambda i: done.miner.transcript_opening(opened, done.submission.commit, i)[2])


def _secrets(done: Mined) -> Secrets:
    seed = mapping_seed(MINER, done.ctx.task_id, done.ctx.round_id)  # as the miner's reveal hands it over
    return Secrets(sml_seed=seed, mark=mark_secret(MINER), protection=MINIMAL.protection)


def _audit(done: Mined, params: AuditParams, seed: bytes = b"v" * 32, **changes: Any):
    derived = derive_for(done.task.message, done.ctx.task_id, done.ctx.round_id, done.bundle.train, done.submission,
                         _secrets(done), compute_hyperparameters(CFG.batch_size, CFG.lr, CFG.optimizer,
                                                                 CFG.val_fraction))
    return audit(_committed(done), replace(derived, **changes), params, seed)


def test_the_signed_submission_commits_to_the_transcript(done: Mined) -> None:
    assert done.submission.transcript_root == _committed(done).root
    assert done.submission.model_hash == crypto.hash_weights(done.weights)


def test_a_real_miners_transcript_passes_a_full_audit(done: Mined) -> None:
    params = replace_params(segments=MINIMAL.protection.transcript.max_checkpoints)
    outcome, cost = _audit(done, params)
    assert outcome.passed, outcome
    assert cost.replayed_steps == _committed(done).header.steps  # every step, watermark and mapping layer included


def test_a_real_miners_transcript_passes_the_default_audit(done: Mined) -> None:
    for i in range(2):
        outcome, _ = _audit(done, MINIMAL.protection.transcript, seed=bytes([i]) * 32)
        assert outcome.passed, outcome


def test_the_submission_of_a_model_the_transcript_did_not_make_fails(done: Mined) -> None:
    outcome, _ = _audit(done, MINIMAL.protection.transcript, model_hash=fake_hash("a stolen model"))
    assert outcome.reason is AuditFailure.FINAL_MISMATCH


def test_checkpoints_are_opened_only_by_the_proposers_close(done: Mined) -> None:
    commit = done.submission.commit
    with pytest.raises(RevealRefused) as caught:
        done.miner.transcript_opening(close(done.ctx, commit, signer=RIVAL), commit, 0)
    assert caught.value.reason == "wrong_signer"
    with pytest.raises(RevealRefused) as caught:
        done.miner.transcript_opening(close(done.ctx, fake_hash("another commit")), commit, 0)
    assert caught.value.reason == "not_opened"
    with pytest.raises(RevealRefused) as caught:
        done.miner.transcript_opening(close(done.ctx, commit), fake_hash("never submitted"), 0)
    assert caught.value.reason == "not_submitted"
    assert done.miner.transcript_opening(close(done.ctx, commit), commit, 10_000)[2] is None


def replace_params(**changes: Any) -> AuditParams:
    return MINIMAL.protection.transcript.model_copy(update=changes)


# ------------------------------------------------------------------ a validator's vote


def _vote(done: Mined, ask: Any) -> Any:
    from dlbc_ray.actors.validator import Validator
    from dlbc_ray.config import ValidatorConfig
    from dlbc_ray.models.replay import TranscriptAudits
    from dlbc_ray.schema.round_messages import SubmissionArrival

    commit = done.submission.commit
    opened = close(done.ctx, commit)
    reveal = done.miner.reveal(opened, commit)
    signed = crypto.sign(MINER, done.submission, CHAIN)
    arrival = SubmissionArrival(signed=signed, arrived_ms=DEADLINE - 1, reveal=reveal)
    judge = Validator(ValidatorConfig(), identity=Identity.from_seed("judge", b"judge"), protection=MINIMAL.protection,
                      marks={MINER.public_key: mark_secret(MINER)}, proposer=PROPOSER.public_key)
    policy = compute_hyperparameters(CFG.batch_size, CFG.lr, CFG.optimizer, CFG.val_fraction)
    audits = TranscriptAudits(done.bundle.train, policy, {commit: (opened.signature, ask(opened, commit))})
    reply = judge.validate(done.task, done.bundle.test, [arrival], [done.weights], signed_round(PROPOSER, done.ctx),
                           audits=audits)
    return reply.ballots[0].message.votes[0]


def test_a_validator_audits_a_real_miner_and_votes_valid(done: Mined) -> None:
    vote = _vote(done, lambda opened, commit: (lambda i: done.miner.transcript_opening(opened, commit, i)))
    assert vote.verdict is Verdict.VALID, vote.detail


def test_a_validator_votes_bad_transcript_when_the_miner_falls_silent(done: Mined) -> None:
    def silent(opened: Any, commit: str) -> Any:
        def ask(i: int) -> Any:
            raise ActorUnavailable("transcript opening did not answer within 30 s", reason="timeout")
        return ask
    vote = _vote(done, silent)
    assert vote.verdict is Verdict.BAD_TRANSCRIPT and vote.detail.startswith("missing_checkpoint")


def test_a_validator_votes_bad_transcript_for_a_checkpoint_swapped_after_commit(done: Mined) -> None:
    def swapped(opened: Any, commit: str) -> Any:
        def ask(i: int) -> Any:
            header, root, opening = done.miner.transcript_opening(opened, commit, i)
            if opening is None or i == 0:
                return header, root, opening
            leaf, proof, ckpt = opening
            other = done.miner.transcript_opening(opened, commit, i - 1)[2][2]
            return header, root, (leaf, proof, Checkpoint(ckpt.step, other.weights, other.optimizer))
        return ask
    vote = _vote(done, swapped)
    assert vote.verdict is Verdict.BAD_TRANSCRIPT and vote.detail.startswith("malformed_checkpoint")
