"""Warm miners: what a miner keeps across rounds is exactly what it would derive afresh, its secret
stays out of every method, and the driver that spawns miners never imports Lightning (no Ray here;
the driver check runs in a fresh interpreter).
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import torch

from dlbc_ray.actors.miner import Miner, kept_marks, own_marks, settled
from dlbc_ray.config import MINIMAL
from dlbc_ray.crypto import Identity
from dlbc_ray.models import watermark
from dlbc_ray.models.data import load_builtin
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.weights import to_numpy
from dlbc_ray.runtime.network import make_task
from tests.builders import T0, fake_hash

MINER = Identity.from_seed("miner", b"miner")
REQUESTER = Identity.from_seed("requester", b"requester")


def _spec(model: str = "mlp", **params: object):  # the demo task, optionally with another architecture
    bundle = load_builtin("digits")
    defaults = MINIMAL.task.model_copy(update={"model": model, "model_params": params})
    return make_task(REQUESTER, defaults, bundle, nonce=1, created_ms=T0, chain_id=fake_hash("chain")).message


def _net(spec) -> torch.nn.Module:
    return build_net(spec.model.name, spec.model.params, spec.dataset.input_shape, spec.dataset.n_classes)


def test_kept_marks_are_derived_once_per_architecture_and_equal_fresh_ones() -> None:
    spec, kept = _spec(), {}
    first = kept_marks(kept, MINER, MINIMAL.protection, _net(spec), spec)
    again = kept_marks(kept, MINER, MINIMAL.protection, _net(spec), spec)
    fresh = own_marks(MINER, MINIMAL.protection, _net(spec), spec)
    assert again is first and len(kept) == 1
    assert np.array_equal(first[0].key.x, fresh[0].key.x) and np.array_equal(first[0].key.bits, fresh[0].key.bits)


def test_another_architecture_gets_its_own_key() -> None:
    small, wide, kept = _spec(), _spec(hidden=(32, 16)), {}
    a = kept_marks(kept, MINER, MINIMAL.protection, _net(small), small)
    b = kept_marks(kept, MINER, MINIMAL.protection, _net(wide), wide)
    assert len(kept) == 2 and a[0].key.x.shape != b[0].key.x.shape


def test_no_method_of_a_miner_answers_with_its_kept_marks() -> None:
    """Ray exposes every function of the class: the cache is reached only through a module function."""
    methods = {name for name, _ in inspect.getmembers(Miner, inspect.isfunction)}
    assert not any("mark" in name for name in methods), methods


def test_settled_leaves_readable_weights_alone_and_settles_unreadable_ones() -> None:
    spec = _spec()
    net = _net(spec)
    marks = own_marks(MINER, MINIMAL.protection, net, spec)
    fresh = to_numpy(net)  # an untrained net does not carry the mark
    assert float(np.min(watermark.signed_margins(fresh, marks[0].key))) < MINIMAL.protection.mark_margin
    fixed = settled(net, marks, fresh, MINIMAL.protection.mark_margin)
    assert fixed is not fresh
    assert float(np.min(watermark.signed_margins(fixed, marks[0].key))) >= MINIMAL.protection.mark_margin
    assert settled(net, marks, fixed, MINIMAL.protection.mark_margin) is fixed  # readable: returned as is


def test_the_driver_never_imports_lightning() -> None:
    """Spawning miners must not cost the driver Lightning's import (seconds before the first block)."""
    code = ("import sys, dlbc_ray.runtime.network, dlbc_ray.cli.demo, dlbc_ray.actors.spawn, dlbc_ray.actors.miner; "
            "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'torchmetrics') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_validator_loads_its_replay_code_as_it_starts_and_never_lightning() -> None:
    """A fresh validator (a restart, an added node) that imported its replay code inside its first ballot spent
    that ballot's validate_timeout_s importing on a busy node and cast no vote (issue 13's added-node round): it
    loads models.replay as it starts, and replays with models.step, so Lightning is never imported at all."""
    code = ("import sys; from dlbc_ray.actors.validator import Validator; from dlbc_ray.config import MINIMAL; "
            "from dlbc_ray.crypto import Identity; before = 'dlbc_ray.models.replay' in sys.modules; "
            "Validator(MINIMAL.validator, identity=Identity.from_seed('v', b'v'), protection=MINIMAL.protection, "
            "marks={}, proposer=Identity.from_seed('c', b'c').public_key); "
            "print(before, 'dlbc_ray.models.replay' in sys.modules, 'pytorch_lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["False", "True", "False"], out.stdout + out.stderr
