"""Stage 1: images -> CLIP once -> the cache, in resumable work units.

Reader (DataLoader of decode processes, uint8 pixels in pinned memory on CUDA) -> mapper (the
backbone; on CUDA each batch's features are copied back without waiting while the next batch
runs) -> writer (a thread with a bounded queue), with per-phase timings and the steady-state
rate reported apart from the fixed start-up. A rerun of the same command resumes: finished
units are skipped, any other unit is redone whole, `complete` is written last.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..cache import store as backends
from ..cache.writer import (CachePlan, LabelTable, UnitRows, cache_writer_lock, create_cache, mark_complete,
                            open_existing, pending_units, tower_path, unit_bounds)
from ..config import ExtractConfig
from ..errors import ExtractError
from ..progress import progress
from .backbone import Backbone, load_backbone
from .datasets import DatasetSource, Split, adapter_options, open_dataset, select_splits
from .device_decode import DevicePixels, resolve_decode
from .images import DecodedBatch, ImageRows, collate, normalise
from .summary import ExtractSummary, SteadyRate
from .text import embed_labels, load_prompts
from .unit_writer import UnitWriter


def errors_path(out: str) -> str:
    """`<out>.errors.tsv` beside a local cache; in the working folder for a URL."""
    base = os.path.basename(out.rstrip("/")) if backends.is_url(out) else backends.local_path(out).rstrip("/")
    return base + ".errors.tsv"


def make_plan(config: ExtractConfig, source: DatasetSource, splits: dict[str, Split],
              backbone: Backbone, prompts: list[str]) -> CachePlan:
    """The cache layout for this run (text embeddings filled in only when the cache is created).
    A decode other than exact is recorded in the `backbone` attribute, so a rerun that would
    mix decodes in one cache is refused."""
    vocabulary = source.vocabulary
    labels = LabelTable(list(vocabulary.names), list(vocabulary.ids), vocabulary.seen, None)
    decode, _ = resolve_decode(config.decode, backbone.device)
    described = backbone.describe() | ({"decode": decode} if decode != "exact" else {})
    return CachePlan(described, source.describe(), prompts, labels,
                     backbone.pool_weights(), backbone.num_heads,
                     {name: len(split) for name, split in splits.items()}, config.unit_rows)


def check_tower_path(store: backends.Store, backbone: Backbone) -> None:
    """Refuse to add features made on another tower path (engine, precision) than the cache's,
    as a Dask worker on a CPU without native bf16 would."""
    made, here = tower_path(store.get_attr("backbone") or {}), tower_path(backbone.describe())
    if made != here:
        raise ExtractError(f"{store.path}: the cache is made by the tower on {made or 'torch, fp32'}, this "
                           f"process runs it on {here or 'torch, fp32'}; pass the same --engine and --tower-precision")


def unit_batches(units: list[int], unit_rows: int, total: int, batch_size: int) -> list[list[int]]:
    """The row batches that extract `units`: rows [k B, (k + 1) B) of the split (B = batch_size),
    every one that holds a row of one of the units, whole and in order.

    A batch spans units, so `--batch-size` is not capped at `--unit-rows`, and holds the same rows
    whichever units are pending: a row's features are not bit for bit the same in a batch of other
    rows, so a resumed run or a Dask task computes each row in the company an uninterrupted run
    gives it, forwarding the rows of finished units that share a batch with pending ones (the
    `UnitAssembler` drops them)."""
    starts = set()
    for unit in units:
        start, stop = unit_bounds(unit, unit_rows, total)
        starts.update(range(start // batch_size * batch_size, stop, batch_size))
    return [list(range(start, min(start + batch_size, total))) for start in sorted(starts)]


def open_or_create(config: ExtractConfig, plan: CachePlan, backbone: Backbone,
                   source: DatasetSource) -> tuple[backends.Store, bool]:
    """Resume the cache made by this plan, or create it (computing the label text embeddings)."""
    store = open_existing(config.out, plan, config.overwrite)
    if store is not None:
        return store, True
    text = embed_labels(backbone.model, plan.labels.names, plan.prompts, backbone.device,
                        progress=config.progress)
    plan = dataclasses.replace(plan, labels=dataclasses.replace(plan.labels, text=text))
    return create_cache(config.out, plan), False


class UnitAssembler:
    """Collects the rows of the units being extracted from batches (which may span units and
    hold rows of finished ones, `unit_batches`) and hands each whole unit to the writer."""

    def __init__(self, split: Split, unit_rows: int, writer: UnitWriter, units: list[int]):
        self.split, self.unit_rows, self.writer = split, unit_rows, writer
        self.units = np.asarray(sorted(units), dtype=np.int64)
        self.parts: dict[int, list] = {}

    def kept(self, rows: np.ndarray) -> np.ndarray:
        """(B,) bool: which rows of a batch belong to the units being extracted."""
        return np.isin(rows // self.unit_rows, self.units)

    def add(self, rows: np.ndarray, spatial: np.ndarray, global_embedding: np.ndarray,
            reasons: list[str]) -> None:
        units = rows // self.unit_rows                                               # (B,)
        for unit in np.intersect1d(units, self.units):
            mine = units == unit
            self.parts.setdefault(int(unit), []).append(
                (rows[mine], spatial[mine], global_embedding[mine], [r for r, m in zip(reasons, mine) if m]))
            start, stop = unit_bounds(int(unit), self.unit_rows, len(self.split))
            if sum(len(p[0]) for p in self.parts[int(unit)]) == stop - start:
                self.writer.put(int(unit), self._assemble(int(unit), start, stop))

    def _assemble(self, unit: int, start: int, stop: int) -> UnitRows:
        parts = self.parts.pop(unit)
        reasons = [reason for part in parts for reason in part[3]]
        ok = np.array([not reason for reason in reasons], dtype=bool)
        spatial = np.concatenate([p[1] for p in parts])
        global_embedding = np.concatenate([p[2] for p in parts])
        spatial[~ok] = 0
        global_embedding[~ok] = 0
        ids = self.split.ids[start:stop]
        failures = [(ids[i], reasons[i]) for i in np.flatnonzero(~ok)]
        return UnitRows(spatial, global_embedding, self.split.labels(start, stop).astype(np.int8),
                        list(ids), ok, failures)


@dataclass
class BatchFeatures:
    """One batch's features on their way to the host: on CUDA the copies into pinned memory run
    while the next batch is computed, and `ready` waits for them."""

    rows: np.ndarray
    reasons: list[str]
    spatial: torch.Tensor             # (B, HW, C) float16
    global_embedding: torch.Tensor    # (B, D) float16
    copied: "torch.cuda.Event | None"

    @classmethod
    def start(cls, batch: DecodedBatch, spatial: torch.Tensor, global_embedding: torch.Tensor) -> "BatchFeatures":
        if not spatial.is_cuda:
            return cls(batch.rows.numpy(), batch.reasons, spatial.half(), global_embedding.half(), None)
        device = spatial.device
        spatial = spatial.half().contiguous().to("cpu", non_blocking=True)        # pinned destination
        global_embedding = global_embedding.half().to("cpu", non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(device))   # the copies' stream, on the features' GPU
        return cls(batch.rows.numpy(), batch.reasons, spatial, global_embedding, copied)

    def ready(self) -> tuple[np.ndarray, np.ndarray]:
        if self.copied is not None:
            self.copied.synchronize()
        return self.spatial.numpy(), self.global_embedding.numpy()


def use_device(device: torch.device) -> None:
    """Make a CUDA `device` this process's current one, so that the streams and events of the
    copies back, the pinning thread and the JPEG decoder are that GPU's, not cuda:0's."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


