"""Typed, versioned wire messages, validated field by field.

A message class is a frozen dataclass deriving from `Message` with a ``TYPE``
name and a ``VERSION``. On the wire it is a CBOR map
``{"t": TYPE, "v": VERSION, <field>: <value>, ...}``. `Message.from_wire`
accepts exactly the declared fields with exactly the declared types (bool is
not an int, a list holds only its declared item type) and the bounds given in
``field(metadata=...)``: ``max_len`` for text, bytes and lists, ``min``/``max``
for numbers. Anything else is a `MessageError` naming the field.

Example::

    @dataclass(frozen=True)
    class Hello(Message):
        TYPE: ClassVar[str] = "hello"
        name: str = field(metadata={"max_len": 64})
        port: int = field(metadata={"min": 0, "max": 65535})
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Hashable
from typing import Any, ClassVar, TypeVar, cast, get_args, get_origin, get_type_hints

from ._errors import P2PError

M = TypeVar("M", bound="Message")
MAX_TEXT = 4096  # default bound for a text or bytes field without max_len
MAX_ITEMS = 256  # default bound for a list field without max_len


class MessageError(P2PError):
    """A wire message does not match its declared shape; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.TYPE, "v": self.VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_wire(cls: type[M], obj: Any) -> M:
        """Validate ``obj`` (a decoded CBOR value) and build the message."""
        if not isinstance(obj, dict):
            raise MessageError(f"{cls.TYPE}: expected a map")
        if obj.get("t") != cls.TYPE:
            raise MessageError(f"expected a {cls.TYPE!r} message, got {obj.get('t')!r}")
        if obj.get("v") != cls.VERSION:
            raise MessageError(f"{cls.TYPE}: unsupported version {obj.get('v')!r}")
        hints, fields = _shape(cast(Hashable, cls))
        unknown = set(obj) - set(fields) - {"t", "v"}
        if unknown:
            raise MessageError(f"{cls.TYPE}: unknown field {sorted(unknown)[0]!r}")
        values = {}
        for name, f in fields.items():
            if name not in obj:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise MessageError(f"{cls.TYPE}: missing field {name!r}")
                continue
            values[name] = _check(obj[name], hints[name], f.metadata, f"{cls.TYPE}.{name}")
        return cls(**values)


@functools.cache
def _shape(cls: Any) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A message class's field types and fields (resolving the types costs about
    50 us, more than the rest of a small message's check)."""
    return get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _check(value: Any, tp: Any, meta: typing.Mapping[str, Any], where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(value, inner, meta, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise MessageError(f"{where}: expected a list")
        if len(value) > meta.get("max_len", MAX_ITEMS):
            raise MessageError(f"{where}: more than {meta.get('max_len', MAX_ITEMS)} items")
        item_meta = {"max_len": meta["item_max_len"]} if "item_max_len" in meta else {}
        items = [_check(v, args[0], item_meta, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is int:
        if type(value) is not int:
            raise MessageError(f"{where}: expected an integer")
    elif tp is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise MessageError(f"{where}: expected a finite number")
        value = float(value)
    elif tp in (str, bytes, bool):
        if type(value) is not tp:
            raise MessageError(f"{where}: expected {tp.__name__}")
    elif tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise MessageError(f"{where}: expected a map")
    else:
        raise TypeError(f"{where}: unsupported field type {tp!r}")
    if isinstance(value, str | bytes) and len(value) > meta.get("max_len", MAX_TEXT):
        raise MessageError(f"{where}: longer than {meta.get('max_len', MAX_TEXT)}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            raise MessageError(f"{where}: below {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise MessageError(f"{where}: above {meta['max']}")
    return value
