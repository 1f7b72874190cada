"""Canonical bytes of a message: sorted-key, whitespace-free UTF-8 JSON of its JSON-mode dump, NaN refused.

The definition is ``json.dumps(message.model_dump(mode="json"), sort_keys=True,
separators=(",", ":"), ensure_ascii=False, allow_nan=False)``. Two shortcuts produce the
same bytes faster, and give way to the definition whenever they might differ: a flat
message (fields of strings, integers, booleans, None, enums and tuples of those) is
composed field by field with the JSON encoder's own string escaping, and a ``Signed``
envelope of hex strings is composed around its message's bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from functools import cache
from json.encoder import encode_basestring  # the C escaping the encoder itself uses with ensure_ascii=False
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from dlbc_ray.schema.signed import Signed


class _Bounded(dict):  # type: ignore[type-arg]
    """A dict that forgets its oldest entries beyond ``size`` (insertion order)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: object, value: object) -> None:
        self[key] = value
        while len(self) > self.size:
            try:
                del self[next(iter(self))]
            except (StopIteration, KeyError, RuntimeError):  # another thread evicted it first
                break


# id(message) -> (message, canonical bytes), filled by ``crypto.prefetched`` for frozen messages while a
# block is checked: its Merkle leaves, block hash and task id then need no second encoding.
_CANONICAL = _Bounded(16_384)

_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ENVELOPE_FIELDS = ("chain_id", "message", "signature", "signer")  # Signed's fields, in sorted order


def canonical_bytes(message: BaseModel | Mapping[str, Any] | Sequence[Any]) -> bytes:
    """Sorted-key, whitespace-free UTF-8 JSON of a message; NaN is refused."""
    if isinstance(message, BaseModel):
        hit = _CANONICAL.get(id(message))
        if hit is not None and hit[0] is message:
            return hit[1]
        composed = _envelope_bytes(message) if isinstance(message, Signed) else _flat_bytes(message)
        if composed is not None:
            return composed
        return _CANONICAL_JSON.encode(message.model_dump(mode="json")).encode()
    return _CANONICAL_JSON.encode(message).encode()


# ------------------------------------------------------------------- envelopes


@cache
def _plain_message_type(cls: type[BaseModel]) -> type | None:
    """The message type of an envelope class whose JSON is three strings around its message's JSON, else None."""
    return cls.model_fields["message"].annotation if tuple(sorted(cls.model_fields)) == _ENVELOPE_FIELDS else None


def _envelope_bytes(signed: Signed[Any]) -> bytes | None:
    """The bytes of encoding the whole envelope, reusing the message's encoding; None when that shortcut may differ."""
    chain_id, signature, signer = signed.chain_id, signed.signature, signed.signer
    if type(signed.message) is not _plain_message_type(type(signed)) or type(chain_id) is not str \
            or type(signature) is not str or type(signer) is not str:
        return None
    strings = chain_id + signature + signer
    if not (strings.isascii() and strings.isalnum()):  # hex, as the wire types insist: nothing to escape
        return None
    return b"".join((b'{"chain_id":"', chain_id.encode(), b'","message":', canonical_bytes(signed.message),
                     b',"signature":"', signature.encode(), b'","signer":"', signer.encode(), b'"}'))


# --------------------------------------------------------------- flat messages


class _NotFlat(Exception):
    """A value the field-by-field composition does not handle; the full encoding takes over."""


# A field's declared kind: how its value is written, and the one runtime type that may be written so.
# pydantic writes a value of another type by its declared kind (False in an int field is 0), so any
# other value sends the message to the definition.
_STR, _INT, _BOOL = "str", "int", "bool"
Kind = tuple[Any, ...]  # (name, nullable, detail)


@cache
def _flat_keys(cls: type[BaseModel]) -> tuple[tuple[str, str, Kind], ...] | None:
    """(name, JSON key with colon, declared kind) of each field, sorted by name, for a model whose JSON is its fields.

    None when anything could make ``model_dump`` differ from the fields' values written
    plainly: serializers, computed or excluded fields, serialization by alias, extra
    fields, or a field of a kind not composed here (float, dict, bytes, unions ...).
    """
    decorators = cls.__pydantic_decorators__
    config = cls.model_config
    if (cls.model_computed_fields or decorators.field_serializers or decorators.model_serializers
            or config.get("serialize_by_alias") or config.get("extra") == "allow" or config.get("use_enum_values")):
        return None
    if any(f.exclude or f.exclude_if is not None for f in cls.model_fields.values()):
        return None
    if _serializes_specially(cls.__pydantic_core_schema__):  # an Annotated PlainSerializer, say
        return None
    kinds = {name: _kind(f.annotation) for name, f in cls.model_fields.items()}
    if any(k is None for k in kinds.values()):
        return None
    return tuple((name, encode_basestring(name) + ":", kinds[name]) for name in sorted(kinds))  # type: ignore[misc]


