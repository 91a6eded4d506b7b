"""Swarm testing and kept seeds.

Swarm testing (as TigerBeetle's VOPR and "Swarm Testing", Groce et al. 2012): instead of one
fault profile for every seed, each seed draws its own options (fault rate, downtime, network,
timing, message size, crash points), so some seeds are quiet and others hammer one fault hard;
bugs that need one fault frequent and another absent get found.

A kept seed is a JSON file holding the seed and the *complete* SimOptions it ran with, so it
replays exactly even if the swarm's distribution changes later.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

from sim.cluster import SimOptions
from sim.network import NetworkOptions
from sim.rng import derive

DRIVER_BUGS = ("lying_fsync", "early_ack")


# The election-heavy profile: fast ticks, frequent faults, crash points at votes and at a new
# leader's first turn, and catch-up one entry per round trip, so that elections with divergent
# logs (Figure 8 of the Raft paper) and restarts in the middle of an election are common.
ELECTIONS = SimOptions(
    tick_ms=20,
    election_tick=3,
    fault_mean_ms=200,
    downtime_ms=(0, 300),
    election_crash=0.3,
    network=NetworkOptions(delay_min_us=1_000, delay_mean_us=5_000),
    max_entries_per_msg=1,
    max_inflight_msgs=1,
)

PROFILES = {"default": SimOptions(), "elections": ELECTIONS}


def profile_options(name: str, members: int, steps: int) -> SimOptions:
    """A named profile with the run's size; ValueError for an unknown name."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(sorted(PROFILES))})")
    return dataclasses.replace(PROFILES[name], members=members, steps=steps)


def swarm_options(seed: int, base: SimOptions | None = None) -> SimOptions:
    """The options seed `seed` runs with in swarm mode: `base` with its fault and timing knobs
    drawn from the seed (members, steps and planted bugs stay as in `base`). A third of the
    seeds start from the election-heavy profile."""
    base = base or SimOptions()
    rng = random.Random(derive(seed, "swarm-options"))
    if rng.random() < 1 / 3:
        return dataclasses.replace(
            ELECTIONS,
            members=base.members,
            steps=base.steps,
            pre_vote=rng.random() < 0.5,
            check_quorum=rng.random() < 0.5,
            election_crash=rng.choice([0.1, 0.3, 0.6]),
            downtime_ms=rng.choice([(0, 5), (0, 300)]),
            max_skew_ppm=rng.choice([0, 20_000, 100_000]),
            lying_fsync=base.lying_fsync,
            early_ack=base.early_ack,
            raft_bugs=base.raft_bugs,
        )
    tick_ms, election_tick = rng.choice([(100, 10), (100, 5), (50, 10), (50, 20)])
    network = NetworkOptions(
        loss=rng.choice([0.0, 0.01, 0.05, 0.15, 0.3]),
        duplicate=rng.choice([0.0, 0.02, 0.1]),
        delay_min_us=rng.choice([100, 500, 2_000]),
        delay_mean_us=rng.choice([500, 2_000, 5_000]),
        slow=rng.choice([0.0, 0.01, 0.05]),
        fifo=rng.random() < 0.5,
    )
    return dataclasses.replace(
        base,
        tick_ms=tick_ms,
        election_tick=election_tick,
        max_skew_ppm=rng.choice([0, 20_000, 100_000]),
        pre_vote=rng.random() < 0.5,
        check_quorum=rng.random() < 0.5,
        network=network,
        ops_per_s=rng.choice([20.0, 100.0, 300.0]),
        fault_mean_ms=rng.choice([150, 400, 1_500, 5_000]),
        downtime_ms=rng.choice([(1, 20), (20, 300), (100, 4_000)]),
        fsync_us=rng.choice([(200, 8_000), (1_000, 30_000)]),
        # Catch-up must outrun the clients' retries (each one a new entry) within the liveness
        # bound: tiny appends (1-2 entries) only in the elections profile, whose lags are short.
        max_entries_per_msg=rng.choice([8, 64]),
        # A deep pipeline over links that reorder thrashes: every gap sends the follower's
        # progress back to probe and wastes the window (etcd's links are FIFO TCP streams).
        max_inflight_msgs=rng.choice([8, 256]) if network.fifo else 8,
        election_crash=rng.choice([0.0, 0.0, 0.1, 0.5]),
    )


def with_bugs(options: SimOptions, bugs: frozenset[str]) -> SimOptions:
    """`options` with the named planted bugs on (driver bugs or Raft core bugs)."""
    return dataclasses.replace(
        options,
        lying_fsync=options.lying_fsync or "lying_fsync" in bugs,
        early_ack=options.early_ack or "early_ack" in bugs,
        raft_bugs=options.raft_bugs | (bugs - set(DRIVER_BUGS)),
    )


def has_planted_bug(options: SimOptions) -> bool:
    return options.lying_fsync or options.early_ack or bool(options.raft_bugs)


# -- kept seeds ---------------------------------------------------------------------------------


def options_to_json(options: SimOptions) -> dict[str, Any]:
    d = dataclasses.asdict(options)
    d["raft_bugs"] = sorted(options.raft_bugs)
    d["downtime_ms"] = list(options.downtime_ms)
    d["fsync_us"] = list(options.fsync_us)
    return d


def options_from_json(d: dict[str, Any]) -> SimOptions:
    """The inverse of options_to_json; unknown or missing fields are a clear error."""
    names = {f.name for f in dataclasses.fields(SimOptions)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown simulator options: {sorted(unknown)}")
    kw = dict(d)
    if kw.get("network") is not None:
        kw["network"] = NetworkOptions(**kw["network"])
    for pair in ("downtime_ms", "fsync_us"):
        if pair in kw:
            lo, hi = kw[pair]
            kw[pair] = (int(lo), int(hi))
    if "raft_bugs" in kw:
        kw["raft_bugs"] = frozenset(kw["raft_bugs"])
    return SimOptions(**kw)


@dataclasses.dataclass(frozen=True)
class KeptSeed:
    seed: int
    options: SimOptions
    note: str = ""


def save_seed(directory: Path, seed: int, options: SimOptions, note: str) -> Path:
    """Write a failing seed as `seed-<seed>-<options digest>.json`; returns its path."""
    body = {"seed": seed, "options": options_to_json(options)}
    digest = derive(seed, json.dumps(body, sort_keys=True)) & 0xFFFFFFFF
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"seed-{seed}-{digest:08x}.json"
    body["note"] = note
    body["command"] = f"rusd-sim --replay {path}"
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path


def load_seed(path: Path) -> KeptSeed:
    try:
        body = json.loads(path.read_text())
        return KeptSeed(int(body["seed"]), options_from_json(body["options"]), str(body.get("note", "")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a kept seed ({e})") from e
