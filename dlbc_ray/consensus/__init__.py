"""Pure protocol rules: no Ray, no torch, no I/O, so each is tested in milliseconds.

Quorum and median scores, the winner, rewards and penalties, block validation, the
state transition, the round's phases and block proposal.
"""

from dlbc_ray.consensus.decision import Decision, compute_winner, decide
from dlbc_ray.consensus.proposal import make_genesis, propose_task_block, propose_tx_block
from dlbc_ray.consensus.quorum import Tally, compute_median_score, is_quorum
from dlbc_ray.consensus.phases import Event, Phase, next_phase
from dlbc_ray.consensus.state import ChainState, TaskRecord, process_block
from dlbc_ray.consensus.validation import compute_block_hash, validate_block

__all__ = [
    "ChainState", "Decision", "Event", "Phase", "Tally", "TaskRecord", "compute_block_hash", "compute_median_score",
    "compute_winner", "decide", "is_quorum", "make_genesis", "next_phase", "process_block", "propose_task_block",
    "propose_tx_block", "validate_block",
]
