"""Commands over a cache itself: `info`, `check`, `add-labels`."""
from __future__ import annotations

import json

import click

from ..config import AddLabelsConfig, CheckConfig
from .common import default, device_options, lock_option, resolve_device, user_errors


@click.command()
@click.argument("path")
@user_errors
def info(path) -> None:
    """Describe a cache: schema, backbone, dataset, splits, labels, size, completeness."""
    from ..cache.info import describe_cache
    for line in describe_cache(path):
        click.echo(line)


@click.command()
@click.argument("path")
@click.option("--rows", type=click.IntRange(0), default=default(CheckConfig, "rows"), show_default=True,
              help="Ok rows per split on which the pool invariant (pool/* applied to spatial gives global) is checked.")
@click.option("--json", "as_json", is_flag=True, help='Print {"ok": ..., "problems": [...]}.')
def check(path, rows, as_json) -> None:
    """Check a cache against schema v1 in full: one line per problem, exit 1 on any problem.

    Attributes, every array's presence, dtype and shape, label values, unique label ids,
    normalised text embeddings, units_done against complete, and the pool invariant.
    """
    from ..cache.check import check_cache
    problems = check_cache(CheckConfig(path=path, rows=rows))
    if as_json:
        click.echo(json.dumps({"ok": not problems, "problems": problems}, indent=2))
    else:
        for problem in problems:
            click.echo(f"problem: {problem}")
        click.echo(f"{path}: {'schema v1 OK' if not problems else f'{len(problems)} problem(s)'}")
    if problems:
        raise SystemExit(1)


@click.command("add-labels")
@click.option("--cache", required=True, help="Cache path.")
@click.option("--names", "names_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="New label names, one per line.")
@click.option("--unseen/--seen", default=default(AddLabelsConfig, "unseen"), show_default=True,
              help="Mark the new labels unseen or seen.")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False),
              default=default(AddLabelsConfig, "annotations"),
              help="CSV id,labels: images listed get +1/-1 on the new labels (others stay unannotated).")
@click.option("--model", default=default(AddLabelsConfig, "model"),
              help="CLIP name or file [default: the cache's backbone].")
@device_options(AddLabelsConfig)
@click.option("--download-root", default=default(AddLabelsConfig, "download_root"),
              help="Where named models are kept [$OVML_CLIP_CACHE].")
@lock_option(AddLabelsConfig)
@user_errors
def add_labels(cache, names_file, unseen, annotations, model, gpu, device, download_root, lock) -> None:
    """Append new label names to a cache with CLIP's text tower only (no image is re-read)."""
    from ..extract.add_labels import add_labels as append_labels
    added = append_labels(AddLabelsConfig(cache=cache, names_file=names_file, unseen=unseen, annotations=annotations,
                                          model=model, device=resolve_device(gpu, device), download_root=download_root,
                                          lock=lock))
    click.echo(f"{cache}: added {len(added)} {'unseen' if unseen else 'seen'} label(s): {', '.join(added[:10])}"
               + (" ..." if len(added) > 10 else ""))
