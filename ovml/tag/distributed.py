"""Tagging on Dask (`--dask local:N|tcp://HOST:PORT`), as extract: the coordinator plans, checks
and embeds the vocabulary once; each task tags whole units on its worker and writes their parts
(one table file per unit) into the shared output folder; the coordinator marks units done as tasks
report and finishes the run. A worker keeps its model (or open cache) across tasks, uses the
coordinator's CPU threads and the same batches, so results equal a single process's.
"""
from __future__ import annotations

import dataclasses
import os
import threading

from ..cache.reader import CacheReader
from ..extract.distributed import connect, worker_device
from ..progress import progress
from .engine import open_engine, tag_units
from .manifest import Manifest
from .plan import TagPlan

UNITS_PER_TASK = 2
_WORKER_STATE: dict = {}
_WORKER_LOCK = threading.Lock()


def worker_engine(plan: TagPlan):
    """The engine of this worker process, loaded once per run and reused by its tasks."""
    key = (plan.config, repr(sorted(plan.fingerprint.items(), key=str)))
    with _WORKER_LOCK:
        if key not in _WORKER_STATE:
            for reader in [state[1] for state in _WORKER_STATE.values() if state[1] is not None]:
                reader.close()
            _WORKER_STATE.clear()
            reader = CacheReader(plan.config.cache) if plan.config.cache else None
            _WORKER_STATE[key] = (open_engine(plan, reader, worker_device(plan.config.device)), reader)
        return _WORKER_STATE[key][0]


def tag_units_task(plan: TagPlan, units: list[int]) -> list[tuple[int, dict, dict]]:
    """One Dask task: tag `units`; report (unit, counts, sidecars) for each."""
    import torch

    if plan.config.threads:
        torch.set_num_threads(plan.config.threads)
    done = []
    tag_units(plan, worker_engine(plan), units,
              lambda unit, counts, sidecars: done.append((unit.index, counts, dict(sidecars))))
    return done


def worker_plan(plan: TagPlan) -> TagPlan:
    """The plan as workers run it: absolute paths (images are read from `plan.folder`), decoding in
    their own process, no bars, and the coordinator's CPU threads."""
    import torch
    config = plan.config
    config = dataclasses.replace(
        config, workers=0, progress=False, threads=config.threads or torch.get_num_threads(),
        out=os.path.abspath(config.out), cache=config.cache and os.path.abspath(config.cache),
        head=config.head and os.path.abspath(config.head))
    model = os.path.abspath(plan.model) if os.path.isfile(plan.model) else plan.model
    return dataclasses.replace(plan, config=config, model=model)


def run_distributed(plan: TagPlan, manifest: Manifest, summary, pending: list[int]) -> None:
    """Spread the pending units over Dask workers; mark each unit done as its task reports."""
    from distributed import as_completed
    client, cluster = connect(plan.config.dask)
    remote = worker_plan(plan)
    try:
        scattered = client.scatter(remote, broadcast=True)
        futures = [client.submit(tag_units_task, scattered, pending[start:start + UNITS_PER_TASK], pure=False,
                                 key=f"ovml-tag-{pending[start]}-{os.getpid()}")
                   for start in range(0, len(pending), UNITS_PER_TASK)]
        bar = progress(total=len(futures), desc=f"tag on {plan.config.dask}", unit="task",
                       enabled=plan.config.progress, leave=True)
        for future in as_completed(futures):
            for unit, counts, sidecars in future.result():
                manifest.mark(unit, counts)
                summary.add(counts, sidecars)
            bar.update(1)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
