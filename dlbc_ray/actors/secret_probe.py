"""The secret-probe attack's calls: every method of a rival miner's handle, with every argument a miner could make.

What an answer gives away is judged by ``secret_in``; ``actors.adversary`` plays the attack.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dlbc_ray.actors._ray import get
from dlbc_ray.errors import DLBCError
from dlbc_ray.models import watermark
from dlbc_ray.schema import Reveal, Signed
from dlbc_ray.schema.round_messages import WindowClose

PROBE_TIMEOUT_S = 10.0  # the secret-probe's wait for one guessed call to a rival


def probe_rivals(rivals: Mapping[str, Any], closes: Sequence[Signed[WindowClose]],
                 task_id: str) -> tuple[list[str], int, dict[str, bytes]]:
    """Call every method each rival's handle exposes (Ray's own ``__ray_*__`` and ``mine`` aside) with every
    argument list a miner could make; returns what answered with a secret, the calls made, and seeds got."""
    commit = hashlib.sha256(b"a guess|" + task_id.encode()).hexdigest()
    guesses: list[tuple[Any, ...]] = [(), (task_id,), (task_id, commit), *((c,) for c in closes),
                                      *((c, commit) for c in closes)]
    leaks: list[str] = []
    seeds: dict[str, bytes] = {}
    tried = 0
    for name, handle in rivals.items():
        for method in sorted({*dir(handle), "watermark_secret", "mapping_seed"} - {"mine"}):
            if method.startswith("__ray"):
                continue
            for args in guesses:
                tried += 1
                try:
                    got = get(getattr(handle, method).remote(*args), timeout=PROBE_TIMEOUT_S,
                                   what=f"{name}.{method}")
                except (DLBCError, AttributeError, TypeError):  # refused, no such method, wrong arguments
                    continue
                secret = secret_in(got, task_id)
                if secret is not None:
                    leaks.append(f"{name}.{method}")
                    if isinstance(got, Signed):
                        seeds.setdefault(name, secret)
    return leaks, tried, seeds


def secret_in(value: Any, task_id: str) -> bytes | None:
    """What a rival's answer gives away: a reveal of its seed for this task, raw bytes, a watermark key or a
    mapping matrix (nothing an honest answer holds)."""
    if isinstance(value, Signed) and isinstance(value.message, Reveal) and value.message.task_id == task_id:
        return bytes.fromhex(value.message.sml_seed)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (watermark.WatermarkKey, watermark.WatermarkRegularizer, np.ndarray)):
        return b"key"
    if isinstance(value, (tuple, list)):
        return next((s for s in (secret_in(v, task_id) for v in value) if s is not None), None)
    return None
