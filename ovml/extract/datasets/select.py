"""Which dataset and which of its splits a run reads, from the options `extract` and `finetune`
share: the adapter by name (`open_dataset`) with the options it takes (`adapter_options`), the
splits asked for cut to `--limit` rows (`select_splits`)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ...config import ExtractConfig, FinetuneConfig
from ...errors import ExtractError
from .base import DatasetError, DatasetSource, Split
from .coco import open_coco
from .folder import open_folder
from .nuswide import open_nuswide
from .openimages import open_openimages

# each adapter by its --dataset name, and the options (beyond the root) that it takes
ADAPTERS = {"folder": open_folder, "nuswide": open_nuswide, "openimages": open_openimages, "coco": open_coco}
ADAPTER_OPTIONS = {"folder": (), "nuswide": ("images", "placeholder"), "openimages": ("images",),
                   "coco": ("images", "unseen")}


def open_dataset(name: str, root: str, allow_outside_root: bool = False, **options) -> DatasetSource:
    """Open dataset `name` at `root` with the adapter's own options. Unless `allow_outside_root`,
    every split may read images only within the root and the `images` folder the user named
    (symlinks followed): a listed path resolving elsewhere becomes an ok = false row."""
    if name not in ADAPTERS:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(sorted(ADAPTERS))})")
    source = ADAPTERS[name](root, **options)
    if not allow_outside_root:
        roots = tuple(dict.fromkeys(os.path.realpath(folder) for folder in (root, options.get("images")) if folder))
        for split in source.splits.values():
            split.roots = roots
    return source


def adapter_options(config: ExtractConfig | FinetuneConfig) -> dict:
    """The adapter-specific options that were given; one the adapter does not take is an error."""
    given = {key: getattr(config, key) for key in ("images", "unseen", "placeholder")
             if getattr(config, key) is not None}
    accepted = ADAPTER_OPTIONS.get(config.dataset, ())
    for key in given:
        if key not in accepted:
            raise ExtractError(f"--{key} does not apply to --dataset {config.dataset}")
    return given


@dataclass
class LimitedSplit(Split):
    """The first `count` rows of a split (`--limit`)."""

    inner: Split
    count: int

    def __post_init__(self):
        self.name = self.inner.name
        self.ids = self.inner.ids[: self.count]
        self.paths = self.inner.paths[: self.count]
        self.file_check, self.roots = self.inner.file_check, self.inner.roots

    def labels(self, start, stop):
        return self.inner.labels(start, min(stop, self.count))


def select_splits(source: DatasetSource, names: tuple[str, ...] | None, limit: int | None) -> dict[str, Split]:
    """The splits asked for (all by default), each cut to `limit` rows."""
    chosen = names or tuple(source.splits)
    unknown = [name for name in chosen if name not in source.splits]
    if unknown:
        raise ExtractError(f"{source.root}: no split {', '.join(unknown)} (splits: {', '.join(source.splits)})")
    splits = {name: source.splits[name] for name in chosen}
    if limit is not None:
        splits = {name: LimitedSplit(inner=split, count=min(limit, len(split)))
                  for name, split in splits.items()}
    return splits
