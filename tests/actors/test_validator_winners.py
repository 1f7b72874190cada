"""Provenance references a validator recovers from the chain (``actors.winners``), and the ones it must never take.

A validator that restarts, or joins later, has judged none of the earlier rounds: it reads the winners the
chain names back from the artifact store (real safetensors files), by hash, and only those. A model its own
audit voted ``bad_transcript`` is nobody's reference. Real tiny models as in ``test_validator_verdicts``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlbc_ray.actors.adversary import MinerAttack
from dlbc_ray.actors.round_runner import miner_policy
from dlbc_ray.actors.winners import StoreWinners, checked
from dlbc_ray.config import MINIMAL
from dlbc_ray.crypto import hash_weights
from dlbc_ray.errors import ActorUnavailable
from dlbc_ray.ledger.artifacts import ArtifactStore
from dlbc_ray.models.replay import TranscriptAudits
from dlbc_ray.schema import Verdict
from tests.actors.test_validator_verdicts import (THIEF, Sent, Setup, adversary, honest_miner, judge, mined_by,
                                                  next_round, setup, validator)
from tests.builders import fake_hash

__all__ = ["setup"]  # the module fixture, shared


def _attack(kind: str, won: Sent) -> MinerAttack:
    return MinerAttack(kind, weights=won.weights, sml_seed=won.reveal.message.sml_seed)  # type: ignore[arg-type,union-attr]


def _store(tmp_path: Path, won: Sent, **metadata: str) -> StoreWinners:
    """The ledger's artifact folder after ``won`` won: its weights under their hash, with its seed and miner."""
    meta = {"task_id": won.signed.message.task_id, "miner": won.signed.message.miner,
            "sml_seed": won.reveal.message.sml_seed, **metadata}  # type: ignore[union-attr]
    ArtifactStore(tmp_path).put(won.weights, won.signed.message.model_hash, metadata=meta)
    return StoreWinners(str(tmp_path))


@pytest.mark.parametrize("kind", ["disguised-replay", "partial-reuse"])
def test_a_restarted_validator_reads_the_earlier_winner_back_from_the_chain(setup: Setup, tmp_path: Path,
                                                                           kind: str) -> None:
    """It never judged the winner's round: the chain's winners and the artifact store are all it has."""
    won, later = setup.victim, next_round(setup)
    fresh = validator(winners=_store(tmp_path, won))
    (vote,) = judge(later, adversary(later, _attack(kind, won)), by=fresh,
                    won=frozenset({won.signed.message.model_hash}))
    assert vote.verdict is Verdict.DERIVED and "winner" in vote.detail, vote.detail


def test_without_a_source_the_restarted_validator_has_nothing_to_compare(setup: Setup) -> None:
    """The control: the same disguise passes a validator that neither judged the winner nor can read it."""
    won, later = setup.victim, next_round(setup)
    (vote,) = judge(later, adversary(later, _attack("disguised-replay", won)),
                    won=frozenset({won.signed.message.model_hash}))
    assert vote.verdict is Verdict.VALID, vote.detail


def test_an_artifact_the_chain_never_named_a_winner_is_no_reference(setup: Setup, tmp_path: Path) -> None:
    """Anyone can store weights; only a hash in ``won_models`` is read, so a planted model frames nobody."""
    planted, later = setup.victim, next_round(setup)
    fresh = validator(winners=_store(tmp_path, planted))
    (vote,) = judge(later, adversary(later, _attack("disguised-replay", planted)), by=fresh, won=frozenset())
    assert vote.verdict is Verdict.VALID, vote.detail


def test_weights_that_do_not_hash_to_the_winners_name_are_refused(setup: Setup) -> None:
    won = setup.victim
    altered = {k: v + np.float32(1e-3) for k, v in won.weights.items()}
    assert checked((altered, {}), won.signed.message.model_hash) is None
    assert checked(None, won.signed.message.model_hash) is None
    assert checked((won.weights, {}), won.signed.message.model_hash) == (won.weights, {})


def test_a_winner_of_another_architecture_is_skipped_and_honest_work_stays_valid(setup: Setup,
                                                                                tmp_path: Path) -> None:
    """Another task's winner (other shapes) under a hash the chain names: read, found unfit, not compared."""
    other = {k: np.zeros((3, 3), np.float32) for k in setup.victim.weights}
    model_hash = hash_weights(other)
    ArtifactStore(tmp_path).put(other, model_hash, metadata={"miner": "x"})
    fresh = validator(winners=StoreWinners(str(tmp_path)))
    later = next_round(setup)
    honest = mined_by(honest_miner(THIEF), later.task, later.bundle, later.ctx)
    (vote,) = judge(later, honest, by=fresh, won=frozenset({model_hash}))
    assert vote.verdict is Verdict.VALID and model_hash in fresh._lineage.asked, vote.detail


