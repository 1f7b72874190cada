"""The registry of attack kinds: each is one registration of how its trial is armed, played and judged.

``plan`` arms the adversaries for trial ``index`` (a ``MinerAttack`` for ``miner-2``, which of the
miner behaviours in ``actors/adversary.py`` it plays, and ``ValidatorLie``s by liar name); ``play``
runs the trial's round (the default: one round on the trial's task; some kinds act as a key holder
first, see ``plays``); ``detect`` reads the finished trial (``detectors``). A kind that reuses a
miner behaviour is one ``register_attack_kind`` call here; ``gap`` kinds run only by name or with
``gaps``. Ray and torch load only when a plan or play runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dlbc_ray.attack import detectors as d
from dlbc_ray.attack.judging import HONEST_MINERS, LIARS, LIE_CYCLE
from dlbc_ray.errors import ConfigError
from dlbc_ray.schema import Signed, Task, Verdict
from dlbc_ray.schema.round_messages import RoundReport

if TYPE_CHECKING:
    from dlbc_ray.actors.adversary import MinerAttack
    from dlbc_ray.actors.liars import ValidatorLie
    from dlbc_ray.attack.harness import AttackNetwork

Arms = tuple["MinerAttack | None", dict[str, "ValidatorLie"]]
Plan = Callable[["AttackNetwork", int, Signed[Task]], Arms]
Play = Callable[["AttackNetwork", Signed[Task]], tuple[RoundReport, dict[str, str]]]


def play_round(network: AttackNetwork, task: Signed[Task]) -> tuple[RoundReport, dict[str, str]]:
    """One real round on the trial's task; nothing refused besides it."""
    return network.round(task), {}


@dataclass(frozen=True)
class AttackKind:
    """One threat: how its adversaries are armed (``plan``), its round played, and its catch read."""

    name: str
    plan: Plan
    detect: d.Detect
    play: Play = play_round
    gap: bool = False  # a known gap: run by name or with 'gaps', not by 'all'


ATTACK_KINDS: dict[str, AttackKind] = {}


def register_attack_kind(kind: AttackKind) -> AttackKind:
    """Add ``kind`` (a name is registered once; 'all' and 'gaps' select kinds and are no kind)."""
    if kind.name in ATTACK_KINDS or kind.name in ("all", "gaps") or not kind.name:
        raise ValueError(f"attack kind {kind.name!r} is already registered or reserved")
    ATTACK_KINDS[kind.name] = kind
    return kind


def attack_kind(name: str) -> AttackKind:
    """The registered kind ``name``, or ConfigError naming the ones there are."""
    if name not in ATTACK_KINDS:
        raise ConfigError(f"unknown attack kind {name!r}; use 'all', 'gaps' or one of {', '.join(ATTACK_KINDS)}",
                          reason="kind")
    return ATTACK_KINDS[name]


def check_kinds(kind: str) -> tuple[str, ...]:
    """'all' (the kinds the defenses must stop), 'gaps' (known gaps), or one kind by name."""
    if kind in ("all", "gaps"):
        return tuple(k.name for k in ATTACK_KINDS.values() if k.gap == (kind == "gaps"))
    return (attack_kind(kind).name,)


# ------------------------------------------------------------------ plans


