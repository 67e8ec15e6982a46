"""`ovml train-head`: a head trained from the cache on seen labels."""
from __future__ import annotations

import os

import click

from ..config import PAPER_SETTINGS, TrainConfig
from .common import (AUTO_OR_FLOAT, HEADS_OR_POOL, NAMES, SCALES, DefaultFrom, RegistryChoice, amp_option, comma_list,
                     default, device_options, head_names, lock_option, resolve_device, user_errors)


def flag(setting: str) -> str:
    """The option that sets a TrainConfig field of PAPER_SETTINGS."""
    return "--freeze" if setting == "frozen" else "--" + setting.replace("_", "-")


def shown(value) -> str:
    """A setting as its option writes it."""
    return comma_list(value) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)


def backbone_default(setting: str):
    """The help's default of an OVML head setting: the trainer's BACKBONE_DEFAULTS per backbone kind."""
    def text() -> str:
        from ..cache.schema import BACKBONE_KINDS
        from ..train.trainer import BACKBONE_DEFAULTS
        return ", ".join(f"{shown(values[setting])} on {BACKBONE_KINDS[kind]} caches"
                         for kind, values in BACKBONE_DEFAULTS.items())
    return text


def contrastive_default() -> str:
    """The help's default of --contrastive-weight, per registered head (heads/registry.py)."""
    from ..heads import HEADS
    from ..heads.registry import default_contrastive_weight
    weights: dict[float, list[str]] = {}
    for name in HEADS:
        weights.setdefault(default_contrastive_weight(name), []).append(name)
    return "; ".join(f"{weight:g} for {', '.join(names)}" for weight, names in weights.items())


def vit_output_default() -> str:
    """The help's default of --vit-output (heads/attention_vit.py DEFAULT_OUTPUT)."""
    from ..heads.attention_vit import DEFAULT_OUTPUT
    return f"{DEFAULT_OUTPUT}, measured: README 'Vision Transformers'"


PAPER_FLAGS = " ".join(f"{flag(setting)} {shown(value)}" for setting, value in PAPER_SETTINGS.items())


@click.command("train-head")
@click.option("--cache", default=None, help="Cache path [default: the only cache under cache/].")
@click.option("--out", default=None, help="Run folder [default: runs/<cache stem>-<head>].")
@click.option("--head", "head_name", type=RegistryChoice(head_names), default=default(TrainConfig, "head"),
              show_default=True, help="ovml: the paper's attention head; linear: a map of CLIP's global feature; "
              "zssdl, biam, lesa: earlier methods on CLIP's features, each trained with its own loss.")
@click.option("--epochs", type=click.IntRange(1), default=default(TrainConfig, "epochs"), show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=default(TrainConfig, "batch_size"), show_default=True)
@click.option("--lr", type=AUTO_OR_FLOAT, default=default(TrainConfig, "lr"), show_default=True,
              help="One-cycle maximum learning rate, or 'auto': a seeded range test picks it (curve in the run "
                   f"folder). The paper's is {shown(PAPER_SETTINGS['lr'])}.")
@click.option("--lr-range-steps", type=click.IntRange(2), default=default(TrainConfig, "lr_range_steps"),
              show_default=True, help="Steps of the range test behind --lr auto.")
@click.option("--weight-decay", type=float, default=default(TrainConfig, "weight_decay"), show_default=True)
@click.option("--contrastive-weight", type=float, cls=DefaultFrom, default_text=contrastive_default,
              default=default(TrainConfig, "contrastive_weight"), help="lambda on the supervised contrastive loss.")
@click.option("--no-contrastive", is_flag=True, help="Ranking loss only (the paper's ablation).")
@click.option("--tau", type=float, default=default(TrainConfig, "tau"), show_default=True,
              help="Contrastive temperature.")
@click.option("--logit-scale", type=AUTO_OR_FLOAT, default=default(TrainConfig, "logit_scale"), show_default=True,
              help="Cosine scores are multiplied by this in the losses; 'auto': learnable, started where the "
                   "untrained head's logits spread by 2 over an image's labels. The paper's is CLIP's "
                   f"{shown(PAPER_SETTINGS['logit_scale'])}.")
@click.option("--rank-loss", type=click.Choice(["softplus", "hinge"]), default=default(TrainConfig, "rank_loss"),
              show_default=True, help="softplus: OVML's log(1+exp); hinge: LESA/BiAM's margin-1 hinge (zssdl, biam "
              "and lesa always use their own).")
@click.option("--q-init", type=click.Choice(["dense", "random", "pinv"]), default=default(TrainConfig, "q_init"),
              cls=DefaultFrom, default_text=backbone_default("q_init"),
              help="F_q's start: dense (attention starts as dense CLIP's similarity), random (the paper's), pinv "
                   "(ResNet only).")
