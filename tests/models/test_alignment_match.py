"""Weight matching, made cheaper, must still answer what the plain sweep answers (``alignment.match``).

The cheaper ``match`` skips each sweep's first layer (the previous sweep's last: its neighbours have not moved,
so its assignment stands) and forms the outgoing costs as one BLAS product. Here a plain transcription of the
sweep (every layer of every sweep, ``einsum`` costs) is the oracle, on random chains of every shape kind.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from dlbc_ray.models.alignment import Canon, match


def plain_match(ref: Canon, other: Canon, sweeps: int) -> list[np.ndarray]:
    a, b = ref.layers, other.layers
    perms = [np.arange(x.shape[0]) for x in a[:-1]]
    for sweep in range(sweeps):
        changed = False
        for k in (range(len(perms) - 1, -1, -1) if sweep % 2 == 0 else range(len(perms))):
            bk = b[k] if k == 0 else b[k][:, np.concatenate([perms[k - 1], [b[k].shape[1] - 1]])]
            incoming = a[k].reshape(a[k].shape[0], -1) @ bk.reshape(bk.shape[0], -1).T
            nxt = b[k + 1] if k + 1 >= len(perms) else b[k + 1][perms[k + 1]]
            n = a[k + 1].shape[1] - 1
            outgoing = np.einsum("oit,ojt->ij", a[k + 1][:, :n], nxt[:, :n])
            _, col = linear_sum_assignment(incoming + outgoing, maximize=True)
            changed |= not np.array_equal(col, perms[k])
            perms[k] = col
        if not changed and sweep:
            break
    return perms


def chain(rng: np.random.Generator, widths: list[int], taps: int, inputs: int) -> tuple[np.ndarray, ...]:
    """(units, inputs + 1, taps) blocks, the bias as the last input (``alignment.Canon``'s layout)."""
    layers, width = [], inputs
    for units in widths:
        layers.append(rng.standard_normal((units, width + 1, taps)).astype(np.float32))
        width = units
    return tuple(layers)


@settings(max_examples=40, deadline=None)
@given(widths=st.lists(st.integers(1, 12), min_size=2, max_size=5), taps=st.sampled_from([1, 3]),
       inputs=st.integers(1, 9), sweeps=st.integers(1, 4), related=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_the_cheaper_match_answers_as_the_plain_sweep(widths: list[int], taps: int, inputs: int, sweeps: int,
                                                      related: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = chain(rng, widths, taps, inputs)
    if related:  # a permuted, noisy copy: the sweep has something to find (and moves between sweeps)
        other, prev = [], None
        for k, w in enumerate(ref):
            w = w if prev is None else w[:, np.concatenate([prev, [w.shape[1] - 1]])]
            perm = rng.permutation(w.shape[0]) if k < len(ref) - 1 else np.arange(w.shape[0])
            other.append((w[perm] + 0.3 * rng.standard_normal(w.shape)).astype(np.float32))
            prev = np.argsort(perm)
        others = tuple(other)
    else:
        others = chain(rng, widths, taps, inputs)
    a, b = Canon(ref, ref), Canon(others, others)
    got, want = match(a, b, sweeps), plain_match(a, b, sweeps)
    assert [p.tolist() for p in got] == [p.tolist() for p in want]
