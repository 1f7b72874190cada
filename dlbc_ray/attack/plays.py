"""The suite's own moves, where the attacker holds a key of the network rather than a miner: a requester's
messages replayed from another chain, and a proposer that censors the winner (``drop_best``, pure).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dlbc_ray.attack.judging import ADVERSARY, HONEST_MINERS
from dlbc_ray.consensus.baas import compute_delivered
from dlbc_ray.consensus.decision import decide
from dlbc_ray.consensus.proposal import seal
from dlbc_ray.consensus.settlement import compute_settlement, debit_escrow
from dlbc_ray.consensus.state import ChainState
from dlbc_ray.consensus.validation import get_block_task
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ConfigError
from dlbc_ray.schema import Block, PostTaskTx, Signed, Task
from dlbc_ray.schema.round_messages import RoundReport, SubmissionOutcome

if TYPE_CHECKING:
    from dlbc_ray.attack.harness import AttackNetwork


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


def other_chain_id(network: AttackNetwork) -> str:
    """The chain id of a second genesis with this network's identities, made a moment later."""
    from dlbc_ray.actors.round_runner import now_ms
    from dlbc_ray.consensus import make_genesis
    from dlbc_ray.runtime.network import genesis_params

    if network.other_chain is None:
        ids, when = network.net.identities, now_ms()
        network.other_chain = make_genesis(genesis_params(ids, network.cfg, when), ids.consensus, when).header.chain_id
    if network.other_chain == network.net.chain_id:
        raise ConfigError("the second genesis has this chain's id", reason="chain_id")
    return network.other_chain

def replay_from_another_chain(network: AttackNetwork) -> dict[str, str]:
    """The requester's transfer to the adversary and a task, both signed for the other chain, sent to the
    consensus actor here; returns what became of each ('accepted' or the reason refused)."""
    from dlbc_ray import crypto
    from dlbc_ray.actors.round_runner import now_ms
    from dlbc_ray.runtime.network import make_task
    from dlbc_ray.schema import Transfer

    requester, other = network.net.identities.requester, other_chain_id(network)
    nonce = network.get(network.net.ledger.snapshot.remote(), "ledger").nonces.get(requester.public_key, 0)
    transfer = crypto.sign(requester, Transfer(sender=requester.public_key, recipient=network.key(ADVERSARY),
                                               amount=1, nonce=nonce), other)
    task = make_task(requester, network.cfg.task, network.bundle, nonce=time.time_ns(), created_ms=now_ms(),
                     chain_id=other)
    consensus = network.net.consensus
    return {"transfer": network.refusal(consensus.submit_transfer.remote(transfer), "transfer"),
            "task": network.refusal(consensus.submit_task.remote(task, network.data.train, network.data.test), "task")}

