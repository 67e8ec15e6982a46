"""`ovml predict`: labels for new images, any vocabulary."""
from __future__ import annotations

import click

from .common import device_options, resolve_device, tower_options, user_errors


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--labels", default=None, help='Comma-separated label names, e.g. "dog,beach,sunset".')
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File with one label name per line.")
@click.option("--head", default=None, help="Run folder of a trained head [default: CLIP-ML alone].")
@click.option("--model", default=None, help="CLIP name or weights file [default: the head's, else RN50].")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Interpolation with CLIP's global feature (with --head).")
@click.option("--prompts", default=None, help="'imagenet80' or a template file "
              "[default: the head's cache's templates, else 'a photo of a {}.'].")
@click.option("--explain", "explain_dir", default=None, help="Write attention-map PNGs (needs --head) here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@device_options
@click.option("--download-root", default=None, help="Where named models are kept [$OVML_CLIP_CACHE].")
@tower_options
@user_errors
def predict(images, labels, labels_file, head, model, top_k, alpha, prompts, explain_dir, as_json, gpu, device,
            download_root, engine, precision) -> None:
    """Top-K labels of new images for any label list (open vocabulary)."""
    import json
    from ..predict.predictor import Predictor, expand_images, read_label_names
    names = read_label_names(labels, labels_file)
    predictor = Predictor(model, head, resolve_device(gpu, device), download_root, prompts, engine, precision)
    if predictor.backbone.note:
        click.echo(f"note: {predictor.backbone.note}", err=True)
    predictions = predictor.predict(expand_images(list(images)), names, top_k, alpha, explain=explain_dir)
    written = [p.explanation for p in predictions if p.explanation]
    if as_json:
        click.echo(json.dumps([p.as_json() for p in predictions], indent=2))
        return
    for prediction in predictions:
        shown = ", ".join(f"{name} {score:.3f}" for name, score in prediction.labels)
        click.echo(f"{prediction.image}: {shown or 'unreadable: ' + prediction.error}")
    if written:
        click.echo(f"attention maps: {len(written)} PNG(s) in {explain_dir}")
