"""The adversary suite: each threat of DESIGN.md played for real against a local network.

One network serves every kind and trial: miners ``miner-0`` and ``miner-1`` are honest,
``miner-2`` is an ``AdversaryMiner``, ``validator-0``/``-1`` are honest and ``validator-2``
/``-3`` are ``AdversaryValidator``s (honest until armed). One honest round runs first (every
actor warm; a winner for ``replay``). Before each trial the suite arms the adversaries for
one kind and disarms them after; each trial is one real round on a fresh task. In the
validator kinds ``miner-2`` sends *bait*: an untrained, unmarked model every honest validator
rejects, so that an "always approve" liar has something to lie about.

How the adversaries play (adversary.py): the thief and the copier are armed with the task,
re-derive both honest models (training is deterministic) and take the one with the best
claimed score, so they submit first; they get the weights only, never a victim's mapping
seed, so they commit to their own; the copier adds 1% noise and settles its own mark to
the end, as a capable adversary would; random weights and replays also carry their own mark.
The secret prober holds the honest miners' actor handles and, while the window is open,
calls every method they expose with every argument it can make (its own window closes,
one claiming the proposer's key, real closes of earlier rounds).
The cross-chain replayer holds keys that also sign on another chain (the same identities
under another genesis): the requester's transfer and task signed there are sent to the
consensus actor here, and ``miner-2`` signs its honestly trained submission for that chain.
The dropping proposer is the suite itself, holding the consensus key: it runs an honest
round with the real miners and validators, signs the block without the best submission
(``drop_best``) and hands it to the ledger before the honest block.

How each trial is judged (false positives, honest winner kept, detected per kind) is defined in
``dlbc_ray.attack.judging``.

Known gaps, run by name or with ``gaps`` (not in ``all``): none at present.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dlbc_ray.config import MINIMAL, NetworkConfig, network_config
from dlbc_ray.consensus.baas import compute_delivered
from dlbc_ray.consensus.decision import decide
from dlbc_ray.consensus.proposal import seal
from dlbc_ray.consensus.settlement import compute_settlement, debit_escrow
from dlbc_ray.consensus.state import ChainState
from dlbc_ray.consensus.validation import get_block_task
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import ConfigError
from dlbc_ray.runtime.home import Home
from dlbc_ray.attack.judging import (ADVERSARY, HONEST_MINERS, LIARS, LIE_CYCLE, KindResult, Trial, TrialResult,
                                     judge, summarize)
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import Block, PostTaskTx, Signed, Task
from dlbc_ray.schema.round_messages import RoundReport, SubmissionOutcome

if TYPE_CHECKING:  # torch and Ray load only when a network is assembled
    from dlbc_ray.actors.adversary import MinerAttack
    from dlbc_ray.actors.liars import ValidatorLie

REUSES = ("replay", "disguised-replay", "partial-reuse", "layer-reset", "fine-tuned-replay", "pruned-replay",
          "distilled")
KINDS = ("thief", "copy-noise", "random-weights", *REUSES, "forged-signature",
         "hash-mismatch", "wrong-task", "late", "lying-validators", "equivocating-validator", "too-many-liars",
         "false-claim", "secret-probe",
         "cross-chain-replay", "proposer-drop", "fake-transcript")
KNOWN_GAPS: tuple[str, ...] = ()


def attack_config(window_s: float = 20.0) -> NetworkConfig:
    """MINIMAL with the adversary as a third miner and a short submission window (``late`` waits it out)."""
    consensus = MINIMAL.consensus.model_copy(update={"collect_timeout_s": window_s})
    return network_config(MINIMAL, miners=3, validators=4, consensus=consensus.model_dump())


def check_kinds(kind: str) -> tuple[str, ...]:
    """'all' (the kinds the defenses must stop), 'gaps' (known gaps), or one kind by name."""
    if kind in ("all", "gaps"):
        return KINDS if kind == "all" else KNOWN_GAPS
    if kind not in KINDS + KNOWN_GAPS:
        raise ConfigError(f"unknown attack kind {kind!r}; use 'all', 'gaps' or one of "
                          f"{', '.join(KINDS + KNOWN_GAPS)}", reason="kind")
    return (kind,)


def drop_best(block: Block, state: ChainState, proposer: Identity) -> Block:
    """What a proposer that censors the winner signs: ``block`` without its best submission, re-decided and
    re-settled over the rest, its validators' signed ballots left as they signed them (a ballot cannot lose a
    vote without losing its signature), so that only the ballots give it away (pure; ``state`` is the chain
    after the block's parent)."""
    task, post_index = get_block_task(block, state)
    culprits = {e.first.message.validator for e in block.evidence}
    subs, ballots = [s.message for s in block.submissions], [b.message for b in block.ballots]
    honest = decide(subs, ballots, state.params.validators, task.target, excluded=culprits, won=state.won_models)
    ranked = sorted((t for t in honest.tallies if t.accepted), key=lambda t: t.score or 0, reverse=True)
    best = honest.winner.commit if honest.winner else ranked[0].commit if ranked else None
    if best is None:
        raise ValueError(f"block {block.header.height} accepted no submission to drop")
    kept = tuple(s for s in block.submissions if s.message.commit != best)
    rest = [b.model_copy(update={"votes": tuple(v for v in b.votes if v.commit != best)}) for b in ballots]
    decision = decide([s.message for s in kept], rest, state.params.validators, task.target, excluded=culprits,
                      won=state.won_models)
    balances = debit_escrow(state.balances, task, posted_here=post_index >= 0)
    task_id = block.header.task_id or ""
    posting = tuple(tx for tx in block.txs if isinstance(tx, PostTaskTx))
    txs = posting + compute_settlement(task_id, task, [s.message for s in kept], decision, state.params, balances)
    header = block.header.model_copy(update=compute_delivered(decision, None))
    return seal(header, block.model_copy(update={"submissions": kept, "txs": txs}), proposer)


# ------------------------------------------------------------------ network


class AttackNetwork:
    """One local network with the adversaries in place, reused by every kind and trial."""

    def __init__(self, home: Home, cfg: NetworkConfig | None = None) -> None:
        self.home, self.cfg = home, cfg or attack_config()
        self.net: Any = None
        self.last: Trial | None = None  # the latest trial, for tests and post-mortems
        self._other_chain: str | None = None

    def __enter__(self) -> AttackNetwork:
        import ray

        from dlbc_ray.actors.adversary import AdversaryMiner
        from dlbc_ray.actors.liars import AdversaryValidator
        from dlbc_ray.actors.round_runner import TaskData
        from dlbc_ray.models.data import load_builtin
        from dlbc_ray.runtime.network import Role, assemble, check_home, load_identities

        check_home(self.home, self.cfg)
        ids = load_identities(self.home, self.cfg)
        victims = {i.name: i for i in ids.miners if i.name in HONEST_MINERS}
        roles = {ADVERSARY: Role(AdversaryMiner, {"victims": victims}),
                 **{name: Role(AdversaryValidator) for name in LIARS}}
        self.net = assemble(self.cfg, self.home, ids, roles=roles)
        self.bundle = load_builtin(self.cfg.task.dataset, cache_dir=self.home.datasets)
        self.data = TaskData(train=ray.put(self.bundle.train), test=ray.put(self.bundle.test))
        members = self.net.miners + self.net.validators
        self.handles = {m.name: m.handle for m in members}
        self.keys = {m.name: m.public_key for m in members}
        return self

    def __exit__(self, *exc: object) -> None:
        from dlbc_ray.runtime.network import teardown

        if self.net is not None:
            teardown(self.net)

    # -------------------------------------------------------------- rounds

    def warm_up(self) -> RoundReport:
        """One round with everyone honest: every actor warm, and a winner for ``replay`` to replay."""
        return self._round(self._task())

    def trial(self, kind: str, index: int) -> TrialResult:
        t0 = time.perf_counter()
        task = self._task()
        attack, lies = self.plan(kind, index, task)
        self._arm(attack, lies)
        refusals: dict[str, str] = {}
        try:
            before = self._height()
            if kind == "cross-chain-replay":
                refusals = self.replay_from_another_chain()
            if kind == "proposer-drop":
                report, refusals = self.drop_best_as_proposer(task)
            else:
                report = self._round(None if kind == "false-claim" else task)
            record = None if attack is None else self._get(self.handles[ADVERSARY].last_record.remote(),
                                                           "adversary record")
        finally:
            self._arm(None, {})
        block = self._get(self.net.ledger.blocks.remote(report.height, report.height + 1), "ledger")[0] \
            if report.committed and report.height is not None else None
        target = block.header.difficulty if block and block.header.difficulty is not None else \
            round(self.cfg.task.target * SCORE_SCALE)
        self.last = Trial(kind, index, report, block, before, self._height(), record, self.keys, tuple(lies), target,
                          refusals)
        return judge(self.last, time.perf_counter() - t0)

    def plan(self, kind: str, index: int, task: Signed[Task]) -> tuple[MinerAttack | None, dict[str, ValidatorLie]]:
        """The adversaries' parts in trial ``index`` of ``kind`` on ``task``.

        Thieves get the task when armed, so they hold the likely winner's model when the round
        opens and always submit first (the strongest thief); a forger impersonates each honest
        miner in turn. The dropping proposer is the suite itself: no miner is armed.
        """
        from dlbc_ray.actors.adversary import MinerAttack
        from dlbc_ray.actors.liars import ValidatorLie

        if kind in ("thief", "copy-noise"):
            return MinerAttack(kind, task=task, train=self.bundle.train), {}  # type: ignore[arg-type]
        if kind == "forged-signature":
            return MinerAttack(kind, victim=HONEST_MINERS[index % len(HONEST_MINERS)]), {}
        if kind in REUSES:
            weights, seed = self.earlier_winner()
            return MinerAttack(kind, weights=weights, sml_seed=seed), {}  # type: ignore[arg-type]
        if kind == "secret-probe":
            return MinerAttack(kind, rivals={n: self.handles[n] for n in HONEST_MINERS}), {}
        if kind == "cross-chain-replay":
            return MinerAttack(kind, chain_id=self.other_chain_id()), {}
        if kind == "proposer-drop":
            return None, {}
        if kind in ("random-weights", "hash-mismatch", "wrong-task", "late", "false-claim", "fake-transcript"):
            return MinerAttack(kind), {}  # type: ignore[arg-type]
        bait = MinerAttack("bait")
        if kind == "lying-validators":
            return bait, {LIARS[0]: ValidatorLie(LIE_CYCLE[index % len(LIE_CYCLE)], seed=index)}  # type: ignore[arg-type]
        if kind == "equivocating-validator":
            return bait, {LIARS[0]: ValidatorLie("equivocate")}
        if kind == "too-many-liars":
            return bait, {name: ValidatorLie("reject-best") for name in LIARS}
        raise ConfigError(f"unknown attack kind {kind!r}", reason="kind")

    def other_chain_id(self) -> str:
        """The chain id of a second genesis with this network's identities, made a moment later."""
        from dlbc_ray.actors.round_runner import now_ms
        from dlbc_ray.consensus import make_genesis
        from dlbc_ray.runtime.network import genesis_params

        if self._other_chain is None:
            ids, when = self.net.identities, now_ms()
            self._other_chain = make_genesis(genesis_params(ids, self.cfg, when), ids.consensus, when).header.chain_id
        if self._other_chain == self.net.chain_id:
            raise ConfigError("the second genesis has this chain's id", reason="chain_id")
        return self._other_chain

    def replay_from_another_chain(self) -> dict[str, str]:
        """The requester's transfer to the adversary and a task, both signed for the other chain, sent to the
        consensus actor here; returns what became of each ('accepted' or the reason refused)."""
        from dlbc_ray import crypto
        from dlbc_ray.actors.round_runner import now_ms
        from dlbc_ray.runtime.network import make_task
        from dlbc_ray.schema import Transfer

        requester, other = self.net.identities.requester, self.other_chain_id()
        nonce = self._get(self.net.ledger.snapshot.remote(), "ledger").nonces.get(requester.public_key, 0)
        transfer = crypto.sign(requester, Transfer(sender=requester.public_key, recipient=self.key(ADVERSARY),
                                                   amount=1, nonce=nonce), other)
        task = make_task(requester, self.cfg.task, self.bundle, nonce=time.time_ns(), created_ms=now_ms(),
                         chain_id=other)
        consensus = self.net.consensus
        return {"transfer": self._refusal(consensus.submit_transfer.remote(transfer), "transfer"),
                "task": self._refusal(consensus.submit_task.remote(task, self.data.train, self.data.test), "task")}

    def drop_best_as_proposer(self, task: Signed[Task]) -> tuple[RoundReport, dict[str, str]]:
        """Play the proposer with its own key: an honest round of the honest miners, then the block without
        its best submission (``drop_best``) to the ledger, then the honest block of the same round."""
        import threading

        from dlbc_ray import crypto
        from dlbc_ray.actors.round_runner import RoundRunner, RoundState, miner_policy, now_ms
        from dlbc_ray.consensus import propose_task_block
        from dlbc_ray.consensus.ballot import compute_round_id
        from dlbc_ray.errors import InvalidBlock

        proposer, ledger = self.net.identities.consensus, self.net.ledger
        base = self._get(ledger.snapshot.remote(), "ledger")
        task_id = crypto.message_hash(task.message)
        state = RoundState(task_id, compute_round_id(task_id, base.head_hash, time.time_ns()))
        miners = [m for m in self.net.miners if m.name in HONEST_MINERS]
        result = RoundRunner(self.cfg.consensus, task=task, data=self.data, miners=miners,
                             validators=self.net.validators, base=base, state=state, lock=threading.Lock(),
                             proposer=proposer, policy=miner_policy(self.cfg.miner)).run()
        honest, decision = propose_task_block(base, task, [a.signed for a in result.arrivals], result.ballots, proposer,
                                              now_ms(), state.round_id)
        refused = {"block without the best submission": self._refusal(
            ledger.import_block.remote(drop_best(honest, base, proposer)), "forged block")}
        try:
            imported = self._get(ledger.import_block.remote(honest), "ledger")
        except InvalidBlock as e:
            return RoundReport(height=None, block_hash=None, task_id=task_id, winner=None, score=None,
                               committed=False, failure=str(e), outcomes=tuple(result.outcomes)), refused
        winner = decision.winner
        if winner is not None:  # kept like the consensus actor keeps it: ``replay`` replays the latest winner
            arrival = next(a for a in result.arrivals if a.signed.message.commit == winner.commit)
            seed = {"sml_seed": arrival.reveal.message.sml_seed} if arrival.reveal else {}
            self._get(ledger.store_artifact.remote(result.weight_refs[winner.commit], winner.model_hash,
                                                   {"task_id": task_id, "miner": winner.miner, **seed}), "artifacts")
        outcomes = tuple(SubmissionOutcome(miner=a.signed.message.miner, commit=a.signed.message.commit,
                                           verdict=t.verdict.value if t.verdict else "undecided", score=t.score)
                         for a, t in zip(result.arrivals, decision.tallies))
        return RoundReport(height=imported.height, block_hash=imported.hash, prev_hash=imported.prev_hash,
                           task_id=task_id, winner=imported.winner, score=decision.score, committed=True,
                           outcomes=tuple(result.outcomes) + outcomes, timings=result.timings), refused

    def earlier_winner(self) -> tuple[dict[str, Any], str]:
        """The latest winning weights in the artifact store and their mapping seed (mines one block if none)."""
        from dlbc_ray.ledger import ArtifactStore

        for _ in range(3):
            won = self._get(self.net.ledger.snapshot.remote(), "ledger").won_models
            if won:
                model_hash = max(won, key=won.get)
                store = ArtifactStore(self.home.artifacts)
                return store.get(model_hash), store.metadata(model_hash)["sml_seed"]
            self.warm_up()
        raise ConfigError("three honest rounds produced no winner to replay", reason="no_winner")

    def _task(self) -> Signed[Task]:
        from dlbc_ray.actors.round_runner import now_ms
        from dlbc_ray.runtime.network import make_task

        return make_task(self.net.identities.requester, self.cfg.task, self.bundle, nonce=time.time_ns(),
                         created_ms=now_ms(), chain_id=self.net.chain_id)

    def _round(self, task: Signed[Task] | None) -> RoundReport:
        """A round on ``task``, or (None) on PoLe's standing task at the chain's difficulty."""
        from dlbc_ray.runtime.network import run_round, standing_template

        timeout = self.cfg.consensus.collect_timeout_s + self.cfg.consensus.validate_timeout_s + 120
        standing = None if task else standing_template(self.cfg, self.bundle)
        return run_round(self.net, task, self.data, timeout_s=timeout, standing=standing)

    def _arm(self, attack: MinerAttack | None, lies: dict[str, ValidatorLie]) -> None:
        calls = [self.handles[ADVERSARY].arm.remote(attack)]
        calls += [self.handles[name].arm.remote(lies.get(name)) for name in LIARS]
        self._get(calls, "arming adversaries")  # a thief steals while being armed: a few seconds

    def key(self, name: str) -> str:
        return self.keys[name]

    def _refusal(self, ref: Any, what: str) -> str:
        """'accepted' when the call went through, else the reason it was refused."""
        from dlbc_ray.errors import DLBCError

        try:
            self._get(ref, what)
        except DLBCError as e:
            return e.reason or type(e).__name__
        return "accepted"

    def _height(self) -> int:
        return int(self._get(self.net.ledger.head.remote(), "ledger")["height"])

    @staticmethod
    def _get(ref: Any, what: str) -> Any:
        from dlbc_ray.actors._ray import get

        return get(ref, timeout=60, what=what)


def run_attacks(kinds: Sequence[str], trials: int, home: Home, *, cfg: NetworkConfig | None = None,
                on_trial: Callable[[TrialResult], None] | None = None,
                on_stage: Callable[[str], None] = lambda text: None) -> list[KindResult]:
    """``trials`` rounds of each kind on one local network in ``home``; starts and stops Ray if none is up."""
    import ray

    from dlbc_ray.runtime.network import start_local_ray

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {trials})", reason="trials")
    cfg = cfg or attack_config()
    on_stage("starting a local Ray cluster")
    owns = start_local_ray(home, cfg)
    try:
        on_stage("starting 2 honest miners, 1 adversary, 4 validators (2 of them switchable liars)")
        with AttackNetwork(home, cfg) as network:
            on_stage("warm-up round (everyone honest)")
            network.warm_up()
            results = []
            for kind in kinds:
                done = []
                for i in range(trials):
                    on_stage(f"{kind}: trial {i + 1}/{trials}")
                    done.append(network.trial(kind, i))
                    if on_trial:
                        on_trial(done[-1])
                results.append(summarize(kind, done))
            return results
    finally:
        if owns:
            ray.shutdown()
