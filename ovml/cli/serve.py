"""`ovml serve`: a local tagging page over a trained head."""
from __future__ import annotations

import dataclasses

import click

from ..config import ServeConfig
from .common import device_options, resolve_device, tower_options, user_errors

SERVE_DEFAULTS = {field.name: field.default for field in dataclasses.fields(ServeConfig)}


@click.command()
@click.option("--head", default=None, help="Run folder of a trained head [default: CLIP-ML alone, no attention maps].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the page to other machines.")
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True, help="TCP port (0: any free one).")
@click.option("--model", default=None, help="CLIP ResNet name or weights file [default: the head's, else RN50].")
@click.option("--prompts", default=None, help="'imagenet80' or a template file [default: the head's cache's].")
@device_options
@click.option("--download-root", default=None, help="Where named models are kept [$OVML_CLIP_CACHE].")
@tower_options
@click.option("--max-batch", type=click.IntRange(1), default=SERVE_DEFAULTS["max_batch"], show_default=True,
              help="Images of concurrent requests run through the image tower as one batch.")
@click.option("--batch-wait-ms", type=click.FloatRange(0), default=SERVE_DEFAULTS["batch_wait_ms"], show_default=True,
              help="How long the first waiting image waits for others to join its batch.")
@user_errors
def serve(head, host, port, model, prompts, gpu, device, download_root, engine, precision, max_batch,
          batch_wait_ms) -> None:
    """Serve a page to tag images with any labels: ranked scores, attention maps, an alpha slider.

    Also a JSON endpoint: POST /api/predict with a multipart form (image, labels, top_k, alpha).
    """
    from ..serve import serve as run_server
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"note: binding {host}: anyone who can reach this machine can use the page", err=True)
    run_server(ServeConfig(head=head, host=host, port=port, device=resolve_device(gpu, device), model=model,
                           prompts=prompts, download_root=download_root, engine=engine, precision=precision,
                           max_batch=max_batch, batch_wait_ms=batch_wait_ms), echo=click.echo)
