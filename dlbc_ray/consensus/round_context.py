"""Whose round a miner trains for and a validator judges: only one the proposer signed, of the task handed over.

Without it every miner trains for any caller's self-signed task (keeping a rival's slots busy),
and every validator reads every registered miner's watermark for any caller: a thief holding a
victim's weights during the window could ask, edit after edit, whether the victim's mark is still
there (a mark oracle). The proposer signs one ``RoundContext`` per round; its key comes from the
network's assembler, never from a caller.
"""

from __future__ import annotations

from dlbc_ray import crypto
from dlbc_ray.errors import RoundRefused
from dlbc_ray.schema import Signed
from dlbc_ray.schema.round_messages import RoundContext


def find_round_fault(signed: Signed[RoundContext], task_id: str, proposer: str,
                     chain_id: str | None = None) -> tuple[str, str] | None:
    """(reason, message) for the first thing wrong with ``signed`` as the round of ``task_id``, or None.

    Signed for the chain the context names, which is ``chain_id`` (the network's own, when the caller knows
    it: the same keys may run another chain), by ``proposer``, verifying, and for this very task.
    """
    ctx = signed.message
    if signed.chain_id != ctx.chain_id:
        return "round_chain", f"round context names chain {ctx.chain_id[:12]} but is signed for {signed.chain_id[:12]}"
    if chain_id is not None and ctx.chain_id != chain_id:
        return "round_chain", f"round is of chain {ctx.chain_id[:12]}, this network's is {chain_id[:12]}"
    if signed.signer != proposer:
        return "round_signer", f"round context signed by {signed.signer[:12]}, not by this network's proposer"
    if not crypto.is_valid_signature(signed):
        return "round_signature", "round context signature does not verify for the proposer"
    if ctx.task_id != task_id:
        return "round_task", f"round is of task {ctx.task_id[:12]}, the task handed over is {task_id[:12]}"
    return None


def check_round_context(signed: Signed[RoundContext], task_id: str, proposer: str,
                        chain_id: str | None = None) -> RoundContext:
    """The round ``signed`` describes when ``find_round_fault`` finds nothing, else RoundRefused naming it."""
    fault = find_round_fault(signed, task_id, proposer, chain_id)
    if fault is not None:
        raise RoundRefused(fault[1], reason=fault[0])
    return signed.message
