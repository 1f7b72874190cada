"""Reading JSON and YAML written by someone else, within ``config.Limits``.

Size is capped before a byte is parsed; nesting, YAML aliases and value lengths are
capped before anything is built; the values that come out are walked once more
(every alias expanded) and hold only finite numbers and printable text. Every
problem is an ``UntrustedInput`` naming where in the document it is.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from dlbc_ray.config import LIMITS, Limits

MAX_INT = 2**63


class UntrustedInput(ValueError):
    """A document breaks a limit; ``where`` is the dotted path of the value (empty for the whole file)."""

    def __init__(self, where: str, message: str, *, reason: str = "bad_value") -> None:
        super().__init__(message)
        self.where, self.message, self.reason = where, message, reason


def read_document(path: Path, *, limits: Limits = LIMITS) -> Any:
    """The parsed content of a .json, .yaml or .yml file; OSError if it cannot be read."""
    size = path.stat().st_size
    if size > limits.max_task_file_bytes:
        raise UntrustedInput("", f"{size:,} bytes is over the {limits.max_task_file_bytes:,}-byte limit",
                             reason="too_large")
    with open(path, "rb") as f:
        raw = f.read(limits.max_task_file_bytes + 1)
    if len(raw) > limits.max_task_file_bytes:
        raise UntrustedInput("", f"grew past the {limits.max_task_file_bytes:,}-byte limit while read",
                             reason="too_large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UntrustedInput("", f"not UTF-8 (byte {e.start})", reason="syntax") from None
    data = parse_json(text, limits) if path.suffix.lower() == ".json" else parse_yaml(text, limits)
    check_values(data, limits)
    return data


def parse_json(text: str, limits: Limits = LIMITS) -> Any:
    """JSON with its nesting capped before it is decoded; NaN, Infinity and over-long numbers come out as
    values that ``check_values`` refuses where they stand."""
    _check_json_depth(text, limits.max_depth)

    def number(kind: type) -> Any:
        def parse(literal: str) -> Any:
            return _TooLong(len(literal)) if len(literal) > limits.max_scalar_chars else kind(literal)
        return parse

    try:
        return json.loads(text, parse_int=number(int), parse_float=number(float), parse_constant=float)
    except json.JSONDecodeError as e:
        raise UntrustedInput("", f"not valid JSON ({e.msg}, line {e.lineno} column {e.colno})",
                             reason="syntax") from None


class _TooLong(int):
    """A JSON number too long to convert; ``check_values`` reports it where it stands."""


def _check_json_depth(text: str, max_depth: int) -> None:
    """One pass over the characters (json's own decoder recurses once per level)."""
    depth, in_string, escaped = 0, False, False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > max_depth:
                raise UntrustedInput("", f"nested deeper than {max_depth} levels", reason="too_deep")
        elif c in "]}":
            depth -= 1


def parse_yaml(text: str, limits: Limits = LIMITS) -> Any:
    """Safe YAML; its event stream is checked (depth, aliases, value lengths) before any object is built."""
    try:
        _check_yaml_events(text, limits)
        return yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader
    except yaml.YAMLError as e:
        raise UntrustedInput("", f"not valid YAML ({_yaml_problem(e)})", reason="syntax") from None
    except UntrustedInput:
        raise
    except (ValueError, OverflowError) as e:  # an implicit timestamp out of range, e.g. month 13 or year 0
        raise UntrustedInput("", f"not valid YAML ({' '.join(str(e).split())[:80]})",
                             reason="syntax") from None


class _Place:
    """Where the YAML event stream is: one frame per open mapping or list, each knowing its current key."""

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []  # [is_mapping, expecting_key, key_or_index]

    def __str__(self) -> str:
        return _dotted(tuple(frame[2] for frame in self.frames if frame[2] is not None))

    def begin(self) -> None:
        """A node starts: in a list it is the next item."""
        if self.frames and not self.frames[-1][0]:
            self.frames[-1][2] = 0 if self.frames[-1][2] is None else self.frames[-1][2] + 1

    def end(self, scalar: str | None = None) -> None:
        """A node ended: in a mapping it was a key (remember it) or a value (a key comes next)."""
        if self.frames and self.frames[-1][0]:
            frame = self.frames[-1]
            if frame[1]:
                frame[1], frame[2] = False, scalar if scalar is not None else "?"
            else:
                frame[1] = True


def _check_yaml_events(text: str, limits: Limits) -> None:
    place, aliases = _Place(), 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if getattr(event, "tag", None) is not None:
            tag = str(event.tag).replace("tag:yaml.org,2002:", "!!")[:20]
            raise UntrustedInput(str(place), f"explicit YAML tags ({tag}) are not allowed", reason="syntax")
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            place.begin()
            place.frames.append([isinstance(event, yaml.MappingStartEvent), True, None])
            if len(place.frames) > limits.max_depth:
                raise UntrustedInput(str(place), f"nested deeper than {limits.max_depth} levels", reason="too_deep")
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            place.frames.pop()
            place.end()
        elif isinstance(event, yaml.AliasEvent):
            place.begin()
            aliases += 1
            if aliases > limits.max_aliases:
                raise UntrustedInput(str(place), f"more than {limits.max_aliases} YAML aliases",
                                     reason="too_many_aliases")
            place.end()
        elif isinstance(event, yaml.ScalarEvent):
            place.begin()
            if len(event.value) > limits.max_scalar_chars:
                raise UntrustedInput(str(place), f"a value of {len(event.value):,} characters; the limit is "
                                     f"{limits.max_scalar_chars:,}")
            place.end(event.value)


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        return f"{error.problem or error.context or 'syntax error'}{where}"
    return " ".join(str(error).split())[:80]


def check_values(data: Any, limits: Limits = LIMITS) -> None:
    """Every value, aliases expanded: bounded depth and count, finite numbers, bounded printable text."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    seen = 0
    while stack:
        value, where = stack.pop()
        seen += 1
        if seen > limits.max_nodes:
            raise UntrustedInput("", f"more than {limits.max_nodes:,} values (each use of a YAML alias counts)",
                                 reason="too_many_values")
        if len(where) > limits.max_depth:
            raise UntrustedInput(_dotted(where[:-1]), f"nested deeper than {limits.max_depth} levels",
                                 reason="too_deep")
        problem = _scalar_problem(value, limits)
        if problem:
            raise UntrustedInput(_dotted(where), problem)
        if isinstance(value, dict):
            for key, item in value.items():
                key_problem = _scalar_problem(key, limits)
                if key_problem:
                    raise UntrustedInput(_dotted(where), f"a key: {key_problem}")
                stack.append((item, (*where, key)))
        elif isinstance(value, list):
            stack.extend((item, (*where, i)) for i, item in enumerate(value))
        elif not isinstance(value, str | int | float | dt.date | type(None)):
            raise UntrustedInput(_dotted(where), f"a {type(value).__name__}, which a task file never holds")


def _scalar_problem(value: Any, limits: Limits) -> str | None:
    if isinstance(value, _TooLong):
        return f"a number of {int(value):,} characters; the limit is {limits.max_scalar_chars:,}"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN and infinities are not allowed"
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        return "an integer out of range"
    if isinstance(value, str):
        if len(value) > limits.max_scalar_chars:
            return f"text longer than {limits.max_scalar_chars:,} characters"
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
            return "text with a control character (e.g. NUL) or a lone surrogate"
    return None


def _dotted(where: tuple[Any, ...]) -> str:
    return ".".join(str(p) if isinstance(p, str | int) else repr(p) for p in where)[:60]
