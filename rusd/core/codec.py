"""A small deterministic binary encoding for proposals stored in the log.

Proposals must survive a restart and (later) cross the network to other members,
so they are bytes. The format is tagged values: None, bools, ints (zigzag varint,
any size), bytes, str, tuples, and registered frozen dataclasses (by a stable type
number, fields in declaration order). It is not pickle: decoding runs no code.

A record does not say how many fields it has, so a dataclass that grows a field (at
the end, with a default) takes a new number; its old number stays registered with
`register_legacy` so that entries already in logs still decode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_NONE, _FALSE, _TRUE, _INT, _BYTES, _STR, _TUPLE, _RECORD = range(8)


class CodecError(ValueError):
    """The bytes are not a valid encoding (corrupt log entry)."""


# Decoding: a number's class and how many fields its records hold (fewer than the
# class has for a legacy number). Encoding: a class's current number and fields.
_TYPES: dict[int, tuple[type, int]] = {}
_NUMBERS: dict[type, int] = {}
_FIELDS: dict[type, tuple[str, ...]] = {}


def _claim(number: int, cls: type, count: int) -> None:
    if number in _TYPES and _TYPES[number] != (cls, count):
        raise ValueError(f"type number {number} already used by {_TYPES[number][0].__name__}")
    _TYPES[number] = (cls, count)


def register(number: int, cls: type) -> None:
    """Give a dataclass a stable wire number. Numbers are forever: never reuse one."""
    fields = tuple(f.name for f in dataclasses.fields(cls))
    _claim(number, cls, len(fields))
    _NUMBERS[cls] = number
    _FIELDS[cls] = fields


def register_legacy(number: int, cls: type, fields: int) -> None:
    """A number `cls` was encoded under when it had only its first `fields` fields:
    such records decode with the later fields at their defaults. Decode only; new
    records use the number given to `register`."""
    defaults = dataclasses.fields(cls)[fields:]
    if any(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in defaults):
        raise ValueError(f"{cls.__name__}: the fields after the first {fields} need defaults")
    _claim(number, cls, fields)


def _varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _encode_int(out: bytearray, value: int) -> None:
    out.append(_INT)
    _varint(out, (value << 1) if value >= 0 else ((-value << 1) - 1))


def _encode_bytes(out: bytearray, value: bytes) -> None:
    out.append(_BYTES)
    _varint(out, len(value))
    out += value


def _encode_str(out: bytearray, value: str) -> None:
    raw = value.encode()
    out.append(_STR)
    _varint(out, len(raw))
    out += raw


def _encode_tuple(out: bytearray, value: tuple[Any, ...] | list[Any]) -> None:
    out.append(_TUPLE)
    _varint(out, len(value))
    for item in value:
        _encode(out, item)


def _encode_none(out: bytearray, value: None) -> None:
    out.append(_NONE)


def _encode_bool(out: bytearray, value: bool) -> None:
    out.append(_TRUE if value else _FALSE)


# By exact type: the hot path is one dict lookup per value (bool is not int here).
_ENCODERS: dict[type, Any] = {
    type(None): _encode_none, bool: _encode_bool, int: _encode_int, bytes: _encode_bytes,
    str: _encode_str, tuple: _encode_tuple, list: _encode_tuple,
}


def _encode(out: bytearray, value: Any) -> None:
    cls = type(value)
    encoder = _ENCODERS.get(cls)
    if encoder is not None:
        encoder(out, value)
        return
    number = _NUMBERS.get(cls)
    if number is None:
        if isinstance(value, int):  # an IntEnum or other int subclass: its number
            _encode_int(out, int(value))
            return
        if isinstance(value, tuple | list):
            _encode_tuple(out, value)
            return
        raise TypeError(f"cannot encode {cls.__name__}: not registered")
    out.append(_RECORD)
    _varint(out, number)
    for name in _FIELDS[cls]:
        _encode(out, getattr(value, name))


def encode(value: Any) -> bytes:
    out = bytearray()
    _encode(out, value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def _read(data: bytes, pos: int) -> tuple[Any, int]:
    """The value at `pos` and the position after it. Reading past the end raises
    IndexError, which decode turns into CodecError."""
    tag = data[pos]
    pos += 1
    if tag == _INT:
        z = data[pos]
        if z < 0x80:
            pos += 1
        else:
            z, pos = _read_varint(data, pos)
        return ((z >> 1) if not z & 1 else -((z + 1) >> 1)), pos
    if tag in (_BYTES, _STR):
        n = data[pos]
        if n < 0x80:
            pos += 1
        else:
            n, pos = _read_varint(data, pos)
        end = pos + n
        if end > len(data):
            raise CodecError("truncated bytes")
        raw = data[pos:end]
        if tag == _BYTES:
            return raw, end
        try:
            return raw.decode(), end
        except UnicodeDecodeError as e:
            raise CodecError("bad utf-8") from e
    if tag == _RECORD:
        number, pos = _read_varint(data, pos)
        known = _TYPES.get(number)
        if known is None:
            raise CodecError("unknown record type")
        cls, count = known
        args = []
        for _ in range(count):
            value, pos = _read(data, pos)
            args.append(value)
        return cls(*args), pos
    if tag == _NONE:
        return None, pos
    if tag == _TRUE:
        return True, pos
    if tag == _FALSE:
        return False, pos
    if tag == _TUPLE:
        count, pos = _read_varint(data, pos)
        items = []
        for _ in range(count):
            value, pos = _read(data, pos)
            items.append(value)
        return tuple(items), pos
    raise CodecError(f"unknown tag {tag}")


def decode(data: bytes) -> Any:
    try:
        value, pos = _read(data, 0)
    except IndexError as e:
        raise CodecError("truncated value") from e
    except RecursionError as e:
        raise CodecError("nesting too deep") from e
    if pos != len(data):
        raise CodecError("trailing bytes")
    return value
