"""A validator's memory of earlier models, and the provenance check against it (``derived``).

``Lineage`` keeps, per (dataset, architecture), the earlier valid models worth comparing against
(``fingerprint.ReferenceSet``: the last winners and the best-scored recent others), each task
family's probes, and the winners it read back from the chain (``actors.winners``). The validator
hands it each round's valid models after the near-copy rule; a model that computes what an earlier
one computes, or keeps one of its layers' learned weights, is judged ``derived`` (the rule is
``consensus.provenance``). What passes is remembered only after every other check, the
transcript audit included (``remember``): a model voted ``bad_transcript`` is nobody's reference.

Not an actor: state held by one, behind the validator's lock; no method hands any of it out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from dlbc_ray.actors.winners import WinnerSource, checked
from dlbc_ray.consensus.provenance import check_derived
from dlbc_ray.errors import DLBCError
from dlbc_ray.models import sml
from dlbc_ray.models.data import Split
from dlbc_ray.models.fingerprint import (Fingerprint, Reference, ReferenceSet, Similarity, compare, fingerprint,
                                         fingerprint_model, null_fingerprints, probe_inputs, weight_similarity)
from dlbc_ray.models.nets import build_task_net, checked_kwargs
from dlbc_ray.models.protect import mapping_layer
from dlbc_ray.models.weights import check_architecture, to_numpy
from dlbc_ray.schema import Submission, Task, Verdict
from dlbc_ray.schema.round_messages import RoundContext


class Judged(Protocol):
    """What the validator knows of one submission when provenance runs (``judging.Judged``)."""

    sub: Submission
    weights: dict[str, np.ndarray] | None
    verdict: Verdict
    score: int
    detail: str
    seed: bytes | None

    @property
    def valid(self) -> bool: ...


class Lineage:
    """Earlier models by (dataset, architecture), and the check of each round's valid models against them."""

    def __init__(self, lock: threading.Lock, winners: WinnerSource | None = None) -> None:
        self._memory = lock  # the validator's: two rounds may validate at once (max_concurrency)
        self.refs = ReferenceSet()
        self._probes: dict[str, tuple[np.ndarray, tuple[Fingerprint, ...], dict[str, np.ndarray]]] = {}
        # earlier blocks' winners, read back by hash: each hash asked for once
        self._winners, self.asked = winners, set[str]()

    def resolve(self, spec: Task, test: Split, judged: Sequence[Judged], ctx: RoundContext, won: Collection[str],
                near: set[frozenset[str]]) -> list[tuple[Judged, Reference]]:
        """A valid model that computes what an earlier one computes, or keeps one of its layers, is ``derived``.

        Earlier: a winner of an earlier block, or a valid model of an earlier round, on the same data and
        architecture, or an earlier arrival of this round (unless the near-copy rule judged the pair:
        ``near``); always another miner's. A miner's own earlier models are never compared: the same
        watermark key moves its host layer alike in every model the miner trains, which is no theft
        (the attack suite caught this as a false positive). Only valid models are fingerprinted (one forward pass on the probes,
        and the gauge-fixed weights) and compared. Fusion tasks start every miner from one shared init:
        skipped. Returns the models that passed, with their references (kept by ``remember``).
        """
        valid = [j for j in judged if j.valid]
        if spec.fusion != "winner" or not valid:
            return []
        key = provenance_key(spec)
        probes, nulls, init = self._probe_set(spec, test, key)
        self._recover_winners(spec, key, probes, init, won)
        with self._memory:
            earlier = self.refs.earlier(key, round_id=ctx.round_id)
        measured = measured_net(spec)
        here: list[tuple[Judged, Reference]] = []
        net = build_task_net(spec)  # one net for every forward pass here: each loads its weights in full
        for j in valid:
            fp = model_fingerprint(spec, j.seed, probes, j.weights, init, net=net)
            start = model_fingerprint(spec, j.seed, probes, init, net=net)
            rivals = [ref for k, ref in here if frozenset((k.sub.commit, j.sub.commit)) not in near]
            refs = [r for r in earlier + rivals if r.miner != j.sub.miner]
            sims = compare(fp, [r.fingerprint for r in refs], nulls, start, weights=False)
            judgement = check_derived(lazily(fp, refs, sims), model=measured)
            if judgement is not None:
                j.verdict, j.detail = judgement
                continue
            here.append((j, Reference(j.sub.commit[:12], j.sub.miner, ctx.round_id, j.sub.model_hash, fp)))
        return here

    def remember(self, spec: Task, fresh: Sequence[tuple[Judged, Reference]], won: Collection[str]) -> None:
        """This round's models still valid after every check become references (the best scored kept)."""
        kept = sorted(((j.score, ref) for j, ref in fresh if j.valid), key=lambda p: p[0])
        with self._memory:
            for _, ref in kept[-self.refs.recent:]:
                self.refs.remember(provenance_key(spec), ref, won)

    def _recover_winners(self, spec: Task, key: str, probes: np.ndarray, init: dict[str, np.ndarray],
                         won: Collection[str]) -> None:
        """Earlier blocks' winners this validator has not seen judged (it restarted, or joined later), read back
        from the chain's artifacts by hash: only a hash the chain says won can become a reference this way.
        The newest first where ``won`` gives heights; each hash is asked for once; a source that cannot answer
        costs one wait per ballot, not one per hash (asked again next round)."""
        if self._winners is None:
            return
        order = sorted(won, key=lambda h: -won[h]) if isinstance(won, Mapping) else sorted(won)
        with self._memory:
            wanted = [h for h in order if h not in self.asked and not self.refs.knows(key, h)][:self.refs.winners]
        for model_hash in wanted:
            try:
                found = checked(self._winners(model_hash), model_hash)
            except DLBCError:  # the source cannot answer now: no more waits in this ballot, all asked next round
                break
            ref = winner_reference(spec, model_hash, found, probes, init)
            with self._memory:
                self.asked.add(model_hash)
                if ref is not None:
                    self.refs.remember_winner(key, ref)

    def _probe_set(self, spec: Task, test: Split,
                   key: str) -> tuple[np.ndarray, tuple[Fingerprint, ...], dict[str, np.ndarray]]:
        """This data and architecture's probes (drawn from the test split by its public hash), the random
        nets that set each layer's chance level, and the shared init every miner starts from; made once."""
        with self._memory:
            if key not in self._probes:
                probes = probe_inputs(test, spec.dataset.test_hash)

                def build(seed: int) -> Any:
                    return build_task_net(spec, seed=seed)

                self._probes[key] = probes, null_fingerprints(build, probes), to_numpy(build(0))
            return self._probes[key]


