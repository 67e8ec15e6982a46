"""`ovml finetune`: CLIP's image tower trained on the seen labels (the paper's Table III ablation)."""
from __future__ import annotations

import os

import click

from ..config import FinetuneConfig
from .common import RegistryChoice, dataset_names, default, device_options, lock_option, resolve_device, user_errors


@click.command()
@click.option("--dataset", type=RegistryChoice(dataset_names), required=True, help="Dataset adapter, as for extract.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset root [default: $OVML_DATA/<dataset> or data/<dataset>].")
@click.option("--model", default=default(FinetuneConfig, "model"), show_default=True,
              help="CLIP name or local weights file to start from.")
@click.option("--out", required=True, help="Where to write the fine-tuned CLIP (a state dict for extract --model).")
@click.option("--epochs", type=click.IntRange(1), default=default(FinetuneConfig, "epochs"), show_default=True)
@click.option("--lr", type=float, default=default(FinetuneConfig, "lr"), show_default=True,
              help="One-cycle maximum learning rate (Adam).")
@click.option("--weight-decay", type=float, default=default(FinetuneConfig, "weight_decay"), show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=default(FinetuneConfig, "batch_size"), show_default=True)
@click.option("--logit-scale", type=float, default=default(FinetuneConfig, "logit_scale"),
              help="Cosines times this in the ranking loss [default: CLIP's own].")
@device_options(FinetuneConfig)
@click.option("--split", default=default(FinetuneConfig, "split"), show_default=True,
              help="The dataset split to train on.")
@click.option("--prompts", default=default(FinetuneConfig, "prompts"),
              help="'imagenet80' or a template file, as for extract.")
@click.option("--limit", type=click.IntRange(1), default=default(FinetuneConfig, "limit"),
              help="Only the first N images of the split.")
@click.option("--seed", type=int, default=default(FinetuneConfig, "seed"), show_default=True)
@click.option("--workers", type=click.IntRange(0), default=default(FinetuneConfig, "workers"), show_default=True,
              help="Image decode processes.")
@click.option("--threads", type=click.IntRange(1), default=default(FinetuneConfig, "threads"),
              help="torch CPU threads.")
@click.option("--download-root", default=default(FinetuneConfig, "download_root"),
              help="Where named models are kept [$OVML_CLIP_CACHE].")
@click.option("--images", default=default(FinetuneConfig, "images"),
              help="Image folder, where not under the adapter's default place.")
@click.option("--unseen", default=default(FinetuneConfig, "unseen"), help="coco: file of unseen label names.")
@click.option("--placeholder", type=click.Path(exists=True, dir_okay=False),
              default=default(FinetuneConfig, "placeholder"), help="nuswide: Flickr's placeholder image.")
@click.option("--allow-outside-root", is_flag=True, default=default(FinetuneConfig, "allow_outside_root"),
              help="Read listed images that resolve (symlinks followed) outside --root and --images; "
                   "otherwise each is left out as unreadable.")
@lock_option(FinetuneConfig)
@click.option("--overwrite", is_flag=True, help="Replace an existing output and start again.")
@user_errors
def finetune(dataset, root, model, out, epochs, lr, weight_decay, batch_size, logit_scale, gpu, device, split,
             prompts, limit, seed, workers, threads, download_root, images, unseen, placeholder, allow_outside_root,
             lock, overwrite) -> None:
    """Fine-tune CLIP's image tower on the seen labels with the ranking loss on CLIP-ML scores.

    The text tower stays frozen. Every epoch is checkpointed beside OUT; rerunning the same
    command resumes. `ovml extract --model OUT` then builds the fine-tuned cache.
    """
    from ..train.finetune import finetune as run_finetune
    root = root or os.path.join(os.environ.get("OVML_DATA", "data"), dataset)
    config = FinetuneConfig(dataset=dataset, root=root, out=out, model=model, epochs=epochs, lr=lr,
                            weight_decay=weight_decay, batch_size=batch_size, logit_scale=logit_scale, split=split,
                            prompts=prompts, limit=limit, seed=seed, device=resolve_device(gpu, device),
                            workers=workers, threads=threads, download_root=download_root, images=images,
                            unseen=unseen, placeholder=placeholder, allow_outside_root=allow_outside_root, lock=lock)
    result = run_finetune(config, overwrite=overwrite)
    click.echo(f"{result.out}: {result.epochs} epochs over {result.images} images in {result.seconds:.1f} s, "
               f"last loss {result.last_loss:.4f}, sha256 {result.sha256[:16]}...")
    click.echo(f"next: ovml extract --dataset {dataset} --root {root} --model {result.out} --out CACHE")
