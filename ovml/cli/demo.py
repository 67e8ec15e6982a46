"""`ovml demo`: the planted world end to end, offline."""
from __future__ import annotations

import os

import click

from .common import user_errors


@click.command()
@click.option("--out", default=os.path.join("runs", "demo"), show_default=True, help="Folder for everything.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A smaller world and fewer epochs (a smoke test).")
@user_errors
def demo(out, seed, quick) -> None:
    """Offline demo on the planted synthetic world: extract-free train + ZSL/GZSL evaluation."""
    from ..experiments.demo import run_demo
    for line in run_demo(out, seed, quick, echo=click.echo):
        click.echo(line)
