"""`ovml train-head`: a head trained from the cache on seen labels."""
from __future__ import annotations

import os

import click

from .common import device_options, resolve_device, user_errors


@click.command("train-head")
@click.option("--cache", default=None, help="Cache path [default: the only cache under cache/].")
@click.option("--out", default=None, help="Run folder [default: runs/<cache stem>-<head>].")
@click.option("--head", "head_name", type=click.Choice(["ovml", "linear"]), default="ovml", show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True, help="One-cycle maximum learning rate.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--contrastive-weight", type=float, default=1.0, show_default=True,
              help="lambda on the supervised contrastive loss.")
@click.option("--no-contrastive", is_flag=True, help="Ranking loss only (the paper's ablation).")
@click.option("--tau", type=float, default=0.2, show_default=True, help="Contrastive temperature.")
@click.option("--logit-scale", type=float, default=100.0, show_default=True,
              help="Cosine scores are multiplied by this in the losses (CLIP's 100).")
@click.option("--rank-loss", type=click.Choice(["softplus", "hinge"]), default="softplus", show_default=True,
              help="softplus: OVML's log(1+exp); hinge: LESA/BiAM's margin-1 hinge.")
@click.option("--q-init", type=click.Choice(["random", "pinv"]), default="random", show_default=True,
              help="F_q's start: random, or pinv (ResNet caches only: q_proj composed with pinv(c_proj)).")
@click.option("--vit-output", type=click.Choice(["residual", "direct"]), default=None,
              help="ViT caches: the head's reading of the last block, residual (cls + attention, then the "
                   "MLP) or direct (MaskCLIP's) [default: direct, measured: README 'Vision Transformers'].")
@click.option("--negatives", type=click.IntRange(1), default=None,
              help="Sample K negative labels per batch (all positives kept) for large vocabularies.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5), default=0.05, show_default=True,
              help="Training units held out for per-epoch seen-label mAP (best epoch kept).")
@click.option("--pseudo-unseen", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Seen labels held out of training for `eval --alpha auto`.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_options
@click.option("--in-memory", is_flag=True, help="Read the split into RAM once instead of streaming.")
@click.option("--shuffle-buffer", type=click.IntRange(1), default=8, show_default=True,
              help="Chunks mixed together when streaming.")
@click.option("--split", default="train", show_default=True, help="Cache split to train on.")
@click.option("--allow-partial", is_flag=True, help="Train on the finished units of an incomplete cache.")
@click.option("--resume", is_flag=True, help="Continue from the run's last epoch checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@user_errors
def train_head(cache, out, head_name, epochs, batch_size, lr, weight_decay, contrastive_weight, no_contrastive,
               tau, logit_scale, rank_loss, q_init, vit_output, negatives, val_fraction, pseudo_unseen, seed, gpu,
               device, in_memory, shuffle_buffer, split, allow_partial, resume, overwrite) -> None:
    """Train a head on the cache's seen labels (the backbone never runs)."""
    from ..config import TrainConfig
    from ..pipelines.locate import cache_stem, only_cache
    from ..pipelines.train import train_head as run_training
    cache = cache or only_cache()
    out = out or os.path.join("runs", f"{cache_stem(cache)}-{head_name}")
    config = TrainConfig(cache=cache, out=out, head=head_name, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, contrastive_weight=0.0 if no_contrastive else contrastive_weight,
                         tau=tau, logit_scale=logit_scale, rank_loss=rank_loss, q_init=q_init, vit_output=vit_output,
                         negatives=negatives,
                         val_fraction=val_fraction, pseudo_unseen=pseudo_unseen, seed=seed,
                         device=resolve_device(gpu, device), split=split, in_memory=in_memory,
                         shuffle_buffer=shuffle_buffer, allow_partial=allow_partial)
    result = run_training(config, resume=resume, overwrite=overwrite)
    best = "n/a" if result.best_val_map is None else f"{result.best_val_map:.2f}"
    click.echo(f"{result.out}: {result.epochs} epochs in {result.seconds:.1f} s, last loss {result.last_loss:.4f}, "
               f"best epoch {result.best_epoch} (validation seen mAP {best})")
