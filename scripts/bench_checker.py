"""Time the checkers on realistic workload histories (sim/bench_checker.py): 10 clients,
1% of writes timing out; each size checked as generated (verdict ok), with a planted stale
read and with a planted lost write (verdict violation), then 10 prefix watches against the
linearization's revision log.

    python -m scripts.bench_checker                      # 1,000 / 10,000 / 100,000 operations
    python -m scripts.bench_checker --sizes 1000,5000 --seed 3
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sim.bench_checker import generate, plant_stale_read
from sim.history import WatchEvent, WatchResponse, WatchStream
from sim.linearizability import check_linearizability
from sim.model import RevisionLog
from sim.watch_checker import check_watches

T = TypeVar("T")


def timed(f: Callable[..., T], *args: Any) -> tuple[T, float]:
    start = time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - start


def streams(log: RevisionLog) -> list[WatchStream]:
    """One correct watch per prefix k/00 .. k/09 from revision 2, one response per revision."""
    out = []
    for d in range(10):
        key, end = f"k/0{d}".encode(), (f"k/0{d + 1}" if d < 9 else "k/1").encode()
        by_rev: dict[int, list[WatchEvent]] = {}
        for e in log.events:
            if key <= e.kv.key < end:
                by_rev.setdefault(e.revision, []).append(WatchEvent(e.type, e.kv, e.prev_kv))
        responses = [WatchResponse(rev, tuple(evs)) for rev, evs in by_rev.items()]
        out.append(WatchStream(d, key, end, 2, True, responses=tuple(responses)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print("| operations | generate s | check ok s | planted stale read s | planted lost write s | watch check s |")
    print("|---|---|---|---|---|---|")
    for n in (int(x) for x in args.sizes.split(",")):
        work, gen_s = timed(generate, n, args.seed)
        ok, ok_s = timed(check_linearizability, work.operations)
        assert ok.verdict == "ok" and ok.log is not None, ok.message
        log = ok.log
        report, watch_s = timed(check_watches, streams(log), log)
        assert report.ok, report.summary()
        plant_stale_read(work, random.Random(args.seed))
        stale, stale_s = timed(check_linearizability, work.operations)
        assert stale.verdict == "violation"
        lost_work = generate(n, args.seed, lose_write=n // 2)
        lost, lost_s = timed(check_linearizability, lost_work.operations)
        assert lost.verdict == "violation"
        print(
            f"| {n:,} | {gen_s:.2f} | {ok_s:.2f} | {stale_s:.2f} | {lost_s:.2f} | "
            f"{watch_s:.2f} ({report.events:,} events) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
