"""``Signed[T]``: a message with its signer and signature, never a field of the message."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

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

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickled as (message type, state), so the receiver rebuilds it as its own ``Signed[T]``.

        Pydantic names a parametrized class after the module that first wrote ``Signed[T]`` at
        module level, and registers it there; pickle then refers to it by that name. When that
        module is a test or a user's (``Alias = Signed[WindowClose]``), a Ray worker that had
        already made its own ``Signed[T]`` imports the module, finds no such name and fails
        to unpickle the message (a miner's reveal once failed so, in one test order of many);
        where no module registered it, cloudpickle shipped the whole class by value with every
        message (a ballot 9 KiB instead of 2). The message type itself is a plain
        module-level class, pickled by reference as usual.
        """
        args = self.__pydantic_generic_metadata__["args"]
        if len(args) != 1:
            return super().__reduce_ex__(protocol)
        return _rebuild_signed, (args[0], self.__getstate__())


def _rebuild_signed(message_type: type[BaseModel], state: dict[Any, Any]) -> Signed[Any]:
    cls = Signed[message_type]
    signed = cls.__new__(cls)
    signed.__setstate__(state)
    return signed
