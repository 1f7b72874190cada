"""The base of every wire type: frozen, strict about extra fields, no behaviour."""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from dlbc_ray.constants import SCORE_SCALE
from dlbc_ray.errors import InvalidMessage
from dlbc_ray.schema.curve import is_public_key


M = TypeVar("M", bound=BaseModel)

# Every wire type refuses NaN and infinities: they break canonical JSON and every comparison.
WIRE_CONFIG = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class FrozenModel(BaseModel):
    """Immutable message; unknown fields are an error, never silently dropped; no NaN or inf."""

    model_config = WIRE_CONFIG


def _on_curve(value: str) -> str:
    if not is_public_key(value):
        raise ValueError("not a point on Ed25519's curve: nobody could ever sign for it")
    return value


def revalidated(message: M) -> M:
    """``message`` as the wire types would parse it, or InvalidMessage naming the first bad field.

    Ray unpickles pydantic models without running their validators, so whatever arrives
    from another actor or a client is re-parsed before a rule looks at it.
    """
    try:
        return type(message).model_validate(message.model_dump())
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise InvalidMessage(f"{type(message).__name__}: {where}: {first['msg']}"[:300], reason="malformed") from None


Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
PublicKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$"), AfterValidator(_on_curve)]
SignatureHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]
# Bounds keep every integer exact in JSON (2^53) and every time before year 10000.
MAX_AMOUNT = 2**53 - 1
MAX_MILLIS = 253_402_300_799_999
MAX_NONCE = 2**63 - 1
Amount = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
# Accuracy in [0, 1] scaled by SCORE_SCALE (0.9731 -> 9731).
Score = Annotated[int, Field(ge=0, le=SCORE_SCALE)]
Millis = Annotated[int, Field(ge=0, le=MAX_MILLIS)]
Nonce = Annotated[int, Field(ge=0, le=MAX_NONCE)]
