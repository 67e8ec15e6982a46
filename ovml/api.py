"""The Python face of ovml, for notebooks: the same pipelines the CLI and `ovml serve` call.

Heavy modules (torch, CLIP, Dask) are imported when a function first needs them, so `import ovml`
stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .config import EvalConfig, ExportConfig, PredictConfig, TagConfig, TrainConfig

if TYPE_CHECKING:
    import numpy as np

    from .cache.reader import CacheReader
    from .evaluation.evaluate import Evaluation
    from .export import ExportSummary
    from .predict.predictor import Predictor
    from .tag.runner import TagSummary
    from .train.trainer import TrainResult


class Cache:
    """An open feature cache (Zarr or HDF5): its vocabulary, its splits and their arrays.

    Returned by `open_cache`; close it (or use `with`) when done, since the lazy arrays read
    through its open store.
    """

    def __init__(self, reader: "CacheReader"):
        self.reader = reader

    @property
    def path(self) -> str:
        return self.reader.path

    @property
    def label_names(self) -> list[str]:
        """Label names in column order of every label matrix."""
        return list(self.reader.names)

    @property
    def seen(self) -> np.ndarray:
        """(L,) bool: the labels training may use (the others are unseen, zero-shot)."""
        return self.reader.seen.copy()

    @property
    def text(self) -> np.ndarray:
        """(L, D) float32: each label's CLIP text embedding, L2-normalised."""
        return self.reader.text

    @property
    def splits(self) -> list[str]:
        """Split names, e.g. ['test', 'train']."""
        return list(self.reader.splits)

    @property
    def backbone(self) -> dict:
        """The backbone the features came from (name, weights sha256, grid, channels, ...)."""
        return dict(self.reader.backbone)

    def arrays(self, split: str) -> dict:
        """Lazy Dask arrays of one split, one Dask chunk per stored chunk: `spatial` (N, HW, C)
        float16, `global` (N, D) float16, `labels` (N, L) int8 (1, -1, 0 = not annotated),
        `ok` (N,) bool (false: an unreadable image, skip it), and `cls` (N, W) for ViT caches."""
        from .cache.lazy import lazy_arrays
        return lazy_arrays(self.reader, split)

    def image_ids(self, split: str) -> list[str]:
        """Each row's image id (its path relative to the dataset root)."""
        return self.reader.image_ids(split)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Cache({self.path!r}: {len(self.reader.names)} labels ({int(self.reader.seen.sum())} seen), "
                f"splits {', '.join(f'{s}={self.reader.num_rows(s)}' for s in self.reader.splits)})")


def open_cache(path: str, allow_partial: bool = False) -> Cache:
    """Open and validate a cache (`*.zarr`, an fsspec URL, or `*.h5`); one still being extracted
    only with `allow_partial`."""
    from .cache.reader import CacheReader
    return Cache(CacheReader(path, allow_partial=allow_partial))


def load_tagger(run_dir: str | None = None, **settings) -> "Predictor":
    """A tagger: the run's head and the CLIP it was trained on, loaded once; `settings` are
    `PredictConfig`'s other fields (device, model, prompts, download_root, top_k, alpha, ...).

    `tagger.predict(images, labels, top_k=..., alpha=...)` takes file paths, encoded bytes or PIL
    images and any label names (a list or "a, b, c") and returns one `Prediction` per image whose
    `.labels` are (name, score) pairs, best first: the scores `ovml predict --json` prints; top_k
    and alpha left out are the config's. Without `run_dir`, CLIP-ML alone (`model`).
    `attention=True` also gives each predicted label's attention map (`.attention`, (k, H, W)).
    """
    from .predict.predictor import Predictor
    return Predictor(PredictConfig(head=run_dir, **settings))


def train_head(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> "TrainResult":
    """Train a head from a cache (as `ovml train-head`), then store its calibration; writes
    `config.out` and returns the summary (`.out`, `.best_epoch`, `.best_val_map`, `.last_loss`,
    `.seconds`)."""
    from .calibrate.fit import train_calibrated
    return train_calibrated(config, resume=resume, overwrite=overwrite)


def evaluate(config: EvalConfig) -> "Evaluation":
    """Score a cache's test split with LESA's protocol (as `ovml eval`). `.summary` is
    metrics.json's content (`.summary["rows"]`: one dict per method and alpha, in percent);
    `.rows` keep the scores. With `config.out`, the report and plots are written there too."""
    from .evaluation.report import evaluate_and_report
    return evaluate_and_report(config)[0]


def tag(config: TagConfig) -> "TagSummary":
    """Tag image files and folders, or every image of a cache, with any vocabulary (as `ovml tag`):
    tables (tags.jsonl/.csv/.parquet) in `config.out` and sidecars beside the images. Returns the
    summary (`.images`, `.failures`, `.files`, `.errors_file`, `.lines()`); re-running the same
    config resumes."""
    from .tag.runner import run_tag
    return run_tag(config)


def export_tagger(config: ExportConfig) -> "ExportSummary":
    """Export a trained run as a portable tagger (as `ovml export`): `tower.onnx`, `head.onnx`,
    `text.npy` and `tagger.json` in `config.out`, for onnxruntime without torch or ovml
    (docs/onnx_tag.py). Not named `export`: the package ovml.export, once imported, would shadow
    it as `ovml.export`."""
    from .export import export_run
    return export_run(config)