def lazily(fp: Fingerprint, refs: Sequence[Reference],
           sims: Sequence[Similarity]) -> Iterator[tuple[str, tuple[float, ...], float, tuple[float, ...]]]:
    """``check_derived``'s matches, each reference's weight matching done only when the rule reads it: per
    reference first without its weight figures, then with them. The rule stops at the first reference with a
    reason, and a reason from the activations or the agreement is the one it gives whatever the weights say
    (they are read last), so the verdict and its detail are those of the full list; a thief's model costs one
    weight matching, not one per reference, and the honest case costs what it did."""
    for ref, sim in zip(refs, sims):
        yield ref.name, sim.units, sim.agreement, ()
        yield ref.name, sim.units, sim.agreement, weight_similarity(fp, ref.fingerprint)


def winner_reference(spec: Task, model_hash: str, found: tuple[dict[str, np.ndarray], dict[str, str]] | None,
                     probes: np.ndarray, init: dict[str, np.ndarray]) -> Reference | None:
    """A winner's reference, when its weights fit this task's architecture (other tasks' winners do not)."""
    if found is None:
        return None
    weights, metadata = found
    net = build_task_net(spec)
    try:
        check_architecture(net, weights)
        seed = bytes.fromhex(metadata["sml_seed"]) if metadata.get("sml_seed") else None
        fp = model_fingerprint(spec, seed, probes, weights, init)
    except (DLBCError, ValueError):  # another architecture, or a seed that is no hex
        return None
    return Reference(f"winner {model_hash[:12]}", metadata.get("miner", ""), "", model_hash, fp)


def model_fingerprint(spec: Task, seed: bytes | None, probes: np.ndarray, weights: Any,
                      init: dict[str, np.ndarray] | None = None, *, net: Any = None) -> Fingerprint:
    """What ``weights`` compute on the raw probes behind the mapping layer of ``seed`` (the submitter's own);
    with ``init`` (the shared start), its gauge-fixed weights too. ``net``: the task's net to run them in (its
    parameters are all overwritten; building one costs more than a forward pass), else a new one."""
    net = build_task_net(spec) if net is None else net
    if init is not None:
        return fingerprint_model(net, spec.model.name, spec.dataset.input_shape, weights, seed, probes, init)
    x = probes
    if seed is not None:
        q, kind = mapping_layer(seed, net, spec.model.name, spec.dataset.input_shape)
        x = sml.map_inputs(probes, q, kind)
    return fingerprint(net, weights, x)


def measured_net(spec: Task) -> str:
    """The net's name when the task uses its default parameters (where ``benchmarks/provenance.py`` measured
    its thresholds), else "" (cautious defaults apply)."""
    ds, name = spec.dataset, spec.model.name
    if ds.n_classes < 2:  # measured on classifiers only: a regression net's one output is another last layer
        return ""
    try:
        same = checked_kwargs(name, spec.model.params, ds.input_shape, ds.n_classes, limits=None) == checked_kwargs(
            name, {}, ds.input_shape, ds.n_classes, limits=None)
    except DLBCError:
        return ""
    return name if same else ""


def provenance_key(spec: Task) -> str:
    """Models are compared only within one (training data, test data, architecture)."""
    ds = spec.dataset
    return "|".join((ds.train_hash, ds.test_hash, spec.model.name, json.dumps(dict(spec.model.params), sort_keys=True)))
