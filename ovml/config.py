"""Frozen settings of each stage; a run records them in config.json and `from_dict` reads them back."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ExtractConfig:
    """Stage 1: run CLIP's image tower once over a dataset and write the cache."""

    dataset: str                         # adapter: folder, nuswide, openimages, coco
    root: str                            # dataset root folder
    out: str                             # cache path: *.zarr (default backend) or *.h5
    model: str = "RN50"                  # CLIP name (RN50, ..., ViT-B/16, ...) or a local weights file
    device: str = "cpu"                  # torch device; cuda runs fp16 as clip does
    splits: tuple[str, ...] | None = None  # splits to extract (None: all the adapter offers)
    batch_size: int = 64                 # images per forward pass
    workers: int = 2                     # decode processes of the DataLoader
    unit_rows: int = 64                  # R: rows per chunk and per work unit
    prompts: str | None = None           # None (CLIP's default), 'imagenet80', or a file
    limit: int | None = None             # first N images of each split only
    dask: str | None = None              # 'local:N' or 'tcp://HOST:PORT' for distributed extraction
    strict: bool = False                 # an unreadable image is fatal instead of an ok=false row
    overwrite: bool = False              # replace a cache made by another model/dataset
    download_root: str | None = None     # where named CLIP models are downloaded
    images: str | None = None            # image folder when not under the adapter's default place
    unseen: str | None = None            # coco: file of unseen label names
    placeholder: str | None = None       # nuswide: Flickr's "photo unavailable" image, rejected byte for byte
    threads: int | None = None           # torch CPU threads (None: torch's default; Dask workers get the
                                         # coordinator's, so CPU results are bit-identical to one process)
    progress: bool = True                # show progress bars


@dataclass(frozen=True)
class TrainConfig:
    """Stage 2: train a head from the cache on seen labels."""

    cache: str                           # cache path
    out: str                             # run folder: head.pt, config.json, log.jsonl
    head: str = "ovml"                   # registered head name: ovml, linear
    epochs: int = 10                     # passes over the training rows
    batch_size: int = 64                 # images per step
    lr: float = 2e-4                     # one-cycle maximum learning rate (the paper's)
    weight_decay: float = 0.0            # Adam weight decay
    contrastive_weight: float = 1.0      # lambda on the supervised contrastive loss (0: ablation)
    tau: float = 0.2                     # contrastive temperature
    logit_scale: float = 100.0           # scores are cosines times this in the losses (CLIP's 100)
    rank_loss: str = "softplus"          # softplus (OVML, Fast0Tag) or hinge (LESA/BiAM)
    q_init: str = "random"               # F_q initialisation: random or pinv (pinv: ResNet caches only)
    vit_output: str | None = None        # ViT caches: the head's reading, residual or direct (METHOD.md);
                                         # None: heads/attention_vit.py DEFAULT_OUTPUT. ResNet caches: None
    negatives: int | None = None         # sample this many negative labels per batch (None: all)
    val_fraction: float = 0.05           # training rows held out for per-epoch seen-label mAP
    pseudo_unseen: float = 0.0           # seen labels held out of training, for `eval --alpha auto`
    seed: int = 0                        # every random choice derives from it
    device: str = "cpu"                  # torch device
    split: str = "train"                 # cache split to train on
    in_memory: bool = False              # load the whole split into RAM first
    shuffle_buffer: int = 8              # chunks mixed in the shuffle buffer when streaming
    prefetch: int = 2                    # chunks read ahead in a background thread
    allow_partial: bool = False          # train on the finished units of an incomplete cache
    progress: bool = True                # show progress bars


@dataclass(frozen=True)
class EvalConfig:
    """Stage 3: score a split with the field's protocol."""

    cache: str                           # cache path
    heads: tuple[str, ...] = ()          # run folders of trained heads
    split: str = "unseen"                # unseen (ZSL), all (GZSL) or seen label columns
    alphas: tuple[float, ...] = ()       # interpolation weights; empty: none; see `alpha_auto`
    alpha_auto: bool = False             # choose alpha on the head's validation rows
    ks: tuple[int, ...] | None = None    # top-K for P/R/F1 (None: 3,5 or 10,20 above 5,000 labels)
    baselines: tuple[str, ...] = ("clip-ml", "dense")  # training-free rows
    out: str | None = None               # folder for metrics.json, report.md and plots
    device: str = "cpu"                  # torch device
    image_split: str = "test"            # cache split holding the test images
    batch_size: int = 256                # images scored at a time
    dense_top_k: int = 3                 # dense CLIP: mean of the top-k location scores
    allow_partial: bool = False          # evaluate the finished units of an incomplete cache
    progress: bool = True                # show progress bars


def from_dict(kind: type[T], values: dict) -> T:
    """Rebuild a config from a dict, ignoring keys this version does not know; tuples restored."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    kept = {}
    for key, value in values.items():
        if key in fields:
            kept[key] = tuple(value) if isinstance(value, list) else value
    return kind(**kept)


@dataclass(frozen=True)
class ServeConfig:
    """`ovml serve`: the tagging page over one trained head."""

    head: str | None                     # run folder of a trained head (None: CLIP-ML alone)
    host: str = "127.0.0.1"              # address to bind; anything else exposes the page beyond this machine
    port: int = 7860                     # TCP port (0: any free one)
    device: str = "cpu"                  # torch device
    model: str | None = None             # CLIP weights (None: the ones the head was trained on)
    prompts: str | None = None           # prompt templates (None: the head's cache's)
    download_root: str | None = None     # where named CLIP models are kept
