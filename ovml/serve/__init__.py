"""`ovml serve`: a local page to tag your own images with any labels, over a trained head.

A face over `predict/predictor.py`, like the CLI: the page (static/) calls `POST /api/predict`,
which calls the same `Predictor.predict` as `ovml predict`. Requests are answered concurrently,
their images going through the image tower in shared batches (`batcher.py`).
"""
from __future__ import annotations

from typing import Callable

from ..config import ServeConfig


def serve(config: ServeConfig, echo: Callable[[str], None] = print) -> None:
    """Load the head and its CLIP once, then serve the page until interrupted (Ctrl-C). Binding
    beyond loopback needs `config.token` (or `config.insecure`)."""
    from ..predict.predictor import Predictor
    from .app import check_exposure, make_server
    check_exposure(config)                     # before the model loads: a refusal comes at once
    tagger = Predictor(config.tagger)
    if tagger.backbone.note:
        echo(f"note: {tagger.backbone.note}")
    server = make_server(tagger, config, log=echo, batched=True)
    echo(f"ovml serve: {server.url} ({tagger.backbone.name}"
         + (f", head {config.tagger.head}" if config.tagger.head else ", CLIP-ML alone") + "; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        echo("stopped")
    finally:
        server.server_close()


__all__ = ["serve"]
