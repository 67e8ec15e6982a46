"""`ovml calibrate`: labels' probability maps from a few labelled images, in a cache or in a folder."""
from __future__ import annotations

import click

from ..config import CalibrateConfig
from .common import default, device_options, lock_option, resolve_device, user_errors


@click.command()
@click.option("--head", default=default(CalibrateConfig, "head"), help="Run folder whose calibration.json receives "
              "the maps [default: CLIP-ML, stored with --out].")
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False),
              help="'id,labels' CSV (labels joined by ';'), as add-labels --annotations ('path,labels' with "
                   "--images): each listed image is a positive of its labels and a negative of the file's other "
                   "labels.")
@click.option("--cache", default=default(CalibrateConfig, "cache"), help="The cache holding the annotated images.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=default(CalibrateConfig, "images"),
              help="Or the folder of the annotated image files ('path,labels'), scored through the image tower "
                   "with --head.")
@click.option("--out", default=default(CalibrateConfig, "out"), help="Store in this file instead of the run.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=default(CalibrateConfig, "alpha"), show_default=True,
              help="Interpolation with CLIP's global feature (with --head), as tag's.")
@device_options(CalibrateConfig)
@lock_option(CalibrateConfig)
@user_errors
def calibrate(head, annotations, cache, images, out, alpha, gpu, device, lock) -> None:
    """Fit labels' probability maps (`tag --threshold auto`) from a few labelled images per label.

    Labels without a positive or without a negative among the listed images are refused, by name.
    """
    from ..calibrate.annotations import calibrate_from_annotations
    config = CalibrateConfig(annotations=annotations, head=head, cache=cache, images=images, out=out, alpha=alpha,
                             device=resolve_device(gpu, device), lock=lock)
    path, names = calibrate_from_annotations(config)
    click.echo(f"{path}: {len(names)} label(s) calibrated: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
