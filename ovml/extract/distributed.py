"""Extraction on Dask: the coordinator plans units; each task extracts whole units on its worker
and writes them straight into the Zarr store (work units own whole chunks, so no locks).

A worker keeps one dataset reader and one model loaded across tasks. A worker killed mid-unit
costs that unit only: its flag is never set, Dask retries the task elsewhere, and a rerun skips
every finished unit. The coordinator writes `complete` after every unit is done.
"""
from __future__ import annotations

import os
import threading


from ..cache import store as backends
from ..cache.writer import cache_writer_lock
from ..config import ExtractConfig
from ..errors import ExtractError
from ..progress import progress
from .backbone import load_backbone
from .datasets import adapter_options, open_dataset, select_splits
from .runner import Job, begin, check_tower_path, errors_path, extract_split, finish
from .summary import ExtractSummary
from .unit_writer import append_errors

UNITS_PER_TASK = 4
_WORKER_STATE: dict = {}
_WORKER_LOCK = threading.Lock()


def worker_device(device: str) -> str:
    """`cuda` without an index spreads workers over the visible GPUs; anything else is kept."""
    if device != "cuda":
        return device
    import torch
    from distributed import get_worker
    try:
        rank = int(str(get_worker().name).rsplit("-", 1)[-1])
    except (ValueError, AttributeError):
        rank = 0
    return f"cuda:{rank % max(1, torch.cuda.device_count())}"


def worker_state(config: ExtractConfig):
    """(splits, backbone) loaded once per worker process and reused by every task."""
    key = (config.dataset, config.root, config.model, config.device, config.limit, config.splits,
           config.allow_outside_root, config.engine, config.tower_precision,
           tuple(sorted(adapter_options(config).items())))
    with _WORKER_LOCK:
        if key not in _WORKER_STATE:
            source = open_dataset(config.dataset, config.root, config.allow_outside_root,
                                  **adapter_options(config))
            splits = select_splits(source, config.splits, config.limit)
            backbone = load_backbone(config.model, worker_device(config.device), config.download_root,
                                     config.engine, config.tower_precision)
            _WORKER_STATE.clear()
            _WORKER_STATE[key] = (splits, backbone)
        return _WORKER_STATE[key]


def extract_units_task(config: ExtractConfig, split: str, units: list[int]) -> dict:
    """One Dask task: extract `units` of `split` into the store; report counts and failures."""
    splits, backbone = worker_state(config)
    if config.threads:
        import torch
        torch.set_num_threads(config.threads)
    store = backends.open_store(config.out, "a")
    summary = ExtractSummary(config.out)
    try:
        check_tower_path(store, backbone)
        todo = [u for u in units if not store.array(f"splits/{split}/units_done")[u]]
        failures = extract_split(config, backbone, store, splits[split], todo, summary, errors_file=None)
    finally:
        store.close()
    return {"images": summary.images, "failures": failures, "units": len(units), "phases": summary.phases,
            "notes": summary.notes}


def connect(spec: str):
    """A Dask client for `local:N` (a LocalCluster of N processes) or a scheduler address."""
    from distributed import Client, LocalCluster
    if spec.startswith("local:"):
        try:
            workers = int(spec.split(":", 1)[1])
        except ValueError:
            raise ExtractError(f"--dask {spec}: expected local:N with N a number of workers") from None
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster
    if spec.startswith(("tcp://", "tls://")):
        return Client(spec), None
    raise ExtractError(f"--dask {spec}: expected local:N or tcp://HOST:PORT")


def run_distributed(config: ExtractConfig) -> ExtractSummary:
    """Plan on the coordinator, extract units on Dask workers, mark the cache complete; the
    coordinator holds the cache's writer lock throughout (its workers write units it hands them)."""
    if backends.is_hdf5(config.out):
        raise ExtractError(f"{config.out}: --dask needs a Zarr store; HDF5 has a single writer, so workers "
                           "cannot write their units into it concurrently")
    with cache_writer_lock(config.out, config.lock):
        job = begin(config)
        client, cluster = connect(config.dask)
        task_config = _worker_config(config)
        try:
            run_tasks(job, client, task_config)
        except BaseException:
            job.store.close()
            raise
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        return finish(job)


def _worker_config(config: ExtractConfig) -> ExtractConfig:
    """Workers decode in their own process (no nested DataLoader workers) and show no bars."""
    from dataclasses import replace

    import torch
    return replace(config, workers=0, progress=False, threads=config.threads or torch.get_num_threads(),
                   root=os.path.abspath(config.root),
                   out=config.out if backends.is_url(config.out) else os.path.abspath(config.out))


def run_tasks(job: Job, client, config: ExtractConfig) -> None:
    from distributed import as_completed
    futures = []
    for split, units in job.pending().items():
        for start in range(0, len(units), UNITS_PER_TASK):
            chunk = units[start:start + UNITS_PER_TASK]
            futures.append(client.submit(extract_units_task, config, split, chunk, pure=False,
                                         key=f"ovml-{split}-{chunk[0]}-{os.getpid()}"))
    bar = progress(total=len(futures), desc=f"extract on {config.dask}", unit="task",
                   enabled=job.config.progress, leave=True)
    for future in as_completed(futures):
        result = future.result()
        job.summary.images += result["images"]
        job.summary.failures += len(result["failures"])
        if result["failures"]:
            append_errors(errors_path(job.config.out), result["failures"])
            if job.config.strict:
                split, image, reason = result["failures"][0]
                raise ExtractError(f"{image}: {reason} (--strict)")
        job.summary.phases.add(result["phases"])
        for note in result["notes"]:
            job.summary.note(note, job.config.progress)
        bar.update(1)
    bar.close()
