"""``Signed[T]``: a message with its signer and signature, never a field of the message."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

from dlbc_ray.schema.base import WIRE_CONFIG, Hash, PublicKey, SignatureHex

M = TypeVar("M", bound=BaseModel)


class Signed(BaseModel, Generic[M]):
    """An Ed25519 signature by ``signer`` over ``message``, in the message's domain, for chain ``chain_id``."""

    model_config = WIRE_CONFIG

    message: M
    chain_id: Hash
    signer: PublicKey
    signature: SignatureHex
