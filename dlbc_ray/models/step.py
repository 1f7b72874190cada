"""One training step's arithmetic, without Lightning: the loss, the regularizer terms, the optimizer.

``ClassifierSystem`` (the LightningModule miners train) and ``StepSystem`` (what an audit
replays a transcript's segments with) both compute through these functions, in the same
order, so a replay is bit for bit the miner's step. A validator then never imports
Lightning (with torchmetrics, SciPy's signal package and matplotlib behind it: about 1.6 s
of CPU per process on these cores), only torch; and its replay steps with ``StepOptimizer``,
torch's own single-tensor update without ``torch.optim.Optimizer``, whose first use imports
torch._dynamo (another ~1.3 s of CPU in every validator).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adam import adam as adam_update  # torch.optim's own functional updates (no torch._dynamo import)
from torch.optim.sgd import sgd as sgd_update

from dlbc_ray.errors import ConfigError
from dlbc_ray.models.objectives import Objective, get_objective

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}  # torch's defaults, named: the miner's Adam and the replay's read these
SGD = {"momentum": 0.9, "nesterov": True}


class Regularizer(Protocol):
    """A named loss term on the net's own weights; it must return a tensor on their device."""

    name: str

    def __call__(self, net: nn.Module) -> torch.Tensor: ...


def use_deterministic_algorithms(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode)`` for eager kernels, which is all a step runs: torch's own
    function also sets TorchInductor's flag, importing torch._inductor and torch._dynamo (~1.3 s of CPU in a
    validator whose replay needs neither). Where TorchInductor is already loaded, torch's function is called."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode)
    else:
        torch._C._set_deterministic_algorithms(mode)


def check_optimizer(optimizer: str) -> str:
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{optimizer}'; use one of {', '.join(OPTIMIZERS)}", reason="optimizer")
    return optimizer


def compute_loss(objective: Objective, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The objective's loss: cross-entropy on logits, or MSE / L1 on a regression net's first output."""
    if objective.loss == "cross_entropy":
        return F.cross_entropy(outputs, y)
    prediction = outputs.reshape(len(y), -1)[:, 0]
    return (F.mse_loss if objective.loss == "mse" else F.l1_loss)(prediction, y.to(prediction.dtype))


def step_loss(net: nn.Module, objective: Objective, regularizers: Sequence[Regularizer], x: torch.Tensor,
              y: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """The loss one step minimises (task loss, then each regularizer added in order) and each term."""
    loss = compute_loss(objective, net(x), y)
    terms = []
    for regularizer in regularizers:
        term = regularizer(net)
        terms.append((regularizer.name, term))
        loss = loss + term
    return loss, terms


def make_optimizer(net: nn.Module, optimizer: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """What a miner's Lightning trainer steps with; ``StepOptimizer`` is the same update for a replay."""
    params = trainable_parameters(net)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, **SGD)  # type: ignore[arg-type]
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **ADAM)  # type: ignore[arg-type]


def trainable_parameters(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]  # the mapping layer stays fixed


class StepOptimizer:
    """``make_optimizer``'s Adam or SGD as torch steps it on a CPU (``torch.optim.adam.adam`` /
    ``torch.optim.sgd.sgd``, single-tensor), with the state layout of ``state_dict`` and the casts of
    ``load_state_dict`` that ``models.transcript`` flattens and restores, so a replay lands on the miner's
    bits. It skips ``torch.optim.Optimizer``, whose first use imports torch._dynamo: ~1.3 s of CPU in every
    validator, on the first block's path. A stored state missing an entry the step needs is a RuntimeError
    (what a replay reports as an unreplayable checkpoint), where torch's would raise a KeyError."""

    def __init__(self, params: Sequence[torch.Tensor], optimizer: str, lr: float, weight_decay: float) -> None:
        self.params, self.kind = list(params), check_optimizer(optimizer)
        self.lr, self.weight_decay = lr, weight_decay
        self.state: dict[Any, dict[str, torch.Tensor]] = {}  # by parameter index, as ``state_dict`` numbers them

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        stepped = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        if self.kind == "sgd":
            buffers = [self.state.get(i, {}).get("momentum_buffer") for i, _ in stepped]
            sgd_update([p for _, p in stepped], [p.grad for _, p in stepped], buffers,  # type: ignore[misc]
                       weight_decay=self.weight_decay, momentum=SGD["momentum"], lr=self.lr, dampening=0.0,
                       nesterov=SGD["nesterov"], maximize=False, foreach=False, fused=False)
            for (i, _), buffer in zip(stepped, buffers):
                self.state.setdefault(i, {})["momentum_buffer"] = buffer  # type: ignore[assignment]
            return
        states = [self._adam_state(i, p) for i, p in stepped]
        beta1, beta2 = ADAM["betas"]
        adam_update([p for _, p in stepped], [p.grad for _, p in stepped],  # type: ignore[misc]
                    [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                    [s["step"] for s in states], foreach=False, fused=False, amsgrad=False, beta1=beta1,
                    beta2=beta2, lr=self.lr, weight_decay=self.weight_decay, eps=ADAM["eps"], maximize=False)

    def _adam_state(self, index: int, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state.setdefault(index, {})
        if not state:  # torch's lazy init: the step count a scalar of the float default's width, on the CPU
            scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            state.update(step=torch.tensor(0.0, dtype=scalar), exp_avg=torch.zeros_like(p),
                         exp_avg_sq=torch.zeros_like(p))
        if {"step", "exp_avg", "exp_avg_sq"} - state.keys():
            raise RuntimeError(f"the optimizer state of parameter {index} lacks "
                               f"{sorted({'step', 'exp_avg', 'exp_avg_sq'} - state.keys())}")
        return state

    def state_dict(self) -> dict[str, Any]:
        return {"state": dict(self.state), "param_groups": [{"params": list(range(len(self.params)))}]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """As torch's: tensors of a known parameter cast to its dtype and device (the step count kept as it
        came), entries for unknown indices kept as they are."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of the optimizer's")
        known = dict(zip(groups[0]["params"], range(len(self.params))))
        self.state = {}
        for key, entry in state_dict["state"].items():
            if key not in known:
                self.state[key] = entry
                continue
            p = self.params[known[key]]
            self.state[known[key]] = {name: value if name == "step" else
                                      value.to(dtype=p.dtype, device=p.device) if p.is_floating_point() else
                                      value.to(device=p.device) for name, value in entry.items()}


class StepSystem(nn.Module):
    """``ClassifierSystem``'s training step and optimizer on a plain module: what an audit replays with."""

    def __init__(self, net: nn.Module, *, lr: float = 1e-2, weight_decay: float = 0.0, optimizer: str = "adam",
                 objective: str = "accuracy", regularizers: Sequence[Regularizer] = ()) -> None:
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay
        self.optimizer, self.objective = check_optimizer(optimizer), get_objective(objective)
        self.regularizers = tuple(regularizers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return step_loss(self.net, self.objective, self.regularizers, *batch)[0]

    def configure_optimizers(self) -> StepOptimizer:
        return StepOptimizer(trainable_parameters(self.net), self.optimizer, self.lr, self.weight_decay)
