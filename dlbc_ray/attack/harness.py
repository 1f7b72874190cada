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

Each kind is one registration in ``dlbc_ray.attack.kinds`` (its plan, its round, its detector from
``attack.detectors``); how a trial is judged (false positives, honest winner kept, detected) is defined
in ``dlbc_ray.attack.judging``; the suite's own moves as a key holder are in ``attack.plays``.

Known gaps, run by name or with ``gaps`` (not in ``all``): none at present.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dlbc_ray.attack.judging import ADVERSARY, HONEST_MINERS, KindResult, Trial, TrialResult, judge, summarize
from dlbc_ray.attack.kinds import attack_kind, check_kinds
from dlbc_ray.config import MINIMAL, NetworkConfig, network_config
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import ConfigError
from dlbc_ray.runtime.home import Home
from dlbc_ray.schema import Signed, Task
from dlbc_ray.schema.round_messages import RoundReport

if TYPE_CHECKING:  # torch and Ray load only when a network is assembled
    from dlbc_ray.actors.adversary import MinerAttack
    from dlbc_ray.actors.liars import ValidatorLie

# The registered kinds (attack/kinds.py) when this module loads: what `dlbc-ray attack` lists.
KINDS = check_kinds("all")
KNOWN_GAPS = check_kinds("gaps")


def attack_config(window_s: float = 20.0) -> NetworkConfig:
    """MINIMAL with the adversary as a third miner and a short submission window (``late`` waits it out)."""
    consensus = MINIMAL.consensus.model_copy(update={"collect_timeout_s": window_s})
    return network_config(MINIMAL, miners=3, validators=4, consensus=consensus.model_dump())


# ------------------------------------------------------------------ network


class AttackNetwork:
    """One local network with the adversaries in place, reused by every kind and trial."""

    def __init__(self, home: Home, cfg: NetworkConfig | None = None) -> None:
        self.home, self.cfg = home, cfg or attack_config()
        self.net: Any = None
        self.last: Trial | None = None  # the latest trial, for tests and post-mortems
        self.other_chain: str | None = None  # plays.other_chain_id's second genesis

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
        # every validator honest until armed: liars lie; ``sample`` forces whose audit sees what (spliced)
        roles = {ADVERSARY: Role(AdversaryMiner, {"victims": victims}),
                 **{v.name: Role(AdversaryValidator) for v in ids.validators}}
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
        return self.round(self._task())

    def trial(self, kind: str, index: int) -> TrialResult:
        t0 = time.perf_counter()
        task = self._task()
        threat = attack_kind(kind)
        attack, lies = threat.plan(self, index, task)
        self._arm(attack, lies)
        try:
            before = self._height()
            report, refusals = threat.play(self, task)
            record = None if attack is None else self.get(self.handles[ADVERSARY].last_record.remote(),
                                                           "adversary record")
        finally:
            self._arm(None, {})
        block = self.get(self.net.ledger.blocks.remote(report.height, report.height + 1), "ledger")[0] \
            if report.committed and report.height is not None else None
        target = block.header.difficulty if block and block.header.difficulty is not None else \
            round(self.cfg.task.target * SCORE_SCALE)
        liars = tuple(name for name, lie in lies.items() if lie.kind != "sample")  # a forced sample is no lie
        self.last = Trial(kind, index, report, block, before, self._height(), record, self.keys, liars, target,
                          refusals)
        return judge(self.last, time.perf_counter() - t0)

    def earlier_winner(self) -> tuple[dict[str, Any], str]:
        """The latest winning weights in the artifact store and their mapping seed (mines one block if none)."""
        from dlbc_ray.ledger import ArtifactStore

        for _ in range(3):
            won = self.get(self.net.ledger.snapshot.remote(), "ledger").won_models
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

    def round(self, task: Signed[Task] | None) -> RoundReport:
        """A round on ``task``, or (None) on PoLe's standing task at the chain's difficulty."""
        from dlbc_ray.actors.round_parts import round_budget_s
        from dlbc_ray.runtime.network import run_round, standing_template

        timeout = round_budget_s(self.cfg.consensus)  # a dispute's trip included: a hung referee is not a lost round
        standing = None if task else standing_template(self.cfg, self.bundle)
        return run_round(self.net, task, self.data, timeout_s=timeout, standing=standing)

    def _arm(self, attack: MinerAttack | None, lies: dict[str, ValidatorLie]) -> None:
        calls = [self.handles[ADVERSARY].arm.remote(attack)]
        calls += [v.handle.arm.remote(lies.get(v.name)) for v in self.net.validators]
        self.get(calls, "arming adversaries")  # a thief steals while being armed: a few seconds

    def key(self, name: str) -> str:
        return self.keys[name]

    def refusal(self, ref: Any, what: str) -> str:
        """'accepted' when the call went through, else the reason it was refused."""
        from dlbc_ray.errors import DLBCError

        try:
            self.get(ref, what)
        except DLBCError as e:
            return e.reason or type(e).__name__
        return "accepted"

    def _height(self) -> int:
        return int(self.get(self.net.ledger.head.remote(), "ledger")["height"])

    @staticmethod
    def get(ref: Any, what: str) -> Any:
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
