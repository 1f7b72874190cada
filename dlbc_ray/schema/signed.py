"""``Signed[T]``: a message with its signer and signature, never a field of the message."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from dlbc_ray.schema.base import PublicKey, SignatureHex

M = TypeVar("M", bound=BaseModel)


class Signed(BaseModel, Generic[M]):
    """An Ed25519 signature by ``signer`` over ``message`` in the message's domain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message: M
    signer: PublicKey
    signature: SignatureHex
