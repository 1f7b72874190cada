from __future__ import annotations

import pickle

import pytest

from dlbc_ray import errors

ALL = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DLBCError)]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_pickles_with_its_reason(cls: type[errors.DLBCError]) -> None:
    err = cls("something broke", reason="rule")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == "something broke" and back.reason == "rule"
    assert back.exit_code == cls.exit_code != 0


def test_block_errors_keep_their_height() -> None:
    back = pickle.loads(pickle.dumps(errors.InvalidBlock("bad", reason="prev_hash", height=7)))
    assert back.height == 7 and back.reason == "prev_hash"
