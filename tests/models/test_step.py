"""``StepOptimizer``: the replay's optimizer must step, store and restore exactly as torch.optim does.

A validator replays a miner's transcript with ``StepOptimizer`` (no torch.optim.Optimizer, so no
torch._dynamo import); the miner trains with torch.optim's Adam or SGD under Lightning. Any bit of
difference would fail honest miners' audits, so each comparison here is bitwise: weights, optimizer
state names, dtypes and values, after steps, restores from a flattened checkpoint, and malformed states.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlbc_ray import crypto
from dlbc_ray.consensus.transcript import AuditParams, Expected, compute_training_seed
from dlbc_ray.crypto import Identity
from dlbc_ray.errors import InvalidModelFile
from dlbc_ray.models.data import holdout, load_builtin
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.replay import Derived, audit, committed, replay
from dlbc_ray.models.step import StepOptimizer, StepSystem, make_optimizer, trainable_parameters
from dlbc_ray.models.training import TrainSettings, train
from dlbc_ray.models.transcript import Checkpoint, DerivedOrder, finish, flatten_optimizer, load_optimizer, plan, recorder_for
from dlbc_ray.models.weights import to_numpy


class Net(nn.Module):
    """Two layers, a frozen parameter (the mapping layer's role) and one that never gets a gradient (index 0
    among the trainable ones: a module's own parameters come before its children's)."""

    def __init__(self, width: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fixed = nn.Parameter(torch.randn(4), requires_grad=False)
        self.a, self.b = nn.Linear(4, width), nn.Linear(width, 3)
        self.unused = nn.Parameter(torch.randn(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x * self.fixed)))


def _pair(kind: str, lr: float, wd: float, width: int, seed: int):
    """The same net twice: one stepped by torch.optim (the miner's), one by StepOptimizer (the replay's)."""
    nets = Net(width, seed), Net(width, seed)
    return nets, (make_optimizer(nets[0], kind, lr, wd), StepOptimizer(trainable_parameters(nets[1]), kind, lr, wd))


def _step(net: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(x), y).backward()
    optimizer.step()


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def _assert_identical(nets, optimizers) -> None:
    assert _same(to_numpy(nets[0]), to_numpy(nets[1]))
    assert _same(flatten_optimizer(optimizers[0]), flatten_optimizer(optimizers[1]))


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["adam", "sgd"]), lr=st.floats(1e-4, 0.5), wd=st.sampled_from([0.0, 1e-4, 0.3]),
       width=st.integers(1, 9), seed=st.integers(0, 2**16), steps=st.integers(1, 6), restore_at=st.integers(0, 6))
def test_steps_and_restores_bit_for_bit_as_torch_optim(kind: str, lr: float, wd: float, width: int, seed: int,
                                                       steps: int, restore_at: int) -> None:
    """Both sides step the same batches; at ``restore_at`` each is flattened and restored into a fresh
    optimizer (what a checkpoint and a replay's start do): every bit of weights and state must agree."""
    nets, optimizers = _pair(kind, lr, wd, width, seed)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if step == restore_at:
            flat = [flatten_optimizer(o) for o in optimizers]
            optimizers = (make_optimizer(nets[0], kind, lr, wd), StepOptimizer(trainable_parameters(nets[1]), kind, lr, wd))
            for optimizer, state in zip(optimizers, flat):
                load_optimizer(optimizer, state)
        x, y = torch.randn(5, 4, generator=gen), torch.randint(0, 3, (5,), generator=gen)
        for net, optimizer in zip(nets, optimizers):
            _step(net, optimizer, x, y)
        _assert_identical(nets, optimizers)
    assert nets[1].unused.grad is None and not any(k.startswith("state.0.") for k in flatten_optimizer(optimizers[1]))


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_a_restored_state_is_cast_and_kept_as_torch_keeps_it(kind: str) -> None:
    """float64 moments are cast to the weights' dtype, Adam's step count keeps the dtype it came with, an
    entry for no parameter survives a restore untouched: the same on both sides, so the same hashes."""
    nets, optimizers = _pair(kind, 0.1, 0.0, 3, 7)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    for net, optimizer in zip(nets, optimizers):
        _step(net, optimizer, x, y)
    flat = {k: v.astype(np.float64) for k, v in flatten_optimizer(optimizers[0]).items()}
    flat["state.9.junk"] = np.ones(2, dtype=np.int16)
    for net, optimizer in zip(nets, optimizers):
        load_optimizer(optimizer, flat)
        _step(net, optimizer, x, y)
    _assert_identical(nets, optimizers)
    restored = flatten_optimizer(optimizers[1])
    assert restored["state.9.junk"].dtype == np.int16 and restored["state.1.exp_avg" if kind == "adam"
                                                                    else "state.1.momentum_buffer"].dtype == np.float32
    if kind == "adam":
        assert restored["state.1.step"].dtype == np.float64


def test_a_state_of_the_wrong_shape_fails_to_step_on_both_sides() -> None:
    nets, optimizers = _pair("adam", 0.1, 0.0, 3, 1)
    flat = {"state.1.step": np.float32(1), "state.1.exp_avg": np.zeros(5, np.float32),
            "state.1.exp_avg_sq": np.zeros(5, np.float32)}
    for net, optimizer in zip(nets, optimizers):
        load_optimizer(optimizer, flat)
        with pytest.raises(RuntimeError):
            _step(net, optimizer, torch.randn(2, 4), torch.tensor([0, 1]))


def test_an_adam_state_missing_an_entry_is_a_runtime_error_a_replay_names() -> None:
    """torch.optim would raise a KeyError (which a replay would not catch); StepOptimizer raises the
    RuntimeError that ``replay`` turns into an unreplayable checkpoint."""
    net = Net(3, 2)
    optimizer = StepOptimizer(trainable_parameters(net), "adam", 0.1, 0.0)
    load_optimizer(optimizer, {"state.1.exp_avg": np.zeros(3, np.float32)})
    with pytest.raises(RuntimeError, match="parameter 1 lacks"):
        _step(net, optimizer, torch.randn(2, 4), torch.tensor([0, 1]))


def test_a_replay_from_a_checkpoint_missing_adam_state_is_an_invalid_model_file() -> None:
    data = load_builtin("digits").train
    header, start, system = _honest_header(data, "adam")
    start = Checkpoint(0, start.weights, {"state.0.exp_avg": np.zeros(1, np.float32)})
    with pytest.raises(InvalidModelFile) as info:
        replay(lambda: system, holdout(data, 0.1, header.seed)[0], header, start, 1)
    assert info.value.reason == "malformed_checkpoint"


def test_replaying_with_the_step_optimizer_imports_no_dynamo() -> None:
    """The point of StepOptimizer: a validator's replay never imports torch._dynamo (~1.3 s of CPU each)."""
    code = ("import sys, torch; from dlbc_ray.models.step import StepSystem; "
            "from dlbc_ray.models.transcript import flatten_optimizer, load_optimizer; "
            "s = StepSystem(torch.nn.Linear(4, 3), optimizer='{kind}'); o = s.configure_optimizers(); "
            "s.training_step((torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])), 0).backward(); o.step(); "
            "load_optimizer(o, flatten_optimizer(o)); o.zero_grad(); print('torch._dynamo' in sys.modules)")
    for kind in ("adam", "sgd"):
        out = subprocess.run([sys.executable, "-c", code.format(kind=kind)], capture_output=True, text=True,
                             check=True, timeout=120)
        assert out.stdout.strip() == "False", (kind, out.stdout, out.stderr[-500:])


# ------------------------------------------------------------------ a real miner's run, replayed

TASK, ROUND = "c" * 64, "d" * 64
MINER = Identity.from_seed("step-miner", bytes(32)).public_key
PARAMS = AuditParams(max_checkpoints=6, segments=6)


def _hyper(kind: str) -> dict[str, object]:
    return {"batch_size": 128, "lr": 0.05 if kind == "sgd" else 1e-2, "optimizer": kind, "weight_decay": 1e-3,
            "val_fraction": 0.1}


def _honest_header(data, kind: str):
    hyper, seed = _hyper(kind), compute_training_seed(TASK, MINER, ROUND)
    fit, _ = holdout(data, 0.1, seed)
    header = plan(TASK, MINER, ROUND, examples=len(fit), max_epochs=1, hyper=hyper, threads=1, device="cpu",
                  params=PARAMS)
    net = build_net("mlp", {"hidden": (16,)}, tuple(data.x.shape[1:]), 10, seed=3)
    system = StepSystem(net, lr=float(hyper["lr"]), weight_decay=1e-3, optimizer=kind)
    return header, Checkpoint(0, to_numpy(net), {}), system


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_a_lightning_run_with_weight_decay_passes_a_full_audit(kind: str) -> None:
    """A miner's real Lightning run (SGD with Nesterov momentum or Adam, both with weight decay), recorded,
    then every segment replayed with StepOptimizer: the audit passes only if each lands bit for bit."""
    data = load_builtin("digits").train
    hyper, seed = _hyper(kind), compute_training_seed(TASK, MINER, ROUND)
    fit, _ = holdout(data, 0.1, seed)
    header = plan(TASK, MINER, ROUND, examples=len(fit), max_epochs=1, hyper=hyper, threads=1, device="cpu",
                  params=PARAMS)
    recorder = recorder_for(header, PARAMS)
    settings_ = TrainSettings(epochs=1, batch_size=128, lr=float(hyper["lr"]), weight_decay=1e-3, optimizer=kind,
                              seed=seed, num_threads=1)

    def net() -> nn.Module:
        return build_net("mlp", {"hidden": (16,)}, tuple(data.x.shape[1:]), 10, seed=3)
    result = train(net(), data, settings_, callbacks=[recorder], order=lambda n, _s: DerivedOrder(n, seed))
    transcript = finish(header, recorder)
    expected = Expected(task_id=TASK, miner=MINER, round_id=ROUND, examples=len(fit), max_epochs=1, epochs=1,
                        hyperparameters=hyper)
    derived = Derived(make_system=lambda: StepSystem(net(), lr=float(hyper["lr"]), weight_decay=1e-3, optimizer=kind),
                      fit=fit, initial=to_numpy(net()), finish=lambda w: w,
                      model_hash=crypto.hash_weights(result.weights), expected=expected)
    outcome, cost = audit(committed(transcript), derived, PARAMS, b"x" * 32)
    assert outcome.passed, outcome
    assert cost.replayed_steps == transcript.header.steps


def test_deterministic_mode_toggles_without_importing_inductor_and_keeps_its_flag_where_loaded() -> None:
    """torch.use_deterministic_algorithms imports torch._inductor (and torch._dynamo) to set its flag; the
    replay's switch sets the eager flag alone until TorchInductor is loaded, then both, as torch does."""
    code = ("import sys, torch; from dlbc_ray.models.step import use_deterministic_algorithms as use\n"
            "use(True); on = torch.are_deterministic_algorithms_enabled(); use(False)\n"
            "print(on, torch.are_deterministic_algorithms_enabled(), 'torch._inductor' in sys.modules, "
            "'torch._dynamo' in sys.modules)\n"
            "import torch._inductor.config as c; use(True); print(c.deterministic, torch.are_deterministic_algorithms_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["True", "False", "False", "False", "True", "True"], out.stdout
