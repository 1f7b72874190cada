"""What an actor's entry point re-parses before any rule looks at it: Ray unpickles arguments without validating.

Every value is parsed as the type the method DECLARES (never as the caller's own subclass, which
would re-parse with its own validators), splits are rebuilt (their dtype and shape checks run
again), and lists are bounded. Anything odd is one InvalidMessage naming the argument and field,
raised before the actor changes any state: never a traceback, never a half-done round.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from dlbc_ray import crypto
from dlbc_ray.constants import MAX_SUBMISSIONS
from dlbc_ray.consensus.round_context import check_round_context
from dlbc_ray.errors import DLBCError, InvalidMessage
from dlbc_ray.models.data import Split
from dlbc_ray.schema import Signed, Task
from dlbc_ray.schema.base import Hash
from dlbc_ray.schema.round_messages import RoundContext

M = TypeVar("M", bound=BaseModel)
MAX_WON = 1 << 20  # model hashes of earlier winners a validator is told about (one per block, bounded)
_HASHES = TypeAdapter(frozenset[Hash])
_HASH = TypeAdapter(Hash)


def _refused(what: str, detail: str) -> InvalidMessage:
    return InvalidMessage(f"{what}: {detail}"[:300], reason="malformed")


def wire(kind: type[M], value: object, what: str) -> M:
    """``value`` parsed as the wire type ``kind`` (a model instance is dumped and parsed again, so a
    ``model_construct``ed or unpickled one meets every field bound), or InvalidMessage naming the field."""
    try:
        data = value.model_dump(warnings=False) if isinstance(value, BaseModel) else value
        return kind.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or kind.__name__
        raise _refused(what, f"{where}: {first['msg']}") from None
    except (ValueError, TypeError, AttributeError, RecursionError) as e:  # a dump that cannot be made
        raise _refused(what, f"not a {kind.__name__} ({type(e).__name__})") from None


def wires(kind: type[M], values: object, what: str, *, least: int = 0,
          most: int = MAX_SUBMISSIONS) -> tuple[M, ...]:
    """A list or tuple of ``least`` to ``most`` values, each parsed as ``kind``."""
    if not isinstance(values, (list, tuple)):
        raise _refused(what, f"expected a list, got {type(values).__name__}")
    if not least <= len(values) <= most:
        raise _refused(what, f"{len(values)} items, expected {least} to {most}")
    return tuple(wire(kind, v, f"{what}[{i}]") for i, v in enumerate(values))


def refs(values: object, what: str, count: int) -> list[Any]:
    """Exactly ``count`` weight refs (one per submission, in order); each is read and hashed later."""
    if not isinstance(values, (list, tuple)) or len(values) != count:
        got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        raise _refused(what, f"expected {count} weight refs, one per submission, got {got}")
    return list(values)


def winners(values: object, what: str) -> dict[str, int]:
    """Earlier winners: model hash (64 hex digits) -> the height it won at, as the chain state keeps them, so a
    validator recovers the newest first; a plain collection of hashes is taken with heights unknown (0)."""
    if not isinstance(values, Collection) or isinstance(values, (str, bytes)) or len(values) > MAX_WON:
        raise _refused(what, "expected earlier winners: model hashes, or hashes to heights")
    pairs = list(values.items()) if isinstance(values, Mapping) else [(v, 0) for v in values]
    try:
        _HASHES.validate_python(frozenset(h for h, _ in pairs))
    except (ValidationError, TypeError) as e:
        raise _refused(what, f"not a set of model hashes ({type(e).__name__})") from None
    if any(type(height) is not int or height < 0 for _, height in pairs):
        raise _refused(what, "a winner's height is not a non-negative integer")
    return dict(pairs)


def split(value: object, what: str, *, optional: bool = False) -> Split | None:
    """``value`` rebuilt as a ``Split`` (float32 examples, int64 or float32 labels, lengths paired)."""
    if value is None and optional:
        return None
    if not isinstance(value, Split):
        raise _refused(what, f"expected a data split, got {type(value).__name__}")
    try:
        return Split(x=value.x, y=value.y)
    except DLBCError as e:
        raise _refused(what, e.message) from None
    except (ValueError, TypeError, AttributeError, OverflowError) as e:
        raise _refused(what, f"not a usable split ({type(e).__name__})") from None


def index(value: object, what: str) -> int:
    """A non-negative int (bool is not one)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _refused(what, f"expected a non-negative integer, got {type(value).__name__}")
    return value


def commit(value: object, what: str) -> str:
    """A commit hash: 64 lowercase hex digits."""
    try:
        return _HASH.validate_python(value)
    except ValidationError:
        raise _refused(what, "expected 64 lowercase hex digits") from None


def round_of(task: object, ctx: object, proposer: str, chain_id: str | None = None) -> tuple[Task, RoundContext]:
    """The task and the round a miner or validator may work for: both parsed as declared, the round signed by
    ``proposer`` for the very task handed over (``consensus.round_context``: RoundRefused otherwise, before
    anything else is read), the task signed by its requester for that round's chain."""
    signed_task, signed_ctx = wire(Signed[Task], task, "task"), wire(Signed[RoundContext], ctx, "ctx")
    round_ = check_round_context(signed_ctx, crypto.message_hash(signed_task.message), proposer, chain_id)
    spec = crypto.verify(signed_task, chain_id=round_.chain_id, expected_signer=signed_task.message.requester)
    return spec, round_


def audits(value: object, what: str) -> Any:
    """None, or what a round hands its validators to audit transcripts (``RoundAudits`` or ``TranscriptAudits``)."""
    from dlbc_ray.actors.transcript_asks import RoundAudits
    from dlbc_ray.models.replay import TranscriptAudits  # no Lightning: replays run on models.step

    if value is None or type(value) in (RoundAudits, TranscriptAudits):
        return value
    raise _refused(what, f"expected the round's transcript audits, got {type(value).__name__}")
