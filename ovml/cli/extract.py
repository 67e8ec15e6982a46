"""`ovml extract`: CLIP's image tower once over a dataset, into the cache."""
from __future__ import annotations

import os

import click

from ..config import ExtractConfig
from .common import (DefaultFrom, RegistryChoice, comma_list, dataset_names, default, default_prompt, device_options,
                     lock_option, resolve_device, split_list, tower_options, user_errors)

SHORT_NAMES = {"nuswide": "nus", "openimages": "oi", "coco": "coco"}


def default_out(dataset: str, root: str) -> str:
    """`cache/<short>.zarr`: nus, oi, coco, or the folder's name."""
    return os.path.join("cache", SHORT_NAMES.get(dataset, os.path.basename(os.path.abspath(root))) + ".zarr")


@click.command()
@click.option("--dataset", type=RegistryChoice(dataset_names), required=True,
              help="Dataset adapter (file formats in the README).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset root [default: $OVML_DATA/<dataset> or data/<dataset>].")
@click.option("--out", default=None,
              help="Cache path, *.zarr (default) or *.h5 [default: cache/<short>.zarr]; Zarr takes fsspec URLs.")
@click.option("--model", default=default(ExtractConfig, "model"), show_default=True,
              help="CLIP name (RN50, RN101, RN50x4, RN50x16, RN50x64, ViT-B/32, ViT-B/16, ViT-L/14, "
                   "ViT-L/14@336px) or a local weights file.")
@device_options(ExtractConfig)
@click.option("--splits", default=comma_list(default(ExtractConfig, "splits")),
              help="Comma-separated splits [default: all].")
@click.option("--batch-size", type=click.IntRange(1), default=default(ExtractConfig, "batch_size"), show_default=True)
@click.option("--workers", type=click.IntRange(0), default=default(ExtractConfig, "workers"), show_default=True,
              help="Image decode processes.")
@click.option("--decode", type=click.Choice(["exact", "draft", "gpu"]), default=default(ExtractConfig, "decode"),
              show_default=True,
              help="exact: clip's preprocessing, bit for bit; draft: JPEGs at least twice the input size "
              "decoded at reduced scale (faster, features slightly different; see the README); gpu: JPEGs "
              "decoded on the CUDA device (CPU exact where it cannot, said once).")
@click.option("--unit-rows", type=click.IntRange(1), default=default(ExtractConfig, "unit_rows"), show_default=True,
              help="Rows per chunk and work unit (resume granularity).")
@click.option("--prompts", cls=DefaultFrom, default_text=default_prompt, default=default(ExtractConfig, "prompts"),
              help="'imagenet80' or a file with one template per line.")
@click.option("--limit", type=click.IntRange(1), default=default(ExtractConfig, "limit"),
              help="Only the first N images of each split.")
@click.option("--dask", default=default(ExtractConfig, "dask"), help="local:N (N worker processes) or tcp://HOST:PORT.")
@click.option("--strict", is_flag=True, default=default(ExtractConfig, "strict"),
              help="Stop at the first unreadable image.")
@click.option("--overwrite", is_flag=True, default=default(ExtractConfig, "overwrite"),
              help="Replace a cache made by another model or dataset.")
@click.option("--download-root", default=default(ExtractConfig, "download_root"),
              help="Where named models are kept [$OVML_CLIP_CACHE].")
@click.option("--images", default=default(ExtractConfig, "images"),
              help="Image folder, where not under the adapter's default place.")
@click.option("--unseen", default=default(ExtractConfig, "unseen"),
              help="coco: file of unseen label names [default: the 65/15 split].")
@click.option("--placeholder", type=click.Path(exists=True, dir_okay=False),
              default=default(ExtractConfig, "placeholder"),
              help="nuswide: Flickr's placeholder image; identical files are skipped (files <= 4000 bytes always are).")
@click.option("--threads", type=click.IntRange(1), default=default(ExtractConfig, "threads"),
              help="torch CPU threads [default: torch's; Dask workers get the coordinator's].")
@click.option("--allow-outside-root", is_flag=True, default=default(ExtractConfig, "allow_outside_root"),
              help="Read listed images that resolve (symlinks followed) outside --root and --images; "
                   "otherwise each is an ok = false row.")
@tower_options(ExtractConfig)
@lock_option(ExtractConfig)
@user_errors
def extract(dataset, root, out, model, gpu, device, splits, batch_size, workers, decode, unit_rows, prompts,
            limit, dask, strict, overwrite, download_root, images, unseen, placeholder, threads,
            allow_outside_root, engine, tower_precision, lock) -> None:
    """Run CLIP's image tower once and write X', CLIP's global feature, labels and text to a cache.

    Re-running the same command resumes an interrupted extraction. On CUDA (--gpu N) the model
    runs in fp16, as clip does.
    """
    from ..extract.runner import run_extraction
    root = root or os.path.join(os.environ.get("OVML_DATA", "data"), dataset)
    out = out or default_out(dataset, root)
    if dask and out.endswith((".h5", ".hdf5")):
        raise click.UsageError("--dask needs a Zarr store: HDF5 has a single writer, so workers cannot "
                               "write their units into it concurrently")
    config = ExtractConfig(dataset=dataset, root=root, out=out, model=model, device=resolve_device(gpu, device),
                           splits=split_list(splits), batch_size=batch_size, workers=workers, decode=decode,
                           unit_rows=unit_rows, prompts=prompts, limit=limit, dask=dask, strict=strict,
                           overwrite=overwrite, download_root=download_root, images=images, unseen=unseen,
                           placeholder=placeholder, threads=threads, allow_outside_root=allow_outside_root,
                           engine=engine, tower_precision=tower_precision, lock=lock)
    if dask:
        from ..extract.distributed import run_distributed
        summary = run_distributed(config)
    else:
        summary = run_extraction(config)
    for line in summary.lines():
        click.echo(line)
