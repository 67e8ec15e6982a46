"""Creating a cache and writing it in work units that own whole row chunks.

Only the coordinator creates arrays and writes attributes, holding the cache's writer lock
(`cache_writer_lock`) for the whole run; any process it sets to work may then write whole units
(rows first, `units_done` flag after), so a rerun skips finished units and redoes any other unit
whole. `complete` is set last, once every unit of every split is done. A new local cache is laid
out under a hidden name beside its path and renamed into place whole, so no process ever sees a
half-made one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..errors import os_reason
from ..lock import store_lock_file, writer_lock
from . import store as backends
from .schema import SCHEMA_VERSION, CacheError, backbone_kind, expected_split_shapes


@dataclass(frozen=True)
class LabelTable:
    """The vocabulary shared by every split: one column of every label matrix per label."""

    names: list[str]          # display names, in column order (may repeat)
    ids: list[str]            # unique identifiers (Open Images MIDs; elsewhere the names)
    seen: np.ndarray          # (L,) bool, true where training may use the label
    text: np.ndarray | None   # (L, D) float32 CLIP text embeddings, L2-normalised (None until computed)

    def __post_init__(self):
        if len(set(self.ids)) != len(self.ids):
            raise CacheError("label ids are not unique")


def tower_path(backbone: dict) -> dict:
    """The image tower's engine and precision as a cache's plan records them: only where they
    differ from the eager fp32 (CPU) or fp16 (CUDA) tower that made every cache before they were
    recorded, so that those caches still resume, while a cache started on one path is never
    finished on another."""
    engine, precision = backbone.get("engine", "torch"), backbone.get("precision", "fp32")
    return ({"engine": engine} if engine != "torch" else {}) | ({"precision": precision} if precision == "bf16" else {})


@dataclass(frozen=True)
class CachePlan:
    """Everything the coordinator needs to lay out a new cache."""

    backbone: dict            # the `backbone` root attribute (docs/cache.md)
    dataset: dict             # the `dataset` root attribute: what the adapter read
    prompts: list[str]        # prompt templates behind `labels/text`
    labels: LabelTable
    pool: dict                # pool/* arrays (float32), named as in docs/cache.md
    num_heads: int            # attention heads of CLIP's pool
    split_rows: dict          # split name -> number of images N
    unit_rows: int = 64       # R: rows per chunk and per work unit

    def fingerprint(self) -> dict:
        """What must match for a rerun to resume an existing cache instead of refusing it."""
        label_digest = hashlib.sha256("\n".join(self.labels.ids).encode()).hexdigest()
        decode = self.backbone.get("decode", "exact")   # only a non-default decode is recorded
        made = {"model": self.backbone["name"], "weights_sha256": self.backbone["weights_sha256"],
                "dataset": self.dataset.get("name"), "root": self.dataset.get("root"),
                "splits": dict(self.split_rows), "unit_rows": self.unit_rows, "label_ids_sha256": label_digest}
        return made | ({"decode": decode} if decode != "exact" else {}) | tower_path(self.backbone)


@dataclass
class UnitRows:
    """The rows of one work unit, ready to be written."""

    spatial: np.ndarray       # the tokens a head reads, float16: X' (n, HW, C); for a ViT [cls; X']
                              # (n, 1+HW, W), which `write_unit` stores as `cls` and `spatial`
    global_embedding: np.ndarray  # (n, D) float16
    labels: np.ndarray        # (n, L) int8
    ids: list[str]            # (n,) image identifiers
    ok: np.ndarray            # (n,) bool
    failures: list = field(default_factory=list)  # (image id, reason) of the rows with ok = false


@contextlib.contextmanager
def cache_writer_lock(path: str, enabled: bool = True) -> Iterator[None]:
    """The writer's lock on the cache at `path` (ovml/lock.py), held by `extract` and `add-labels`
    for their whole run: its file sits beside a local cache; a URL cache has none to take. A
    folder where the lock file cannot be made is a CacheError naming the cache."""
    lock_file = None if backends.is_url(path) else store_lock_file(backends.local_path(path))
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(writer_lock(path, lock_file, enabled))
        except OSError as err:
            raise CacheError(f"{path}: cannot write here ({os_reason(err)}); fix it and re-run the same "
                             "command") from err
        yield


def building_path(path: str) -> str:
    """Where a new local cache is laid out before it is renamed to `path`: beside it, hidden, with
    the same suffix (which picks the backend)."""
    folder, name = os.path.split(path.rstrip("/"))
    return os.path.join(folder, f".building.{name}")


def create_cache(path: str, plan: CachePlan) -> backends.Store:
    """Lay out an empty cache at `path` (replacing anything there) and return it open for writing.

    A local cache is built under `building_path` (a leftover of a killed creation is replaced)
    and renamed into place whole. A URL cache is laid out in place with the `plan` attribute
    written last: a store without it is an interrupted creation, which a rerun replaces.
    """
    try:
        if backends.is_url(path):
            return _lay_out(path, plan)
        local, building = backends.local_path(path), building_path(backends.local_path(path))
        backends.remove(building)
        _lay_out(building, plan).close()
        backends.remove(local)
        os.rename(building, local)
        return backends.open_store(local, "a")
    except OSError as err:
        raise CacheError(f"{path}: cannot create the cache ({os_reason(err)}); fix it and re-run "
                         "the same command") from err


def _lay_out(path: str, plan: CachePlan) -> backends.Store:
    store = backends.open_store(path, "w")
    grid = plan.backbone["grid"]
    hw, c, d = grid[0] * grid[1], plan.backbone["channels"], plan.backbone["embed_dim"]
    r = plan.unit_rows
    store.set_attr("ovml_cache", SCHEMA_VERSION)
    store.set_attr("complete", False)
    for key in ("backbone", "dataset", "prompts"):
        store.set_attr(key, getattr(plan, key))
    write_labels(store, plan.labels)
    for key, value in plan.pool.items():
        value = np.asarray(value, dtype=np.float32)
        store.create(f"pool/{key}", value.shape, np.float32, value.shape, value)
    store.set_attr("num_heads", int(plan.num_heads), node="pool")
    for split, n in plan.split_rows.items():
        shapes = expected_split_shapes(n, hw, c, d, len(plan.labels.ids), r, backbone_kind(plan.backbone))
        dtypes = {"spatial": np.float16, "cls": np.float16, "global": np.float16, "labels": np.int8, "ids": str,
                  "ok": bool, "units_done": bool}
        for key, shape in shapes.items():
            chunks = (1,) if key == "units_done" else (r,) + shape[1:]
            store.create(f"splits/{split}/{key}", shape, dtypes[key], chunks)
    store.set_attr("plan", plan.fingerprint())
    store.flush()
    return store


def write_labels(store: backends.Store, labels: LabelTable) -> None:
    """Write (or rewrite) the `labels/` group."""
    count = len(labels.ids)
    store.create("labels/names", (count,), str, (max(count, 1),), np.array(labels.names, dtype=object))
    store.create("labels/ids", (count,), str, (max(count, 1),), np.array(labels.ids, dtype=object))
    store.create("labels/seen", (count,), bool, (max(count, 1),), np.asarray(labels.seen, dtype=bool))
    text = np.asarray(labels.text, dtype=np.float32)
    store.create("labels/text", text.shape, np.float32, text.shape, text)


def open_existing(path: str, plan: CachePlan, overwrite: bool = False) -> backends.Store | None:
    """Reopen the cache at `path` to resume it, or None when there is none (or `overwrite`).

    Only a cache made by the same plan (model, dataset, vocabulary, split sizes, unit size) is
    resumed; any other is refused, unless `overwrite` removes it.
    """
    if overwrite and backends.exists(path):
        backends.remove(path)
    if not backends.exists(path):
        return None
    store = backends.open_store(path, "a")
    version = store.get_attr("ovml_cache")
    if version != SCHEMA_VERSION:
        store.close()
        raise CacheError(f"{path}: existing store has ovml_cache={version!r}, not {SCHEMA_VERSION}; "
                         "pass --overwrite to replace it")
    old = store.get_attr("plan")
    if old is None:  # creation was interrupted before any unit could be written
        store.close()
        backends.remove(path)
        return None
    new = json.loads(json.dumps(plan.fingerprint()))
    if old != new:
        store.close()
        changed = sorted(k for k in set(new) | set(old) if old.get(k) != new.get(k))
        raise CacheError(f"{path}: an existing cache made with a different {', '.join(changed)}; "
                         "pass --overwrite to replace it, or choose another --out")
    return store


def pending_units(store: backends.Store, split: str) -> list[int]:
    """Indices of the units of `split` whose `units_done` flag is not set."""
    done = np.asarray(store.array(f"splits/{split}/units_done")[...], dtype=bool)
    return np.flatnonzero(~done).tolist()


def write_unit(store: backends.Store, split: str, unit: int, unit_rows: int, rows: UnitRows) -> None:
    """Write one unit's rows, then (only then) its `units_done` flag.

    A ViT cache (one with `cls` arrays) takes token 0 of `rows.spatial` as `cls`, the rest as `spatial`.
    """
    start = unit * unit_rows
    stop = start + len(rows.ids)
    base = f"splits/{split}"
    store.reserve(rows.spatial.nbytes + rows.global_embedding.nbytes + rows.labels.nbytes)
    spatial = store.array(f"{base}/spatial")
    tokens = rows.spatial
    if store.has(f"{base}/cls"):
        if tokens.shape[1] != spatial.shape[1] + 1:
            raise CacheError(f"{store.path}: a ViT unit needs {spatial.shape[1] + 1} tokens per image "
                             f"([cls; spatial]), got {tokens.shape[1]}")
        store.array(f"{base}/cls")[start:stop] = tokens[:, 0]
        tokens = tokens[:, 1:]                                   # (n, HW, W)
    spatial[start:stop] = tokens
    store.array(f"{base}/global")[start:stop] = rows.global_embedding
    store.array(f"{base}/labels")[start:stop] = rows.labels
    store.array(f"{base}/ids")[start:stop] = np.array(rows.ids, dtype=object)
    store.array(f"{base}/ok")[start:stop] = rows.ok
    store.flush()
    store.array(f"{base}/units_done")[unit] = True
    store.flush()


def mark_complete(store: backends.Store) -> None:
    """Set `complete` once every unit of every split is done (the coordinator's last write)."""
    for split in store.children("splits"):
        left = pending_units(store, split)
        if left:
            raise CacheError(f"{store.path}: split {split} still has {len(left)} unfinished units")
    store.set_attr("complete", True)
    store.flush()


def unit_bounds(unit: int, unit_rows: int, total_rows: int) -> tuple[int, int]:
    """The [start, stop) rows of one unit."""
    start = unit * unit_rows
    return start, min(start + unit_rows, total_rows)

