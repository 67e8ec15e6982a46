"""`ovml tag`: whole folders (or a cache) tagged with any vocabulary, into tables and sidecars."""
from __future__ import annotations

import click

from ..config import DEFAULT_MODEL, TagConfig
from .common import (ThresholdType, comma_list, default, device_options, lock_option, resolve_device, split_list,
                     tower_options, user_errors)


@click.command()
@click.argument("inputs", nargs=-1)
@click.option("--out", required=True, help="Output folder: tags.jsonl/.csv/.parquet, errors.tsv, tag.json.")
@click.option("--cache", default=default(TagConfig, "cache"), help="Tag a cache's images from its stored features (no image tower).")
@click.option("--split", "splits", multiple=True, help="With --cache: a split to tag (repeatable) [default: all].")
@click.option("--labels", default=default(TagConfig, "labels"), help='Comma-separated label names, e.g. "dog,beach,sunset".')
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=default(TagConfig, "labels_file"),
              help="One label name a line (# comments and blank lines skipped).")
@click.option("--only", default=default(TagConfig, "only"), help="Keep only these names (comma-separated, or a file).")
@click.option("--exclude", default=default(TagConfig, "exclude"), help="Drop these names (comma-separated, or a file); case, spaces, "
              "underscores and hyphens do not matter.")
@click.option("--always-first", default=default(TagConfig, "always_first"), help="Present ones lead each image's tags (names or a file).")
@click.option("--head", default=default(TagConfig, "head"), help="Run folder of a trained head [default: CLIP-ML alone].")
@click.option("--alpha", type=click.FloatRange(0, 1), default=default(TagConfig, "alpha"), show_default=True,
              help="Interpolation with CLIP's global feature (with --head).")
@click.option("--model", default=default(TagConfig, "model"),
              help=f"CLIP name or weights file [default: the head's or cache's, else {DEFAULT_MODEL}].")
@click.option("--prompts", default=default(TagConfig, "prompts"), help="'imagenet80' or a template file [default: the head's or cache's].")
@click.option("--top-k", type=click.IntRange(1), default=default(TagConfig, "top_k"), help="At most K labels per image [default: 5 "
              "when no threshold is given].")
@click.option("--threshold", type=ThresholdType(), default=default(TagConfig, "threshold"),
              show_default=True, help="Labels scoring at least X, 'mcut' (per image: midpoint of the largest score "
              "gap), 'auto' (calibrated probability >= 0.5; top-k 5 where no calibration can be made) or 'auto-f1' "
              "(probability >= each label's level of best expected F1 over the reference images).")
@click.option("--precision", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=default(TagConfig, "precision"),
              help="Per-label thresholds aiming at precision P, through the calibration; labels that cannot reach it are named.")
@click.option("--thresholds", "thresholds_file", type=click.Path(exists=True, dir_okay=False),
              default=default(TagConfig, "thresholds_file"), help="'name,threshold' per line; labels absent use --threshold.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False), default=default(TagConfig, "calibration"),
              help="A calibration file (`ovml calibrate --out`): its labels' maps are used over the run's.")
@click.option("--format", "formats", default=comma_list(default(TagConfig, "formats")), show_default=True,
              help="Comma-separated: jsonl, csv, parquet (tables); txt, xmp (sidecars beside the images).")
@click.option("--long", is_flag=True, default=default(TagConfig, "long"), help="Tables: one row per (image, label, score, present) for every label.")
@click.option("--caption-extension", default=default(TagConfig, "caption_extension"), show_default=True, help="txt sidecar: photo.jpg -> photo<EXT>.")
@click.option("--overwrite", is_flag=True, help="Replace existing txt sidecars (xmp: replace dc:subject).")
@click.option("--append", is_flag=True, help="Keep existing txt sidecars' tags and add the new ones.")
@click.option("--xmp-name", type=click.Choice(["full", "stem"]), default=default(TagConfig, "xmp_name"), show_default=True,
              help="full: photo.jpg.xmp (darktable, digiKam); stem: photo.xmp (Lightroom).")
@click.option("--hierarchy", default=default(TagConfig, "hierarchy"), help="xmp: also write ROOT|tag into lr:hierarchicalSubject.")
@click.option("--save-cache", default=default(TagConfig, "save_cache"), help="Also keep the images' features as a cache here (*.zarr), to "
              "tag them again later with any vocabulary: ovml tag --cache PATH.")
@device_options(TagConfig)
@click.option("--batch-size", type=click.IntRange(1), default=default(TagConfig, "batch_size"), show_default=True)
@click.option("--workers", type=click.IntRange(0), default=default(TagConfig, "workers"), show_default=True, help="Image decode processes.")
@click.option("--decode", type=click.Choice(["exact", "draft", "gpu"]), default=default(TagConfig, "decode"), show_default=True,
              help="As extract: exact, draft (reduced-scale JPEG decode) or gpu.")
@click.option("--unit-images", type=click.IntRange(1), default=default(TagConfig, "unit_images"), show_default=True,
              help="Images per resumable unit (one table part each).")
@click.option("--dask", default=default(TagConfig, "dask"), help="local:N (N worker processes) or tcp://HOST:PORT.")
@click.option("--strict", is_flag=True, default=default(TagConfig, "strict"), help="Stop at the first unreadable image.")
@click.option("--threads", type=click.IntRange(1), default=default(TagConfig, "threads"), help="torch CPU threads.")
@click.option("--download-root", default=default(TagConfig, "download_root"), help="Where named models are kept [$OVML_CLIP_CACHE].")
@tower_options(TagConfig)
@lock_option(TagConfig)
@user_errors
def tag(inputs, out, cache, splits, labels, labels_file, only, exclude, always_first, head, alpha, model, prompts,
        top_k, threshold, precision, thresholds_file, calibration, formats, long, caption_extension, overwrite, append, xmp_name, hierarchy,
        save_cache, gpu, device, batch_size, workers, decode, unit_images, dask, strict, threads,
        download_root, engine, tower_precision, lock) -> None:
    """Tag image files and folders (recursive), or every image of a --cache, with any vocabulary.

    Writes tables (one row per image, or --long) and sidecars (photo.txt, photo.jpg.xmp) into
    place. Re-running the same command resumes: finished units are skipped.
    """
    from ..tag.runner import run_tag
    if overwrite and append:
        raise click.UsageError("give --overwrite or --append, not both")
    config = TagConfig(out=out, inputs=tuple(inputs), cache=cache, splits=tuple(splits) or None, labels=labels,
                       labels_file=labels_file, only=only, exclude=exclude, always_first=always_first, head=head,
                       alpha=alpha, model=model, prompts=prompts, download_root=download_root, top_k=top_k,
                       threshold=threshold, precision=precision, thresholds_file=thresholds_file,
                       calibration=calibration, formats=split_list(formats) or (),
                       long=long, caption_extension=caption_extension,
                       sidecars="overwrite" if overwrite else "append" if append else "keep", xmp_name=xmp_name,
                       hierarchy=hierarchy, device=resolve_device(gpu, device), batch_size=batch_size,
                       workers=workers, decode=decode, unit_images=unit_images, dask=dask, strict=strict,
                       threads=threads, save_cache=save_cache, engine=engine, tower_precision=tower_precision,
                       lock=lock)
    for line in run_tag(config).lines():
        click.echo(line)
