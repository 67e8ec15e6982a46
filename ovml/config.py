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
    decode: str = "exact"                # exact (clip's preprocessing, bit for bit), draft (JPEGs >= 2x the
                                         # input decoded at 1/2-1/8 scale in the DCT domain), gpu (JPEGs
                                         # decoded on the CUDA device; CPU exact where it cannot)
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
    engine: str = "torch"                # image tower's engine: torch, or onnxruntime (CPU; the onnx extra)
    precision: str = "auto"              # what the tower computes in: auto (CPU: bf16 where the CPU has
                                         # native bf16, else fp32; CUDA: fp16), fp32 or bf16 (CPU)


@dataclass(frozen=True)
class TrainConfig:
    """Stage 2: train a head from the cache on seen labels."""

    cache: str                           # cache path
    out: str                             # run folder: head.pt, config.json, log.jsonl
    head: str = "ovml"                   # registered head name: ovml, linear, zssdl, biam, lesa
    epochs: int = 10                     # passes over the training rows
    batch_size: int = 64                 # images per step
    lr: float | str = "auto"             # one-cycle maximum learning rate; "auto": a range test picks it
                                         # (the paper's is 2e-4)
    lr_range_steps: int = 100            # steps of the range test behind lr "auto"
    weight_decay: float = 0.0            # Adam weight decay
    contrastive_weight: float | None = None  # lambda on the supervised contrastive loss (0: ablation);
                                         # None: 1 for ovml and linear, 0 for heads with their own loss
    tau: float = 0.2                     # contrastive temperature
    logit_scale: float | str = "auto"    # cosine scores times this in the losses; "auto": learnable,
                                         # started where the untrained head's logits spread by 2 (paper: 100)
    rank_loss: str = "softplus"          # softplus (OVML, Fast0Tag) or hinge (LESA/BiAM); heads with
                                         # their own loss (zssdl, biam, lesa) use theirs
    # The OVML head's settings below: None takes the backbone's default (train/trainer.py
    # BACKBONE_DEFAULTS); a ViT cache refuses values its head has no form for.
    q_init: str | None = None            # F_q's start: dense (attention starts as dense CLIP's similarity;
                                         # ResNet default), random (the paper's; ViT default) or pinv (ResNet)
    attention_scales: tuple[float, ...] | None = None  # sharpness levels mixed per label (ResNet: 1, 64;
                                         # empty: the paper's single softmax)
    attention_top_k: int | None = None   # also mixed per label: an even look at the k best locations
                                         # (ResNet: 3; 0: none)
    frozen: tuple[str, ...] | None = None  # head modules kept as CLIP made them (ResNet: v_proj, c_proj, the
                                         # joint space unseen labels are read in; ViT: none)
    attention_heads: int | str | None = None  # attention heads (ResNet: 1); "pool": CLIP's own count (the
                                         # paper's; the ViT head's only)
    vit_output: str | None = None        # ViT caches: the head's reading, residual or direct (docs/method.md);
                                         # None: heads/attention_vit.py DEFAULT_OUTPUT. ResNet caches: None
    negatives: int | None = None         # sample this many negative labels per batch (None: all)
    val_fraction: float = 0.05           # training rows held out for per-epoch seen-label mAP
    pseudo_unseen: float = 0.0           # seen labels held out of training, for `eval --alpha auto`
    seed: int = 0                        # every random choice derives from it
    device: str = "cpu"                  # torch device
    amp: str | None = None               # bf16 or fp16: autocast the head on CUDA (None: float32;
                                         # ignored, with a note, on other devices)
    split: str = "train"                 # cache split to train on
    in_memory: bool = False              # load the whole split into RAM first
    shuffle_buffer: int = 8              # chunks mixed in the shuffle buffer when streaming
    prefetch: int = 2                    # chunks read ahead in a background thread
    allow_partial: bool = False          # train on the finished units of an incomplete cache
    progress: bool = True                # show progress bars


# The paper's head and training settings (Dao et al.: F_q random, one-cycle max LR 2e-4, CLIP's
# logit scale 100), for reproducing its rows; `train-head --paper` applies them.
PAPER_SETTINGS = {"lr": 2e-4, "logit_scale": 100.0, "q_init": "random", "attention_scales": (),
                  "attention_top_k": 0, "attention_heads": "pool", "frozen": ()}


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
    amp: str | None = None               # bf16 or fp16: autocast the head on CUDA (None: float32;
                                         # ignored, with a note, on other devices)
    image_split: str = "test"            # cache split holding the test images
    batch_size: int = 256                # images scored at a time
    dense_top_k: int = 3                 # dense CLIP: mean of the top-k location scores
    allow_partial: bool = False          # evaluate the finished units of an incomplete cache
    scratch: str | None = None           # folder for the temporary score store (None: the system's temp folder)
    progress: bool = True                # show progress bars


@dataclass(frozen=True)
class FinetuneConfig:
    """Table III's fine-tuned CLIP: CLIP's image tower trained on the seen labels, text tower frozen."""

    dataset: str                         # adapter: folder, nuswide, openimages, coco
    root: str                            # dataset root folder
    out: str                             # the fine-tuned CLIP, a plain state dict `extract --model` loads
    model: str = "RN50"                  # CLIP name or a local weights file to start from
    epochs: int = 5                      # passes over the training images with a seen positive
    lr: float = 1e-5                     # one-cycle maximum learning rate (Adam)
    weight_decay: float = 0.0            # Adam weight decay
    batch_size: int = 64                 # images per step
    logit_scale: float | None = None     # cosines times this in the ranking loss (None: CLIP's own, 100)
    split: str = "train"                 # the adapter's split to train on (its unseen columns are 0)
    prompts: str | None = None           # text templates, as for extract (None: 'a photo of a {}.')
    limit: int | None = None             # first N images of the split only
    seed: int = 0                        # image order
    device: str = "cpu"                  # torch device; cuda trains under fp16 autocast
    workers: int = 2                     # decode processes
    threads: int | None = None           # torch CPU threads (None: torch's default)
    download_root: str | None = None     # where named CLIP models are downloaded
    images: str | None = None            # image folder when not under the adapter's default place
    unseen: str | None = None            # coco: file of unseen label names
    placeholder: str | None = None       # nuswide: Flickr's "photo unavailable" image
    progress: bool = True                # show progress bars


@dataclass(frozen=True)
class ReproduceConfig:
    """`ovml reproduce`: every row of one of the paper's tables that the given caches allow."""

    table: int                           # 1: CLIP-ML and OVML; 2: CLIP-ZSSDL, CLIP-BiAM, OVML; 3: ablation
    cache: str                           # the CLIP RN50 cache of the dataset
    out: str                             # folder: table.json, table.md, rows/, runs/
    finetuned_cache: str | None = None   # table 3: the cache extracted with the fine-tuned CLIP
    epochs: int | None = None            # training epochs of every head (None: the library's default)
    settings: str = "paper"              # the attention head's rows: paper (`train-head --paper`) or
                                         # defaults (ovml's adaptive training)
    device: str = "cpu"                  # torch device for training and evaluation
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
    engine: str = "torch"                # image tower's engine: torch, or onnxruntime (CPU; the onnx extra)
    precision: str = "auto"              # the tower's precision: auto, fp32 or bf16 (as ExtractConfig's)
    max_batch: int = 16                  # images of concurrent requests run through the tower as one batch
    batch_wait_ms: float = 5.0           # how long the first waiting image waits for others to join it
