"""The boundary between Ray and dlbc-ray: timeouts on every get, Ray's errors made ours.

It is also where faults are injected for tests and ``benchmarks/chaos.py``: with
``DLBC_FAULTS`` set (``drop=0.1,seed=7,log=/tmp/drops``) a reply that has already
arrived is reported lost, as a timeout would be although the call took effect. Off
by default; then the hook costs one ``is None`` test per call.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from dlbc_ray.errors import ActorUnavailable, ConfigError, DLBCError

T = TypeVar("T")
FAULTS_ENV = "DLBC_FAULTS"
TRANSIENT = frozenset({"timeout", "restarting", "actor_died"})


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
        value = ray.get(ref, timeout=timeout)
    except GetTimeoutError:
        raise ActorUnavailable(f"{what} did not answer within {timeout:.0f} s", reason="timeout") from None
    except RayTaskError as e:
        raise unwrap(e, what) from None
    except ActorUnavailableError:
        raise ActorUnavailable(f"{what}: the actor is restarting", reason="restarting") from None
    except RayActorError as e:
        raise ActorUnavailable(f"{what}: actor died ({type(e).__name__})", reason="actor_died") from None
    if _plan is not None and _plan.lose(what):
        raise ActorUnavailable(f"{what} did not answer within {timeout:.0f} s (injected)", reason="timeout")
    return value


def get_retrying(call: Callable[[], Any], *, timeout: float, what: str, patience_s: float = 15.0) -> Any:
    """``get(call())``, asked again while the callee is unreachable (for up to ``patience_s``).

    Only for calls that are safe to repeat: reads, and writes the callee makes idempotent.
    """
    deadline, delay = time.monotonic() + patience_s, 0.1
    while True:
        try:
            return get(call(), timeout=timeout, what=what)
        except ActorUnavailable as e:
            if e.reason not in TRANSIENT or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(1.0, delay * 2)


def wait_one(refs: Sequence[Any], *, timeout: float) -> tuple[list[tuple[Any, int]], list[Any], list[Any]]:
    """Wait up to ``timeout`` for one of ``refs``: ([(ref, wall-clock ms when seen)] or [], still pending,
    [ref] when its reply was lost (an injected fault: it never counts as finished))."""
    ready, pending = ray.wait(list(refs), num_returns=1, timeout=max(0.0, timeout))
    lost = [r for r in ready if _plan is not None and _plan.lose("wait")]
    seen = time.time_ns() // 1_000_000
    return [(r, seen) for r in ready if r not in lost], pending, lost


def is_ready(ref: Any, *, timeout: float) -> bool:
    """Whether ``ref`` has finished within ``timeout`` (a poll: its value is read with ``get``)."""
    done, _, _ = wait_one([ref], timeout=timeout)
    return bool(done)


def wait_each(refs: Sequence[Any], *, timeout: float) -> tuple[list[tuple[Any, int]], list[Any]]:
    """(ref, wall-clock ms when seen) in the order they finished, and refs still pending at the deadline."""
    deadline = time.monotonic() + timeout
    pending, done, lost = list(refs), [], []
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, pending, dropped = wait_one(pending, timeout=left)
        done += ready
        lost += dropped
    return done, pending + lost


# ------------------------------------------------------------------ fault injection


@dataclass
class FaultPlan:
    """Replies to drop after the callee ran: each with chance ``drop``; ``log`` gets a line per drop."""

    drop: float
    seed: int | None = None
    log: str | None = None
    rng: random.Random = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(None if self.seed is None else self.seed + os.getpid())

    def lose(self, what: str) -> bool:
        with self.lock:
            lost = self.rng.random() < self.drop
        if lost and self.log:
            with open(self.log, "a") as f:  # one short append per drop: lines from many processes stay whole
                f.write(f"{os.getpid()} {what}\n")
        return lost


def parse_faults(spec: str) -> FaultPlan:
    """``drop=0.1,seed=7,log=/path``; unknown keys and bad values are a ConfigError."""
    fields: dict[str, str] = {}
    for part in filter(None, spec.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in ("drop", "seed", "log"):
            raise ConfigError(f"{FAULTS_ENV}: '{part}' is not drop=P, seed=N or log=PATH", reason="faults")
        fields[key] = value
    try:
        drop = float(fields.get("drop", "0"))
        seed = int(fields["seed"]) if "seed" in fields else None
    except ValueError:
        raise ConfigError(f"{FAULTS_ENV}: '{spec}' has a value that is not a number", reason="faults") from None
    if not 0 <= drop <= 1:
        raise ConfigError(f"{FAULTS_ENV}: drop must be in [0, 1] (got {drop})", reason="faults")
    return FaultPlan(drop, seed, fields.get("log"))


def inject_faults(spec: str | None, *, here: bool = True) -> None:
    """Turn faults on (a spec) or off (None) in every actor spawned from here afterwards, and in this
    process unless ``here`` is False (a driver that must first bring its network up)."""
    global _plan
    _plan = parse_faults(spec) if spec and here else None
    if spec:
        os.environ[FAULTS_ENV] = spec
    else:
        os.environ.pop(FAULTS_ENV, None)


def fault_options() -> dict[str, Any]:
    """Actor options that carry this process's fault plan into a new actor ({} when faults are off)."""
    spec = os.environ.get(FAULTS_ENV)
    return {"runtime_env": {"env_vars": {FAULTS_ENV: spec}}} if spec else {}


def kill(name: str, namespace: str) -> bool:
    """Kill a named actor as a crash would; Ray restarts it if its ``max_restarts`` allows. False if absent."""
    try:
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=False)
    except ValueError:
        return False
    return True


_plan: FaultPlan | None = parse_faults(os.environ[FAULTS_ENV]) if os.environ.get(FAULTS_ENV) else None


@dataclass(frozen=True)
class Member:
    """A network participant as the coordinator sees it: its name, its key, its actor."""

    name: str
    public_key: str
    handle: Any


def named_actor(name: str, namespace: str) -> Any:
    """A named actor's handle; ActorUnavailable (reason ``missing``) when there is none."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise ActorUnavailable(f"no actor named {name} in {namespace}", reason="missing") from None


def resolve(member: Member, actor_name: str, namespace: str) -> Member:
    """``member`` with a handle: its own, else the named actor's (a restart passes names, not handles)."""
    return member if member.handle is not None else Member(member.name, member.public_key,
                                                           named_actor(actor_name, namespace))


def current_actor() -> Any:
    """This actor's own handle, or None outside an actor (unit tests: no live progress)."""
    try:
        return ray.get_runtime_context().current_actor
    except RuntimeError:
        return None
