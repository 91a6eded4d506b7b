"""A small deterministic binary encoding for proposals stored in the log.

Proposals must survive a restart and (later) cross the network to other members,
so they are bytes. The format is tagged values: None, bools, ints (zigzag varint,
any size), bytes, str, tuples, and registered frozen dataclasses (by a stable type
number, fields in declaration order). It is not pickle: decoding runs no code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_NONE, _FALSE, _TRUE, _INT, _BYTES, _STR, _TUPLE, _RECORD = range(8)


class CodecError(ValueError):
    """The bytes are not a valid encoding (corrupt log entry)."""


_TYPES: dict[int, type] = {}
_NUMBERS: dict[type, int] = {}
_FIELDS: dict[type, tuple[str, ...]] = {}


def register(number: int, cls: type) -> None:
    """Give a dataclass a stable wire number. Numbers are forever: never reuse one."""
    if number in _TYPES and _TYPES[number] is not cls:
        raise ValueError(f"type number {number} already used by {_TYPES[number].__name__}")
    _TYPES[number] = cls
    _NUMBERS[cls] = number
    _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))


def _varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _encode(out: bytearray, value: Any) -> None:
    if value is None:
        out.append(_NONE)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        out.append(_INT)
        _varint(out, (value << 1) if value >= 0 else ((-value << 1) - 1))
    elif isinstance(value, bytes):
        out.append(_BYTES)
        _varint(out, len(value))
        out += value
    elif isinstance(value, str):
        raw = value.encode()
        out.append(_STR)
        _varint(out, len(raw))
        out += raw
    elif isinstance(value, (tuple, list)):
        out.append(_TUPLE)
        _varint(out, len(value))
        for item in value:
            _encode(out, item)
    else:
        cls = type(value)
        number = _NUMBERS.get(cls)
        if number is None:
            raise TypeError(f"cannot encode {cls.__name__}: not registered")
        out.append(_RECORD)
        _varint(out, number)
        for name in _FIELDS[cls]:
            _encode(out, getattr(value, name))


def encode(value: Any) -> bytes:
    out = bytearray()
    _encode(out, value)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varint(self) -> int:
        data, pos, shift, n = self.data, self.pos, 0, 0
        while True:
            if pos >= len(data):
                raise CodecError("truncated varint")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return n
            shift += 7

    def chunk(self) -> bytes:
        n = self.varint()
        end = self.pos + n
        if end > len(self.data):
            raise CodecError("truncated bytes")
        raw = self.data[self.pos : end]
        self.pos = end
        return raw

    def value(self) -> Any:
        if self.pos >= len(self.data):
            raise CodecError("truncated value")
        tag = self.data[self.pos]
        self.pos += 1
        if tag == _NONE:
            return None
        if tag == _TRUE:
            return True
        if tag == _FALSE:
            return False
        if tag == _INT:
            z = self.varint()
            return (z >> 1) if not z & 1 else -((z + 1) >> 1)
        if tag == _BYTES:
            return self.chunk()
        if tag == _STR:
            try:
                return self.chunk().decode()
            except UnicodeDecodeError as e:
                raise CodecError("bad utf-8") from e
        if tag == _TUPLE:
            return tuple(self.value() for _ in range(self.varint()))
        if tag == _RECORD:
            cls = _TYPES.get(self.varint())
            if cls is None:
                raise CodecError("unknown record type")
            return cls(*(self.value() for _ in _FIELDS[cls]))
        raise CodecError(f"unknown tag {tag}")


def decode(data: bytes) -> Any:
    reader = _Reader(data)
    value = reader.value()
    if reader.pos != len(data):
        raise CodecError("trailing bytes")
    return value