def _kind(annotation: Any) -> Kind | None:
    """A declared type as (kind, nullable, detail), or None when it is not one composed here."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    nullable = False
    if get_origin(annotation) in (Union, UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(options) < len(get_args(annotation))
        if len(options) != 1:
            return None
        annotation = options[0]
        while get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
    if annotation is str or annotation is int or annotation is bool:
        return (annotation.__name__, nullable, None)
    if get_origin(annotation) is Literal and all(type(v) is str for v in get_args(annotation)):
        return (_STR, nullable, None)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return ("enum", nullable, annotation) if all(type(m.value) is str for m in annotation) else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("model", nullable, annotation)
    args = get_args(annotation)
    if get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _kind(args[0])
        return None if item is None or item[1] else ("tuple", nullable, item)
    return None


def _serializes_specially(schema: object) -> bool:
    if isinstance(schema, dict):
        return "serialization" in schema or any(_serializes_specially(v) for v in schema.values())
    if isinstance(schema, list | tuple):
        return any(_serializes_specially(v) for v in schema)
    return False


def _write(kind: Kind, value: Any) -> str:
    """JSON of ``value`` as its declared kind, exactly as the encoder writes it; _NotFlat when types differ."""
    name, nullable, detail = kind
    kind_type = type(value)
    if name == _STR and kind_type is str:
        return encode_basestring(value)
    if name == _INT and kind_type is int:
        return int.__repr__(value)
    if name == _BOOL and kind_type is bool:
        return "true" if value else "false"
    if value is None and nullable:
        return "null"
    if name == "enum" and kind_type is detail:
        return encode_basestring(value.value)  # model_dump(mode="json") writes an enum's value
    if name == "model" and kind_type is detail:
        return _nested(value)
    if name == "tuple" and kind_type is tuple:
        return "[" + ",".join([_write(detail, v) for v in value]) + "]"
    raise _NotFlat


def _nested(message: BaseModel) -> str:
    """A nested message's JSON: remembered, composed field by field, or (envelopes and the rest) ``canonical_bytes``."""
    hit = _CANONICAL.get(id(message))
    if hit is not None and hit[0] is message:
        return hit[1].decode()
    flat = None if isinstance(message, Signed) else _flat_text(message)
    return flat if flat is not None else canonical_bytes(message).decode()


# The exact-type fast path of each kind, inlined by ``_flat_encoder``; any other value goes through ``_write``.
_FAST = {_STR: "_eb(v) if type(v := f[{name!r}]) is str else _write(k{i}, v)",
         _INT: "_int(v) if type(v := f[{name!r}]) is int else _write(k{i}, v)",
         _BOOL: "(\"true\" if v else \"false\") if type(v := f[{name!r}]) is bool else _write(k{i}, v)"}


@cache
def _flat_encoder(cls: type[BaseModel]) -> Callable[[dict[str, Any]], str] | None:
    """A function from a flat model's field dict to its JSON text, generated once per class (as dataclasses does).

    It writes exactly what ``_write`` writes for each field, in sorted key order; the
    generated source holds only field names (Python identifiers) and constant indices.
    """
    keys = _flat_keys(cls)
    if keys is None:
        return None
    namespace: dict[str, Any] = {"_eb": encode_basestring, "_int": int.__repr__, "_write": _write}
    parts = []
    for i, (name, key, kind) in enumerate(keys):
        namespace[f"p{i}"], namespace[f"k{i}"] = ("{" if i == 0 else ",") + key, kind
        parts.append(f"p{i}, " + _FAST.get(kind[0], "_write(k{i}, f[{name!r}])").format(name=name, i=i))
    source = "def encode(f):\n    return \"\".join((" + ", ".join(parts) + ", \"}\"))\n"
    if not keys:
        source = "def encode(f):\n    return \"{}\"\n"
    exec(source, namespace)  # noqa: S102 - source built above from identifiers and indices only
    return namespace["encode"]  # type: ignore[no-any-return]


def _flat_text(message: BaseModel) -> str | None:
    """A flat message's JSON through its class's generated encoder; None when it is not flat (then the slow path)."""
    encoder = _flat_encoder(type(message))
    if encoder is None or message.__pydantic_extra__:
        return None
    try:
        return encoder(message.__dict__)
    except (_NotFlat, KeyError):
        return None


def _flat_bytes(message: BaseModel) -> bytes | None:
    text = _flat_text(message)
    return None if text is None else text.encode()
