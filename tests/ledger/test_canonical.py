"""The fast canonical encodings are byte for byte the definition, and give way to it whenever they might differ."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, computed_field, field_serializer

from dlbc_ray import canonical
from dlbc_ray.canonical import canonical_bytes
from dlbc_ray.ledger.chain import block_signatures
from dlbc_ray.schema import Signed
from tests.builders import World

WIRE = ConfigDict(frozen=True, extra="forbid")


def definition(message: BaseModel) -> bytes:
    """The canonical encoding as specified, with no shortcut."""
    return json.dumps(message.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def same_as_definition(message: BaseModel) -> None:
    """Equal bytes, or the same kind of error (NaN, a lone surrogate) from both."""
    try:
        expected: bytes | type = definition(message)
    except ValueError as e:
        expected = type(e)
    try:
        actual: bytes | type = canonical_bytes(message)
    except ValueError as e:
        actual = type(e)
    assert actual == expected


class Colour(str, Enum):
    RED = "red"
    QUOTE = 'a"b'


class Level(int, Enum):
    LOW = 1
    HIGH = 2


class Inner(BaseModel):
    model_config = WIRE
    z: str
    a: int


class Flat(BaseModel):
    model_config = WIRE
    zeta: str
    alpha: int
    flag: bool
    maybe: str | None = None
    colour: Colour = Colour.RED
    items: tuple[str, ...] = ()
    inner: Inner | None = None


class Mixed(BaseModel):
    """A float or a dict field sends the whole message to the definition."""

    model_config = WIRE
    flat: Flat
    ratio: float
    extra_map: dict[str, Any]


texts = st.text(alphabet=st.characters(codec=None), max_size=12)  # any code point: quotes, controls, surrogates
ints = st.one_of(st.integers(), st.integers(min_value=-(10**40), max_value=10**40))
scalars = st.one_of(texts, ints, st.booleans(), st.none(), st.floats(), st.sampled_from(list(Colour) + list(Level)))


@settings(max_examples=400, deadline=None)
@given(zeta=texts, alpha=ints, flag=st.booleans(), maybe=st.one_of(st.none(), texts),
       colour=st.sampled_from(list(Colour)), items=st.lists(texts, max_size=4).map(tuple),
       inner=st.one_of(st.none(), st.builds(Inner, z=texts, a=ints)), ratio=st.floats(),
       extra_map=st.dictionaries(texts, scalars, max_size=3))
def test_a_flat_message_encodes_as_the_definition(ratio: float, extra_map: dict[str, Any], **values: Any) -> None:
    message = Flat.model_construct(**values)
    same_as_definition(message)
    try:
        shortcut = canonical._flat_bytes(message)
    except ValueError:  # a lone surrogate: refused, as by the definition
        shortcut = b""
    assert shortcut is not None  # the shortcut itself was compared, not a fallback
    mixed = Mixed.model_construct(flat=message, ratio=ratio, extra_map=extra_map)
    assert canonical._flat_keys(Mixed) is None
    same_as_definition(mixed)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic warns of each unexpected value it dumps
@settings(max_examples=300, deadline=None)
@given(values=st.fixed_dictionaries({"zeta": scalars, "alpha": scalars, "flag": scalars, "maybe": scalars,
                                     "colour": scalars, "items": st.lists(scalars, max_size=3).map(tuple)}))
def test_any_runtime_value_in_any_field_still_encodes_as_the_definition(values: dict[str, Any]) -> None:
    """``model_construct`` skips validation: a value of the wrong kind must not change the bytes either."""
    same_as_definition(Flat.model_construct(**values))


class Sub(Inner):
    hidden: str = "only the subclass has me"


class WithSerializer(BaseModel):
    model_config = WIRE
    a: Annotated[int, PlainSerializer(lambda v: v * 2)]
    b: str


class WithFieldSerializer(BaseModel):
    model_config = WIRE
    a: str

    @field_serializer("a")
    def _upper(self, v: str) -> str:
        return v.upper()


class WithComputed(BaseModel):
    model_config = WIRE
    a: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def doubled(self) -> int:
        return 2 * self.a


class WithExcluded(BaseModel):
    model_config = WIRE
    a: int
    secret: str = Field(default="s", exclude=True)


class ByAlias(BaseModel):
    model_config = ConfigDict(frozen=True, serialize_by_alias=True)
    a: int = Field(serialization_alias="b")


class Open(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")
    a: int


def test_models_whose_dump_is_not_their_fields_take_the_definition() -> None:
    for message in (WithSerializer(a=2, b="x"), WithFieldSerializer(a="x"), WithComputed(a=3), WithExcluded(a=1),
                    ByAlias(a=1), Open(a=1, other="kept")):
        assert canonical._flat_bytes(message) is None
        assert canonical_bytes(message) == definition(message)


def test_a_subclass_in_a_nested_field_encodes_as_the_definition() -> None:
    """pydantic dumps a nested value by its declared class; the shortcut only nests exactly that class."""
    message = Flat.model_construct(zeta="z", alpha=1, flag=True, inner=Sub(z="q", a=2))
    assert canonical._flat_bytes(message) is None
    assert canonical_bytes(message) == definition(message)


def test_every_message_of_real_blocks_takes_a_shortcut_and_encodes_as_the_definition() -> None:
    world = World()
    blocks = [world.genesis]
    for _ in range(2):
        block, _ = world.round({0: [9000] * 4, 1: [8000] * 4, 2: [7000] * 4}, task=world.task(reward=5))
        world.apply(block)
        blocks.append(block)
    for block in blocks:
        signeds = block_signatures(block)
        messages = [block.header, *[s.message for s in signeds], *signeds[1:], *block.txs]
        for message in messages:
            assert canonical_bytes(message) == definition(message)
        assert all(canonical._flat_bytes(m) is not None for m in messages if not isinstance(m, Signed))


class Empty(BaseModel):
    model_config = WIRE


def test_each_flat_class_gets_one_generated_encoder_and_a_fieldless_one_writes_braces() -> None:
    assert canonical._flat_encoder(Flat) is canonical._flat_encoder(Flat)  # generated once per class
    assert canonical._flat_encoder(Mixed) is None
    assert canonical._flat_bytes(Empty()) == definition(Empty()) == b"{}"


def test_a_nested_message_remembered_under_its_id_is_reused_only_for_that_object() -> None:
    """The nested shortcut consults the per-block memory by identity: an entry naming another object is not used."""
    inner, other = Inner(z="q", a=1), Inner(z="r", a=2)
    canonical._CANONICAL.put(id(inner), (other, b'{"a":2,"z":"r"}'))  # a stale entry naming another object
    try:
        message = Flat(zeta="z", alpha=1, flag=True, inner=inner)
        assert canonical_bytes(message) == definition(message)
    finally:
        canonical._CANONICAL.clear()
