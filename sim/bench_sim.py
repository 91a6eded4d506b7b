"""Simulator throughput: simulated seconds per wall second (and per CPU second, which a busy
shared machine disturbs less) and client operations per wall second, for 3- and 5-member
clusters at a given simulated client load (default 100 ops/s).

    python -m sim.bench_sim                      # 3 and 5 members, seeds 0..4, 20,000 steps each
    python -m sim.bench_sim --profile elections --ops-per-s 100

Each figure sums several seeds (the faults differ per seed); the clocks are read here only (os.times(),
as `rusd-sim` does; sim/ may not import time), around whole runs, never inside the simulation.
"""

from __future__ import annotations

import dataclasses
import os

import click

from sim.cluster import simulate
from sim.swarm import PROFILES, profile_options


@click.command()
@click.option("--members", "member_counts", multiple=True, type=click.Choice(["3", "5"]), default=("3", "5"),
              show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True, help="Seeds 0..N-1 per size.")
@click.option("--steps", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--ops-per-s", type=click.FloatRange(min=0.1), default=100.0, show_default=True,
              help="Simulated client load.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="default", show_default=True)
def main(member_counts: tuple[str, ...], seeds: int, steps: int, ops_per_s: float, profile: str) -> None:
    """Measure how much faster than real time the simulator runs."""
    click.echo(f"profile {profile}, {ops_per_s:g} ops/s simulated load, seeds 0..{seeds - 1}, {steps} steps each")
    click.echo("members  sim-s  wall-s  sim-s/wall-s  ops  ops/wall-s  steps/wall-s  sim-s/cpu-s")
    for members in member_counts:
        options = dataclasses.replace(profile_options(profile, int(members), steps), ops_per_s=ops_per_s)
        sim_s = 0.0
        ops = 0
        events = 0
        start = os.times()
        for seed in range(seeds):
            result = simulate(seed, options)
            if result.failed:
                raise click.ClickException(f"seed {seed} failed: {result.verdict_lines}")
            sim_s += result.sim_seconds
            ops += result.counters.operations
            events += result.counters.steps
        end = os.times()
        wall = max(end.elapsed - start.elapsed, 1e-3)
        cpu = max(end.user + end.system - start.user - start.system, 1e-3)
        click.echo(
            f"{members:>7}  {sim_s:5.0f}  {wall:6.2f}  {sim_s / wall:12.1f}  {ops:5d}  {ops / wall:10.0f}  "
            f"{events / wall:12.0f}  {sim_s / cpu:11.1f}"
        )


if __name__ == "__main__":
    main()