@click.option("--attention-scales", type=SCALES, default=comma_list(default(TrainConfig, "attention_scales")),
              cls=DefaultFrom, default_text=backbone_default("attention_scales"),
              help="Sharpness levels at which every label attends, mixed per label by weights read from its "
                   "text (not in the paper); 'none': the paper's single softmax (ResNet only).")
@click.option("--attention-top-k", type=click.IntRange(0), default=default(TrainConfig, "attention_top_k"),
              cls=DefaultFrom, default_text=backbone_default("attention_top_k"),
              help="Also mixed per label: an even look at the k best locations, as dense CLIP takes (0: none; "
                   "ResNet only).")
@click.option("--freeze", "frozen", type=NAMES, default=comma_list(default(TrainConfig, "frozen")),
              cls=DefaultFrom, default_text=backbone_default("frozen"),
              help="Head modules kept as CLIP made them ('none': train everything, the paper's); ResNet's "
                   "default keeps the joint space unseen labels are read in.")
@click.option("--attention-heads", type=HEADS_OR_POOL, default=default(TrainConfig, "attention_heads"),
              cls=DefaultFrom, default_text=backbone_default("attention_heads"),
              help="Attention heads of the OVML head, or 'pool': as many as CLIP's pool (the paper's; the ViT "
                   "head's only).")
@click.option("--vit-output", type=click.Choice(["residual", "direct"]), default=default(TrainConfig, "vit_output"),
              cls=DefaultFrom, default_text=vit_output_default,
              help="ViT caches: the head's reading of the last block, residual (cls + attention, then the "
                   "MLP) or direct (MaskCLIP's).")
@click.option("--paper", is_flag=True,
              help=f"The paper's head and settings: {PAPER_FLAGS} (other flags may not contradict it).")
@click.option("--negatives", type=click.IntRange(1), default=default(TrainConfig, "negatives"),
              help="Sample K negative labels per batch (all positives kept) for large vocabularies.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5), default=default(TrainConfig, "val_fraction"),
              show_default=True, help="Training units held out for per-epoch seen-label mAP (best epoch kept).")
@click.option("--pseudo-unseen", type=click.FloatRange(0, 0.9), default=default(TrainConfig, "pseudo_unseen"),
              show_default=True, help="Seen labels held out of training for `eval --alpha auto`.")
@click.option("--seed", type=int, default=default(TrainConfig, "seed"), show_default=True)
@device_options(TrainConfig)
@amp_option(TrainConfig)
@click.option("--in-memory", is_flag=True, default=default(TrainConfig, "in_memory"),
              help="Read the split into RAM once instead of streaming.")
@click.option("--shuffle-buffer", type=click.IntRange(1), default=default(TrainConfig, "shuffle_buffer"),
              show_default=True, help="Chunks mixed together when streaming.")
@click.option("--split", default=default(TrainConfig, "split"), show_default=True, help="Cache split to train on.")
@click.option("--allow-partial", is_flag=True, default=default(TrainConfig, "allow_partial"),
              help="Train on the finished units of an incomplete cache.")
@click.option("--resume", is_flag=True, help="Continue from the run's last epoch checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@lock_option(TrainConfig)
@user_errors
def train_head(cache, out, head_name, epochs, batch_size, lr, lr_range_steps, weight_decay, contrastive_weight,
               no_contrastive, tau, logit_scale, rank_loss, q_init, attention_scales, attention_top_k, frozen,
               attention_heads, vit_output, paper, negatives, val_fraction, pseudo_unseen, seed, gpu, device, amp,
               in_memory, shuffle_buffer, split, allow_partial, resume, overwrite, lock) -> None:
    """Train a head on the cache's seen labels (the backbone never runs).

    By default the learning rate, the logit scale and the query's length are measured on the
    data (--lr auto, --logit-scale auto, --q-init dense); --paper gives the paper's settings.
    """
    from ..calibrate.fit import train_calibrated
    from ..locate import cache_stem, only_cache
    settings = {"lr": lr, "logit_scale": logit_scale, "q_init": q_init, "attention_scales": attention_scales,
                "attention_top_k": attention_top_k, "frozen": frozen, "attention_heads": attention_heads}
    if paper:
        context = click.get_current_context()
        given = [name for name in settings if context.get_parameter_source(name).name != "DEFAULT"]
        clashing = [name for name in given if settings[name] != PAPER_SETTINGS[name]]
        if clashing:
            raise click.UsageError(f"--paper sets {', '.join(flag(n) for n in clashing)} "
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
                         lock=lock, **settings)
    result = train_calibrated(config, resume=resume, overwrite=overwrite)
    best = "n/a" if result.best_val_map is None else f"{result.best_val_map:.2f}"
    click.echo(f"{result.out}: {result.epochs} epochs in {result.seconds:.1f} s, last loss {result.last_loss:.4f}, "
               f"best epoch {result.best_epoch} (validation seen mAP {best})")
