"""`ovml predict`: labels for new images, any vocabulary."""
from __future__ import annotations

import click

from ..config import DEFAULT_MODEL, PredictConfig
from .common import (DefaultFrom, ThresholdType, default, default_prompt, device_options, resolve_device,
                     tower_options, user_errors)


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--labels", default=None, help='Comma-separated label names, e.g. "dog,beach,sunset".')
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File with one label name per line.")
@click.option("--head", default=default(PredictConfig, "head"),
              help="Run folder of a trained head [default: CLIP-ML alone].")
@click.option("--model", default=default(PredictConfig, "model"),
              help=f"CLIP name or weights file [default: the head's, else {DEFAULT_MODEL}].")
@click.option("--top-k", type=click.IntRange(1), default=default(PredictConfig, "top_k"), show_default=True,
              help="At most K labels per image.")
@click.option("--threshold", type=ThresholdType(), default=default(PredictConfig, "threshold"),
              help="Only labels scoring at least X, 'mcut' (per image: midpoint of the largest score gap) or "
              "'auto' (calibrated probability >= 0.5, printed beside each score); at most --top-k of them.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False),
              default=default(PredictConfig, "calibration"),
              help="A calibration file (`ovml calibrate --out`): its labels' maps are used over the run's.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=default(PredictConfig, "alpha"), show_default=True,
              help="Interpolation with CLIP's global feature (with --head).")
@click.option("--prompts", default=default(PredictConfig, "prompts"), cls=DefaultFrom,
              default_text=lambda: f"the head's cache's templates, else {default_prompt()}",
              help="'imagenet80' or a template file.")
@click.option("--explain", "explain_dir", default=default(PredictConfig, "explain"),
              help="Write attention-map PNGs (needs --head) here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@device_options(PredictConfig)
@click.option("--download-root", default=default(PredictConfig, "download_root"),
              help="Where named models are kept [$OVML_CLIP_CACHE].")
@tower_options(PredictConfig)
@user_errors
def predict(images, labels, labels_file, head, model, top_k, threshold, calibration, alpha, prompts, explain_dir,
            as_json, gpu, device, download_root, engine, tower_precision) -> None:
    """Top-K labels of new images for any label list (open vocabulary)."""
    import json
    from ..predict.predictor import Predictor, expand_images, read_label_names
    config = PredictConfig(head=head, model=model, labels=tuple(read_label_names(labels, labels_file)), top_k=top_k,
                           threshold=threshold, calibration=calibration, alpha=alpha, explain=explain_dir,
                           prompts=prompts,
                           device=resolve_device(gpu, device), engine=engine, tower_precision=tower_precision,
                           download_root=download_root)
    predictor = Predictor(config)
    if predictor.backbone.note:
        click.echo(f"note: {predictor.backbone.note}", err=True)
    predictions = predictor.predict(expand_images(list(images)))
    written = [p.explanation for p in predictions if p.explanation]
    if as_json:
        click.echo(json.dumps([p.as_json() for p in predictions], indent=2))
        return
    for prediction in predictions:
        probabilities = prediction.probabilities or [None] * len(prediction.labels)
        shown = ", ".join(f"{name} {score:.3f}" + (f" (p {p:.2f})" if p is not None else "")
                          for (name, score), p in zip(prediction.labels, probabilities))
        fallback = f"unreadable: {prediction.error}" if prediction.error else "no label above the threshold"
        click.echo(f"{prediction.image}: {shown or fallback}")
    if written:
        click.echo(f"attention maps: {len(written)} PNG(s) in {explain_dir}")
