"""Stage 2: train a head straight from the cache, on seen labels only.

Adam + one-cycle, ranking loss (+ lambda x supervised contrastive), per-epoch validation mAP on
seen labels of units held out from training, the best epoch kept as `head.pt`, and a full
checkpoint after every epoch so `--resume` ends exactly where an uninterrupted run ends.

A `Trainer` is built (the head, the losses' modules, the row streams: no forward pass), then
prepared on the data (`prepare`: calibration on the first batch, the range test behind `--lr
auto`, the optimiser and its schedule), then run epoch by epoch (`run`); `train_head` does the
three in that order around the run folder's lifecycle (run_folder.py).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..cache.reader import CacheReader
from ..config import TrainConfig
from ..errors import UsageError
from ..files import save_tensors
from ..heads.base import cosine_scores
from ..heads.losses import (LogitScale, ProjectionHead, hinge_ranking_loss, ranking_loss, sample_label_columns,
                            supervised_contrastive_loss)
from ..heads.registry import build_head, default_contrastive_weight
from ..heads.settings import head_options, head_settings
from ..metrics.stream import streaming_mean_average_precision
from ..precision import mixed_precision, scaled_step
from ..progress import notice, progress
from ..cache.batches import BatchStream, batch_tensors, cache_pool, carve_validation, trainable_rows
from .lr_range import RangeTest, run_range_test, write_range_test
from .run_folder import HEAD_FILE, RunFolder, check_resumable, schedule_state


LOGIT_SPREAD = 2.0  # std of the untrained head's logits over an image's labels, under `--logit-scale auto`
LOSS_SHOWN_EVERY = 25  # training steps between two readings of the loss for the progress bar (each one
                       # waits for the device)


@dataclass
class TrainResult:
    """What a training run ended with."""

    out: str
    epochs: int
    best_epoch: int
    best_val_map: float | None
    last_loss: float
    seconds: float


def initial_logit_scale(cosines: torch.Tensor, spread: float = LOGIT_SPREAD) -> float:
    """The scale under which the untrained head's logits spread over each image's labels with
    standard deviation `spread` (mean over images), clamped to LogitScale's range.

    Cosine scores of CLIP and of a head copied from its pool sit in a narrow band whose width
    depends on the backbone and the vocabulary; a fixed factor (CLIP's 100) leaves the ranking
    loss saturated on some data and flat on other, so the factor is measured on the data.
    """
    width = float(cosines.float().std(dim=1).mean())
    scale = spread / width if width > 0 else LogitScale.MAX
    return min(max(scale, LogitScale.MIN), LogitScale.MAX)


def split_seen_labels(seen: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training columns, pseudo-unseen columns): a seeded `fraction` of the seen labels is held
    out of training so that `eval --alpha auto` can choose alpha on labels the head never saw."""
    columns = np.flatnonzero(seen)
    count = int(round(len(columns) * fraction))
    held = np.sort(np.random.default_rng([seed, 11]).permutation(columns)[:count])
    return np.setdiff1d(columns, held), held


class Trainer:
    """One training run over an open cache: built cheaply, then `prepare`d on the data, then `run`."""

    def __init__(self, config: TrainConfig, reader: CacheReader):
        self.config, self.reader = config, reader
        self.device = torch.device(config.device)
        self.seen_columns, self.pseudo_unseen = split_seen_labels(reader.seen, config.pseudo_unseen, config.seed)
        if len(self.seen_columns) == 0:
            raise UsageError(f"{reader.path}: no seen labels to train on")
        self.text = torch.from_numpy(reader.text[self.seen_columns]).to(self.device)   # (S, D)
        self.settings = head_settings(config, reader.kind)
        self.head_options = head_options(config, reader.kind, self.settings)
        torch.manual_seed(config.seed)
        self.head = build_head(config.head, cache_pool(reader, self.device), reader.num_heads,
                               **self.head_options).to(self.device)
        self.frozen = self.freeze(self.settings["frozen"])
        self.contrastive_weight = (default_contrastive_weight(config.head) if config.contrastive_weight is None
                                   else config.contrastive_weight)
        self.projector = ProjectionHead(reader.embed_dim).to(self.device) if self.contrastive_weight > 0 else None
        mask = trainable_rows(reader, config.split, self.seen_columns, config.progress)
        self.train_rows, self.val_rows = carve_validation(mask, reader.unit_rows(config.split),
                                                          config.val_fraction, config.seed, config.split)
        if self.train_rows.count == 0:
            raise UsageError(f"{reader.path}: split {config.split} has no usable row with a seen positive")
        self.stream = BatchStream(reader, self.train_rows, config.batch_size, config.shuffle_buffer,
                                  config.prefetch, config.in_memory)
        self.precision = mixed_precision(config.amp, self.device)     # autocast on CUDA, float32 elsewhere
        self.scaler = self.precision.grad_scaler()                     # loss scaling for fp16 only
        notice(self.precision.note, config.progress)
        self.logit_scale: LogitScale | None = None        # set by prepare(), like what follows
        self.calibration: dict = {}
        self.range_test: RangeTest | None = None
        self.lr: float | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: torch.optim.lr_scheduler.OneCycleLR | None = None

    # --- set-up measured on the data ------------------------------------------------------
    def prepare(self, chosen_lr: float | None = None) -> None:
        """Calibrate on the first batch, choose the learning rate (`chosen_lr` replays a resumed
        run's `--lr auto` choice instead of a new range test), build Adam and the one-cycle schedule."""
        self.calibration = self.calibrate()
        self.lr = chosen_lr if chosen_lr is not None else self.learning_rate()
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=self.lr, total_steps=max(1, self.config.epochs * self.stream.steps()))

    def freeze(self, names: tuple[str, ...]) -> list[str]:
        """Keep the head's modules `names` as built (CLIP's weights); returns those it has (a
        default such as v_proj means nothing to a head without one)."""
        frozen = [name for name in names if isinstance(getattr(self.head, name, None), torch.nn.Module)]
        for name in frozen:
            getattr(self.head, name).requires_grad_(False)
        return frozen

    def parameters(self) -> list[torch.nn.Parameter]:
        modules = [self.head, self.logit_scale] + ([self.projector] if self.projector else [])
        return [p for module in modules for p in module.parameters() if p.requires_grad]

    @torch.no_grad()
    def calibrate(self) -> dict:
        """On the first training batch (a fixed one): the dense query's length, then the logit scale."""
        batch = next(iter(self.stream.epoch(seed=0, shuffle=False)))
        tokens, global_embedding = batch_tensors(batch, self.device)
        measured = {}
        if self.settings["q_init"] == "dense" and hasattr(self.head, "calibrate_query"):
            measured["query_scale"] = self.head.calibrate_query(tokens, self.text)
        if self.config.logit_scale == "auto":
            cosines = cosine_scores(self.head(tokens, global_embedding, self.text), self.text)
            initial, learnable = initial_logit_scale(cosines), True
        else:
            initial, learnable = float(self.config.logit_scale), False
        self.logit_scale = LogitScale(initial, learnable).to(self.device)
        measured["logit_scale"] = {"initial": initial, "learnable": learnable}
        return measured

    def learning_rate(self) -> float:
        """`--lr X`, or with `--lr auto` the range test's choice (its curve written to the run)."""
        if self.config.lr != "auto":
            return float(self.config.lr)
        saved = copy.deepcopy(self.state())
        optimizer = torch.optim.Adam(self.parameters(), lr=1.0, weight_decay=self.config.weight_decay)
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + 999)
        batches = itertools.chain.from_iterable(self.stream.epoch(seed=self.config.seed * 1000 + 999 + k)
                                                for k in itertools.count())

        def step(lr: float) -> float:
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, _ = self.loss(next(batches), generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        self.head.train()
        self.range_test = run_range_test(step, self.config.lr_range_steps, self.config.progress)
        self.load_state(saved)
        return self.range_test.chosen

    def state(self) -> dict:
        return {"head": self.head.state_dict(), "logit_scale": self.logit_scale.state_dict(),
                "projector": self.projector.state_dict() if self.projector else {}}

    def load_state(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.logit_scale.load_state_dict(state["logit_scale"])
        if self.projector:
            self.projector.load_state_dict(state["projector"])

    # --- one step -----------------------------------------------------------------------
    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        tokens, global_embedding = batch_tensors(batch, self.device)                   # (B, T, C), (B, D)
        labels = torch.from_numpy(batch["labels"][:, self.seen_columns]).to(self.device)  # (B, S)
        text = self.text
        if self.config.negatives is not None:
            columns = sample_label_columns(labels, self.config.negatives, generator).to(self.device)
            labels, text = labels[:, columns], text[columns]
        own_loss = getattr(self.head, "training_loss", None)  # a head's own objective (heads/base.py)
        if own_loss is not None:
            features, total, parts = own_loss(tokens, global_embedding, text, labels, self.logit_scale.factor(),
                                              need_features=self.projector is not None)
        else:
            features = self.head(tokens, global_embedding, text)                        # (B, L', D)
            logits = self.logit_scale(cosine_scores(features, text))
            total = (hinge_ranking_loss if self.config.rank_loss == "hinge" else ranking_loss)(logits, labels)
            parts = {"rank": total.detach()}
        if self.projector is not None:
            contrastive = supervised_contrastive_loss(features, labels, self.projector, self.config.tau)
            total = total + self.contrastive_weight * contrastive
            parts["contrastive"] = contrastive.detach()
        return total, parts

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training rows; the epoch's mean loss and parts, read from the device
        once at the end (the steps' losses are kept as tensors, so no step waits for the device
        but the progress bar's reading every LOSS_SHOWN_EVERY steps)."""
        self.head.train()
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        losses: dict[str, list[torch.Tensor]] = {"loss": []}
        steps, images, started = 0, 0, time.perf_counter()
        total_steps = self.stream.steps()
        bar = progress(total=total_steps, desc=f"epoch {epoch}", unit="batch", enabled=self.config.progress)
        for batch in self.stream.epoch(seed=self.config.seed * 1000 + epoch):
            with self.precision.autocast():
                loss, parts = self.loss(batch, generator)
            scaled_step(loss, self.optimizer, self.scaler, self.schedule)
            steps += 1
            images += len(batch["labels"])
            for key, value in {"loss": loss.detach(), **parts}.items():
                losses.setdefault(key, []).append(value)
            if self.config.progress and (steps % LOSS_SHOWN_EVERY == 0 or steps == total_steps):
                rate = images / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", img_s=f"{rate:.0f}")
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - started
        # summed as Python floats in step order, as when each step was read: the same numbers
        means = {key: sum(torch.stack(values).tolist()) / max(steps, 1) if values else 0.0
                 for key, values in losses.items()}
        return means | {
            "steps": steps, "images": images, "seconds": round(seconds, 3),
            "images_per_second": round(images / seconds, 1) if seconds else None,
            "lr": self.schedule.get_last_lr()[0], "logit_scale": round(self.logit_scale.value, 4)}

    @torch.no_grad()
    def validate(self) -> float | None:
        """Seen-label mAP (LESA protocol, percent) on the held-out units."""
        if self.val_rows.count == 0:
            return None
        self.head.eval()
        stream = BatchStream(self.reader, self.val_rows, 256, prefetch=self.config.prefetch)

        def scored_batches():
            for batch in stream.epoch(seed=0, shuffle=False):
                tokens, global_embedding = batch_tensors(batch, self.device)
                with self.precision.autocast():
                    features = self.head(tokens, global_embedding, self.text)
                yield cosine_scores(features.float(), self.text).cpu().numpy(), batch["labels"][:, self.seen_columns]
        return 100.0 * streaming_mean_average_precision(scored_batches(), len(self.seen_columns), self.val_rows.count)

    # --- checkpoints --------------------------------------------------------------------
    def checkpoint_state(self, epoch: int, best: tuple[int, float | None]) -> dict:
        return {"epoch": epoch, "best_epoch": best[0], "best_val_map": best[1], **self.state(),
                "optimizer": self.optimizer.state_dict(), "schedule": schedule_state(self.schedule),
                "scaler": self.scaler.state_dict()}

    def restore(self, state: dict) -> tuple[int, tuple[int, float | None]]:
        self.load_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state.get("scaler", {}))
        return int(state["epoch"]), (int(state["best_epoch"]), state["best_val_map"])

    def describe(self) -> dict:
        """config.json: every setting, the cache and its fingerprint, the head, the held-out units."""
        return {"train": dataclasses.asdict(self.config),
                "cache": {"path": os.path.abspath(self.reader.path), "fingerprint": self.reader.fingerprint(),
                          "backbone": self.reader.backbone, "prompts": self.reader.prompts},
                "head": {"name": self.config.head, "options": self.head_options,
                         "num_heads": self.reader.num_heads, "embed_dim": self.reader.embed_dim,
                         "channels": self.reader.channels, "hw": self.reader.hw},
                "seed": self.config.seed, "label_columns": "seen",
                "lr": {"max": self.lr, "range_test": self.range_test.summary() if self.range_test else None},
                "settings": {key: self.settings[key] for key in ("q_init", "attention_scales", "attention_top_k",
                                                                  "attention_heads")} | {"frozen": self.frozen},
                "calibration": self.calibration | {"logit_scale": self.calibration["logit_scale"] |
                                                   {"final": float(f"{self.logit_scale.value:.6g}")}},
                "pseudo_unseen_columns": self.pseudo_unseen.tolist(),
                "validation": {"split": self.config.split, "units": sorted(self.val_rows.rows_by_unit),
                               "rows": self.val_rows.count},
                "train_rows": self.train_rows.count}

    # --- the epochs ---------------------------------------------------------------------
    def run(self, folder: RunFolder, first: int = 1, best: tuple[int, float | None] = (0, None),
            on_epoch_end: Callable[[int], None] | None = None) -> tuple[tuple[int, float | None], float]:
        """Epochs `first`..config.epochs: train, validate, keep the best epoch's head as head.pt,
        log and checkpoint each; `best` is (epoch, val mAP) so far. Returns the best and the last loss."""
        last_loss = float("nan")
        for epoch in range(first, self.config.epochs + 1):
            entry = self.train_epoch(epoch)
            val_map = self.validate()
            entry.update(epoch=epoch, val_seen_mAP=val_map)
            last_loss = entry["loss"]
            if val_map is None or best[1] is None or val_map > best[1]:
                best = (epoch, val_map)
                save_tensors(folder.file(HEAD_FILE), self.head.state_dict())
            folder.append_log(entry)
            folder.save_checkpoint(self.checkpoint_state(epoch, best))
            if on_epoch_end is not None:
                on_epoch_end(epoch)
        return best, last_loss


# what a resumed run may change: I/O options, and the device (a checkpoint loads onto any: run_folder.py)
RESUMABLE_CHANGES = {"epochs", "device", "progress", "in_memory", "prefetch", "allow_partial", "cache", "out", "lock"}


def train_head(config: TrainConfig, resume: bool = False, overwrite: bool = False,
               on_epoch_end: Callable[[int], None] | None = None) -> TrainResult:
    """Train, validate and checkpoint every epoch, holding the run folder's writer lock throughout;
    returns the run's summary."""
    started = time.perf_counter()
    run = RunFolder(config.out)
    with run.lock(config.lock):
        run.claim(resume, overwrite)
        best, last_loss = train_in(run, config, resume, on_epoch_end)
    return TrainResult(config.out, config.epochs, best[0], best[1], last_loss, time.perf_counter() - started)


def train_in(run: RunFolder, config: TrainConfig, resume: bool,
             on_epoch_end: Callable[[int], None] | None) -> tuple[tuple[int, float | None], float]:
    """The claimed run: fresh, or resumed from its checkpoint; returns the best (epoch, val mAP)
    and the last loss."""
    with CacheReader(config.cache, allow_partial=config.allow_partial) as reader:
        previous = run.read_config() if resume and run.has_checkpoint() else None   # None: a fresh run
        if previous is not None:
            check_resumable(run, config, previous["train"], RESUMABLE_CHANGES, f"cache ({previous['cache']['path']})",
                            reader.fingerprint(), previous["cache"]["fingerprint"])
        trainer = Trainer(config, reader)
        trainer.prepare(previous.get("lr", {}).get("max") if previous is not None and config.lr == "auto" else None)
        first, best = 1, (0, None)
        if previous is not None:
            done, best = trainer.restore(run.load_checkpoint())
            run.truncate_log(done)
            first = done + 1
        else:
            run.start()
            if trainer.range_test is not None:
                write_range_test(trainer.range_test, config.out)
        run.write_config(trainer.describe())
        best, last_loss = trainer.run(run, first, best, on_epoch_end)
        run.write_config(trainer.describe() | {"best_epoch": best[0], "best_val_seen_mAP": best[1]})
    return best, last_loss
