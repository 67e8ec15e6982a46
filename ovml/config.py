"""Frozen settings of each stage; a run records them in config.json and `from_dict` reads them back."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

DEFAULT_MODEL = "RN50"  # the CLIP every stage starts from when none is named

TOWER_ENGINES = ("torch", "onnxruntime")       # how the image tower runs (extract/backbone/engine.py)
TOWER_PRECISIONS = ("auto", "fp32", "bf16")    # what it computes in, as asked; a cache records fp32, bf16 or fp16


@dataclass(frozen=True)
class ExtractConfig:
    """Stage 1: run CLIP's image tower once over a dataset and write the cache."""

    dataset: str                         # adapter: folder, nuswide, openimages, coco
    root: str                            # dataset root folder
    out: str                             # cache path: *.zarr (default backend) or *.h5
    model: str = DEFAULT_MODEL           # CLIP name (RN50, ..., ViT-B/16, ...) or a local weights file
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
    allow_outside_root: bool = False     # read listed images that resolve outside the root and --images
                                         # (symlinks followed); otherwise each is an ok = false row
    threads: int | None = None           # torch CPU threads (None: torch's default; Dask workers get the
                                         # coordinator's, so CPU results are bit-identical to one process)
    engine: str = "torch"                # image tower's engine: torch, or onnxruntime (CPU; the onnx extra)
    tower_precision: str = "auto"        # what the tower computes in: auto (CPU: bf16 where the CPU has native
                                         # bf16, else fp32; CUDA: fp16), fp32 or bf16 (CPU)
    lock: bool = True                    # hold the writer's lock for the run (False: --no-lock, for file
                                         # systems without locks; then no other process may write it)
    progress: bool = True                # show progress bars


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
    # The OVML head's settings below: None takes the backbone's default (heads/settings.py
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
    lock: bool = True                    # hold the writer's lock for the run (False: --no-lock, for file
                                         # systems without locks; then no other process may write it)
    progress: bool = True                # show progress bars


# The paper's head and training settings (Dao et al.: F_q random, one-cycle max LR 2e-4, CLIP's
# logit scale 100), for reproducing its rows; `train-head --paper` applies them.
PAPER_SETTINGS = {"lr": 2e-4, "logit_scale": 100.0, "q_init": "random", "attention_scales": (),
                  "attention_top_k": 0, "attention_heads": "pool", "frozen": ()}


# Top-K of P/R/F1 when EvalConfig.ks is None: KS, or LARGE_VOCABULARY_KS above LARGE_VOCABULARY labels
# (Open Images), as LESA reports them.
KS = (3, 5)
LARGE_VOCABULARY_KS = (10, 20)
LARGE_VOCABULARY = 5000


@dataclass(frozen=True)
class EvalConfig:
    """Stage 3: score a split with the field's protocol."""

    cache: str                           # cache path
    heads: tuple[str, ...] = ()          # run folders of trained heads (empty: the baselines alone)
    split: str = "unseen"                # unseen (ZSL), all (GZSL) or seen label columns
    alphas: tuple[float, ...] = (0.0,)   # interpolation weights with CLIP's global feature (0: the head
                                         # alone); empty and no `alpha_auto`: 0
    alpha_auto: bool = True              # also the alpha chosen on the head's validation rows
    ks: tuple[int, ...] | None = None    # top-K for P/R/F1 (None: KS, or LARGE_VOCABULARY_KS above
                                         # LARGE_VOCABULARY labels)
    baselines: tuple[str, ...] = ("clip-ml", "dense")  # training-free rows
    out: str | None = None               # folder for metrics.json, report.md and plots (None: none written)
    device: str = "cpu"                  # torch device
    amp: str | None = None               # bf16 or fp16: autocast the head on CUDA (None: float32;
                                         # ignored, with a note, on other devices)
    image_split: str = "test"            # cache split holding the test images
    batch_size: int = 256                # images scored at a time
    dense_top_k: int = 3                 # dense CLIP: mean of the top-k location scores
    allow_partial: bool = False          # evaluate the finished units of an incomplete cache
    scratch: str | None = None           # folder for the temporary score store (None: the system's temp folder)
    decisions: bool = False              # also the `auto` decisions' macro/micro-F1 and ECE, seen and unseen apart
    progress: bool = True                # show progress bars


@dataclass(frozen=True)
class FinetuneConfig:
    """Table III's fine-tuned CLIP: CLIP's image tower trained on the seen labels, text tower frozen."""

    dataset: str                         # adapter: folder, nuswide, openimages, coco
    root: str                            # dataset root folder
    out: str                             # the fine-tuned CLIP, a plain state dict `extract --model` loads
    model: str = DEFAULT_MODEL           # CLIP name or a local weights file to start from
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
    allow_outside_root: bool = False     # read listed images that resolve outside the root and --images
    lock: bool = True                    # hold the writer's lock for the run (False: --no-lock, for file
                                         # systems without locks; then no other process may write it)
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
    lock: bool = True                    # hold the writer's lock for the run (False: --no-lock, for file
                                         # systems without locks; then no other process may write it)
    progress: bool = True                # show progress bars


