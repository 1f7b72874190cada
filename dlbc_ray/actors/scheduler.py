"""The consensus actor's scheduler thread: a tick loop, and a round per pool entry or idle standing task.

Module functions over the actor's object, not methods: every method of an actor's class is a call
anyone holding its handle may make; only ``start``, ``stop`` and ``tick`` are meant as such.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dlbc_ray.actors import pool as task_pool
from dlbc_ray.actors.round_commit import Group
from dlbc_ray.errors import DLBCError
from dlbc_ray.schema.round_messages import RoundReport

if TYPE_CHECKING:
    from dlbc_ray.actors.coordinator import Consensus

log = logging.getLogger(__name__)


def run_loop(consensus: Consensus) -> None:
    """Tick every ``tick_s`` until stopped; a failed tick is logged once and the loop goes on."""
    last = ""
    while not consensus._stop.wait(consensus.cfg.tick_s):
        try:
            consensus.tick()
            last = ""
        except Exception as e:  # the ledger unreachable, or a bug: logged once, and the loop goes on
            if str(e) != last:
                log.warning("scheduler tick failed: %s", e)
            last = str(e)


def mine_standing_group(consensus: Consensus, group: Group) -> None:
    try:
        consensus.mine_standing(group=consensus.groups.index(group))
    except DLBCError:  # an empty treasury or a failed start: the next idle tick tries again
        pass
    finally:
        group.busy = False


def mine_entry(consensus: Consensus, group: Group, entry: task_pool.PoolEntry) -> None:
    report: RoundReport | None = None
    try:
        report = consensus._round(entry.task, entry.data, group.members)
    except Exception as e:  # the round could not begin (ledger unreachable): a failed attempt
        consensus.settler.note(entry.task_id, getattr(e, "reason", type(e).__name__), str(e))
    finally:
        consensus.pool.finish(entry.task_id, report, retry=report is None or not report.committed,
                              max_attempts=consensus.cfg.max_attempts)
        group.busy = False
