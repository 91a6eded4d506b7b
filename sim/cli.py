"""`rusd-sim`: run one seeded simulated cluster and check it.

Output: `seed N` first, progress lines while it runs, the run's settings, one verdict line
per checker, the counters, and as the last line the hex sha256 of the whole trace. The exit
status is 1 when any check failed.

Wall time is read here only (through os.times(), never inside the simulation), for the
simulated-seconds-per-wall-second figure; it does not enter the trace.
"""

from __future__ import annotations

import os

import click

from rusd.core.raft import StateType
from sim.cluster import Cluster, SimOptions


def _progress(c: Cluster) -> None:
    leaders = [i for i in c.ids if c.members[i].alive and c.members[i].node.state is StateType.LEADER]
    terms = max(c.members[i].node.term for i in c.ids)
    click.echo(
        f"progress step {c.counters.steps}/{c.options.steps} sim {c.clock.seconds:.1f}s "
        f"term {terms} leaders {leaders} ops {c.counters.operations} acked {c.counters.acked}"
    )


@click.command()
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the run (printed first).")
@click.option("--members", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Events to simulate while faults are on (then heal and check liveness).")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the full trace (one event per line) to this file.")
def main(seed: int, members: str, steps: int, trace_path: str | None) -> None:
    """Run a simulated rusd (Raft) cluster under seeded faults and check it."""
    click.echo(f"seed {seed}")
    start = os.times().elapsed
    cluster = Cluster(seed, SimOptions(members=int(members), steps=steps))
    result = cluster.run(progress=_progress, progress_every=max(1, steps // 4))
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
    click.echo(f"verdict {'FAIL' if result.failed else 'ok'}")
    if trace_path is not None:
        with open(trace_path, "w") as f:
            f.write("\n".join(result.trace) + "\n")
    click.echo(result.trace_hash)
    if result.failed:
        raise SystemExit(1)
