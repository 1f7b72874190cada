"""The base of every wire type: frozen, strict about extra fields, no behaviour."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dlbc_ray.constants import SCORE_SCALE


class FrozenModel(BaseModel):
    """Immutable message; unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
PublicKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
SignatureHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")]
Amount = Annotated[int, Field(ge=0)]
# Accuracy in [0, 1] scaled by SCORE_SCALE (0.9731 -> 9731).
Score = Annotated[int, Field(ge=0, le=SCORE_SCALE)]
Millis = Annotated[int, Field(ge=0)]
