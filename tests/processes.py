"""`ovml` commands in their own processes, started in milliseconds: each is forked from a server
process that imported ovml, torch and the CLI once (multiprocessing's forkserver), so tests can
start two writers within a millisecond of each other and kill -9 a writer at any moment.

The server never runs a torch operation, so its children start with no thread pool to inherit.
Each child writes its stdout and stderr to a log file and runs the command through the CLI's own
`main`, so its exit status is the command's.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import dataclass

PRELOAD = ["ovml.cli", "ovml.extract.runner", "ovml.extract.add_labels", "ovml.train.trainer",
           "ovml.train.finetune", "ovml.experiments.reproduce", "ovml.cache.check", "click"]


def run_cli(args: list[str], log: str, environment: dict) -> None:
    """The child: output to `log`, one torch thread (so CPU results are the same in every run), then the command."""
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.update(environment)
    import torch
    torch.set_num_threads(1)
    from ovml.cli import main
    main(args, prog_name="ovml")


@dataclass
class Command:
    """A started command: its process and its log."""

    process: multiprocessing.Process
    log: str
    started: float

    def wait(self, timeout: float = 300.0) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            raise AssertionError(f"command did not finish in {timeout} s: {self.output()}")
        return self.process.exitcode

    def kill(self) -> None:
        """kill -9."""
        self.process.kill()
        self.process.join()

    def alive(self) -> bool:
        return self.process.is_alive()

    def output(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as handle:
            return handle.read()


class Launcher:
    """Starts `ovml ARGS` in forked processes (see the module's docstring)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.count = 0
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.environment = {"OVML_PROGRESS": "off", "OMP_NUM_THREADS": "1"}

    def start(self, args: list[str]) -> Command:
        self.count += 1
        log = os.path.join(self.folder, f"command-{self.count}.log")
        process = self.context.Process(target=run_cli, args=(list(args), log, self.environment), daemon=True)
        process.start()
        return Command(process, log, time.perf_counter())

    def run(self, args: list[str], timeout: float = 300.0) -> tuple[int, str]:
        """Run to the end: (exit status, output)."""
        command = self.start(args)
        status = command.wait(timeout)
        return status, command.output()
