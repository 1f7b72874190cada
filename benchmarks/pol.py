"""How often the transcript audit catches a distiller, per validator and per round (issue 11, kind ``distilled``).

    python benchmarks/pol.py [--trials N] [--quick] [--json]      (or: python -m benchmarks.pol)

A distiller trains a fresh model exactly as an honest miner trains (its own init, mapping layer and mark,
the round's derived data order, every checkpoint recorded and committed), but on the labels an earlier
winner (the teacher) predicts for the task's training inputs: ``AdversaryMiner`` armed with
``MinerAttack("distilled")``, the very play ``dlbc-ray attack distilled`` runs. Provenance does not name
it (its weights owe the teacher nothing); the transcript audit does, when it replays a segment whose
batches hold a label the teacher got wrong: the replay uses the task's labels and diverges at once.

Per trial (a new distiller key and round, so a new data order; the demo's settings: ``MinerConfig``,
``ProtectionConfig`` and ``TaskDefaults`` defaults, digits):

- ground truth: every segment replayed from the distiller's own checkpoints; a *dirty* segment does not
  land on the next checkpoint. Cross-checked against the labels (a segment is dirty iff one of its batches
  holds a teacher label that is not the task's);
- measured: 4 validators each audit with its own seed (Q sampled segments plus the last, as in a round);
  without disputes a round rejects the model when at least 2 of 4 vote ``bad_transcript`` (nobody reaches
  the 3 valid votes a 4-validator quorum needs) and names it ``bad_transcript`` when at least 3 do. With
  disputes (``consensus.dispute``, what rounds run) each exact replay mismatch is a challenge the other
  validators referee (``referee_segment``: they replay that one segment); the round refuses the model
  when the bad votes plus the confirmed referees reach 3 of 4, so one validator's catch suffices;
- computed from the dirty count: a validator misses with C(n-1-d, Q)/C(n-1, Q) when the last segment is
  clean (d dirty among the n-1 others) and never when it is dirty; the round's figures follow (4 validators
  draw independently); the same for larger Q. With disputes a round refuses iff one validator catches:
  1 - (1 - p)^4. The escape probability of a one-segment splice (``consensus.dispute``): with disputes
  (1 - Q/(n-1))^V, without them the chance that at most V - quorum validators sample it.

An honest miner of the same round is audited alike in the first trials (false positives: target 0).
Times are not the point here; the machine is shared.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import MINER, PROTECTION, TASK, command_line, emit, identity, parse_flags, section, table
from dlbc_ray import crypto
from dlbc_ray.actors.adversary import AdversaryMiner, MinerAttack
from dlbc_ray.actors.miner import Miner
from dlbc_ray.consensus.dispute import (compute_challenge, judge_challenge, splice_escape_probability,
                                        splice_escape_without_disputes)
from dlbc_ray.consensus.quorum import quorum_size
from dlbc_ray.consensus.transcript import checkpoint_steps, compute_hyperparameters, escape_probability
from dlbc_ray.models.data import holdout, load_builtin
from dlbc_ray.models.disguise import teacher_labels
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.protect import mapping_seed, mark_secret
from dlbc_ray.models.replay import Committed, Secrets, audit, derive_for, referee_segment, replay
from dlbc_ray.models.transcript import epoch_order
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema import Signed, Task
from dlbc_ray.schema.round_messages import RoundContext, WindowClose

CHAIN = hashlib.sha256(b"pol bench chain").hexdigest()
PROPOSER = identity("consensus", 0)
VALIDATORS = 4
QS = (1, 2, 4, 8, 16)
POLICY = compute_hyperparameters(MINER.batch_size, MINER.lr, MINER.optimizer, MINER.val_fraction)


@dataclass(frozen=True)
class Trial:
    index: int
    segments: int  # n
    dirty: tuple[int, ...]  # by replay
    dirty_by_labels: tuple[int, ...]
    wrong_labels: float  # share of the fit examples the teacher labels otherwise
    votes_bad: int  # of VALIDATORS, measured
    honest_bad: int | None  # the honest control's bad votes (None: not run)
    refused_with_disputes: bool = False  # bad votes plus confirmed referees reach a quorum (measured)


def _ctx(task: Signed[Task], name: str) -> RoundContext:
    return RoundContext(chain_id=CHAIN, round_id=hashlib.sha256(name.encode()).hexdigest(),
                        task_id=crypto.message_hash(task.message), base_height=1,
                        base_hash=hashlib.sha256(b"head").hexdigest(), eval_seed=0, submit_deadline_ms=10**13)


def _signed(ctx: RoundContext) -> Any:
    return crypto.sign(PROPOSER, ctx, CHAIN)


def _close(ctx: RoundContext, commit: str) -> Signed[WindowClose]:
    return crypto.sign(PROPOSER, WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=10**13,
                                             opens=(commit,), final=True), CHAIN)


def _mine(miner: Miner, task: Signed[Task], train: Any, ctx: RoundContext) -> tuple[Any, Any]:
    mined, weights = miner.mine(task, train, _signed(ctx))
    commit = mined.signed.message.commit
    return mined.signed.message, miner.reveal(_close(ctx, commit), commit)


def _audited(miner: Miner, task: Signed[Task], train: Any, ctx: RoundContext, sub: Any) -> tuple[Committed, Any]:
    """What a validator holds for ``sub``: the miner's commitment and openings, and the run it derives itself."""
    opened = _close(ctx, sub.commit)
    header, root, _ = miner.transcript_opening(opened, sub.commit, 0)
    committed = Committed(sub.transcript_root, header, root,
                          lambda i: miner.transcript_opening(opened, sub.commit, i)[2])
    who = miner.identity
    secrets = Secrets(mapping_seed(who, ctx.task_id, ctx.round_id), mark_secret(who), PROTECTION)
    return committed, derive_for(task.message, ctx.task_id, ctx.round_id, train, sub, secrets, POLICY)


