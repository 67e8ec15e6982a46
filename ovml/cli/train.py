"""`ovml train-head`: a head trained from the cache on seen labels."""
from __future__ import annotations

import os

import click

from .common import (AUTO_OR_FLOAT, HEADS_OR_POOL, NAMES, SCALES, amp_option, device_options, resolve_device,
                     user_errors)


@click.command("train-head")
@click.option("--cache", default=None, help="Cache path [default: the only cache under cache/].")
@click.option("--out", default=None, help="Run folder [default: runs/<cache stem>-<head>].")
@click.option("--head", "head_name", type=click.Choice(["ovml", "linear", "zssdl", "biam", "lesa"]), default="ovml",
              show_default=True, help="ovml: the paper's attention head; linear: a map of CLIP's global feature; "
              "zssdl, biam, lesa: earlier methods on CLIP's features, each trained with its own loss.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=AUTO_OR_FLOAT, default="auto", show_default=True,
              help="One-cycle maximum learning rate, or 'auto': a seeded range test picks it (curve in the run "
                   "folder). The paper's is 2e-4.")
@click.option("--lr-range-steps", type=click.IntRange(2), default=100, show_default=True,
              help="Steps of the range test behind --lr auto.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--contrastive-weight", type=float, default=None,
              help="lambda on the supervised contrastive loss [default: 1 for ovml and linear, 0 for zssdl, "
              "biam and lesa].")
@click.option("--no-contrastive", is_flag=True, help="Ranking loss only (the paper's ablation).")
@click.option("--tau", type=float, default=0.2, show_default=True, help="Contrastive temperature.")
@click.option("--logit-scale", type=AUTO_OR_FLOAT, default="auto", show_default=True,
              help="Cosine scores are multiplied by this in the losses; 'auto': learnable, started where the "
                   "untrained head's logits spread by 2 over an image's labels. The paper's is CLIP's 100.")
@click.option("--rank-loss", type=click.Choice(["softplus", "hinge"]), default="softplus", show_default=True,
              help="softplus: OVML's log(1+exp); hinge: LESA/BiAM's margin-1 hinge (zssdl, biam and lesa "
              "always use their own).")
@click.option("--q-init", type=click.Choice(["dense", "random", "pinv"]), default=None,
              help="F_q's start: dense (attention starts as dense CLIP's similarity), random (the paper's), pinv "
                   "(ResNet only) [default: dense on ResNet caches, random on ViT caches].")
@click.option("--attention-scales", type=SCALES, default=None,
              help="Sharpness levels at which every label attends, mixed per label by weights read from its "
                   "text (not in the paper); 'none': the paper's single softmax [default: 1,64; ResNet only].")
@click.option("--attention-top-k", type=click.IntRange(0), default=None,
              help="Also mixed per label: an even look at the k best locations, as dense CLIP takes (0: none) "
                   "[default: 3; ResNet only].")
@click.option("--freeze", "frozen", type=NAMES, default=None,
              help="Head modules kept as CLIP made them ('none': train everything, the paper's) [default: "
                   "v_proj,c_proj on ResNet caches, the joint space unseen labels are read in; none on ViT].")
@click.option("--attention-heads", type=HEADS_OR_POOL, default=None,
              help="Attention heads of the OVML head, or 'pool': as many as CLIP's pool (the paper's; the ViT "
                   "head's only) [default: 1 on ResNet caches].")
@click.option("--vit-output", type=click.Choice(["residual", "direct"]), default=None,
              help="ViT caches: the head's reading of the last block, residual (cls + attention, then the "
                   "MLP) or direct (MaskCLIP's) [default: direct, measured: README 'Vision Transformers'].")
@click.option("--paper", is_flag=True,
              help="The paper's head and settings: --lr 2e-4 --logit-scale 100 --q-init random "
                   "--attention-scales none --attention-top-k 0 --attention-heads pool --freeze none "
                   "(other flags may not contradict it).")
@click.option("--negatives", type=click.IntRange(1), default=None,
              help="Sample K negative labels per batch (all positives kept) for large vocabularies.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5), default=0.05, show_default=True,
              help="Training units held out for per-epoch seen-label mAP (best epoch kept).")
@click.option("--pseudo-unseen", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Seen labels held out of training for `eval --alpha auto`.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_options
@amp_option
@click.option("--in-memory", is_flag=True, help="Read the split into RAM once instead of streaming.")
@click.option("--shuffle-buffer", type=click.IntRange(1), default=8, show_default=True,
              help="Chunks mixed together when streaming.")
@click.option("--split", default="train", show_default=True, help="Cache split to train on.")
@click.option("--allow-partial", is_flag=True, help="Train on the finished units of an incomplete cache.")
@click.option("--resume", is_flag=True, help="Continue from the run's last epoch checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@user_errors
def train_head(cache, out, head_name, epochs, batch_size, lr, lr_range_steps, weight_decay, contrastive_weight,
               no_contrastive, tau, logit_scale, rank_loss, q_init, attention_scales, attention_top_k, frozen,
               attention_heads, vit_output, paper, negatives, val_fraction, pseudo_unseen, seed, gpu, device, amp,
               in_memory, shuffle_buffer, split, allow_partial, resume, overwrite) -> None:
    """Train a head on the cache's seen labels (the backbone never runs).

    By default the learning rate, the logit scale and the query's length are measured on the
    data (--lr auto, --logit-scale auto, --q-init dense); --paper gives the paper's settings.
    """
    from ..config import PAPER_SETTINGS, TrainConfig
    from ..locate import cache_stem, only_cache
    from ..train.trainer import train_head as run_training
    settings = {"lr": lr, "logit_scale": logit_scale, "q_init": q_init, "attention_scales": attention_scales,
                "attention_top_k": attention_top_k, "frozen": frozen, "attention_heads": attention_heads}
    if paper:
        context = click.get_current_context()
        given = [name for name in settings if context.get_parameter_source(name).name != "DEFAULT"]
        clashing = [name for name in given if settings[name] != PAPER_SETTINGS[name]]
        if clashing:
            raise click.UsageError(f"--paper sets {', '.join('--' + n.replace('_', '-') for n in clashing)} "
                                   "to the paper's value; drop one or the other")
        settings = dict(PAPER_SETTINGS)
    cache = cache or only_cache()
    out = out or os.path.join("runs", f"{cache_stem(cache)}-{head_name}")
    config = TrainConfig(cache=cache, out=out, head=head_name, epochs=epochs, batch_size=batch_size,
                         lr_range_steps=lr_range_steps, weight_decay=weight_decay,
                         contrastive_weight=0.0 if no_contrastive else contrastive_weight, tau=tau,
                         rank_loss=rank_loss, vit_output=vit_output, negatives=negatives, val_fraction=val_fraction,
                         pseudo_unseen=pseudo_unseen, seed=seed, device=resolve_device(gpu, device), amp=amp,
                         split=split, in_memory=in_memory, shuffle_buffer=shuffle_buffer, allow_partial=allow_partial,
                         **settings)
    result = run_training(config, resume=resume, overwrite=overwrite)
    best = "n/a" if result.best_val_map is None else f"{result.best_val_map:.2f}"
    click.echo(f"{result.out}: {result.epochs} epochs in {result.seconds:.1f} s, last loss {result.last_loss:.4f}, "
               f"best epoch {result.best_epoch} (validation seen mAP {best})")
