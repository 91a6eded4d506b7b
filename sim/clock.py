"""Simulated time. The cluster has one global clock in integer microseconds (the event
queue's time); each member sees it through its own clock, whose tick interval is skewed
by a few parts per hundred, so members' election timers drift apart as real ones do."""

from __future__ import annotations

import random
from dataclasses import dataclass

US_PER_MS = 1_000
US_PER_S = 1_000_000


@dataclass
class SimClock:
    """The global simulated time (microseconds since the start of the run)."""

    now_us: int = 0

    def advance_to(self, t_us: int) -> None:
        if t_us < self.now_us:
            raise ValueError(f"time runs backwards: {t_us} < {self.now_us}")
        self.now_us = t_us

    @property
    def seconds(self) -> float:
        return self.now_us / US_PER_S


@dataclass(frozen=True)
class MemberClock:
    """A member's view of time: ticks every `tick_us` (nominal tick * (1 + skew)), and a local
    wall clock that runs at the same skewed rate from `offset_us`."""

    member: int
    tick_us: int
    skew_ppm: int
    offset_us: int

    def local_us(self, global_us: int) -> int:
        return self.offset_us + global_us + global_us * self.skew_ppm // 1_000_000

    def first_tick_at(self) -> int:
        """Members boot at different phases of their tick."""
        return self.offset_us % self.tick_us + 1


def member_clock(rng: random.Random, member: int, tick_ms: int, max_skew_ppm: int) -> MemberClock:
    skew = rng.randint(-max_skew_ppm, max_skew_ppm)
    nominal = tick_ms * US_PER_MS
    return MemberClock(
        member=member,
        tick_us=nominal + nominal * skew // 1_000_000,
        skew_ppm=skew,
        offset_us=rng.randrange(0, 10 * US_PER_S),
    )
