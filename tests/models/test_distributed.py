"""Data-parallel training's contract with the single-process replay (models/distributed.py), without Ray:
the shards of every batch are the batch, in order, none empty; the sampler follows Lightning's epochs;
``sharded_backward`` leaves exactly the gradients W workers' DDP all-reduce leaves (simulated here by
W separate modules), dropout included.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlbc_ray.models.distributed import ShardedBatches, sharded_backward, shard, usable_workers
from dlbc_ray.models.transcript import DerivedOrder, epoch_order, seed_step


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), batch=st.integers(1, 80), wanted=st.integers(1, 9), epoch=st.integers(0, 3))
def test_the_shards_of_every_batch_are_the_batch_in_order_and_none_is_empty(n: int, batch: int, wanted: int,
                                                                            epoch: int) -> None:
    workers = usable_workers(n, batch, wanted)
    assert 1 <= workers <= wanted
    samplers = [ShardedBatches(n, 7, batch, workers, r) for r in range(workers)]
    for s in samplers:
        s.sampler.set_epoch(epoch)
    per_rank = [list(s) for s in samplers]
    assert all(len(batches) == len(samplers[0]) for batches in per_rank)  # DDP steps every worker together
    order = epoch_order(7, epoch, n)
    for k, start in enumerate(range(0, n, batch)):
        parts = [per_rank[r][k] for r in range(workers)]
        assert all(parts), (n, batch, workers, k)
        assert sum(parts, []) == order[start:start + batch].tolist()


@pytest.mark.parametrize("n,batch,wanted,expected", [(1617, 64, 2, 2), (65, 64, 2, 1), (10, 64, 4, 4), (3, 64, 8, 3),
                                                      (128, 64, 8, 8), (129, 2, 4, 1)])
def test_usable_workers_is_the_most_that_leave_no_shard_empty(n: int, batch: int, wanted: int, expected: int) -> None:
    assert usable_workers(n, batch, wanted) == expected
    if expected < wanted:  # one more worker would get an empty shard of the last batch
        with pytest.raises(ValueError):
            ShardedBatches(n, 0, batch, expected + 1, 0)


def test_the_sampler_is_the_derived_order_lightning_sets_the_epoch_of() -> None:
    sampler = ShardedBatches(100, 3, 32, 1, 0)
    assert isinstance(sampler.sampler, DerivedOrder)  # lightning_fabric's _set_sampler_epoch finds it here
    first = sum(list(sampler), [])
    sampler.sampler.set_epoch(1)
    assert first == epoch_order(3, 0, 100).tolist() and sum(list(sampler), []) == epoch_order(3, 1, 100).tolist()


def test_a_rank_outside_the_workers_is_refused() -> None:
    with pytest.raises(ValueError):
        ShardedBatches(100, 0, 10, 2, 2)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.drop = nn.Linear(6, 16), nn.Linear(16, 3), nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.drop(torch.relu(self.a(x))))


def _step(net: nn.Module):
    def step(batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(net(x), y) + 1e-3 * net.a.weight.square().sum()  # a regularizer term too
    return step


def _ddp_by_hand(net: nn.Module, x: torch.Tensor, y: torch.Tensor, index: np.ndarray, workers: int,
                 seed: int) -> list[torch.Tensor]:
    """W separate copies, each seeded alike, each gradient divided by W, summed in rank order (gloo, W = 2)."""
    grads = []
    for rank in range(workers):
        replica = copy.deepcopy(net)
        part = torch.from_numpy(shard(index, workers, rank))
        seed_step(seed)
        _step(replica)((x[part], y[part]), 0).backward()
        grads.append([p.grad / workers for p in replica.parameters()])
    return [sum(gs[1:], gs[0]) for gs in zip(*grads)]


@pytest.mark.parametrize("workers,size", [(2, 64), (2, 37), (3, 64), (1, 64)])
def test_sharded_backward_leaves_what_the_workers_all_reduce_leaves(workers: int, size: int) -> None:
    torch.manual_seed(0)
    net, x, y = _Net(), torch.randn(size, 6), torch.randint(0, 3, (size,))
    index = np.random.default_rng(1).permutation(size)
    expected = _ddp_by_hand(net, x, y, index, workers, seed=11)
    params = list(net.parameters())
    sharded_backward(_step(net), params, x, y, index, workers, 11, 0)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, expected))


def test_one_worker_is_the_plain_step_and_two_are_not() -> None:
    """The replay must know W: a 2-worker step is not the single-device step (dropout and the mean differ)."""
    torch.manual_seed(0)
    net, x, y = _Net(), torch.randn(64, 6), torch.randint(0, 3, (64,))
    index = np.arange(64)
    params = list(net.parameters())
    seed_step(5)
    _step(net)((x[torch.from_numpy(index)], y[torch.from_numpy(index)]), 0).backward()
    plain = [p.grad.clone() for p in params]
    sharded_backward(_step(net), params, x, y, index, 1, 5, 0)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, plain))
    sharded_backward(_step(net), params, x, y, index, 2, 5, 0)
    assert not all(torch.equal(p.grad, g) for p, g in zip(params, plain))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), batch=st.integers(1, 80), workers=st.integers(1, 12))
def test_validators_accept_a_worker_count_iff_every_batch_can_be_shared(n: int, batch: int, workers: int) -> None:
    """A header claiming more workers than the last batch has examples is refused (wrong header): its replay
    would be shards of nothing, and a miner could make every audit pay W tiny backward passes a step."""
    from dlbc_ray.consensus.transcript import (AuditParams, Expected, TranscriptHeader, check_header,
                                               compute_interval, compute_steps_per_epoch, compute_training_seed)

    task, round_id = "a" * 64, "b" * 64
    miner = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # a point on the curve
    per_epoch, params = compute_steps_per_epoch(n, batch), AuditParams()
    hyper = {"batch_size": batch, "lr": 0.01, "optimizer": "adam", "weight_decay": 0.0, "val_fraction": 0.1}
    header = TranscriptHeader(task_id=task, miner=miner, round_id=round_id, seed=compute_training_seed(task, miner, round_id),
                              interval=compute_interval(per_epoch, params.max_checkpoints), steps=per_epoch,
                              steps_per_epoch=per_epoch, examples=n, threads=1, device="cpu", workers=workers, **hyper)
    expected = Expected(task_id=task, miner=miner, round_id=round_id, examples=n, max_epochs=1, epochs=1,
                        hyperparameters=hyper)
    assert (check_header(header, expected, params) is None) == (usable_workers(n, batch, workers) == workers)