def drop_best_as_proposer(network: AttackNetwork, task: Signed[Task]) -> tuple[RoundReport, dict[str, str]]:
    """Play the proposer with its own key: an honest round of the honest miners, then the block without
    its best submission (``drop_best``) to the ledger, then the honest block of the same round."""
    import threading

    from dlbc_ray import crypto
    from dlbc_ray.actors.delivery import winner_artifact
    from dlbc_ray.actors.round_runner import RoundRunner, RoundState, miner_policy, now_ms
    from dlbc_ray.consensus import propose_task_block
    from dlbc_ray.consensus.ballot import compute_round_id
    from dlbc_ray.errors import InvalidBlock

    proposer, ledger = network.net.identities.consensus, network.net.ledger
    base = network.get(ledger.snapshot.remote(), "ledger")
    task_id = crypto.message_hash(task.message)
    state = RoundState(task_id, compute_round_id(task_id, base.head_hash, time.time_ns()))
    miners = [m for m in network.net.miners if m.name in HONEST_MINERS]
    result = RoundRunner(network.cfg.consensus, task=task, data=network.data, miners=miners,
                         validators=network.net.validators, base=base, state=state, lock=threading.Lock(),
                         proposer=proposer, policy=miner_policy(network.cfg.miner)).run()
    honest, decision = propose_task_block(base, task, [a.signed for a in result.arrivals], result.ballots, proposer,
                                          now_ms(), state.round_id)
    refused = {"block without the best submission": network.refusal(
        ledger.import_block.remote(drop_best(honest, base, proposer)), "forged block")}
    # the winner kept as the consensus actor keeps it (``replay`` replays the latest winner), once the block validates
    delivered = winner_artifact(decision, result.arrivals, result.weight_refs) or (None, None, None)
    try:
        imported = network.get(ledger.import_block.remote(honest, delivered[0], delivered[2]), "ledger")
    except InvalidBlock as e:
        return RoundReport(height=None, block_hash=None, task_id=task_id, winner=None, score=None,
                           committed=False, failure=str(e), outcomes=tuple(result.outcomes)), refused
    outcomes = tuple(SubmissionOutcome(miner=a.signed.message.miner, commit=a.signed.message.commit,
                                       verdict=t.verdict.value if t.verdict else "undecided", score=t.score)
                     for a, t in zip(result.arrivals, decision.tallies))
    return RoundReport(height=imported.height, block_hash=imported.hash, prev_hash=imported.prev_hash,
                       task_id=task_id, winner=imported.winner, score=decision.score, committed=True,
                       outcomes=tuple(result.outcomes) + outcomes, timings=result.timings), refused


def ask_validators_for_marks(network: AttackNetwork) -> dict[str, str]:
    """A thief's questions to every validator during the window: the adversary's own task (the public data, its
    own test split, never posted), untrained weights under its own submission, and a round context it signed
    itself, or that claims the proposer's key; then the mark helpers asked by name. Each answer, by question:
    'accepted' would make the validator a mark oracle (it would say whose watermark the weights carry)."""
    from dlbc_ray import crypto
    from dlbc_ray.actors.round_runner import now_ms
    from dlbc_ray.models.nets import build_task_net
    from dlbc_ray.models.weights import to_numpy
    from dlbc_ray.runtime.network import make_task
    from dlbc_ray.schema import Submission
    from dlbc_ray.schema.round_messages import RoundContext, SubmissionArrival

    ids, chain = network.net.identities, network.net.chain_id
    thief = next(i for i in ids.miners if i.name == ADVERSARY)
    own = make_task(thief, network.cfg.task, network.bundle, nonce=time.time_ns(), created_ms=now_ms(), chain_id=chain)
    spec, task_id = own.message, crypto.message_hash(own.message)
    weights = to_numpy(build_task_net(spec))
    model_hash = crypto.hash_weights(weights)
    sub = Submission(task_id=task_id, miner=thief.public_key, model_hash=model_hash,
                     commit=crypto.compute_commit(model_hash, thief.public_key, task_id),
                     num_params=sum(int(w.size) for w in weights.values()), claimed_score=0, epochs=1, train_ms=1,
                     examples=len(network.bundle.train.y))
    arrival = SubmissionArrival(signed=crypto.sign(thief, sub, chain), arrived_ms=now_ms())
    head = network.get(network.net.ledger.head.remote(), "ledger")
    ctx = RoundContext(chain_id=chain, round_id=crypto.sha256_hex(b"oracle", str(time.time_ns()).encode()),
                       task_id=task_id, base_height=int(head["height"]), base_hash=str(head["hash"]), eval_seed=0,
                       submit_deadline_ms=now_ms() + 60_000)
    self_signed = crypto.sign(thief, ctx, chain)
    rounds = {"self-signed round": self_signed,
              "round claiming the proposer's key": self_signed.model_copy(update={"signer": ids.consensus.public_key})}
    answers = {}
    for v in network.net.validators:
        for label, signed in rounds.items():
            ref = v.handle.validate.remote(own, network.bundle.test, [arrival], [weights], signed)
            answers[f"{v.name}: {label}"] = network.refusal(ref, f"{v.name} validate")
        answers[f"{v.name}: _read_marks by name"] = "accepted" if hasattr(v.handle, "_read_marks") else "no_such_method"
    return answers
