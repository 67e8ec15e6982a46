"""`ovml tag`: whole folders (or a cache) tagged with any vocabulary, into tables and sidecars."""
from __future__ import annotations

import click

from .common import device_options, resolve_device, split_list, user_errors


class ThresholdType(click.ParamType):
    """A number, or a word naming a per-image rule (mcut)."""

    name = "number|mcut"

    def convert(self, value, param, ctx):
        from ..tag.rules import THRESHOLD_WORDS
        if isinstance(value, float) or str(value).strip().lower() in THRESHOLD_WORDS:
            return value if isinstance(value, float) else str(value).strip().lower()
        try:
            return float(value)
        except ValueError:
            self.fail(f"expected a number or one of {', '.join(THRESHOLD_WORDS)}, got {value!r}", param, ctx)


@click.command()
@click.argument("inputs", nargs=-1)
@click.option("--out", required=True, help="Output folder: tags.jsonl/.csv/.parquet, errors.tsv, tag.json.")
@click.option("--cache", default=None, help="Tag a cache's images from its stored features (no image tower).")
@click.option("--split", "splits", multiple=True, help="With --cache: a split to tag (repeatable) [default: all].")
@click.option("--labels", default=None, help='Comma-separated label names, e.g. "dog,beach,sunset".')
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="One label name a line (# comments and blank lines skipped).")
@click.option("--only", default=None, help="Keep only these names (comma-separated, or a file).")
@click.option("--exclude", default=None, help="Drop these names (comma-separated, or a file); case, spaces, "
              "underscores and hyphens do not matter.")
@click.option("--always-first", default=None, help="Present ones lead each image's tags (names or a file).")
@click.option("--head", default=None, help="Run folder of a trained head [default: CLIP-ML alone].")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Interpolation with CLIP's global feature (with --head).")
@click.option("--model", default=None, help="CLIP name or weights file [default: the head's or cache's, else RN50].")
@click.option("--prompts", default=None, help="'imagenet80' or a template file [default: the head's or cache's].")
@click.option("--top-k", type=click.IntRange(1), default=None, help="At most K labels per image [default: 5 "
              "when no threshold is given].")
@click.option("--threshold", type=ThresholdType(), default=None,
              help="Labels scoring at least X, or 'mcut' (per image: midpoint of the largest score gap).")
@click.option("--thresholds", "thresholds_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="'name,threshold' per line; labels absent use --threshold.")
@click.option("--format", "formats", default="jsonl", show_default=True,
              help="Comma-separated: jsonl, csv, parquet (tables); txt, xmp (sidecars beside the images).")
@click.option("--long", is_flag=True, help="Tables: one row per (image, label, score, present) for every label.")
@click.option("--caption-extension", default=".txt", show_default=True, help="txt sidecar: photo.jpg -> photo<EXT>.")
@click.option("--overwrite", is_flag=True, help="Replace existing txt sidecars (xmp: replace dc:subject).")
@click.option("--append", is_flag=True, help="Keep existing txt sidecars' tags and add the new ones.")
@click.option("--xmp-name", type=click.Choice(["full", "stem"]), default="full", show_default=True,
              help="full: photo.jpg.xmp (darktable, digiKam); stem: photo.xmp (Lightroom).")
@click.option("--hierarchy", default=None, help="xmp: also write ROOT|tag into lr:hierarchicalSubject.")
@click.option("--save-cache", default=None, help="Also keep the images' features as a cache here (*.zarr), to "
              "tag them again later with any vocabulary: ovml tag --cache PATH.")
@device_options
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Image decode processes.")
@click.option("--decode", type=click.Choice(["exact", "draft", "gpu"]), default="exact", show_default=True,
              help="As extract: exact, draft (reduced-scale JPEG decode) or gpu.")
@click.option("--unit-images", type=click.IntRange(1), default=256, show_default=True,
              help="Images per resumable unit (one table part each).")
@click.option("--dask", default=None, help="local:N (N worker processes) or tcp://HOST:PORT.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@click.option("--download-root", default=None, help="Where named models are kept [$OVML_CLIP_CACHE].")
@user_errors
def tag(inputs, out, cache, splits, labels, labels_file, only, exclude, always_first, head, alpha, model, prompts,
        top_k, threshold, thresholds_file, formats, long, caption_extension, overwrite, append, xmp_name, hierarchy,
        save_cache, gpu, device, batch_size, workers, decode, unit_images, dask, strict, threads,
        download_root) -> None:
    """Tag image files and folders (recursive), or every image of a --cache, with any vocabulary.

    Writes tables (one row per image, or --long) and sidecars (photo.txt, photo.jpg.xmp) into
    place. Re-running the same command resumes: finished units are skipped.
    """
    from ..config import TagConfig
    from ..tag.runner import run_tag
    if overwrite and append:
        raise click.UsageError("give --overwrite or --append, not both")
    config = TagConfig(out=out, inputs=tuple(inputs), cache=cache, splits=tuple(splits) or None, labels=labels,
                       labels_file=labels_file, only=only, exclude=exclude, always_first=always_first, head=head,
                       alpha=alpha, model=model, prompts=prompts, download_root=download_root, top_k=top_k,
                       threshold=threshold, thresholds_file=thresholds_file, formats=split_list(formats) or (),
                       long=long, caption_extension=caption_extension,
                       sidecars="overwrite" if overwrite else "append" if append else "keep", xmp_name=xmp_name,
                       hierarchy=hierarchy, device=resolve_device(gpu, device), batch_size=batch_size,
                       workers=workers, decode=decode, unit_images=unit_images, dask=dask, strict=strict,
                       threads=threads, save_cache=save_cache)
    for line in run_tag(config).lines():
        click.echo(line)
