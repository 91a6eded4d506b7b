"""`rusd-sim`: the simulator's command line.

The cluster simulator arrives with the Raft issue; until then the command says so
and exits non-zero, so nobody mistakes it for a passing run.
"""

from __future__ import annotations

import click


@click.command()
@click.option("--seed", type=int, default=0, help="Seed of the run (printed first).")
def main(seed: int) -> None:
    """Run a simulated rusd cluster under seeded faults and check it."""
    click.echo(f"seed {seed}")
    click.echo("rusd-sim: not built yet (the cluster simulator comes with the Raft issue)", err=True)
    raise SystemExit(2)