def test_a_source_that_cannot_answer_now_is_asked_again_next_round(setup: Setup) -> None:
    calls: list[str] = []

    def away(model_hash: str) -> None:
        calls.append(model_hash)
        raise ActorUnavailable("ledger away", reason="timeout")

    fresh = validator(winners=away)
    won = frozenset({setup.victim.signed.message.model_hash})
    later = next_round(setup)
    honest = mined_by(honest_miner(THIEF), later.task, later.bundle, later.ctx)
    assert judge(later, honest, by=fresh, won=won)[0].verdict is Verdict.VALID
    judge(later, honest, by=fresh, won=won)
    assert calls == [setup.victim.signed.message.model_hash] * 2


def test_a_source_that_cannot_answer_costs_one_wait_per_ballot_not_one_per_winner(setup: Setup) -> None:
    """A ledger that is away (each ask waits out its timeout) must not hold a ballot for 8 timeouts."""
    calls: list[str] = []

    def away(model_hash: str) -> None:
        calls.append(model_hash)
        raise ActorUnavailable("ledger away", reason="timeout")

    fresh = validator(winners=away)
    won = frozenset({setup.victim.signed.message.model_hash, fake_hash("winner a"), fake_hash("winner b")})
    later = next_round(setup)
    honest = mined_by(honest_miner(THIEF), later.task, later.bundle, later.ctx)
    assert judge(later, honest, by=fresh, won=won)[0].verdict is Verdict.VALID
    assert len(calls) == 1


def test_a_model_voted_bad_transcript_never_becomes_a_reference(setup: Setup) -> None:
    """Its audit fails (nobody answers for its checkpoints), so a later disguise of it has nothing to match:
    the validator keeps only models it found valid after every check."""
    judge_ = validator()
    failing = TranscriptAudits(setup.bundle.train, miner_policy(MINIMAL.miner), {})  # no miner to ask
    (vote,) = judge(setup, setup.victim, by=judge_, audits=failing)
    assert vote.verdict is Verdict.BAD_TRANSCRIPT, vote.detail
    assert len(judge_._lineage.refs) == 0
    later = next_round(setup)
    (vote,) = judge(later, adversary(later, _attack("disguised-replay", setup.victim)), by=judge_)
    assert vote.verdict is Verdict.VALID, vote.detail


def test_a_miners_new_model_beside_its_own_earlier_winner_is_valid(setup: Setup, tmp_path: Path) -> None:
    """The same watermark key moves the host layer alike in every model a miner trains: never compared with
    its own earlier models, winners included (the attack suite's false positive before this rule)."""
    from tests.actors.test_validator_verdicts import VICTIM

    won, later = setup.victim, next_round(setup)
    judge_ = validator(winners=_store(tmp_path, won))
    judge(setup, won, by=judge_)
    again = mined_by(honest_miner(VICTIM), later.task, later.bundle, later.ctx)
    (vote,) = judge(later, again, by=judge_, won=frozenset({won.signed.message.model_hash}))
    assert vote.verdict is Verdict.VALID, vote.detail


def test_the_ledger_actor_hands_a_kept_winner_back_by_hash_and_nothing_else(setup: Setup, tmp_path: Path) -> None:
    """What ``LedgerWinners`` asks the ledger actor (built directly here): weights and metadata by hash; None
    for a hash it does not keep, a name that is no hash (never a path), or a file altered on disk."""
    from dlbc_ray.actors.ledger import Ledger
    from tests.builders import World

    ledger = Ledger(str(tmp_path / "ledger.sqlite"), genesis=World().genesis)
    won = setup.victim
    model_hash = won.signed.message.model_hash
    ledger.artifacts.put(won.weights, model_hash, metadata={"miner": won.signed.message.miner})  # as a block keeps it
    weights, metadata = ledger.artifact(model_hash)  # type: ignore[misc]
    assert checked((weights, metadata), model_hash) is not None and metadata["miner"] == won.signed.message.miner
    assert ledger.artifact("0" * 64) is None and ledger.artifact("../ledger.sqlite") is None
    path = ledger.artifacts.path(model_hash)
    path.write_bytes(path.read_bytes()[:-8] + b"\x00" * 8)  # a tensor's last bytes altered
    assert ledger.artifact(model_hash) is None


def test_a_restarted_validator_asks_for_the_newest_winners_first(setup: Setup) -> None:
    """Told winners with the heights they won at (as rounds tell it), a validator with an empty memory asks its
    source newest first, so the winners a thief is likeliest to copy are among the few it asks for per ballot."""
    asked: list[str] = []

    def record(model_hash: str) -> None:
        asked.append(model_hash)  # none kept here: every one is asked for

    won = {fake_hash("old"): 2, fake_hash("newest"): 40, fake_hash("middle"): 17}
    later = next_round(setup)
    honest = mined_by(honest_miner(THIEF), later.task, later.bundle, later.ctx)
    judge(later, honest, by=validator(winners=record), won=won)  # type: ignore[arg-type]
    assert asked == [fake_hash("newest"), fake_hash("middle"), fake_hash("old")]