@dataclass(frozen=True)
class PredictConfig:
    """`ovml predict`, `ovml.load_tagger` and the page of `ovml serve`: CLIP (and optionally a trained
    head) loaded once, scoring images against any label names."""

    head: str | None = None              # run folder of a trained head (None: CLIP-ML alone)
    model: str | None = None             # CLIP name or weights file (None: the head's, else DEFAULT_MODEL)
    labels: tuple[str, ...] = ()         # label names scored (empty: each `predict` call names its own)
    top_k: int = 5                       # labels kept per image, best first
    threshold: float | str | None = None  # also only labels scoring at least this, 'mcut' (per image: the
                                         # midpoint of the largest gap between sorted scores), or 'auto' (with
                                         # a head: calibrated probability >= 0.5)
    alpha: float = 0.0                   # interpolation with CLIP's global feature (with a head)
    calibration: str | None = None       # a calibration file (`ovml calibrate --out`): its labels' own maps
                                         # are used over the run's (and make CLIP-ML's decisions possible)
    batch_size: int = 32                 # images per forward pass
    explain: str | None = None           # folder for attention-map PNGs (needs a head with attention)
    prompts: str | None = None           # 'imagenet80' or a template file (None: the head's cache's
                                         # templates, else CLIP's default)
    device: str = "cpu"                  # torch device
    engine: str = "torch"                # image tower's engine: torch, or onnxruntime (CPU; the onnx extra)
    tower_precision: str = "auto"        # what the tower computes in: auto (CPU: bf16 where the CPU has native
                                         # bf16, else fp32; CUDA: fp16), fp32 or bf16 (CPU)
    download_root: str | None = None     # where named CLIP models are kept


@dataclass(frozen=True)
class ServeConfig:
    """`ovml serve`: the tagging page over one trained head."""

    tagger: PredictConfig = PredictConfig()  # what is loaded; its top_k and alpha are the page's defaults
    host: str = "127.0.0.1"              # address to bind; anything else exposes the page beyond this machine
    port: int = 7860                     # TCP port (0: any free one)
    token: str | None = None             # every API request must carry it (Authorization: Bearer, or a form
                                         # field `token`); needed to bind beyond loopback
    insecure: bool = False               # bind beyond loopback without a token
    workers: int = 512                   # connections served at once, a thread each (their images share
                                         # tower passes through the batcher below)
    waiting: int = 256                   # accepted connections waiting for a worker; beyond, 503 Retry-After
    timeout: float = 10.0                # seconds for a request's headers, and the longest silence in a body
    max_batch: int = 16                  # images of concurrent requests run through the tower as one batch
    batch_wait_ms: float = 5.0           # how long the first waiting image waits for others to join it


@dataclass(frozen=True)
class AddLabelsConfig:
    """`ovml add-labels`: new label names appended to a cache with CLIP's text tower only."""

    cache: str                           # cache path
    names_file: str                      # new label names, one per line ('#' starts a comment)
    unseen: bool = True                  # mark the new labels unseen (False: seen)
    annotations: str | None = None       # CSV id,labels: listed images get +1/-1 on the new labels
                                         # (None: every image 0, not annotated)
    model: str | None = None             # CLIP name or weights file (None: the cache's backbone)
    device: str = "cpu"                  # torch device of the text tower
    download_root: str | None = None     # where named CLIP models are kept
    lock: bool = True                    # hold the writer's lock for the run (False: --no-lock, for file
                                         # systems without locks; then no other process may write it)
    progress: bool = True                # show progress bars


@dataclass(frozen=True)
class CheckConfig:
    """`ovml check`: a cache checked against schema v1 in full."""

    path: str                            # cache path
    rows: int = 256                      # ok rows per split on which the pool invariant is checked


@dataclass(frozen=True)
class DemoConfig:
    """`ovml demo`: the planted synthetic world end to end, offline."""

    out: str = os.path.join("runs", "demo")  # folder for the world, the runs and the reports
    seed: int = 0                        # the world's and the training's
    quick: bool = False                  # a smaller world and fewer epochs (a smoke test)


@dataclass(frozen=True)
class ExportConfig:
    """`ovml export`: a trained run as ONNX graphs and a side file, for onnxruntime without torch or ovml."""

    head: str                            # run folder of a trained head
    out: str                             # folder the tagger is written into
    labels: tuple[str, ...] = ()         # label names scored (empty: the run's cache's vocabulary)
    alpha: float = 0.0                   # the interpolation with CLIP's global feature the side file names
                                         # (head.onnx takes any)
    model: str | None = None             # CLIP name or weights file (None: the head's)
    prompts: str | None = None           # 'imagenet80' or a template file (None: the head's cache's)
    download_root: str | None = None     # where named CLIP models are kept
    lock: bool = True                    # hold the output folder's writer lock (False: --no-lock, for file
                                         # systems without locks; then no other process may write it)


