"""One small hierarchy of errors, each with the exit code the CLI returns for it.

Pure code raises these and never asserts. Every error pickles (it crosses Ray
actor boundaries), so subclasses keep the ``(message, *, reason)`` signature.
"""

from __future__ import annotations


class DLBCError(Exception):
    """Base of every error dlbc-ray raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # A short, stable, machine-readable name for the broken rule (e.g. "prev_hash").
        self.reason = reason or type(self).__name__

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.reason))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[DLBCError], message: str, reason: str) -> DLBCError:
    return cls(message, reason=reason)


class ConfigError(DLBCError):
    """A configuration, CLI option or home directory is unusable."""

    exit_code = 2


class KeyFileError(ConfigError):
    """A key file is missing, has loose permissions or holds no valid key."""

    exit_code = 3


class InvalidMessage(DLBCError):
    """A wire message (task, submission, vote, transaction) breaks a rule."""

    exit_code = 4


class InvalidTask(InvalidMessage):
    """A task is malformed, unknown to the registry, or cannot be paid."""


class BadSignature(InvalidMessage):
    """A signature does not verify for its signer, message and domain."""


class InvalidBlock(DLBCError):
    """A block breaks a chain rule; ``reason`` names the rule and ``height`` where."""

    exit_code = 5

    def __init__(self, message: str, *, reason: str | None = None, height: int | None = None) -> None:
        super().__init__(message, reason=reason)
        self.height = height

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_block, (type(self), self.message, self.reason, self.height))


def _rebuild_block(cls: type[InvalidBlock], message: str, reason: str, height: int | None) -> InvalidBlock:
    return cls(message, reason=reason, height=height)


class CorruptLedger(InvalidBlock):
    """Stored ledger bytes no longer match what was committed."""


class ConsensusError(DLBCError):
    """A round could not reach a safe decision."""

    exit_code = 6


class NoQuorum(ConsensusError):
    """Fewer than the required share of validators voted or agreed."""


class RevealRefused(InvalidMessage):
    """A miner keeps its seed (or goes on mining): no window close signed by the proposer for its round."""


class RoundRefused(InvalidMessage):
    """A miner or validator works only for a round the proposer signed, of the task it was handed."""


class InvalidModelFile(DLBCError):
    """A model file is not safetensors, is truncated, or has the wrong architecture."""

    exit_code = 7


class RuntimeFailure(DLBCError):
    """The distributed runtime failed underneath us."""

    exit_code = 8


class ActorUnavailable(RuntimeFailure):
    """A Ray actor died, timed out or could not be reached."""


class NetworkNotRunning(RuntimeFailure):
    """No dlbc-ray network is up on the Ray cluster that was asked."""
