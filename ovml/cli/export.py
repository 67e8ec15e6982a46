"""`ovml export`: a trained run as ONNX graphs that onnxruntime runs without torch or ovml."""
from __future__ import annotations

import click

from ..config import ExportConfig
from .common import default, lock_option, user_errors


@click.command("export")
@click.option("--head", required=True, help="Run folder of a trained head.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the tagger into.")
@click.option("--labels", default=None, help="Comma-separated label names [default: the run's cache's vocabulary].")
@click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File with one label name per line.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=default(ExportConfig, "alpha"), show_default=True,
              help="The interpolation with CLIP's global feature the side file names (head.onnx takes any).")
@click.option("--model", default=default(ExportConfig, "model"),
              help="CLIP name or weights file [default: the head's].")
@click.option("--prompts", default=default(ExportConfig, "prompts"),
              help="'imagenet80' or a template file [default: the head's cache's].")
@click.option("--download-root", default=default(ExportConfig, "download_root"),
              help="Where named models are kept [$OVML_CLIP_CACHE].")
@lock_option(ExportConfig)
@user_errors
def export_command(head, out, labels, labels_file, alpha, model, prompts, download_root, lock) -> None:
    """Write tower.onnx (image -> X' tokens, global), head.onnx (tokens, global, label text ->
    scores and attention maps), text.npy and tagger.json: a tagger for onnxruntime + numpy + PIL
    (docs/onnx_tag.py runs it)."""
    from ..export import export_run
    from ..predict.predictor import read_label_names
    names = tuple(read_label_names(labels, labels_file)) if labels or labels_file else ()
    summary = export_run(ExportConfig(head=head, out=out, labels=names, alpha=alpha, model=model, prompts=prompts,
                                      download_root=download_root, lock=lock))
    click.echo(f"{summary.out}: {', '.join(summary.files)} ({summary.labels} labels"
               + (", attention maps" if summary.attention else "") + ")")
