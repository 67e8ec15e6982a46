"""One writer per store and per run folder: the two defects found, reproduced with
writers started within a millisecond of each other, and the lock's own contract."""
from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import socket
import time

import pytest
from click.testing import CliRunner

from ovml.cache.check import check_cache
from ovml.cache.reader import CacheReader
from ovml.cache.writer import cache_writer_lock
from ovml.cli import main
from ovml.calibrate.annotations import calibrate_from_annotations
from ovml.config import (AddLabelsConfig, CalibrateConfig, CheckConfig, ExportConfig, ExtractConfig, FinetuneConfig,
                         ReproduceConfig, TagConfig, TrainConfig)
from ovml.export import export_run
from ovml.experiments.reproduce import reproduce
from ovml.extract.add_labels import add_labels
from ovml.extract.runner import run_extraction
from ovml.lock import FOLDER_LOCK, LockError, WriterLock
from ovml.tag.runner import run_tag
from ovml.train.finetune import finetune
from ovml.train.trainer import train_head
from tests.cache_arrays import all_arrays, assert_same_arrays
from tests.folder_dataset import write_folder_dataset
from tests.processes import Launcher

REFUSED = "being written by pid"


@pytest.fixture
def launcher(tmp_path) -> Launcher:
    folder = tmp_path / "logs"
    folder.mkdir()
    return Launcher(str(folder))


def race(launcher: Launcher, args: list[str]) -> list[tuple[int, str]]:
    """The same command started twice at once; (exit status, output) of each."""
    commands = [launcher.start(args), launcher.start(args)]
    return [(command.wait(), command.output()) for command in commands]


def test_two_extracts_on_one_out_one_is_refused(tmp_path, tiny_clip, launcher):
    """Defect 1: two `ovml extract` on the same --out within a second broke the cache (or both ran
    every image). One writes it; the other stops at once naming the holder; the cache is whole."""
    root = str(tmp_path / "data")
    write_folder_dataset(root, images=60)
    base = ["extract", "--dataset", "folder", "--root", root, "--model", tiny_clip, "--workers", "0",
            "--unit-rows", "4", "--batch-size", "4", "--threads", "1"]
    reference = str(tmp_path / "reference.zarr")
    assert launcher.run(base + ["--out", reference])[0] == 0
    out = str(tmp_path / "c.zarr")
    results = race(launcher, base + ["--out", out])
    statuses = sorted(status for status, _ in results)
    assert statuses == [0, 1], results
    refusal = next(output for status, output in results if status == 1)
    assert REFUSED in refusal and out in refusal, refusal
    assert check_cache(CheckConfig(out)) == []
    assert_same_arrays(all_arrays(reference), all_arrays(out))
    assert not os.path.exists(out + ".lock")


def test_two_train_heads_on_one_out_one_is_refused(tmp_path, small_world, launcher):
    """Defect 2: two `ovml train-head` on the same --out both exited 0 with their epochs
    interleaved in log.jsonl. One trains; the other is refused; the log holds one run."""
    out = str(tmp_path / "run")
    args = ["train-head", "--cache", small_world, "--out", out, "--epochs", "3", "--lr", "0.01",
            "--logit-scale", "20"]
    results = race(launcher, args)
    assert sorted(status for status, _ in results) == [0, 1], results
    refusal = next(output for status, output in results if status == 1)
    assert REFUSED in refusal and out in refusal, refusal
    with open(os.path.join(out, "log.jsonl")) as handle:
        epochs = [json.loads(line)["epoch"] for line in handle]
    assert epochs == [1, 2, 3]
    assert sorted(os.listdir(out)) == ["calibration.json", "checkpoint.pt", "config.json", "head.pt", "log.jsonl"]


# --- the lock's contract --------------------------------------------------------------------

def hold_then_sleep(lock_file: str, ready, fork_a_child: bool) -> None:
    """A holder process (optionally with a forked child that outlives it) that waits to be killed."""
    WriterLock("target", lock_file).acquire()
    if fork_a_child and os.fork() == 0:
        time.sleep(60)
        os._exit(0)
    ready.set()
    time.sleep(60)