def from_dict(kind: type[T], values: dict) -> T:
    """Rebuild a config from a dict, ignoring keys this version does not know; tuples restored."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    kept = {}
    for key, value in values.items():
        if key in fields:
            kept[key] = tuple(value) if isinstance(value, list) else value
    return kind(**kept)


@dataclass(frozen=True)
class TagConfig:
    """`ovml tag`: every image of folders or of a cache tagged with a vocabulary, into tables and sidecars."""

    out: str                             # output folder: tables, errors.tsv, tag.json, the resume manifest
    inputs: tuple[str, ...] = ()         # image files and folders (recursive); or none with `cache`
    cache: str | None = None             # tag a cache's ok rows from its stored features instead
    splits: tuple[str, ...] | None = None  # cache splits to tag (None: all)
    labels: str | None = None            # "a, b, c"
    labels_file: str | None = None       # one name a line (# comments); neither: the head's (or cache's) vocabulary
    only: str | None = None              # keep only these names ("a, b" or a file)
    exclude: str | None = None           # drop these names ("a, b" or a file)
    always_first: str | None = None      # present ones lead each image's tags ("a, b" or a file)
    head: str | None = None              # run folder of a trained head (None: CLIP-ML alone)
    alpha: float = 0.0                   # interpolation with CLIP's global feature (with a head)
    model: str | None = None             # CLIP weights (None: the head's, the cache's, else RN50)
    prompts: str | None = None           # text templates (None: the head's or cache's, else CLIP's default)
    download_root: str | None = None     # where named CLIP models are kept
    top_k: int | None = None             # at most K labels per image
    threshold: float | str | None = "auto"  # a score threshold, 'mcut' (per image, largest-gap midpoint) or 'auto'
                                         # (calibrated probability >= 0.5; top-k 5 where no calibration can be
                                         # made; 'auto' gives way to --top-k or --thresholds); 'auto-f1':
                                         # probability >= each label's level of best expected F1 over the
                                         # reference images (no labels needed)
    thresholds_file: str | None = None   # `name,threshold` per label; others use `threshold`
    calibration: str | None = None       # a calibration file (`ovml calibrate --out`): its labels' own maps
                                         # are used over the run's (and make CLIP-ML's decisions possible)
    precision: float | None = None       # per-label thresholds aiming at this precision, through the calibration
    formats: tuple[str, ...] = ("jsonl",)  # jsonl, csv, parquet (tables); txt, xmp (sidecars beside images)
    long: bool = False                   # tables: one row per (image, label) for every label scored
    caption_extension: str = ".txt"      # txt sidecar: photo.jpg -> photo<ext>
    sidecars: str = "keep"               # an existing txt sidecar: keep (untouched), overwrite, append;
                                         # xmp: keep and append add keywords, overwrite replaces dc:subject
    xmp_name: str = "full"               # full: photo.jpg.xmp; stem: photo.xmp
    hierarchy: str | None = None         # xmp: also ROOT|tag in lr:hierarchicalSubject
    device: str = "cpu"                  # torch device
    batch_size: int = 64                 # images per forward pass (folders; a cache is scored a unit at a time)
    workers: int = 2                     # decode processes (folders)
    decode: str = "exact"                # exact, draft or gpu, as extract
    engine: str = "torch"                # image tower's engine: torch, or onnxruntime (CPU; the onnx extra)
    tower_precision: str = "auto"        # what the tower computes in: auto (CPU: bf16 where the CPU has native
                                         # bf16, else fp32; CUDA: fp16), fp32 or bf16 (CPU)
    unit_images: int = 256               # images per resumable unit (one table part, one manifest entry)
    dask: str | None = None              # 'local:N' or 'tcp://HOST:PORT': units spread over Dask workers
    strict: bool = False                 # stop at the first unreadable image
    threads: int | None = None           # torch CPU threads (Dask workers get the coordinator's)
    progress: bool = True                # show progress
    save_cache: str | None = None        # image files: also keep their features as a cache here, to tag
                                         # them again later with any vocabulary (`cache=`)
    lock: bool = True                    # hold the writer's lock for the run (False: --no-lock, for file
                                         # systems without locks; then no other process may write it)


@dataclass(frozen=True)
class CalibrateConfig:
    """`ovml calibrate`: labels' own probability maps from a few labelled images of a cache."""

    annotations: str                     # `id,labels` CSV (labels joined by ';'), as `add-labels --annotations`
    head: str | None = None              # run folder whose calibration.json receives the maps (None: CLIP-ML)
    cache: str | None = None             # the cache holding the annotated images' features
    images: str | None = None            # or the folder of the annotated image files (`path,labels`), scored
                                         # through the image tower with the run's head
    out: str | None = None               # store in this file instead of the run
    alpha: float = 0.0                   # the head's interpolation with CLIP's global feature
    device: str = "cpu"                  # torch device
    lock: bool = True                    # hold the writer's lock for the run (False: --no-lock, for file
                                         # systems without locks; then no other process may write it)
