"""What users do with a network: submit tasks, move money, read balances, results and status.

Inputs are checked before anything is sent (a bad task file never reaches the network).
Balances and results read the home's ledger directly, so they work while the network is down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlbc_ray import crypto
from dlbc_ray.actors._ray import TRANSIENT, get, get_retrying
from dlbc_ray.actors.round_runner import now_ms
from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import ActorUnavailable, ConfigError, DLBCError, InvalidModelFile, InvalidTask
from dlbc_ray.runtime.home import Home, read_ledger
from dlbc_ray.runtime.keystore import key_path, list_keys, load_key
from dlbc_ray.ledger import ArtifactStore, Chain, save_safetensors
from dlbc_ray.schema import Signed, Task, Transfer
from dlbc_ray.runtime.service import attach, ship_code

SUBMIT_PATIENCE_S = 300.0  # how long a submit keeps asking a network that does not answer


def account(home: Home, who: str) -> str:
    """A key name in this home, or a 64-hex public key."""
    if crypto.is_public_key(who):
        return who
    if not key_path(home, who).exists():
        raise ConfigError(f"'{who}' is neither a key in {home.keys} nor a public key", reason="unknown_account")
    return load_key(home, who).public_key


def names(home: Home) -> dict[str, str]:
    """Public key -> key name, for listings; a home whose keys cannot be read shows bare keys."""
    try:
        return {k.public_key: k.name for k in list_keys(home)}
    except DLBCError:  # a bad key file (named by `dlbc-ray keys list`) only loses its name here
        return {}


def open_chain(home: Home) -> Chain:
    return read_ledger(home)


# --------------------------------------------------------------------- tasks


def prepare_task(home: Home, path: Path, requester: str) -> tuple[Task, Identity, Any, Any]:
    """Check the task file, its data and the requester's key; nothing is signed or sent yet."""
    from dlbc_ray.runtime.taskfile import load_task_with_data, to_task

    taskfile, bundle = load_task_with_data(path, cache_dir=home.datasets)
    identity = load_key(home, requester)
    task = to_task(taskfile, identity.public_key, nonce=time.time_ns(), now_ms=now_ms(), bundle=bundle)
    return task, identity, bundle.train, bundle.test


def submit(home: Home, path: Path, *, requester: str, address: str | None) -> str:
    task, identity, train, test = prepare_task(home, path, requester)
    consensus = attach(home, address)
    ship_code(path, task)  # the task's own code (task file `code:`), before the task that signs its hash
    chain_id = get_retrying(consensus.chain.remote, timeout=60, what="chain id", patience_s=SUBMIT_PATIENCE_S)
    return submit_signed(consensus, crypto.sign(identity, task, chain_id), train, test)


def submit_signed(consensus: Any, signed: Signed[Task], train: Any, test: Any) -> str:
    """Send one signed task, again while no answer comes (a lost reply, a consensus restart).

    Always the same signed task, so the same nonce and task id: the consensus actor queues
    a task already open on chain and never escrows it twice.
    """
    return str(get_retrying(lambda: consensus.submit_task.remote(signed, train, test), timeout=300,
                            what="task submission", patience_s=SUBMIT_PATIENCE_S))


