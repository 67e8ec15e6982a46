"""`ovml predict`: labels for new images, any vocabulary."""
from __future__ import annotations

import click

from .common import device_options, resolve_device, user_errors
from .tag import ThresholdType


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--labels", default=None, help='Comma-separated label names, e.g. "dog,beach,sunset".')
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File with one label name per line.")
@click.option("--head", default=None, help="Run folder of a trained head [default: CLIP-ML alone].")
@click.option("--model", default=None, help="CLIP name or weights file [default: the head's, else RN50].")
@click.option("--top-k", type=click.IntRange(1), default=None, help="At most K labels [default: 5, or all "
              "above --threshold].")
@click.option("--threshold", type=ThresholdType(), default=None,
              help="Only labels scoring at least X, or 'mcut' (per image: midpoint of the largest score gap).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Interpolation with CLIP's global feature (with --head).")
@click.option("--prompts", default=None, help="'imagenet80' or a template file "
              "[default: the head's cache's templates, else 'a photo of a {}.'].")
@click.option("--explain", "explain_dir", default=None, help="Write attention-map PNGs (needs --head) here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@device_options
@click.option("--download-root", default=None, help="Where named models are kept [$OVML_CLIP_CACHE].")
@user_errors
def predict(images, labels, labels_file, head, model, top_k, threshold, alpha, prompts, explain_dir, as_json, gpu,
            device, download_root) -> None:
    """Top-K labels of new images for any label list (open vocabulary)."""
    import json
    from ..predict.predictor import Predictor, expand_images, read_label_names
    names = read_label_names(labels, labels_file)
    predictor = Predictor(model, head, resolve_device(gpu, device), download_root, prompts)
    top_k = top_k if top_k or threshold is not None else 5
    predictions = predictor.predict(expand_images(list(images)), names, top_k, alpha, explain=explain_dir,
                                    threshold=threshold)
    written = [p.explanation for p in predictions if p.explanation]
    if as_json:
        click.echo(json.dumps([p.as_json() for p in predictions], indent=2))
        return
    for prediction in predictions:
        shown = ", ".join(f"{name} {score:.3f}" for name, score in prediction.labels)
        fallback = f"unreadable: {prediction.error}" if prediction.error else "no label above the threshold"
        click.echo(f"{prediction.image}: {shown or fallback}")
    if written:
        click.echo(f"attention maps: {len(written)} PNG(s) in {explain_dir}")
