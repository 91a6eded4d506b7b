"""The simulated network: seeded delay distribution, loss, duplication, reordering (or per-link
FIFO), symmetric and one-way partitions, healing.

The network decides *when* a sent message arrives (zero, one or two arrival times); the cluster
puts those arrivals on its event queue. A link that is cut when the message arrives drops it,
so a partition also swallows what was already in flight.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from sim.clock import US_PER_MS


@dataclass(frozen=True)
class NetworkOptions:
    loss: float = 0.02  # probability a message is dropped
    duplicate: float = 0.01  # probability a message arrives twice
    delay_min_us: int = 200  # every delivery takes at least this long
    delay_mean_us: int = 2 * US_PER_MS  # mean of the exponential jitter on top of the minimum
    slow: float = 0.01  # probability of a much slower delivery (a retransmit, a GC pause)
    slow_us: int = 80 * US_PER_MS
    fifo: bool = False  # per-link FIFO (a TCP stream): no reordering within a link

    @staticmethod
    def random(rng: random.Random) -> NetworkOptions:
        """Swarm testing: each seed draws its own network conditions."""
        return NetworkOptions(
            loss=rng.choice([0.0, 0.01, 0.05, 0.15]),
            duplicate=rng.choice([0.0, 0.01, 0.05]),
            delay_min_us=rng.choice([100, 500, 2_000]),
            delay_mean_us=rng.choice([500, 2_000, 10_000]),
            slow=rng.choice([0.0, 0.01, 0.05]),
            fifo=rng.random() < 0.5,
        )

    def healed(self) -> NetworkOptions:
        """The conditions after the faults stop: no loss, no duplicates (delays stay)."""
        return replace(self, loss=0.0, duplicate=0.0, slow=0.0)


class Network:
    def __init__(self, rng: random.Random, options: NetworkOptions, members: Sequence[int]) -> None:
        self.rng = rng
        self.options = options
        self.members = list(members)
        self.cut: set[tuple[int, int]] = set()  # directed links (from, to) that drop everything
        self._last_arrival: dict[tuple[int, int], int] = {}
        self.sent = 0
        self.lost = 0
        self.duplicated = 0
        self.dropped_by_partition = 0

    # -- faults ---------------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Symmetric partition: members talk only within their group."""
        sets = [set(g) for g in groups]
        for a in self.members:
            for b in self.members:
                if a != b and not any(a in g and b in g for g in sets):
                    self.cut.add((a, b))

    def cut_one_way(self, frm: int, to: int) -> None:
        """One-way partition: `to` stops hearing `frm`, while `frm` still hears `to`."""
        self.cut.add((frm, to))

    def heal(self) -> None:
        self.cut.clear()

    def connected(self, frm: int, to: int) -> bool:
        return (frm, to) not in self.cut

    def describe_cut(self) -> str:
        return ",".join(f"{a}>{b}" for a, b in sorted(self.cut)) or "none"

    # -- delivery -------------------------------------------------------------------------------

    def _delay(self) -> int:
        o = self.options
        d = o.delay_min_us + int(self.rng.expovariate(1.0) * o.delay_mean_us)
        if o.slow and self.rng.random() < o.slow:
            d += self.rng.randrange(o.slow_us // 2, o.slow_us + 1)
        return d

    def arrivals(self, now_us: int, frm: int, to: int) -> list[int]:
        """Arrival times of one message sent now from `frm` to `to` (empty: lost)."""
        self.sent += 1
        o = self.options
        if o.loss and self.rng.random() < o.loss:
            self.lost += 1
            return []
        copies = 1
        if o.duplicate and self.rng.random() < o.duplicate:
            copies = 2
            self.duplicated += 1
        out: list[int] = []
        for _ in range(copies):
            t = now_us + self._delay()
            if o.fifo:
                link = (frm, to)
                t = max(t, self._last_arrival.get(link, 0))
                self._last_arrival[link] = t
            out.append(t)
        return out
