"""Shrinking a failing members-engine seed, and keeping it: the smallest run (fewer events,
fewer clients, no crashes) that still fails the same check, written with its report to a
seed file that `rusd-sim --engine members --replay FILE` reruns exactly."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from sim.members import MemberCluster, MembersOptions, MembersResult


def planted(options: MembersOptions) -> bool:
    """A run with a planted bug is meant to fail: it is never kept as a regression seed."""
    return options.stale_reads or options.watch_skips or bool(options.member_bugs)


def failed_checks(result: MembersResult) -> set[str]:
    return {line.split(":")[0] for line in result.verdict_lines if ": FAIL" in line}


def shrink(seed: int, options: MembersOptions) -> tuple[MembersOptions, MembersResult]:
    """Greedy: halve the events, then drop clients, then crashes, while the same check fails."""
    best = options
    result = MemberCluster(seed, options=best).run()
    want = failed_checks(result)
    if not want:
        raise ValueError(f"seed {seed} does not fail with these options")

    def still(candidate: MembersOptions) -> MembersResult | None:
        got = MemberCluster(seed, options=candidate).run()
        return got if failed_checks(got) & want else None

    while best.steps > 50:
        got = still(dataclasses.replace(best, steps=best.steps // 2))
        if got is None:
            break
        best, result = dataclasses.replace(best, steps=best.steps // 2), got
    for clients in range(1, best.clients):
        got = still(dataclasses.replace(best, clients=clients))
        if got is not None:
            best, result = dataclasses.replace(best, clients=clients), got
            break
    if best.crashes:
        got = still(dataclasses.replace(best, crashes=False))
        if got is not None:
            best, result = dataclasses.replace(best, crashes=False), got
    return best, result


def options_to_json(options: MembersOptions) -> dict[str, object]:
    out = dataclasses.asdict(options)
    out["member_bugs"] = sorted(options.member_bugs)
    return out


def options_from_json(raw: dict[str, object]) -> MembersOptions:
    known = {f.name for f in dataclasses.fields(MembersOptions)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown members options: {sorted(unknown)}")
    values = dict(raw)
    values["member_bugs"] = frozenset(values.get("member_bugs", ()))  # type: ignore[call-overload]
    return MembersOptions(**values)  # type: ignore[arg-type]


def save(directory: Path, seed: int, options: MembersOptions, result: MembersResult) -> Path:
    """Write the seed, its options and its report; the name carries a digest of the options."""
    body = {"engine": "members", "seed": seed, "options": options_to_json(options)}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"members-seed-{seed}-{digest}.json"
    body["report"] = [line for line in result.verdict_lines if ": FAIL" in line]
    body["command"] = f"rusd-sim --engine members --replay {path}"
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path


def load(path: Path) -> tuple[int, MembersOptions]:
    raw = json.loads(path.read_text())
    if raw.get("engine") != "members":
        raise ValueError(f"{path} is not a members-engine seed")
    return int(raw["seed"]), options_from_json(raw["options"])
