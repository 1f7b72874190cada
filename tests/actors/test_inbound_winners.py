"""Earlier winners as a validator is told of them: hashes to the heights they won at, so one that restarted
recovers the newest first (a set in hash order once left the relevant winner past the 8 it asks for)."""

from __future__ import annotations

import pytest

from dlbc_ray.actors.inbound import winners
from dlbc_ray.errors import InvalidMessage
from tests.builders import fake_hash

A, B = fake_hash("a"), fake_hash("b")


def test_hashes_to_heights_are_kept_and_a_plain_set_has_unknown_heights() -> None:
    assert winners({A: 3, B: 9}, "won") == {A: 3, B: 9}
    assert winners(frozenset({A, B}), "won") == {A: 0, B: 0}
    assert sorted(winners({A: 3, B: 9}, "won").items(), key=lambda p: -p[1])[0][0] == B  # newest first


@pytest.mark.parametrize("odd", [{A: -1}, {A: True}, {A: 1.5}, {A: "3"}, {"zz": 1}, {1: 1}, "abc", 7, None])
def test_odd_winners_are_refused_in_one_line(odd: object) -> None:
    with pytest.raises(InvalidMessage) as refused:
        winners(odd, "won_models")
    assert "won_models" in str(refused.value) and "\n" not in str(refused.value)
