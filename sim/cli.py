"""`rusd-sim`: run seeded simulated clusters and check them.

One seed (`--seed N`, or `--replay FILE` for a kept seed): `seed N` first, progress lines while
it runs, the run's settings, one verdict line per checker (with what it covered), the
counters, and as the last line the hex sha256 of the whole trace.

Many seeds (`--seeds A..B` or `--count N`, usually with `--swarm`): one line per seed, then a
summary. The exit status is 1 when any check of any seed failed; `--save-failing DIR` keeps
each failing seed as a JSON file there (tests/seeds/ is where the regression test replays them).

Wall time is read here only (through os.times(), never inside the simulation), for the
simulated-seconds-per-wall-second figure; it does not enter the trace.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import click

from rusd.core.node import PLANTED_MEMBER_BUGS
from rusd.core.raft import PLANTED_BUGS, StateType
from sim import shrink, timeline
from sim.cluster import Cluster, SimOptions, SimResult
from sim.members import MEMBERS_PROFILES, MemberCluster, MembersOptions, members_options
from sim.swarm import (
    DRIVER_BUGS,
    PROFILES,
    has_planted_bug,
    load_seed,
    profile_options,
    save_seed,
    swarm_options,
    with_bugs,
)


def _progress(c: Cluster) -> None:
    leaders = [i for i in c.ids if c.members[i].alive and c.members[i].node.state is StateType.LEADER]
    terms = max(c.members[i].node.term for i in c.ids)
    click.echo(
        f"progress step {c.counters.steps}/{c.options.steps} sim {c.clock.seconds:.1f}s "
        f"term {terms} leaders {leaders} ops {c.counters.operations} acked {c.counters.acked}"
    )


def _seed_range(text: str) -> range:
    """`A..B` (inclusive) -> range(A, B + 1)."""
    lo, sep, hi = text.partition("..")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a range A..B of integers", param_hint="--seeds") from None
    if not sep or b < a:
        raise click.BadParameter(f"{text!r} is not a range A..B with A <= B", param_hint="--seeds")
    return range(a, b + 1)


def _failures(result: SimResult) -> list[str]:
    return [line for line in result.verdict_lines if ": FAIL" in line]


def _keep(save_dir: Path | None, seed: int, options: SimOptions, result: SimResult) -> str:
    """Save a failing seed (unless a planted bug made it fail on purpose); the note to print."""
    if save_dir is None or not result.failed:
        return ""
    if has_planted_bug(options):
        return " (not saved: planted bug)"
    path = save_seed(save_dir, seed, options, "; ".join(_failures(result)))
    return f" saved {path}"


def _run_one(seed: int, options: SimOptions, trace_path: str | None, save_dir: Path | None) -> bool:
    click.echo(f"seed {seed}")
    start = os.times().elapsed
    cluster = Cluster(seed, options)
    result = cluster.run(progress=_progress, progress_every=max(1, options.steps // 4))
    wall = max(os.times().elapsed - start, 1e-3)
    c = result.counters
    click.echo(f"settings {result.settings}")
    for line in result.verdict_lines:
        click.echo(line)
    click.echo(
        f"counters operations {c.operations} acked {c.acked} retries {c.retries} elections {c.elections} "
        f"crashes {c.crashes} partitions {c.partitions} steps {c.steps} messages {c.messages_delivered}"
    )
    click.echo(
        f"time simulated {result.sim_seconds:.3f}s wall {wall:.2f}s "
        f"sim-seconds/wall-second {result.sim_seconds / wall:.1f} steps/wall-second {c.steps / wall:.0f}"
    )
    click.echo(f"verdict {'FAIL' if result.failed else 'ok'}{_keep(save_dir, seed, options, result)}")
    if trace_path is not None:
        with open(trace_path, "w") as f:
            f.write("\n".join(result.trace) + "\n")
    click.echo(result.trace_hash)
    return not result.failed


def _run_many(seeds: range, base: SimOptions, swarm: bool, save_dir: Path | None) -> bool:
    start = os.times().elapsed
    failed: list[int] = []
    sim_seconds = 0.0
    for seed in seeds:
        options = swarm_options(seed, base) if swarm else base
        result = Cluster(seed, options).run()
        sim_seconds += result.sim_seconds
        c = result.counters
        head = (
            f"seed {seed} {'FAIL' if result.failed else 'ok'} sim {result.sim_seconds:.1f}s ops {c.operations} "
            f"elections {c.elections} crashes {c.crashes} partitions {c.partitions} hash {result.trace_hash[:12]}"
        )
        if result.failed:
            failed.append(seed)
            head += f" | {_failures(result)[0]}{_keep(save_dir, seed, options, result)}"
        click.echo(head)
    wall = max(os.times().elapsed - start, 1e-3)
    shown = ", ".join(map(str, failed[:20])) + (" ..." if len(failed) > 20 else "")
    click.echo(
        f"summary seeds {seeds.start}..{seeds.stop - 1}{' swarm' if swarm else ''}: {len(seeds)} run, "
        f"{len(seeds) - len(failed)} ok, {len(failed)} failed{f' ({shown})' if failed else ''}; "
        f"simulated {sim_seconds:.0f}s in {wall:.1f}s wall ({sim_seconds / wall:.0f}x)"
    )
    return not failed


def _run_members(seed: int, options: MembersOptions, save_dir: Path | None = None, shrink_it: bool = False,
                 report: str | None = None) -> bool:
    """One seed of the etcd-members engine: seed first, verdicts, counters, trace hash last.
    A failing seed can be shrunk, kept (with its report) and drawn as an HTML timeline."""
    click.echo(f"seed {seed}")
    start = os.times().elapsed
    cluster = MemberCluster(seed, options=options)
    network = cluster.network.options  # as drawn (the run ends on the healed one)
    result = cluster.run()
    wall = max(os.times().elapsed - start, 1e-3)
    click.echo(f"settings engine members, {options.members} members, {options.steps} steps, "
               f"{options.clients} clients, turns {options.turn_us} us, network {network}")
    for line in result.verdict_lines:
        click.echo(line)
    click.echo(
        f"counters acked {result.acked} refused {result.refused} crashes {result.crashes} "
        f"snapshots {result.snapshots}"
    )
    click.echo(
        f"time simulated {result.sim_seconds:.3f}s wall {wall:.2f}s "
        f"sim-seconds/wall-second {result.sim_seconds / wall:.1f} "
        f"ops/wall-second {(result.acked + result.refused) / wall:.0f}"
    )
    if result.failed:
        if shrink_it:
            options, result = shrink.shrink(seed, options)
            cluster = MemberCluster(seed, options=options)
            cluster.run()
            click.echo(f"shrunk to {options.steps} steps, {options.clients} clients, crashes {options.crashes}: "
                       + "; ".join(line for line in result.verdict_lines if ": FAIL" in line))
        if save_dir is not None and shrink.planted(options):
            click.echo("not kept: the run has a planted bug")
        elif save_dir is not None:
            click.echo(f"kept {shrink.save(save_dir, seed, options, result)}")
        if report is not None:
            with open(report, "w") as f:
                f.write(timeline.render(f"rusd-sim --engine members --seed {seed}", cluster.history,
                                        cluster.fault_log, cluster.unplaceable))
            click.echo(f"timeline {report}")
    click.echo(f"verdict {'FAIL' if result.failed else 'ok'}")
    click.echo(result.trace_hash)
    return not result.failed


# Planted bugs of the members engine (test-only).
MEMBERS_BUGS = frozenset({"stale_reads", "watch_skips"}) | PLANTED_MEMBER_BUGS


@click.command()
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the run (the first seed with --count).")
@click.option("--members", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Events to simulate while faults are on (then heal and check liveness).")
@click.option("--profile", type=click.Choice(sorted(set(PROFILES) | set(MEMBERS_PROFILES))), default="default",
              show_default=True,
              help="Fault profile: 'elections' makes elections with divergent logs and crashes mid-election common; "
                   "members engine: 'load' sends four times the requests to members whose turns take 2 ms.")
@click.option("--swarm", is_flag=True, help="Draw each seed's fault and timing options from the seed (swarm testing).")
@click.option("--seeds", "seed_range", default=None, metavar="A..B", help="Run every seed from A to B (one line each).")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Run COUNT seeds from --seed on (one line each).")
@click.option("--replay", "replay_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run a kept seed file (tests/seeds/*.json) with exactly its options.")
@click.option("--save-failing", "save_dir", type=click.Path(file_okay=False), default=None,
              help="Write each failing seed as a JSON file into this directory (e.g. tests/seeds).")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the full trace (one event per line) to this file (single seed only).")
@click.option("--engine", type=click.Choice(["raft", "members"]), default="raft", show_default=True,
              help="raft: Raft nodes over a register (every fault, swarm, planted bugs); members: full etcd "
                   "members (Raft + MVCC + leases) under an etcd client workload, crashes and snapshots.")
@click.option("--shrink", "shrink_it", is_flag=True,
              help="members engine: shrink a failing seed (fewer events, clients, no crashes) before keeping it.")
@click.option("--report", default=None, type=click.Path(dir_okay=False, writable=True),
              help="members engine: write an HTML timeline of a failing run here.")
@click.option("--bug", "bugs", multiple=True,
              type=click.Choice(sorted(PLANTED_BUGS | set(DRIVER_BUGS) | MEMBERS_BUGS)), hidden=True,
              help="Test-only: plant a bug (in the Raft core or the driver) to see the checkers catch it.")
def main(
    seed: int,
    members: str,
    steps: int,
    profile: str,
    swarm: bool,
    seed_range: str | None,
    count: int | None,
    replay_path: str | None,
    save_dir: str | None,
    trace_path: str | None,
    engine: str,
    shrink_it: bool,
    report: str | None,
    bugs: tuple[str, ...],
) -> None:
    """Run simulated rusd (Raft) clusters under seeded faults and check them."""
    if seed_range is not None and count is not None:
        raise click.UsageError("use either --seeds A..B or --count N, not both")
    save = Path(save_dir) if save_dir is not None else None
    if engine == "members":
        if replay_path is not None:
            kept_seed, kept_options = shrink.load(Path(replay_path))
            raise SystemExit(0 if _run_members(kept_seed, kept_options) else 1)
        seeds = _seed_range(seed_range) if seed_range is not None else range(seed, seed + (count or 1))
        if profile not in MEMBERS_PROFILES:
            raise click.UsageError(f"the members engine's profiles are {', '.join(sorted(MEMBERS_PROFILES))}")
        planted = replace(members_options(profile, int(members), steps), stale_reads="stale_reads" in bugs,
                          watch_skips="watch_skips" in bugs, member_bugs=frozenset(bugs) & PLANTED_MEMBER_BUGS)
        if not all([_run_members(s, planted, save, shrink_it, report) for s in seeds]):
            raise SystemExit(1)
        return
    if replay_path is not None:
        try:
            kept = load_seed(Path(replay_path))
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        ok = _run_one(kept.seed, with_bugs(kept.options, frozenset(bugs)), trace_path, None)
        raise SystemExit(0 if ok else 1)
    if profile not in PROFILES:
        raise click.UsageError(f"the raft engine's profiles are {', '.join(sorted(PROFILES))}")
    base = with_bugs(profile_options(profile, int(members), steps), frozenset(bugs))
    seeds = _seed_range(seed_range) if seed_range is not None else range(seed, seed + (count or 1))
    if seed_range is None and count is None:
        options = swarm_options(seed, base) if swarm else base
        ok = _run_one(seed, options, trace_path, save)
    else:
        if trace_path is not None:
            raise click.UsageError("--trace needs a single seed")
        ok = _run_many(seeds, base, swarm, save)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