def dirty_by_replay(committed: Committed, derived: Any) -> tuple[int, ...]:
    """Every segment replayed from the committed checkpoint before it: those that miss the one after."""
    header = committed.header
    steps = checkpoint_steps(header.steps, header.interval)
    opened = [committed.fetch(i)[2] for i in range(len(steps))]
    dirty = []
    for s in range(len(steps) - 1):
        end = replay(derived.make_system, derived.fit, header, opened[s], steps[s + 1])
        if any(not np.array_equal(end.weights[k], opened[s + 1].weights[k]) for k in end.weights):
            dirty.append(s)
    return tuple(dirty)


def dirty_by_labels(header: Any, wrong: np.ndarray) -> tuple[int, ...]:
    """Segments whose batches (the derived order) hold an example whose taught label is not the task's."""
    steps = checkpoint_steps(header.steps, header.interval)
    dirty = []
    for s in range(len(steps) - 1):
        for step in range(steps[s], steps[s + 1]):
            epoch, batch = divmod(step, header.steps_per_epoch)
            index = epoch_order(header.seed, epoch, header.examples)[batch * header.batch_size:
                                                                      (batch + 1) * header.batch_size]
            if wrong[index].any():
                dirty.append(s)
                break
    return tuple(dirty)


def refused_with_disputes(committed: Committed, derived: Any, outcomes: list[Any]) -> bool:
    """The round's dispute, played: each exact mismatch is challenged; every validator that passed the audit
    referees each challenge by replaying that one segment; the model is refused when the validators voting
    ``bad_transcript`` (by their own audit or a confirmed challenge) reach a quorum."""
    keys = [identity("validator", v).public_key for v in range(VALIDATORS)]
    challenges = [c for k, o in zip(keys, outcomes)
                  if (c := compute_challenge(committed.root or "0" * 64, o, k)) is not None]
    bad = sum(not o.passed for o in outcomes)
    for k, o in zip(keys, outcomes):
        if o.passed and any(judge_challenge(c, **_seen(referee_segment(committed, derived, c.segment))).confirmed
                            for c in challenges if c.challenger != k):
            bad += 1
    return bad >= quorum_size(VALIDATORS)


def _seen(r: Any) -> dict[str, Any]:
    return {"expected": r.expected, "replayed": r.replayed, "exact": r.exact, "problem": r.problem}