@pytest.mark.parametrize("fork_a_child", [False, True])
def test_a_killed_holder_releases_the_lock(tmp_path, fork_a_child):
    """kill -9 of the holder frees the lock at once, even while a process it forked (a decode
    worker) is still alive; until then a second writer is told the holder's pid and host."""
    lock_file = str(tmp_path / "c.zarr.lock")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=hold_then_sleep, args=(lock_file, ready, fork_a_child))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(LockError) as refused:
        WriterLock(str(tmp_path / "c.zarr"), lock_file).acquire()
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'c.zarr'}: being written by pid {holder.pid} "
                              f"on host {socket.gethostname()}")
    assert "\n" not in message and "wait for it to finish" in message
    children = [int(pid) for pid in open(f"/proc/{holder.pid}/task/{holder.pid}/children").read().split()]
    holder.kill()
    holder.join()
    try:
        with WriterLock("target", lock_file):
            assert json.load(open(lock_file))["pid"] == os.getpid()
        assert not os.path.exists(lock_file)
    finally:
        for child in children:
            os.kill(child, signal.SIGKILL)


def test_refused_writers_leave_nothing_behind(tmp_path, tiny_run):
    """With the lock held, every writer stops before writing anything; readers go on reading."""
    cache = str(tmp_path / "c.zarr")
    shutil.copytree(tiny_run["cache"], cache)
    root = os.path.dirname(tiny_run["images"])
    names = tmp_path / "new.txt"
    names.write_text("purple_cone\n")
    annotations = tmp_path / "annotations.csv"
    annotations.write_text("id,labels\nimg/000.png,red_square\n")
    before = all_arrays(cache)
    with WriterLock(cache, cache + ".lock"):
        listing = sorted(os.listdir(tmp_path))
        for write in (
                lambda: run_extraction(ExtractConfig(dataset="folder", root=root, out=cache, model="RN50")),
                lambda: add_labels(AddLabelsConfig(cache=cache, names_file=str(names)))):
            with pytest.raises(LockError, match="being written by pid"):
                write()
        assert sorted(os.listdir(tmp_path)) == listing
        assert check_cache(CheckConfig(cache)) == [] and CacheReader(cache).complete      # readers need no lock
    assert_same_arrays(before, all_arrays(cache))
    for folder, write in (
            ("run", lambda out: train_head(TrainConfig(cache=cache, out=out, epochs=1))),
            ("tuned.pt.finetune", lambda out: finetune(FinetuneConfig(dataset="folder", root=root,
                                                                       out=out[:-len(".finetune")], model="RN50"))),
            ("table", lambda out: reproduce(ReproduceConfig(table=1, cache=cache, out=out))),
            ("tagged", lambda out: run_tag(TagConfig(out=out, cache=cache, labels="red_square"))),
            ("calibrated-run", lambda out: calibrate_from_annotations(CalibrateConfig(
                annotations=str(annotations), head=out, cache=cache))),
            ("tagger", lambda out: export_run(ExportConfig(head=tiny_run["run"], out=out)))):
        out = str(tmp_path / folder)
        with WriterLock(out, os.path.join(out, FOLDER_LOCK)):
            with pytest.raises(LockError, match="being written by pid"):
                write(out)
            assert os.listdir(out) == [FOLDER_LOCK]
        assert not os.path.exists(out)


def test_a_file_system_without_locks_is_refused_unless_no_lock(tmp_path, small_world, monkeypatch):
    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = str(tmp_path / "run")
    args = ["train-head", "--cache", small_world, "--out", out, "--epochs", "1", "--lr", "0.01", "--logit-scale", "20"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert "this file system cannot lock" in refused.output and "--no-lock" in refused.output
    assert not os.path.exists(out)
    done = CliRunner().invoke(main, args + ["--no-lock"])
    assert done.exit_code == 0, done.output
    with pytest.raises(LockError, match="a store at a URL cannot be locked"):
        with cache_writer_lock("s3://bucket/c.zarr"):
            pass
    with cache_writer_lock("s3://bucket/c.zarr", enabled=False):
        pass


def test_a_new_cache_appears_whole_or_not_at_all(tmp_path, tiny_clip, folder_dataset, monkeypatch):
    """Creation is built under a hidden name and renamed into place: interrupted, it leaves no
    store at --out (only the hidden leftover, which the rerun replaces)."""
    from ovml.cache import writer

    out = str(tmp_path / "c.zarr")
    config = ExtractConfig(dataset="folder", root=folder_dataset, out=out, model=tiny_clip, workers=0,
                           progress=False, threads=1)
    real = writer.write_labels

    def interrupted(store, labels):
        real(store, labels)
        assert os.path.basename(store.path) == ".building.c.zarr" and not os.path.exists(out)
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_labels", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_extraction(config)
    assert sorted(os.listdir(tmp_path)) == [".building.c.zarr", "shapes"]
    monkeypatch.setattr(writer, "write_labels", real)
    run_extraction(config)
    assert sorted(os.listdir(tmp_path)) == ["c.zarr", "c.zarr.errors.tsv", "shapes"]
    assert check_cache(CheckConfig(out)) == []
