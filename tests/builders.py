"""Builders for real signed tasks, submissions, ballots and blocks (no Ray, no torch)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel

from dlbc_ray import crypto
from dlbc_ray.consensus import ChainState, make_genesis, process_block, propose_task_block
from dlbc_ray.consensus.ballot import compute_submissions_root
from dlbc_ray.consensus.validation import compute_block_hash
from dlbc_ray.crypto import Identity
from dlbc_ray.schema import (
    Allocation,
    Ballot,
    Block,
    ChainParams,
    DatasetSpec,
    ModelSpec,
    RetargetParams,
    Signed,
    Submission,
    Task,
    Verdict,
    Vote,
)
from dlbc_ray.schema.round_messages import RoundContext

T0 = 1_700_000_000_000
M = TypeVar("M", bound=BaseModel)


def signed_round(proposer: Identity, ctx: RoundContext) -> Signed[RoundContext]:
    """``ctx`` as the proposer signs it for its chain: miners train, and validators judge, for no other round."""
    return crypto.sign(proposer, ctx, ctx.chain_id)


def fake_hash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def fake_key(label: str) -> str:
    """A real Ed25519 public key named by ``label`` (a hash is not a point on the curve)."""
    return Identity.from_seed(label, label.encode()).public_key


def ids(prefix: str, n: int) -> list[Identity]:
    return [Identity.from_seed(f"{prefix}-{i}", f"{prefix}-{i}".encode()) for i in range(n)]


@dataclass
class World:
    """A small network's identities, its genesis and a running chain state."""

    n_validators: int = 4
    n_miners: int = 3
    max_faulty: int = 1
    theft_penalty: int = 0
    retarget: RetargetParams | None = None
    block_reward: int = 50
    proposer: Identity = field(default_factory=lambda: Identity.from_seed("consensus", b"consensus"))
    requester: Identity = field(default_factory=lambda: Identity.from_seed("requester", b"requester"))

    def __post_init__(self) -> None:
        self.validators = ids("validator", self.n_validators)
        self.miners = ids("miner", self.n_miners)
        allocations = [Allocation(account=self.requester.public_key, amount=100_000)]
        allocations += [Allocation(account=m.public_key, amount=500) for m in self.miners]
        self.treasury = Identity.from_seed("treasury", b"treasury")
        allocations += [Allocation(account=self.treasury.public_key, amount=10_000)]
        self.params = ChainParams(proposer=self.proposer.public_key,
                                  validators=tuple(v.public_key for v in self.validators),
                                  max_faulty=self.max_faulty, theft_penalty=self.theft_penalty,
                                  retarget=self.retarget, treasury=self.treasury.public_key,
                                  block_reward=self.block_reward, allocations=tuple(allocations), created_ms=T0)
        self.genesis = make_genesis(self.params, self.proposer, T0)
        self.state: ChainState = process_block(None, self.genesis, compute_block_hash(self.genesis.header))
        self.nonce = 0

    @property
    def chain_id(self) -> str:
        return self.state.chain_id

    def sign(self, signer: Identity, message: M) -> Signed[M]:
        """``message`` signed by ``signer`` for this world's chain."""
        return crypto.sign(signer, message, self.chain_id)

    def task(self, *, reward: int = 1_000, target: int = 5_000, deadline_ms: int = T0 + 10**9,
             standing: bool = False, fusion: str = "winner") -> Signed[Task]:
        self.nonce += 1
        dataset = DatasetSpec(name="digits", train_hash=fake_hash("train"), test_hash=fake_hash("test"),
                              n_train=1437, n_test=360, input_shape=(1, 8, 8), n_classes=10)
        requester = self.treasury if standing else self.requester
        task = Task(requester=requester.public_key, nonce=self.nonce, model=ModelSpec(name="mlp"),
                    dataset=dataset, target=target, reward=reward, deadline_ms=deadline_ms, max_epochs=3,
                    created_ms=T0, kind="standing" if standing else "request", fusion=fusion)
        return self.sign(requester, task)

    def submission(self, miner: Identity, task: Signed[Task], label: str = "",
                   model_hash: str | None = None) -> Signed[Submission]:
        task_id = crypto.message_hash(task.message)
        model_hash = model_hash or fake_hash(f"model-{miner.name}-{task_id}-{label}")
        sub = Submission(task_id=task_id, miner=miner.public_key, model_hash=model_hash,
                         commit=crypto.compute_commit(model_hash, miner.public_key, task_id), num_params=100,
                         claimed_score=9000, epochs=3, train_ms=10, examples=1000)
        return self.sign(miner, sub)

    def round_id(self, task_id: str) -> str:
        return fake_hash(f"round-{task_id}")

    def ballot(self, validator: Identity, subs: Sequence[Signed[Submission]], scores: Sequence[int],
               verdicts: Sequence[Verdict] | None = None, *, close_ms: int | None = None) -> Signed[Ballot]:
        """``validator``'s ballot in this world's round of the task: ``scores[k]`` (and ``verdicts[k]``, default
        valid) for ``subs[k]``, bound to exactly ``subs`` in their order."""
        task_id = subs[0].message.task_id
        votes = tuple(Vote(commit=s.message.commit, verdict=verdicts[k] if verdicts else Verdict.VALID, score=score)
                      for k, (s, score) in enumerate(zip(subs, scores, strict=True)))
        ballot = Ballot(task_id=task_id, round_id=self.round_id(task_id),
                        submissions_root=compute_submissions_root([s.message.commit for s in subs]),
                        base_hash=self.state.head_hash, close_ms=close_ms if close_ms is not None else T0,
                        validator=validator.public_key, votes=votes)
        return self.sign(validator, ballot)

    def resign_ballot(self, signed: Signed[Ballot], **changes: object) -> Signed[Ballot]:
        """``signed``'s ballot with ``changes``, signed again by its own validator."""
        key = next(v for v in self.validators if v.public_key == signed.message.validator)
        return self.sign(key, signed.message.model_copy(update=changes))

    def round(self, scores: Mapping[int, Sequence[int]], task: Signed[Task] | None = None,
              verdicts: Mapping[tuple[int, int], Verdict] | None = None,
              at_ms: int | None = None) -> tuple[Block, Signed[Task]]:
        """A task block where miner i gets ``scores[i][j]`` from validator j."""
        task = task or self.task()
        subs = [self.submission(self.miners[i], task) for i in scores]
        when = at_ms if at_ms is not None else T0 + 1000 * (self.state.height + 1)
        close = min(when - 1, task.message.deadline_ms)  # a window closes by the task's deadline
        ballots = [self.ballot(self.validators[j], subs, [row[j] for row in scores.values()],
                               [(verdicts or {}).get((i, j), Verdict.VALID) for i in scores], close_ms=close)
                   for j in range(len(next(iter(scores.values()), [])))]
        task_id = crypto.message_hash(task.message)
        block, _ = propose_task_block(self.state, task, subs, ballots, self.proposer, when, self.round_id(task_id))
        return block, task

    def apply(self, block: Block) -> ChainState:
        self.state = process_block(self.state, block, compute_block_hash(block.header))
        return self.state


def resign(block: Block, signer: Identity, *, roots: bool = False, **header: object) -> Block:
    """The block with header fields replaced and re-signed (roots recomputed when asked)."""
    from dlbc_ray.consensus.proposal import seal

    new_header = block.header.model_copy(update=header)
    if roots:
        return seal(new_header, block, signer)
    signature = signer.sign_root(crypto.signing_root(new_header, new_header.chain_id)).hex()
    return block.model_copy(update={"header": new_header, "signature": signature})
