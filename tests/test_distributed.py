"""Scale and faults (docs/benchmarks.md): Dask extraction (R6), full or read-only destinations (R7),
fsspec URLs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from ovml.cache.reader import CacheReader
from ovml.cache.schema import CacheError
from ovml.config import ExtractConfig
from ovml.extract.distributed import run_distributed
from ovml.extract.runner import run_extraction
from tests.cache_arrays import all_arrays, assert_same_arrays
from tests.folder_dataset import write_folder_dataset

SETTINGS = dict(dataset="folder", model=None, workers=0, unit_rows=4, batch_size=3, progress=False, threads=2)


def config(root, out, model, **options) -> ExtractConfig:
    return ExtractConfig(**{**SETTINGS, "root": root, "out": out, "model": model, **options})


@pytest.fixture
def reference(folder_dataset, tiny_clip, tmp_path) -> str:
    out = str(tmp_path / "single.zarr")
    run_extraction(config(folder_dataset, out, tiny_clip))
    return out


def test_dask_local_cluster_writes_the_same_bytes(folder_dataset, tiny_clip, tmp_path, reference):
    out = str(tmp_path / "dask.zarr")
    summary = run_distributed(config(folder_dataset, out, tiny_clip, dask="local:2"))
    assert summary.images == 32 and summary.failures == 4
    assert_same_arrays(all_arrays(reference), all_arrays(out))
    assert CacheReader(out).complete
    with open(summary.errors_file) as handle:
        assert len(handle.readlines()) == 4


def test_hdf5_is_refused_with_dask(folder_dataset, tiny_clip, tmp_path):
    with pytest.raises(Exception, match="single writer"):
        run_distributed(config(folder_dataset, str(tmp_path / "x.h5"), tiny_clip, dask="local:2"))


def worker_processes(pid: int) -> list[psutil.Process]:
    children = psutil.Process(pid).children(recursive=True)
    return [c for c in children if "spawn_main" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]


def test_killed_worker_then_rerun_gives_the_same_cache(tmp_path, tiny_clip):
    """R6: SIGKILL one Dask worker mid-run; the job (rerun if needed) ends with identical arrays."""
    root = str(tmp_path / "many")
    write_folder_dataset(root, images=320)
    reference = str(tmp_path / "single.zarr")
    run_extraction(config(root, reference, tiny_clip, batch_size=2))
    out = str(tmp_path / "dask.zarr")
    command = [sys.executable, "-m", "ovml.cli", "extract", "--dataset", "folder", "--root", root, "--out", out,
               "--model", tiny_clip, "--unit-rows", "4", "--batch-size", "2", "--dask", "local:2", "--threads", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and not killed:
        if os.path.exists(os.path.join(out, "splits", "train", "units_done", "c")):
            workers = worker_processes(process.pid)
            if workers:
                workers[0].send_signal(signal.SIGKILL)
                killed = True
        time.sleep(0.01)
    assert killed, "no worker was found to kill"
    process.wait(timeout=300)
    run_distributed(config(root, out, tiny_clip, dask="local:2", batch_size=2))
    assert_same_arrays(all_arrays(reference), all_arrays(out))


def test_fsspec_urls(folder_dataset, tiny_clip, tmp_path, monkeypatch, reference):
    monkeypatch.chdir(tmp_path)
    url = f"file://{tmp_path}/viaurl.zarr"
    run_extraction(config(folder_dataset, url, tiny_clip))
    assert_same_arrays(all_arrays(reference), all_arrays(url))
    memory = "memory://ovml-test/c.zarr"
    run_extraction(config(folder_dataset, memory, tiny_clip))
    reader = CacheReader(memory)
    assert reader.complete and reader.num_rows("train") == 24
    assert os.path.exists(tmp_path / "c.zarr.errors.tsv")


def can_mount_tmpfs(path: str) -> bool:
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1000k", "tmpfs", path], capture_output=True)
    return done.returncode == 0


def test_full_disk_fails_clearly_and_rerun_resumes(tmp_path, tiny_clip):
    """R7: a destination too small stops the run with a clear error; after growing it, the rerun
    resumes (the units already written are kept) and completes."""
    root = str(tmp_path / "many")
    write_folder_dataset(root, images=160)
    reference = str(tmp_path / "single.zarr")
    run_extraction(config(root, reference, tiny_clip))
    mount = str(tmp_path / "small")
    if not can_mount_tmpfs(mount):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = os.path.join(mount, "c.zarr")
        with pytest.raises(CacheError, match="No space left on device.*re-run"):
            run_extraction(config(root, out, tiny_clip))
        written = CacheReader(out, allow_partial=True)
        assert not written.complete and written.units_done("test").any()
        subprocess.run(["mount", "-o", "remount,size=50m", mount], check=True)
        summary = run_extraction(config(root, out, tiny_clip))
        assert summary.resumed and summary.units_skipped > 0
        assert_same_arrays(all_arrays(reference), all_arrays(out))
    finally:
        subprocess.run(["umount", mount], capture_output=True)


def test_read_only_destination_fails_clearly_and_rerun_completes(tmp_path, tiny_clip, reference, folder_dataset):
    """R7: permission denied (an immutable folder; root ignores mode bits) is one clear error."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    out = str(folder / "c.zarr")
    try:
        with pytest.raises(CacheError, match="c.zarr.*(ermission|not permitted)"):
            run_extraction(config(folder_dataset, out, tiny_clip))
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    run_extraction(config(folder_dataset, out, tiny_clip))
    assert_same_arrays(all_arrays(reference), all_arrays(out))
