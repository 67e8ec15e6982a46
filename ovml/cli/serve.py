"""`ovml serve`: a local tagging page over a trained head."""
from __future__ import annotations

import click

from ..config import DEFAULT_MODEL, PredictConfig, ServeConfig
from .common import default, device_options, resolve_device, tower_options, user_errors


@click.command()
@click.option("--head", default=default(PredictConfig, "head"),
              help="Run folder of a trained head [default: CLIP-ML alone, no attention maps].")
@click.option("--host", default=default(ServeConfig, "host"), show_default=True,
              help="Address to bind; anything but loopback exposes the page to other machines.")
@click.option("--port", type=click.IntRange(0, 65535), default=default(ServeConfig, "port"), show_default=True,
              help="TCP port (0: any free one).")
@click.option("--model", default=default(PredictConfig, "model"),
              help=f"CLIP ResNet name or weights file [default: the head's, else {DEFAULT_MODEL}].")
@click.option("--prompts", default=default(PredictConfig, "prompts"),
              help="'imagenet80' or a template file [default: the head's cache's].")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False),
              default=default(PredictConfig, "calibration"),
              help="A calibration file (`ovml calibrate --out`) for the page's decisions, over the run's.")
@device_options(PredictConfig)
@click.option("--download-root", default=default(PredictConfig, "download_root"),
              help="Where named models are kept [$OVML_CLIP_CACHE].")
@tower_options(PredictConfig)
@click.option("--max-batch", type=click.IntRange(1), default=default(ServeConfig, "max_batch"), show_default=True,
              help="Images of concurrent requests run through the image tower as one batch.")
@click.option("--batch-wait-ms", type=click.FloatRange(0), default=default(ServeConfig, "batch_wait_ms"),
              show_default=True, help="How long the first waiting image waits for others to join its batch.")
@click.option("--token", default=default(ServeConfig, "token"), envvar="OVML_SERVE_TOKEN", show_envvar=True,
              help="Every API request must carry it (Authorization: Bearer TOKEN, or the form field token); the "
                   "page asks for it once. Needed to bind anything but loopback.")
@click.option("--insecure", is_flag=True, default=default(ServeConfig, "insecure"),
              help="Bind beyond loopback without a token.")
@user_errors
def serve(head, host, port, model, prompts, calibration, gpu, device, download_root, engine, tower_precision, max_batch,
          batch_wait_ms, token, insecure) -> None:
    """Serve a page to tag images with any labels: ranked scores, attention maps, an alpha slider.

    Also a JSON endpoint: POST /api/predict with a multipart form (image, labels, top_k, alpha).
    """
    from ..serve import serve as run_server
    from ..serve.app import is_loopback
    if not is_loopback(host):
        click.echo(f"note: binding {host}: " + ("requests must carry the token" if token else
                                                "anyone who can reach this machine can use the page"), err=True)
    tagger = PredictConfig(head=head, model=model, prompts=prompts, calibration=calibration,
                           device=resolve_device(gpu, device),
                           engine=engine, tower_precision=tower_precision, download_root=download_root)
    run_server(ServeConfig(tagger=tagger, host=host, port=port, token=token, insecure=insecure, max_batch=max_batch,
                           batch_wait_ms=batch_wait_ms), echo=click.echo)
