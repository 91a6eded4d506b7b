"""The seeded rng tree: one `random.Random` per component, derived from the run's seed and a
stable label through sha256 (never `hash()`, whose value for str changes per process).

Components draw only from their own stream, so adding a random choice to one component does
not shift the choices of any other (a seed keeps most of its meaning across code changes).
"""

from __future__ import annotations

import hashlib
import random


def derive(seed: int, label: str) -> int:
    """A 64-bit integer derived from (seed, label), stable across processes and platforms."""
    digest = hashlib.sha256(f"rusd-sim/{seed}/{label}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class RngTree:
    """`tree.child("network")` -> the network's Random; the same label gives the same stream."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._issued: set[str] = set()

    def child(self, label: str) -> random.Random:
        if label in self._issued:
            raise ValueError(f"rng stream {label!r} issued twice (two components would share it)")
        self._issued.add(label)
        return random.Random(derive(self.seed, label))

    def subtree(self, label: str) -> RngTree:
        """A tree of its own for a component with sub-components."""
        return RngTree(derive(self.seed, "tree/" + label))
