"""Batching the image tower across concurrent requests: each request thread hands its images to
`TowerBatcher.encode` and waits; one thread runs the tower over every image waiting (up to
`max_batch`, gathered for at most `wait_s` after the first arrives) and hands each request its
rows back. On a GPU, and on a CPU whose kernels are faster per image at larger batches, many
clients then cost fewer forward passes than one each.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

Encode = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class Waiting:
    """One request's images (n, 3, S, S), and its rows of the batch's result once run."""

    images: torch.Tensor
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple | None = None
    error: BaseException | None = None


class TowerBatcher:
    """Runs `encode` (a backbone's) over the images of concurrent callers as one batch."""

    def __init__(self, encode: Encode, max_batch: int = 16, wait_s: float = 0.005):
        self.run, self.max_batch, self.wait_s = encode, max(1, max_batch), wait_s
        self.queue: queue.Queue[Waiting | None] = queue.Queue()
        self.batches = 0          # tower passes run
        self.images = 0           # images they covered
        self.thread = threading.Thread(target=self._serve, name="ovml-tower-batcher", daemon=True)
        self.thread.start()

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tower's (tokens, global) of `images`, run in a batch with other callers' images."""
        waiting = Waiting(images)
        self.queue.put(waiting)
        waiting.done.wait()
        if waiting.error is not None:
            raise waiting.error
        return waiting.result

    def close(self) -> None:
        """Stop the batching thread once the requests already waiting are answered."""
        self.queue.put(None)
        self.thread.join()

    def _gather(self, first: Waiting) -> tuple[list[Waiting], bool]:
        """`first` and whoever joins it within the window, up to max_batch images; and whether
        the batcher was closed meanwhile."""
        group, count = [first], len(first.images)
        deadline = time.perf_counter() + self.wait_s
        while count < self.max_batch:
            try:
                item = self.queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if item is None:
                return group, True
            group.append(item)
            count += len(item.images)
        return group, False

    def _serve(self) -> None:
        closed = False
        while not closed:
            first = self.queue.get()
            if first is None:
                return
            group, closed = self._gather(first)
            try:
                tokens, global_embedding = self.run(torch.cat([w.images for w in group]))  # (B, T, C), (B, D)
                self.batches, self.images = self.batches + 1, self.images + len(tokens)
                start = 0
                for waiting in group:
                    stop = start + len(waiting.images)
                    waiting.result = (tokens[start:stop], global_embedding[start:stop])
                    start = stop
            except BaseException as err:  # every waiting request gets the failure, the thread goes on
                for waiting in group:
                    waiting.error = err
            for waiting in group:
                waiting.done.set()
