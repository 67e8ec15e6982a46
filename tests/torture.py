"""The fault-injection harness, in the spirit of storage engines' crash tests: every
writer is killed with SIGKILL at points spread over its run by a seeded clock, a second writer is
started at each of those moments, and the same command is rerun; the result must pass its check
and equal an uninterrupted run's, bit for bit, with no file left over. A full disk (a small
tmpfs) at the output's first and last writes must give a one-line error, and the rerun after
space is freed must complete.

Commands run through `tests.processes.Launcher` (forked from a server that imported ovml once),
so a kill can land anywhere from argument parsing to the last rename.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ovml.cache.store import open_store
from tests.cache_arrays import all_arrays
from tests.processes import Launcher

REFUSED = "being written by pid"
PAGE = 4096


@dataclass
class Writer:
    """One writing command, as the harness drives it."""

    name: str
    command: Callable[[str], list[str]]        # case folder -> the command's arguments
    lock_file: Callable[[str], str]            # case folder -> its lock file
    compare: Callable[[str, str], int]         # (case, reference case) -> bytes that differ
    check: Callable[[str], list[str]]          # case -> problems of its result
    prepare: Callable[[str], None] = lambda case: None   # inputs a fresh case needs inside it
    done_refusal: str | None = None            # a rerun's refusal that means "already done"


@dataclass
class Tally:
    """What a torture run counts, for the README."""

    points: int = 0            # kill -9 points tried
    survived: int = 0          # reruns that completed with a checked result equal to the reference
    finished_first: int = 0    # of those, points at which the command had already ended
    refused: int = 0           # second writers refused (writers started while one held the lock)
    full_disk: int = 0         # full-disk runs stopped with a one-line error, then completed after freeing space
    bytes_lost: int = 0        # bytes of results that differ from the reference
    seconds: float = 0.0
    notes: list = field(default_factory=list)

    def add(self, other: "Tally") -> None:
        for name in ("points", "survived", "finished_first", "refused", "full_disk", "bytes_lost", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# --- comparing results ---------------------------------------------------------------------

def differing_bytes(left: np.ndarray, right: np.ndarray) -> int:
    if left.shape != right.shape or left.dtype != right.dtype:
        return max(left.nbytes, right.nbytes, 1)
    if left.dtype.kind in "OUST":
        return int(sum(len(str(a)) for a, b in zip(left.ravel(), right.ravel()) if a != b))
    left, right = np.ascontiguousarray(left).reshape(-1), np.ascontiguousarray(right).reshape(-1)
    return int((left.view(np.uint8) != right.view(np.uint8)).sum())


def root_attributes(path: str) -> dict:
    store = open_store(path, "r")
    try:
        return {key: store.get_attr(key) for key in ("ovml_cache", "complete", "backbone", "dataset", "prompts",
                                                       "plan", "adding_labels")}
    finally:
        store.close()


def compare_caches(case_cache: str, reference_cache: str, case: str, reference: str) -> int:
    left, right = all_arrays(case_cache), all_arrays(reference_cache)
    lost = sum(differing_bytes(left[key], right[key]) if key in left else right[key].nbytes for key in right)
    lost += sum(left[key].nbytes for key in left if key not in right)
    return lost + compare_json(root_attributes(case_cache), root_attributes(reference_cache), case, reference)


def compare_json(left, right, case: str, reference: str, volatile: tuple[str, ...] = ()) -> int:
    """Characters that differ between two JSON values, with the case's folder read as the
    reference's and `volatile` keys (timings) left out at any depth."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in volatile}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    left_text = json.dumps(strip(left), sort_keys=True).replace(case, reference)
    right_text = json.dumps(strip(right), sort_keys=True)
    return 0 if left_text == right_text else max(len(left_text), len(right_text))


def compare_tensor_files(left: str, right: str) -> int:
    a = torch.load(left, map_location="cpu", weights_only=True)
    b = torch.load(right, map_location="cpu", weights_only=True)
    lost = 0
    for key in set(a) | set(b):
        if key not in a or key not in b:
            lost += 1
            continue
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):
            lost += differing_bytes(x.numpy(), y.numpy()) if isinstance(y, torch.Tensor) else x.numel()
        elif x != y:
            lost += 1
    return lost


def read_json_lines(path: str) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def files_under(folder: str) -> set[str]:
    return {os.path.relpath(os.path.join(top, name), folder) for top, _, names in os.walk(folder) for name in names}


# --- the runs ------------------------------------------------------------------------------

