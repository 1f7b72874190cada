"""Task files mutated from examples/tasks/ never raise anything but our own errors, in one short line."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlbc_ray.crypto import Identity
from dlbc_ray.errors import DLBCError
from dlbc_ray.runtime.taskfile import load_task_with_data, to_task

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks"
# mnist1d is generated on first use (~5 s); its file differs from the others only in names.
SEEDS = sorted(p.name for p in EXAMPLES.glob("*.*") if p.name != "mnist1d-cnn1d.yaml")
REQUESTER = Identity.from_seed("requester", b"fuzz").public_key
NOW_MS = 1_800_000_000_000

HOSTILE = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**400), 2**63, 2**64 - 1, 0, -1, True, None]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e306, 1e-320, float("nan"), float("inf"), -float("inf")]),
    st.text(max_size=8),
    st.sampled_from(["\ud800", "a\x00b.npz", "~otheruser/d.npz", "x" * 3000 + ".npz", "../" * 200 + "d.npz",
                     "/dev/zero.npz", "/", "data/blobs.csv", "2030-01-01T00:00:00", "9999-12-31T23:59:59+00:00"]),
    st.lists(st.integers(min_value=-5, max_value=2**40), max_size=4),
    st.dictionaries(st.sampled_from(["name", "params", "hidden", "channels", "dropout"]),
                    st.integers(-3, 10**7) | st.just("mlp"), max_size=3),
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _mutated(data: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value if action == "swap" else data
    head, rest = path[0], path[1:]
    copy = dict(data) if isinstance(data, dict) else list(data)
    if not rest and action == "delete":
        del copy[head]
    else:
        copy[head] = _mutated(copy[head], rest, action, value)
    return copy


def _dump(data: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(data)
    try:
        return yaml.safe_dump(data, allow_unicode=False)
    except yaml.YAMLError:
        return json.dumps(data)  # JSON is YAML too (mostly), and a fine mutation of it


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(SEEDS))
    raw = (EXAMPLES / name).read_bytes()
    suffix = Path(name).suffix
    kind = draw(st.sampled_from(["bytes", "field", "field", "text"]))
    if kind == "bytes":
        data = bytearray(raw)
        for position, mask in draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)),
                                            min_size=1, max_size=6)):
            data[position] ^= mask
        return suffix, bytes(data)
    if kind == "field":
        parsed = json.loads(raw) if suffix == ".json" else yaml.safe_load(raw)
        path = draw(st.sampled_from(list(_paths(parsed))))
        action = draw(st.sampled_from(["delete", "swap", "swap"])) if path else "swap"
        changed = _mutated(parsed, path, action, draw(HOSTILE))
        as_json = draw(st.booleans())
        return (".json" if as_json else ".yaml"), _dump(changed, as_json).encode("utf-8", "surrogatepass")
    depth = draw(st.integers(1, 400))
    return suffix, draw(st.sampled_from([
        b"model: " + b"[" * depth + b"]" * depth + b"\n" + raw,
        b'{"model": ' + b"{\"a\": " * depth + b"1" + b"}" * depth + b"}",
        b"a: &a [x, x, x, x, x, x, x, x]\n" + b"".join(b"%c: &%c [*%c, *%c, *%c, *%c]\n" % (c, c, c - 1, c - 1, c - 1, c - 1)
                                                     for c in range(ord("b"), ord("b") + depth % 20)) + raw,
        raw + b"\n#" + b"x" * (60_000 + depth * 10),
        raw.replace(b"900", b"9" * (depth * 20)).replace(b"0.85", b".nan").replace(b"0.9", b"1e400"),
    ]))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "data").mkdir()
    x = np.random.default_rng(0).normal(size=(60, 8))
    np.savez(folder / "data" / "blobs.npz", x_train=x[:50], y_train=np.arange(50) % 4, x_test=x[50:],
             y_test=np.arange(10) % 4)
    shutil.copy(EXAMPLES / "local-npz.yaml", folder / "local-npz.yaml")
    return folder


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated_files())
def test_mutated_task_files_load_or_fail_in_one_short_line(workdir: Path, case: tuple[str, bytes]) -> None:
    suffix, content = case
    path = workdir / f"task{suffix}"
    path.write_bytes(content)
    try:
        taskfile, bundle = load_task_with_data(path, cache_dir=workdir / "cache")
        task = to_task(taskfile, REQUESTER, nonce=1, now_ms=NOW_MS, bundle=bundle)
    except DLBCError as e:
        message = str(e)
        assert len(message) <= 300 and "\n" not in message, message
        return
    assert math.isfinite(taskfile.target) and task.dataset.uri in (None, "blobs.npz")