def wait_for(home: Home, task_id: str, *, address: str | None, timeout_s: float,
             on_view: Callable[[dict[str, Any]], None] = lambda v: None) -> dict[str, Any]:
    """Poll the task until its block is committed, it expires or fails; returns the last view."""
    consensus = attach(home, address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            view = get(consensus.task_view.remote(task_id), timeout=30, what="task status")
        except ActorUnavailable as e:  # a restart or a lost reply to this read is a pause, not an end
            if e.reason not in TRANSIENT or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
            continue
        on_view(view)
        if view["status"] in ("done", "failed", "expired", "unknown") or time.monotonic() > deadline:
            return view
        time.sleep(0.5)


def find_task(chain: Chain, task_id: str) -> str:
    """A full task id from a unique prefix of at least 8 hex digits."""
    matches = [t for t in chain.state.tasks if t.startswith(task_id)] if len(task_id) >= 8 else []
    if len(matches) != 1:
        raise InvalidTask(f"no task {task_id} on this chain" if not matches else f"task id {task_id} is ambiguous",
                          reason="unknown_task")
    return matches[0]


def result(home: Home, task_id: str, *, output: Path | None) -> dict[str, Any]:
    """The task's outcome and, if it has a winner, its model on raw inputs as a safetensors file."""
    chain = open_chain(home)
    full = find_task(chain, task_id)
    record = chain.state.tasks[full]
    info: dict[str, Any] = {"task_id": full, "status": record.status, "requester": record.task.requester,
                            "reward": record.task.reward, "posted_height": record.posted_height}
    if record.closed_height is None:
        return info
    header = chain.block(record.closed_height).header
    info.update(height=header.height, winner=header.winner, model_hash=header.model_hash,
                score=None if header.score is None else header.score / SCORE_SCALE)
    if header.model_hash:
        path = output or Path(f"{full[:16]}.safetensors")
        info["model_file"] = str(export_model(home, record.task, header.model_hash, path))
    return info


def export_model(home: Home, task: Task, model_hash: str, path: Path) -> Path:
    """Fold the winner's Secure Mapping Layer into its first layer so the file works on raw inputs."""
    from dlbc_ray.models import sml
    from dlbc_ray.models.nets import net_info
    from dlbc_ray.models.protect import mapping_layer

    store = ArtifactStore(home.artifacts)
    weights, meta = store.get(model_hash), store.metadata(model_hash)
    seed = committed_seed(meta, winner_commitment(home, task, model_hash), model_hash)
    if seed is not None:  # a single miner's model: fold its mapping layer (a fusion is unmapped already)
        q, kind = mapping_layer(seed, weights, task.model.name, task.dataset.input_shape)
        weights = sml.fold_into_first_layer(weights, net_info(task.model.name).first_layer, q, kind)
    spec = {"model": task.model.name, "params": json.dumps(task.model.params),
            "input_shape": json.dumps(list(task.dataset.input_shape)), "n_classes": str(task.dataset.n_classes),
            "model_hash": model_hash, **{k: meta[k] for k in ("fusion", "members", "contributors") if k in meta}}
    return save_safetensors(weights, path, metadata=spec)


def winner_commitment(home: Home, task: Task, model_hash: str) -> str | None:
    """The mapping-seed commitment of the submission that delivered ``model_hash`` for ``task``, as the
    chain records it (read-only); None for a fusion or a model without a mapping layer.

    The artifact store is written by whoever calls the ledger actor first, so its metadata is
    never trusted on its own: the seed it names must be the one the winner committed to.
    """
    from dlbc_ray.ledger import LedgerStore

    store = LedgerStore(home.ledger, read_only=True)
    try:
        chain = Chain(store, verify=False)
        record = chain.state.tasks.get(crypto.message_hash(task))
        block = chain.block(record.closed_height) if record and record.closed_height is not None else None
    finally:
        store.close()
    if block is None or block.header.model_hash != model_hash:
        raise InvalidModelFile(f"model {model_hash[:12]} is not what task {crypto.message_hash(task)[:12]} "
                               "delivered on this chain", reason="not_delivered")
    if block.header.fused:
        return None
    winner = next(s.message for s in block.submissions
                  if (s.message.model_hash, s.message.miner) == (model_hash, block.header.winner))
    return winner.sml_commitment


def committed_seed(meta: dict[str, str], commitment: str | None, model_hash: str) -> bytes | None:
    """The artifact's mapping seed when the winner committed to one, checked against that commitment."""
    from dlbc_ray.models import sml

    if commitment is None:
        return None
    try:
        seed = bytes.fromhex(meta.get("sml_seed", ""))
    except ValueError:
        seed = b""
    if not sml.is_valid_reveal(seed, commitment):
        raise InvalidModelFile(f"the artifact of {model_hash[:12]} carries a mapping seed the winner never "
                               "committed to (stored by someone else first?)", reason="seed_mismatch")
    return seed


# --------------------------------------------------------------------- money


def balances(home: Home) -> dict[str, Any]:
    chain = open_chain(home)
    state = chain.state
    known = names(home)
    return {"height": state.height, "supply": state.total_supply, "escrow": sum(state.escrow.values()),
            "accounts": [{"account": k, "name": known.get(k), "balance": v}
                         for k, v in sorted(state.balances.items(), key=lambda kv: (-kv[1], kv[0]))]}


def transfer(home: Home, recipient: str, amount: int, *, sender: str, address: str | None) -> dict[str, Any]:
    if amount <= 0:
        raise ConfigError(f"amount must be positive (got {amount})", reason="amount")
    identity, to = load_key(home, sender), account(home, recipient)
    consensus = attach(home, address)
    state = get(consensus.snapshot.remote(), timeout=60, what="ledger snapshot")
    have = state.balance(identity.public_key)
    if have < amount:
        raise ConfigError(f"{sender} has {have}, cannot send {amount}", reason="balance")
    message = Transfer(sender=identity.public_key, recipient=to, amount=amount,
                       nonce=state.nonces.get(identity.public_key, 0))
    signed = crypto.sign(identity, message, state.chain_id)
    # The same signed transfer while no answer comes: the consensus answers a repeat with its block.
    return dict(get_retrying(lambda: consensus.submit_transfer.remote(signed), timeout=120, what="transfer",
                             patience_s=SUBMIT_PATIENCE_S))


# -------------------------------------------------------------------- status


def status(home: Home, *, address: str | None) -> dict[str, Any]:
    """Head, ranked queue with its factors, rounds in flight, members and their health, balances."""
    import ray

    from dlbc_ray.actors.names import NAMESPACE, miner_name, validator_name

    consensus = attach(home, address)
    state = get(consensus.snapshot.remote(), timeout=60, what="ledger snapshot")
    members = get(consensus.members.remote(), timeout=30, what="consensus")
    health = {}
    for name, actor in [*((n, miner_name(n)) for n in members["miners"]),
                        *((n, validator_name(n)) for n in members["validators"])]:
        try:
            health[name] = get(ray.get_actor(actor, namespace=NAMESPACE).info.remote(), timeout=5, what=name)
        except (DLBCError, ValueError) as e:  # gone (ValueError: no such actor), unreachable or busy: reported
            health[name] = {"name": name, "error": str(e)}
    known = names(home)
    nodes = [{"node_id": n.get("NodeID", ""), "alive": bool(n.get("Alive")), "resources": n.get("Resources", {})}
             for n in ray.nodes()]
    return {"height": state.height, "head": state.head_hash, "nodes": nodes,
            "queue": get(consensus.queue.remote(), timeout=30, what="queue"),
            "rounds": [r.model_dump() for r in get(consensus.rounds.remote(), timeout=30, what="rounds")],
            "members": members, "health": health,
            "balances": {known.get(k, k[:12]): v for k, v in state.balances.items()},
            "escrow": sum(state.escrow.values()), "open_tasks": len(state.open_tasks())}

