"""One Ray boundary: ``ray.get``/``ray.wait`` only in actors/_ray.py, with a timeout and the fault hook."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import dlbc_ray
from dlbc_ray.actors import _ray

PACKAGE = Path(dlbc_ray.__file__).parent
RAW_CALL = re.compile(r"\bray\.(get|wait)\(")


def _offenders() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                  if p.name != "_ray.py" and RAW_CALL.search(p.read_text()))


def test_no_module_calls_ray_get_or_wait_outside_the_boundary() -> None:
    assert _offenders() == [], "these call ray.get/ray.wait directly instead of through actors/_ray.py"


def test_the_scan_finds_a_raw_call(tmp_path: Path) -> None:
    assert RAW_CALL.search("x = ray.wait([ref], timeout=1)") and not RAW_CALL.search("_ray.get(ref)")


@pytest.fixture
def faults_off() -> Iterator[None]:
    _ray.inject_faults(None)
    yield
    _ray.inject_faults(None)


def test_a_reply_seen_by_wait_can_be_lost(monkeypatch: pytest.MonkeyPatch, faults_off: None) -> None:
    monkeypatch.setattr(_ray.ray, "wait", lambda refs, num_returns, timeout: (refs[:1], refs[1:]))
    done, pending, lost = _ray.wait_one(["a", "b"], timeout=1)
    assert [r for r, _ in done] == ["a"] and pending == ["b"] and lost == []
    assert _ray.is_ready("a", timeout=1)
    _ray.inject_faults("drop=1,seed=1")
    done, pending, lost = _ray.wait_one(["a", "b"], timeout=1)
    assert done == [] and pending == ["b"] and lost == ["a"]
    assert not _ray.is_ready("a", timeout=1)
    assert _ray.wait_each(["a", "b"], timeout=0.05)[0] == []  # lost replies never count as finished


def test_a_negative_wait_is_a_poll(monkeypatch: pytest.MonkeyPatch, faults_off: None) -> None:
    seen: list[float] = []
    monkeypatch.setattr(_ray.ray, "wait", lambda refs, num_returns, timeout: (seen.append(timeout), ([], refs))[1])
    _ray.wait_one(["a"], timeout=-3)
    assert seen == [0.0]
