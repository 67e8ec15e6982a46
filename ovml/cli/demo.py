"""`ovml demo`: the planted world end to end, offline."""
from __future__ import annotations

import click

from ..config import DemoConfig
from .common import default, user_errors


@click.command()
@click.option("--out", default=default(DemoConfig, "out"), show_default=True, help="Folder for everything.")
@click.option("--seed", type=int, default=default(DemoConfig, "seed"), show_default=True)
@click.option("--quick", is_flag=True, default=default(DemoConfig, "quick"),
              help="A smaller world and fewer epochs (a smoke test).")
@user_errors
def demo(out, seed, quick) -> None:
    """Offline demo on the planted synthetic world: extract-free train + ZSL/GZSL evaluation."""
    from ..experiments.demo import run_demo
    for line in run_demo(DemoConfig(out=out, seed=seed, quick=quick), echo=click.echo):
        click.echo(line)
