"""Whose marks a validator reads (consensus/marks.py): bounded by the round beyond a small registry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dlbc_ray.consensus.marks import compute_mark_candidates

NAMES = st.lists(st.text("abcdef0123456789", min_size=4, max_size=8), unique=True, max_size=40)


@given(registered=NAMES, submitters=NAMES, earlier=NAMES, all_up_to=st.integers(0, 50))
def test_candidates_are_registered_in_registration_order_and_bounded_by_the_round(
        registered: list[str], submitters: list[str], earlier: list[str], all_up_to: int) -> None:
    got = compute_mark_candidates(registered, submitters, earlier, all_up_to=all_up_to)
    assert list(got) == [o for o in registered if o in got]  # registration order, no repeats, none unregistered
    if len(registered) <= all_up_to:
        assert got == tuple(registered)
    else:
        assert set(got) == set(registered) & (set(submitters) | set(earlier))
        assert len(got) <= len(set(submitters)) + len(set(earlier))  # whatever the registry's size


def test_a_large_registry_is_not_read_whole_but_every_submitter_and_earlier_owner_is() -> None:
    registered = [f"miner{i:04d}" for i in range(1000)]
    got = compute_mark_candidates(registered, ["miner0999", "miner0003"], ["miner0500", "stranger"], all_up_to=16)
    assert got == ("miner0003", "miner0500", "miner0999")


def test_a_small_registry_is_read_whole_even_for_a_lone_submitter() -> None:
    """A copy of a model that never reached the network is still named by its owner's mark here."""
    registered = [f"miner{i}" for i in range(16)]
    assert compute_mark_candidates(registered, ["miner1"], [], all_up_to=16) == tuple(registered)
    assert compute_mark_candidates(registered, ["miner1"], [], all_up_to=15) == ("miner1",)
