"""`ovml reproduce`: one of the paper's tables, trained and scored from caches."""
from __future__ import annotations

import os

import click

from ..config import ReproduceConfig
from .common import default, device_options, lock_option, resolve_device, user_errors


@click.command()
@click.option("--table", type=click.IntRange(1, 3), required=True,
              help="1: CLIP-ML and OVML; 2: CLIP-ZSSDL, CLIP-BiAM and OVML; 3: the ablation (ZSL).")
@click.option("--cache", default=None, help="The CLIP RN50 cache [default: the only cache under cache/].")
@click.option("--finetuned-cache", default=default(ReproduceConfig, "finetuned_cache"),
              help="Table 3: the cache extracted with the weights `ovml finetune` wrote.")
@click.option("--epochs", type=click.IntRange(1), default=default(ReproduceConfig, "epochs"),
              help="Training epochs of every head [default: train-head's].")
@click.option("--settings", type=click.Choice(["paper", "defaults"]), default=default(ReproduceConfig, "settings"),
              show_default=True,
              help="The attention head's rows: the paper's settings (train-head --paper) or ovml's defaults.")
@device_options(ReproduceConfig)
@click.option("--out", default=None, help="Folder for table.json, table.md, rows/ and runs/ "
              "[default: runs/table<N>-<cache stem>].")
@lock_option(ReproduceConfig)
@user_errors
def reproduce(table, cache, finetuned_cache, epochs, settings, gpu, device, out, lock) -> None:
    """Train and evaluate every row of one of the paper's tables that the caches allow.

    Rerunning the same command keeps the finished rows and resumes the rest.
    """
    from ..locate import cache_stem, only_cache
    from ..experiments.reproduce import reproduce as run_reproduce
    cache = cache or only_cache()
    out = out or os.path.join("runs", f"table{table}-{cache_stem(cache)}")
    config = ReproduceConfig(table=table, cache=cache, out=out, finetuned_cache=finetuned_cache, epochs=epochs,
                             settings=settings, device=resolve_device(gpu, device), lock=lock)
    run_reproduce(config, on_row=click.echo)
    with open(os.path.join(out, "table.md"), encoding="utf-8") as handle:
        click.echo(handle.read().rstrip())
    click.echo(f"wrote {os.path.join(out, 'table.json')} and {os.path.join(out, 'table.md')}")
