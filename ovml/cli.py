"""The `ovml` command line: thin commands that validate options, build a config, call one library function."""
from __future__ import annotations

import functools
import os
import sys

import click

SHORT_NAMES = {"nuswide": "nus", "openimages": "oi", "coco": "coco"}


def user_errors(command):
    """Turn the library's expected failures into one-line errors (exit status 1)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .cache.schema import CacheError
        from .extract.backbone import BackboneError
        from .extract.datasets import DatasetError
        from .extract.runner import ExtractError
        from .extract.text import PromptError
        from .errors import UsageError
        try:
            return command(*args, **kwargs)
        except (CacheError, BackboneError, DatasetError, ExtractError, PromptError, UsageError) as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            raise click.ClickException(f"{where}{err.strerror or err}") from err
    return wrapper


def device_option(command):
    return click.option("--device", default=None, help="torch device: cpu or cuda:N (default cpu).")(command)


def resolve_device(gpu: int | None, device: str | None) -> str:
    if gpu is not None and device is not None:
        raise click.UsageError("give --gpu or --device, not both")
    return f"cuda:{gpu}" if gpu is not None else (device or "cpu")


def split_list(value: str | None) -> tuple[str, ...] | None:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ovml")
def main() -> None:
    """Open-vocabulary multi-label classification with CLIP over a feature cache.

    extract runs CLIP's image tower once into a cache; train-head, eval, predict and add-labels
    never run it again.
    """


@main.command()
@click.option("--dataset", type=click.Choice(["folder", "nuswide", "openimages", "coco"]), required=True,
              help="Dataset adapter (file formats in the README).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset root [default: $OVML_DATA/<dataset> or data/<dataset>].")
@click.option("--out", default=None,
              help="Cache path, *.zarr (default) or *.h5 [default: cache/<short>.zarr]; Zarr takes fsspec URLs.")
@click.option("--model", default="RN50", show_default=True,
              help="CLIP ResNet name (RN50, RN101, RN50x4, RN50x16, RN50x64) or a local weights file.")
@click.option("--gpu", type=int, default=None, help="Use cuda:N in fp16 (as clip does).")
@device_option
@click.option("--splits", default=None, help="Comma-separated splits [default: all].")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Image decode processes.")
@click.option("--unit-rows", type=click.IntRange(1), default=64, show_default=True,
              help="Rows per chunk and work unit (resume granularity).")
@click.option("--prompts", default=None, help="'imagenet80' or a file with one template per line "
              "[default: 'a photo of a {}.'].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images of each split.")
@click.option("--dask", default=None, help="local:N (N worker processes) or tcp://HOST:PORT.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image.")
@click.option("--overwrite", is_flag=True, help="Replace a cache made by another model or dataset.")
@click.option("--download-root", default=None, help="Where named models are kept [$OVML_CLIP_CACHE].")
@click.option("--images", default=None, help="Image folder, where not under the adapter's default place.")
@click.option("--unseen", default=None, help="coco: file of unseen label names [default: the 65/15 split].")
@user_errors
def extract(dataset, root, out, model, gpu, device, splits, batch_size, workers, unit_rows, prompts,
            limit, dask, strict, overwrite, download_root, images, unseen) -> None:
    """Run CLIP's image tower once and write X', CLIP's global feature, labels and text to a cache.

    Re-running the same command resumes an interrupted extraction.
    """
    from .config import ExtractConfig
    from .extract.runner import run_extraction
    root = root or os.path.join(os.environ.get("OVML_DATA", "data"), dataset)
    out = out or os.path.join("cache", SHORT_NAMES.get(dataset, os.path.basename(os.path.abspath(root))) + ".zarr")
    if dask and out.endswith((".h5", ".hdf5")):
        raise click.UsageError("--dask needs a Zarr store: HDF5 has a single writer, so workers cannot "
                               "write their units into it concurrently")
    config = ExtractConfig(dataset=dataset, root=root, out=out, model=model, device=resolve_device(gpu, device),
                           splits=split_list(splits), batch_size=batch_size, workers=workers,
                           unit_rows=unit_rows, prompts=prompts, limit=limit, dask=dask, strict=strict,
                           overwrite=overwrite, download_root=download_root, images=images, unseen=unseen)
    if dask:
        from .extract.distributed import run_distributed
        summary = run_distributed(config)
    else:
        summary = run_extraction(config)
    for line in summary.lines():
        click.echo(line)


@main.command()
@click.argument("path")
@user_errors
def info(path) -> None:
    """Describe a cache: schema, backbone, dataset, splits, labels, size, completeness."""
    from .cache.info import describe_cache
    for line in describe_cache(path):
        click.echo(line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