def miner(behaviour: str) -> Plan:
    """Arm ``miner-2`` to play ``behaviour`` (a key of adversary.PLAYS) as it is; no liar."""
    def plan(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
        from dlbc_ray.actors.adversary import MinerAttack

        return MinerAttack(behaviour), {}

    return plan


def thief(behaviour: str) -> Plan:
    """Thieves get the task when armed: they hold the likely winner's model when the round opens."""
    def plan(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
        from dlbc_ray.actors.adversary import MinerAttack

        return MinerAttack(behaviour, task=task, train=network.bundle.train), {}

    return plan


def reuser(behaviour: str) -> Plan:
    """Replays and their disguises: the latest winning weights and the seed they were mapped with."""
    def plan(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
        from dlbc_ray.actors.adversary import MinerAttack

        weights, seed = network.earlier_winner()
        return MinerAttack(behaviour, weights=weights, sml_seed=seed), {}

    return plan


def forger(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
    """A forger impersonates each honest miner in turn."""
    from dlbc_ray.actors.adversary import MinerAttack

    return MinerAttack("forged-signature", victim=HONEST_MINERS[index % len(HONEST_MINERS)]), {}


def prober(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
    from dlbc_ray.actors.adversary import MinerAttack

    return MinerAttack("secret-probe", rivals={n: network.handles[n] for n in HONEST_MINERS}), {}


def cross_chain(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
    from dlbc_ray.actors.adversary import MinerAttack
    from dlbc_ray.attack.plays import other_chain_id

    return MinerAttack("cross-chain-replay", chain_id=other_chain_id(network)), {}


def cycling_liar(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
    """``validator-3`` lies about ``miner-2``'s bait (an untrained, unmarked model every honest validator
    rejects): random scores, always approve, always reject, by turns."""
    from dlbc_ray.actors.adversary import MinerAttack
    from dlbc_ray.actors.liars import ValidatorLie

    return MinerAttack("bait"), {LIARS[0]: ValidatorLie(LIE_CYCLE[index % len(LIE_CYCLE)], seed=index)}


def equivocator(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
    from dlbc_ray.actors.adversary import MinerAttack
    from dlbc_ray.actors.liars import ValidatorLie

    return MinerAttack("bait"), {LIARS[0]: ValidatorLie("equivocate")}


def too_many_liars(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
    """f = 2 >= n/3: both liars reject the best submission."""
    from dlbc_ray.actors.adversary import MinerAttack
    from dlbc_ray.actors.liars import ValidatorLie

    return MinerAttack("bait"), {name: ValidatorLie("reject-best") for name in LIARS}


def splicer(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
    """One segment of an honest run spliced; ``validator-0``'s audit alone samples it (the others' samples are forced
    to the last segment only): its challenge, refereed by all, must refuse the run, never be outvoted 3 to 1."""
    from dlbc_ray.actors.adversary import MinerAttack
    from dlbc_ray.actors.liars import ValidatorLie

    names = ("validator-0", "validator-1", *LIARS)  # the attack network's four (harness.attack_config)
    return MinerAttack("spliced", segment=1), {n: ValidatorLie("sample", segments=(1,) if i == 0 else ())
                                               for i, n in enumerate(names)}


def no_miner(network: AttackNetwork, index: int, task: Signed[Task]) -> Arms:
    """The dropping proposer is the suite itself: no miner is armed."""
    return None, {}


# ------------------------------------------------------------------ plays


def standing_round(network: AttackNetwork, task: Signed[Task]) -> tuple[RoundReport, dict[str, str]]:
    """PoLe's standing task at the chain's difficulty instead of the trial's task."""
    return network.round(None), {}


def replayed_then_round(network: AttackNetwork, task: Signed[Task]) -> tuple[RoundReport, dict[str, str]]:
    from dlbc_ray.attack.plays import replay_from_another_chain

    refusals = replay_from_another_chain(network)
    return network.round(task), refusals


def oracle_then_round(network: AttackNetwork, task: Signed[Task]) -> tuple[RoundReport, dict[str, str]]:
    from dlbc_ray.attack.plays import ask_validators_for_marks

    refusals = ask_validators_for_marks(network)  # during the window: before the trial's round is decided
    return network.round(task), refusals


def censoring_proposer(network: AttackNetwork, task: Signed[Task]) -> tuple[RoundReport, dict[str, str]]:
    from dlbc_ray.attack.plays import drop_best_as_proposer

    return drop_best_as_proposer(network, task)


# ------------------------------------------------------------------ the kinds

_REJECTED_DERIVED = d.adversary_rejected(Verdict.DERIVED.value, Verdict.STOLEN.value)
for _kind in (
    AttackKind("thief", thief("thief"), d.adversary_rejected(Verdict.STOLEN.value, Verdict.DUPLICATE.value)),
    AttackKind("copy-noise", thief("copy-noise"), d.adversary_rejected(Verdict.STOLEN.value, Verdict.COPY.value)),
    AttackKind("random-weights", miner("random-weights"), d.never_wins),
    AttackKind("replay", reuser("replay"), d.adversary_rejected(Verdict.REPLAY.value, Verdict.STOLEN.value)),
    *(AttackKind(k, reuser(k), _REJECTED_DERIVED) for k in ("disguised-replay", "partial-reuse", "layer-reset",
                                                            "fine-tuned-replay", "pruned-replay")),
    AttackKind("distilled", reuser("distilled"), d.refused_for_its_transcript),
    AttackKind("forged-signature", forger, d.adversary_dropped(Verdict.BAD_SIGNATURE.value)),
    AttackKind("hash-mismatch", miner("hash-mismatch"), d.adversary_rejected(Verdict.HASH_MISMATCH.value)),
    AttackKind("wrong-task", miner("wrong-task"), d.adversary_dropped(Verdict.WRONG_TASK.value)),
    AttackKind("late", miner("late"), d.adversary_dropped(Verdict.LATE.value)),
    AttackKind("lying-validators", cycling_liar, d.liar_caught),
    AttackKind("equivocating-validator", equivocator, d.equivocation_evidenced),
    AttackKind("too-many-liars", too_many_liars, d.failed_safely),
    AttackKind("false-claim", miner("false-claim"), d.claim_ignored, play=standing_round),
    AttackKind("secret-probe", prober, d.nothing_leaked),
    AttackKind("cross-chain-replay", cross_chain, d.replays_refused, play=replayed_then_round),
    AttackKind("proposer-drop", no_miner, d.drop_refused, play=censoring_proposer),
    AttackKind("fake-transcript", miner("fake-transcript"), d.adversary_rejected(Verdict.BAD_TRANSCRIPT.value)),
    AttackKind("mark-oracle", no_miner, d.oracle_refused, play=oracle_then_round),
    AttackKind("spliced", splicer, d.adversary_rejected(Verdict.BAD_TRANSCRIPT.value)),
):
    register_attack_kind(_kind)
