"""The `ovml` command line: thin commands that validate options, build a config, call one library
function. One module per command group; this one assembles them."""
from __future__ import annotations

import click

from .cache import add_labels, check, info
from .calibrate import calibrate
from .demo import demo
from .evaluate import eval_command
from .export import export_command
from .extract import extract
from .finetune import finetune
from .predict import predict
from .reproduce import reproduce
from .serve import serve
from .tag import tag
from .train import train_head


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ovml")
def main() -> None:
    """Open-vocabulary multi-label classification with CLIP over a feature cache.

    extract runs CLIP's image tower once into a cache; train-head, eval, predict and add-labels
    never run it again.
    """


for command in (extract, info, check, train_head, eval_command, predict, add_labels, serve, demo, finetune,
                reproduce, tag, calibrate, export_command):
    main.add_command(command)

__all__ = ["main"]
