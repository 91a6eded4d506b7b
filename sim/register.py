"""The replicated state machine of this first slice: a deterministic KV register.

An entry's data is `b"<request id> <key> <value>"`; an empty entry (a new leader's) changes
nothing. A request applied twice (a client retried it at another member) takes effect once,
at the index where it first appeared.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def encode(request_id: str, key: str, value: str) -> bytes:
    return f"{request_id} {key} {value}".encode()


def decode(data: bytes) -> tuple[str, str, str]:
    rid, key, value = data.decode().split(" ")
    return rid, key, value


@dataclass
class Register:
    applied: int = 0
    kv: dict[str, str] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # request id -> index it took effect at

    def apply(self, index: int, data: bytes) -> str | None:
        """Apply the entry at `index`; returns its request id (None for an empty entry)."""
        if index != self.applied + 1:
            raise AssertionError(f"apply out of order: {index} after {self.applied}")
        self.applied = index
        if not data:
            return None
        rid, key, value = decode(data)
        if rid not in self.seen:
            self.seen[rid] = index
            self.kv[key] = value
        return rid