def one_line_error(output: str) -> bool:
    """The output ends in one `Error: ...` line (after the command's own progress lines, if any)."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    return errors == lines[-1:] and "Traceback" not in output


def second_writer(launcher: Launcher, writer: Writer, case: str, first) -> int:
    """Start the same command while the first holds the lock: it must be refused at once. 1 when
    it was tried and refused, 0 when the first did not hold the lock yet (or any more)."""
    try:
        holder = read_json(writer.lock_file(case))
    except (OSError, ValueError):
        return 0
    if holder.get("pid") != first.process.pid:
        return 0
    status, output = launcher.run(writer.command(case), timeout=120)
    if status == 1 and REFUSED in output:
        assert one_line_error(output), output
        return 1
    assert not first.alive(), f"a second {writer.name} was not refused while the first held the lock: {output}"
    return 0


def rerun_and_compare(launcher: Launcher, writer: Writer, case: str, reference: str, tally: Tally,
                      expected_files: set[str]) -> None:
    status, output = launcher.run(writer.command(case))
    done = writer.done_refusal is not None and status == 1 and writer.done_refusal in output
    assert status == 0 or done, f"{writer.name} rerun in {case} failed: {output}"
    problems = writer.check(case)
    assert problems == [], (case, problems)
    lost = writer.compare(case, reference)
    tally.bytes_lost += lost
    assert lost == 0, f"{writer.name} in {case}: {lost} bytes differ from the uninterrupted run"
    assert files_under(case) == expected_files, (case, files_under(case) ^ expected_files)
    tally.survived += 1


def uninterrupted(launcher: Launcher, writer: Writer, folder: str, name: str) -> tuple[str, float]:
    """A whole run in `folder/name`, checked; (its case folder, seconds from start to exit)."""
    case = os.path.join(folder, name)
    os.makedirs(case)
    writer.prepare(case)
    command = launcher.start(writer.command(case))
    status = command.wait()
    duration = time.perf_counter() - command.started
    assert status == 0, command.output()
    assert writer.check(case) == []
    return case, duration


def kill_points(launcher: Launcher, writer: Writer, folder: str, points: int, seed: int) -> Tally:
    """`points` kills of `writer` spread over its run by a seeded clock; see the module."""
    tally, began = Tally(), time.perf_counter()
    reference = uninterrupted(launcher, writer, folder, "reference")
    again = uninterrupted(launcher, writer, folder, "again")
    assert writer.compare(again[0], reference[0]) == 0, f"two uninterrupted {writer.name} runs differ"
    reference, duration = reference[0], min(reference[1], again[1])     # the quicker run sets the clock
    tally.notes.append(f"an uninterrupted run: {duration:.1f} s")
    expected = files_under(reference)
    # a kill comes just after the second writer's try, so the moments stop short of the end
    moments = np.sort(np.random.default_rng(seed).uniform(0.0, 0.85, points)) * duration
    for index, moment in enumerate(moments):
        case = os.path.join(folder, f"point-{index:02d}")
        os.makedirs(case)
        writer.prepare(case)
        first = launcher.start(writer.command(case))
        time.sleep(max(0.0, first.started + moment - time.perf_counter()))
        tally.refused += second_writer(launcher, writer, case, first)
        if first.alive():
            first.kill()
        else:
            tally.finished_first += 1
        tally.points += 1
        rerun_and_compare(launcher, writer, case, reference, tally, expected)
        shutil.rmtree(case)
    tally.seconds = time.perf_counter() - began
    return tally


# --- a full disk ---------------------------------------------------------------------------

def mount_tmpfs(folder: str, size: int) -> bool:
    os.makedirs(folder, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder], capture_output=True)
    return done.returncode == 0


def resize_tmpfs(folder: str, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", folder], check=True, capture_output=True)


def unmount(folder: str) -> None:
    subprocess.run(["umount", folder], capture_output=True)


def pages_used(folder: str) -> int:
    """Bytes tmpfs charges for the files under `folder` (whole pages per file)."""
    return sum(-(-os.path.getsize(os.path.join(top, name)) // PAGE) * PAGE
               for top, _, names in os.walk(folder) for name in names)


def full_disk(launcher: Launcher, writer: Writer, folder: str) -> Tally:
    """The output on a tmpfs that fills at its first write, then at its last writes: a one-line
    error each time, then after the tmpfs is grown the rerun completes and equals the reference."""
    tally, began = Tally(), time.perf_counter()
    reference = os.path.join(folder, "reference")
    os.makedirs(reference)
    writer.prepare(reference)
    assert launcher.run(writer.command(reference))[0] == 0
    prepared = os.path.join(folder, "prepared")
    os.makedirs(prepared)
    writer.prepare(prepared)
    inputs, whole = pages_used(prepared), pages_used(reference)
    expected = files_under(reference)
    for where, size in (("first", inputs + PAGE), ("last", whole - 2 * PAGE)):
        case = os.path.join(folder, f"full-at-{where}")
        if not mount_tmpfs(case, max(size, PAGE)):
            raise PermissionError("cannot mount a tmpfs here (needs root)")
        try:
            writer.prepare(case)
            status, output = launcher.run(writer.command(case))
            assert status == 1 and one_line_error(output) and "No space left on device" in output, (where, output)
            resize_tmpfs(case, 4 * whole + (1 << 20))
            rerun_and_compare(launcher, writer, case, reference, Tally(), expected)
            tally.full_disk += 1
        finally:
            unmount(case)
    tally.seconds = time.perf_counter() - began
    return tally