def caught_by_one(n: int, dirty: tuple[int, ...], q: int) -> float:
    """P(one validator's audit replays a dirty segment): the last always, Q of the n-1 others sampled."""
    if n - 1 in dirty:
        return 1.0
    return 1.0 - escape_probability(len(dirty), n - 1, q)


def at_least(k: int, p: float, v: int = VALIDATORS) -> float:
    return sum(math.comb(v, j) * p**j * (1 - p) ** (v - j) for j in range(k, v + 1))


def run(trials: int, honest_controls: int) -> list[Trial]:
    bundle = load_builtin(TASK.dataset)
    task = make_task(identity("requester", 0), TASK, bundle, nonce=1, created_ms=1, chain_id=CHAIN)
    teacher = Miner(MINER, identity=identity("teacher", 0), protection=PROTECTION, proposer=PROPOSER.public_key)
    t_ctx = _ctx(task, "teacher round")
    mined, weights = teacher.mine(task, bundle.train, _signed(t_ctx))
    t_reveal = teacher.reveal(_close(t_ctx, mined.signed.message.commit), mined.signed.message.commit)
    attack = MinerAttack("distilled", weights=weights, sml_seed=t_reveal.message.sml_seed)
    params = PROTECTION.transcript
    out = []
    for i in range(trials):
        ctx = _ctx(task, f"round {i}")
        thief = AdversaryMiner(MINER, identity=identity("distiller", i), protection=PROTECTION,
                               proposer=PROPOSER.public_key)
        thief.arm(attack)
        sub, _ = _mine(thief, task, bundle.train, ctx)
        committed, derived = _audited(thief, task, bundle.train, ctx, sub)
        seeds = [hashlib.sha256(f"pol|{i}|validator {v}".encode()).digest() for v in range(VALIDATORS)]
        outcomes = [audit(committed, derived, params, seed)[0] for seed in seeds]
        bad = sum(not o.passed for o in outcomes)
        header = committed.header
        fit_true, _ = holdout(bundle.train, MINER.val_fraction, header.seed)
        spec = task.message
        net = build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes)
        labels = teacher_labels(net, weights, bytes.fromhex(attack.sml_seed or ""), spec.model.name,
                                spec.dataset.input_shape, bundle.train)
        fit_taught, _ = holdout(labels, MINER.val_fraction, header.seed)
        wrong = fit_taught.y != fit_true.y
        honest_bad = None
        if i < honest_controls:
            honest = Miner(MINER, identity=identity("honest", i), protection=PROTECTION, proposer=PROPOSER.public_key)
            h_sub, _ = _mine(honest, task, bundle.train, ctx)
            h_committed, h_derived = _audited(honest, task, bundle.train, ctx, h_sub)
            honest_bad = sum(not audit(h_committed, h_derived, params, seed)[0].passed for seed in seeds)
        n = len(checkpoint_steps(header.steps, header.interval)) - 1
        out.append(Trial(i, n, dirty_by_replay(committed, derived), dirty_by_labels(header, wrong),
                         float(wrong.mean()), bad, honest_bad, refused_with_disputes(committed, derived, outcomes)))
    return out


