"""`ovml finetune`: CLIP's image tower trained on the seen labels (the paper's Table III ablation)."""
from __future__ import annotations

import os

import click

from .common import device_options, resolve_device, user_errors


@click.command()
@click.option("--dataset", type=click.Choice(["folder", "nuswide", "openimages", "coco"]), required=True,
              help="Dataset adapter, as for extract.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset root [default: $OVML_DATA/<dataset> or data/<dataset>].")
@click.option("--model", default="RN50", show_default=True, help="CLIP name or local weights file to start from.")
@click.option("--out", required=True, help="Where to write the fine-tuned CLIP (a state dict for extract --model).")
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--lr", type=float, default=1e-5, show_default=True, help="One-cycle maximum learning rate (Adam).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--logit-scale", type=float, default=None, help="Cosines times this in the ranking loss "
              "[default: CLIP's own, 100].")
@device_options
@click.option("--split", default="train", show_default=True, help="The dataset split to train on.")
@click.option("--prompts", default=None, help="'imagenet80' or a template file, as for extract.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images of the split.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Image decode processes.")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@click.option("--download-root", default=None, help="Where named models are kept [$OVML_CLIP_CACHE].")
@click.option("--images", default=None, help="Image folder, where not under the adapter's default place.")
@click.option("--unseen", default=None, help="coco: file of unseen label names.")
@click.option("--placeholder", type=click.Path(exists=True, dir_okay=False), default=None,
              help="nuswide: Flickr's placeholder image.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output and start again.")
@user_errors
def finetune(dataset, root, model, out, epochs, lr, weight_decay, batch_size, logit_scale, gpu, device, split,
             prompts, limit, seed, workers, threads, download_root, images, unseen, placeholder, overwrite) -> None:
    """Fine-tune CLIP's image tower on the seen labels with the ranking loss on CLIP-ML scores.

    The text tower stays frozen. Every epoch is checkpointed beside OUT; rerunning the same
    command resumes. `ovml extract --model OUT` then builds the fine-tuned cache.
    """
    from ..config import FinetuneConfig
    from ..train.finetune import finetune as run_finetune
    root = root or os.path.join(os.environ.get("OVML_DATA", "data"), dataset)
    config = FinetuneConfig(dataset=dataset, root=root, out=out, model=model, epochs=epochs, lr=lr,
                            weight_decay=weight_decay, batch_size=batch_size, logit_scale=logit_scale, split=split,
                            prompts=prompts, limit=limit, seed=seed, device=resolve_device(gpu, device),
                            workers=workers, threads=threads, download_root=download_root, images=images,
                            unseen=unseen, placeholder=placeholder)
    result = run_finetune(config, overwrite=overwrite)
    click.echo(f"{result.out}: {result.epochs} epochs over {result.images} images in {result.seconds:.1f} s, "
               f"last loss {result.last_loss:.4f}, sha256 {result.sha256[:16]}...")
    click.echo(f"next: ovml extract --dataset {dataset} --root {root} --model {result.out} --out CACHE")
