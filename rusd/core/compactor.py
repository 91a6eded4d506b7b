"""Auto-compaction, as etcd's compactor package, driven by handed-in time.

periodic: keep `retention` seconds of history; sample the revision every
retention/10 (at most every 6 minutes) and compact to the revision seen `retention`
ago, first after one retention period and then every min(retention, 1h).
revision: every 5 minutes, compact to current - retention.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

HOUR = 3600.0
REVISION_INTERVAL = 300.0


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    mode: str  # "periodic" or "revision"
    retention: float  # seconds (periodic) or a revision count (revision); 0 = off


class AutoCompactor:
    """Call `tick(now, revision)` often; it returns a revision to compact, or None."""

    def __init__(self, policy: CompactionPolicy, now: float) -> None:
        self.policy = policy
        self._next_sample = now
        self._last_success = now
        self._base_interval = policy.retention
        self._revs: deque[int] = deque()
        self._last_compacted = 0

    @property
    def enabled(self) -> bool:
        return self.policy.retention > 0

    def tick(self, now: float, revision: int) -> int | None:
        if not self.enabled or now < self._next_sample:
            return None
        if self.policy.mode == "revision":
            self._next_sample = now + REVISION_INTERVAL
            target = revision - int(self.policy.retention)
            if target <= 0 or target == self._last_compacted:
                return None
            self._last_compacted = target
            return target
        return self._periodic(now, revision)

    def _periodic(self, now: float, revision: int) -> int | None:
        period = self.policy.retention
        retry = min(period, HOUR) / 10
        self._next_sample = now + retry
        self._revs.append(revision)
        if len(self._revs) > int(period / retry) + 1:
            self._revs.popleft()
        if now - self._last_success < self._base_interval:
            return None
        self._base_interval = min(period, HOUR)
        self._last_success = now
        target = self._revs[0]
        if target == self._last_compacted:
            return None
        self._last_compacted = target
        return target