def writer_threads(store: backends.Store, backbone: Backbone) -> int:
    """Threads writing units: 4 for a Zarr store fed by a GPU, else one (HDF5 has a single writer,
    and on the CPU the forward is slower than one thread's compression)."""
    return 4 if backbone.device.type == "cuda" and not backends.is_hdf5(store.path) else 1


def image_loader(split: Split, batches: list[list[int]], resolution: int, decode: str, workers: int,
                 device: torch.device) -> torch.utils.data.DataLoader:
    """Decode processes yielding DecodedBatches of the given row batches (pinned on CUDA)."""
    rows = ImageRows(split.paths, resolution, split.file_check, decode, split.roots)
    return torch.utils.data.DataLoader(
        rows, batch_sampler=batches, num_workers=workers, collate_fn=functools.partial(collate, side=resolution),
        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None, persistent_workers=False)


def extract_split(config: ExtractConfig, backbone: Backbone, store: backends.Store, split: Split,
                  units: list[int], summary: ExtractSummary, errors_file: str | None) -> list:
    """Extract the given units of one split into the open store; returns the failures
    (split, image id, reason), also appended to `errors_file` when one is given."""
    batches = unit_batches(units, config.unit_rows, len(split), config.batch_size)
    if not batches:
        return []
    use_device(backbone.device)
    decode, note = resolve_decode(config.decode, backbone.device)
    summary.note(note, config.progress)
    summary.note(backbone.note, config.progress)
    loader = image_loader(split, batches, backbone.input_resolution, decode, config.workers, backbone.device)
    to_device = DevicePixels(backbone.device, backbone.input_resolution)
    steady = SteadyRate(skip=max(1, config.workers))
    bounds = [unit_bounds(unit, config.unit_rows, len(split)) for unit in units]
    bar = progress(total=sum(stop - start for start, stop in bounds), desc=f"extract {split.name}", unit="img",
                   enabled=config.progress, leave=True)
    with UnitWriter(store, split.name, config.unit_rows, errors_file, threads=writer_threads(store, backbone)) as writer:
        assembler = UnitAssembler(split, config.unit_rows, writer, units)

        def hand_on(features: BatchFeatures) -> None:
            spatial, global_embedding = features.ready()
            assembler.add(features.rows, spatial, global_embedding, features.reasons)
            kept = assembler.kept(features.rows)
            summary.images += int(kept.sum())
            summary.failures += sum(1 for reason, keep in zip(features.reasons, kept) if reason and keep)
            bar.update(int(kept.sum()))
            steady.mark(len(features.rows))

        waiting = None
        for batch in loader:
            started = time.perf_counter()
            pixels = to_device(batch)                                   # (B, 3, S, S) uint8 on the device
            kept = assembler.kept(batch.rows.numpy())
            failed = [(int(r), reason) for r, reason, keep in zip(batch.rows, batch.reasons, kept)
                      if reason and keep]
            if failed and config.strict:
                row, reason = failed[0]
                raise ExtractError(f"{split.paths[row]}: {reason} (--strict)")
            features = BatchFeatures.start(batch, *backbone.encode(normalise(pixels)))
            if waiting is not None:
                hand_on(waiting)
            waiting = features
            summary.phases.forward += time.perf_counter() - started
            summary.phases.decode += batch.seconds
        if waiting is not None:
            hand_on(waiting)
        bar.close()
    summary.phases.write += writer.seconds
    summary.steady.add(steady)
    summary.note(to_device.note(), config.progress)
    return writer.failures


