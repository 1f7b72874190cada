"""The boundary between Ray and dlbc-ray: timeouts on every get, Ray's errors made ours."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from dlbc_ray.errors import ActorUnavailable, DLBCError

T = TypeVar("T")


def unwrap(error: RayTaskError, what: str) -> Exception:
    """A task's own DLBCError passes through unchanged; anything else says which call broke."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, DLBCError):
        return cause
    return ActorUnavailable(f"{what} failed: {type(cause).__name__ if cause else 'error'}: {cause}",
                            reason="task_error")


def get(ref: Any, *, timeout: float, what: str) -> Any:
    """``ray.get`` with a deadline; RayActorError, timeouts and task errors become DLBCErrors."""
    try:
        return ray.get(ref, timeout=timeout)
    except GetTimeoutError:
        raise ActorUnavailable(f"{what} did not answer within {timeout:.0f} s", reason="timeout") from None
    except RayTaskError as e:
        raise unwrap(e, what) from None
    except ActorUnavailableError:
        raise ActorUnavailable(f"{what}: the actor is restarting", reason="restarting") from None
    except RayActorError as e:
        raise ActorUnavailable(f"{what}: actor died ({type(e).__name__})", reason="actor_died") from None


def wait_each(refs: Sequence[Any], *, timeout: float) -> tuple[list[tuple[Any, int]], list[Any]]:
    """(ref, wall-clock ms when seen) in the order they finished, and refs still pending at the deadline."""
    deadline = time.monotonic() + timeout
    pending, done = list(refs), []
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, pending = ray.wait(pending, num_returns=1, timeout=left)
        done.extend((ref, time.time_ns() // 1_000_000) for ref in ready)
    return done, pending


@dataclass(frozen=True)
class Member:
    """A network participant as the coordinator sees it: its name, its key, its actor."""

    name: str
    public_key: str
    handle: Any
