"""Whose watermarks a validator reads in a submission: a set bounded by the round, not by the registry.

Reading an owner's mark costs one M x T projection (8 MiB of key at M = 8192, T = 256), so reading every
registered miner's mark in every submission grows with the registry: at 1,000 miners, a 1,000-submission
round is a million projections per validator and an 8 GiB key ring. A model can only be stolen from someone
whose model the thief could have: a submitter of this round, or the owner of an earlier model on this data
(a winner, whose weights the chain publishes, or a valid model this validator judged). Small networks read
every registered mark anyway, which also names a copy of a model that never reached the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def compute_mark_candidates(registered: Sequence[str], submitters: Iterable[str], earlier_owners: Iterable[str],
                            *, all_up_to: int) -> tuple[str, ...]:
    """The owners whose marks each submission of a ballot is checked for, in registration order.

    Every registered miner while at most ``all_up_to`` are registered; beyond, only this ballot's
    ``submitters`` (each submission's own miner among them) and the ``earlier_owners`` (the miners
    of the earlier models this validator compares against), of those registered. Unregistered
    names never count: a submitter nobody registered is judged by that rule, not by its mark.
    """
    if len(registered) <= all_up_to:
        return tuple(registered)
    wanted = set(submitters) | set(earlier_owners)
    return tuple(owner for owner in registered if owner in wanted)