def record_counts(store: backends.Store, splits: dict[str, Split]) -> None:
    """Add per-split `ok` counts to the `dataset` attribute (coordinator only)."""
    dataset = store.get_attr("dataset") or {}
    counts = dataset.setdefault("splits", {})
    for name in splits:
        ok = np.asarray(store.array(f"splits/{name}/ok")[...], dtype=bool)
        counts.setdefault(name, {}).update({"listed": len(ok), "ok": int(ok.sum())})
    store.set_attr("dataset", dataset)


@dataclass
class Job:
    """What the coordinator set up: the splits to extract, the model, the open store."""

    config: ExtractConfig
    splits: dict[str, Split]
    backbone: Backbone
    store: backends.Store
    summary: ExtractSummary
    started: float

    def pending(self) -> dict[str, list[int]]:
        """Unfinished units per split (finished ones are counted as skipped)."""
        pending = {}
        for name in self.splits:
            pending[name] = pending_units(self.store, name)
            total = self.store.array(f"splits/{name}/units_done").shape[0]
            self.summary.units_skipped += total - len(pending[name])
        return pending


def begin(config: ExtractConfig) -> Job:
    """Coordinator set-up: read the dataset, load the model, create or resume the store."""
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.overwrite and os.path.exists(errors_path(config.out)):
        os.remove(errors_path(config.out))
    source = open_dataset(config.dataset, config.root, config.allow_outside_root, **adapter_options(config))
    splits = select_splits(source, config.splits, config.limit)
    backbone = load_backbone(config.model, config.device, config.download_root, config.engine, config.tower_precision)
    plan = make_plan(config, source, splits, backbone, load_prompts(config.prompts))
    store, resumed = open_or_create(config, plan, backbone, source)
    return Job(config, splits, backbone, store, ExtractSummary(config.out, resumed=resumed), started)


def finish(job: Job) -> ExtractSummary:
    """Coordinator's last writes: per-split counts, then `complete`; closes the store."""
    try:
        record_counts(job.store, job.splits)
        mark_complete(job.store)
        job.summary.bytes_on_disk = job.store.bytes_on_disk()
    finally:
        job.store.close()
    job.summary.seconds = time.perf_counter() - job.started
    job.summary.errors_file = tidy_errors_file(errors_path(job.config.out))
    return job.summary


def run_extraction(config: ExtractConfig) -> ExtractSummary:
    """Extract every pending unit of the chosen splits in this process and mark the cache complete,
    holding the cache's writer lock throughout (a second writer is refused at once)."""
    with cache_writer_lock(config.out, config.lock):
        job = begin(config)
        try:
            for name, units in job.pending().items():
                extract_split(config, job.backbone, job.store, job.splits[name], units, job.summary,
                              errors_path(config.out))
        except BaseException:
            job.store.close()
            raise
        return finish(job)


def tidy_errors_file(path: str) -> str | None:
    """Drop the duplicate lines that units redone after an interruption appended; None if no file."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        lines = list(dict.fromkeys(handle))
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
    return path