def figures(trials: list[Trial]) -> dict[str, Any]:
    q = PROTECTION.transcript.segments
    per_v = [caught_by_one(t.segments, t.dirty, q) for t in trials]
    fig: dict[str, Any] = {
        "q": q, "validators": VALIDATORS, "trials": len(trials),
        "segments": statistics.median(t.segments for t in trials),
        "dirty_share_median": statistics.median(len(t.dirty) / t.segments for t in trials),
        "last_segment_dirty": sum(t.segments - 1 in t.dirty for t in trials),
        "labels_agree_with_replay": sum(t.dirty == t.dirty_by_labels for t in trials),
        "wrong_labels_median": statistics.median(t.wrong_labels for t in trials),
        "measured": {"validator_votes_bad": sum(t.votes_bad for t in trials) / (VALIDATORS * len(trials)),
                     "rounds_rejected": sum(t.votes_bad >= 2 for t in trials),
                     "rounds_named_bad_transcript": sum(t.votes_bad >= 3 for t in trials),
                     "rounds_refused_with_disputes": sum(t.refused_with_disputes for t in trials)},
        "computed": {f"Q={k}": {"validator": statistics.mean(caught_by_one(t.segments, t.dirty, k) for t in trials),
                                "round_rejected": statistics.mean(at_least(2, caught_by_one(t.segments, t.dirty, k))
                                                                  for t in trials),
                                "round_named": statistics.mean(at_least(3, caught_by_one(t.segments, t.dirty, k))
                                                               for t in trials),
                                "round_refused_with_disputes": statistics.mean(
                                    at_least(1, caught_by_one(t.segments, t.dirty, k)) for t in trials)} for k in QS},
        "splice_escape": {f"Q={k}": {"with_disputes": splice_escape_probability(n, k, VALIDATORS),
                                     "without": splice_escape_without_disputes(n, k, VALIDATORS)}
                          for k in QS for n in [int(statistics.median(t.segments for t in trials))]},
        "computed_validator_at_default_q": statistics.mean(per_v),
        "honest_false_positive_votes": sum(t.honest_bad or 0 for t in trials),
        "honest_audits": VALIDATORS * sum(t.honest_bad is not None for t in trials),
        "rows": [t.__dict__ for t in trials],
    }
    return fig


def report(fig: dict[str, Any]) -> str:
    m, n = fig["measured"], fig["trials"]
    rows = [(f"Q={k}" + (" (default)" if k == fig["q"] else ""), f"{v['validator']:.3f}", f"{v['round_rejected']:.4f}",
             f"{v['round_named']:.3f}", f"{v['round_refused_with_disputes']:.4f}")
            for k, v in ((int(k[2:]), v) for k, v in fig["computed"].items())]
    splices = [(k, f"{v['without']:.3f}", f"{v['with_disputes']:.3f}") for k, v in fig["splice_escape"].items()]
    return "\n".join([
        f"distillation vs the transcript audit: {n} trials, {fig['validators']} validators, digits mlp (demo settings)",
        f"segments per transcript (median) {fig['segments']}; dirty (replay diverges) median "
        f"{100 * fig['dirty_share_median']:.0f}%; last segment dirty in {fig['last_segment_dirty']}/{n}; "
        f"teacher labels not the task's: {100 * fig['wrong_labels_median']:.1f}% (median)",
        f"dirty by labels == dirty by replay in {fig['labels_agree_with_replay']}/{n} trials",
        section("measured (real audits, Q = %d)" % fig["q"], table(
            ("validator votes bad_transcript", "rounds rejected (>= 2 of 4)", "rounds named bad_transcript (>= 3)",
             "refused with disputes (refereed)"),
            [(f"{100 * m['validator_votes_bad']:.0f}%", f"{m['rounds_rejected']}/{n}",
              f"{m['rounds_named_bad_transcript']}/{n}", f"{m['rounds_refused_with_disputes']}/{n}")])),
        section("computed from each trial's dirty segments (mean over trials; target 1.00)",
                table(("Q", "one validator", "round rejected", "round named", "refused with disputes"), rows)),
        section(f"one spliced segment (not the last) of {fig['segments']} escapes {fig['validators']} validators "
                "(consensus.dispute; target: as small as Q allows)",
                table(("Q", "without disputes", "with disputes"), splices)),
        f"\nhonest control: {fig['honest_false_positive_votes']} bad votes of {fig['honest_audits']} audits (target 0)",
        f"\n{fig['command']}  ({fig['seconds']:.0f} s)",
    ])


def main(argv: list[str] | None = None) -> None:
    args = parse_flags(__doc__.splitlines()[0], argv,
                       lambda p: p.add_argument("--trials", type=int, default=10, help="distillers (>= 10)"))
    trials = 3 if args.quick else args.trials
    started = time.perf_counter()
    fig = figures(run(trials, honest_controls=min(3, trials)))
    fig.update(command=command_line(), seconds=time.perf_counter() - started)
    emit(args.json, fig, lambda: report(fig))


if __name__ == "__main__":
    main()
