"""Stage 2: train a head straight from the cache, on seen labels only.

Adam + one-cycle, ranking loss (+ lambda x supervised contrastive), per-epoch validation mAP on
seen labels of units held out from training, the best epoch kept as `head.pt`, and a full
checkpoint after every epoch so `--resume` ends exactly where an uninterrupted run ends.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..cache.reader import CacheReader
from ..config import TrainConfig, from_dict
from ..errors import UsageError
from ..heads.attention_vit import DEFAULT_OUTPUT as DEFAULT_VIT_OUTPUT
from ..heads.base import cosine_scores
from ..heads.losses import (ProjectionHead, hinge_ranking_loss, ranking_loss, sample_label_columns,
                            supervised_contrastive_loss)
from ..heads.registry import build_head
from ..metrics import mean_average_precision
from ..progress import progress
from .batches import BatchStream, carve_validation, trainable_rows
from .runs import CHECKPOINT_FILE, HEAD_FILE, LOG_FILE, RunFolder, load_tensors, save_tensors
from .scoring import batch_tensors, cache_pool


@dataclass
class TrainResult:
    """What a training run ended with."""

    out: str
    epochs: int
    best_epoch: int
    best_val_map: float | None
    last_loss: float
    seconds: float


def head_options(config: TrainConfig, kind: str = "resnet") -> dict:
    """The options a head is built with (recorded in config.json to rebuild it later), for a
    cache of backbone `kind`; --vit-output on a ResNet cache is refused."""
    if kind != "vit" and config.vit_output is not None:
        raise UsageError(f"{config.cache}: --vit-output applies to Vision Transformer caches; this one "
                         "holds a ResNet's features")
    if config.head != "ovml":
        return {}
    if kind == "vit":
        return {"q_init": config.q_init, "vit_output": config.vit_output or DEFAULT_VIT_OUTPUT}
    return {"q_init": config.q_init}


def split_seen_labels(seen: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training columns, pseudo-unseen columns): a seeded `fraction` of the seen labels is held
    out of training so that `eval --alpha auto` can choose alpha on labels the head never saw."""
    columns = np.flatnonzero(seen)
    count = int(round(len(columns) * fraction))
    held = np.sort(np.random.default_rng([seed, 11]).permutation(columns)[:count])
    return np.setdiff1d(columns, held), held


class Trainer:
    """One training run over an open cache."""

    def __init__(self, config: TrainConfig, reader: CacheReader):
        self.config, self.reader = config, reader
        self.device = torch.device(config.device)
        self.seen_columns, self.pseudo_unseen = split_seen_labels(reader.seen, config.pseudo_unseen, config.seed)
        if len(self.seen_columns) == 0:
            raise UsageError(f"{reader.path}: no seen labels to train on")
        self.text = torch.from_numpy(reader.text[self.seen_columns]).to(self.device)   # (S, D)
        torch.manual_seed(config.seed)
        self.head = build_head(config.head, cache_pool(reader, self.device), reader.num_heads,
                               **head_options(config, reader.kind)).to(self.device)
        self.projector = ProjectionHead(reader.embed_dim).to(self.device) if config.contrastive_weight > 0 else None
        mask = trainable_rows(reader, config.split, self.seen_columns, config.progress)
        self.train_rows, self.val_rows = carve_validation(mask, reader.unit_rows(config.split),
                                                          config.val_fraction, config.seed, config.split)
        if self.train_rows.count == 0:
            raise UsageError(f"{reader.path}: split {config.split} has no usable row with a seen positive")
        self.stream = BatchStream(reader, self.train_rows, config.batch_size, config.shuffle_buffer,
                                  config.prefetch, config.in_memory)
        parameters = list(self.head.parameters()) + (list(self.projector.parameters()) if self.projector else [])
        self.optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * self.stream.steps()))

    # --- one step -----------------------------------------------------------------------
    def loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        spatial, global_embedding = batch_tensors(batch, self.device)                  # (B, HW, C), (B, D)
        labels = torch.from_numpy(batch["labels"][:, self.seen_columns]).to(self.device)  # (B, S)
        text = self.text
        if self.config.negatives is not None:
            columns = sample_label_columns(labels, self.config.negatives, generator).to(self.device)
            labels, text = labels[:, columns], text[columns]
        features = self.head(spatial, global_embedding, text)                           # (B, L', D)
        logits = self.config.logit_scale * cosine_scores(features, text)
        rank = (hinge_ranking_loss if self.config.rank_loss == "hinge" else ranking_loss)(logits, labels)
        total, parts = rank, {"rank": float(rank.detach())}
        if self.projector is not None:
            contrastive = supervised_contrastive_loss(features, labels, self.projector, self.config.tau)
            total = rank + self.config.contrastive_weight * contrastive
            parts["contrastive"] = float(contrastive.detach())
        return total, parts

    def train_epoch(self, epoch: int) -> dict:
        self.head.train()
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        sums, steps, images, started = {"loss": 0.0}, 0, 0, time.perf_counter()
        bar = progress(total=self.stream.steps(), desc=f"epoch {epoch}", unit="batch",
                       enabled=self.config.progress)
        for batch in self.stream.epoch(seed=self.config.seed * 1000 + epoch):
            loss, parts = self.loss(batch, generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.schedule.last_epoch + 1 < self.schedule.total_steps:
                self.schedule.step()
            steps += 1
            images += len(batch["labels"])
            sums["loss"] += float(loss.detach())
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            rate = images / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", img_s=f"{rate:.0f}")
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - started
        return {key: value / max(steps, 1) for key, value in sums.items()} | {
            "steps": steps, "images": images, "seconds": round(seconds, 3),
            "images_per_second": round(images / seconds, 1) if seconds else None,
            "lr": self.schedule.get_last_lr()[0]}

    @torch.no_grad()
    def validate(self) -> float | None:
        """Seen-label mAP (LESA protocol, percent) on the held-out units."""
        if self.val_rows.count == 0:
            return None
        self.head.eval()
        scores, labels = [], []
        stream = BatchStream(self.reader, self.val_rows, 256, prefetch=self.config.prefetch)
        for batch in stream.epoch(seed=0, shuffle=False):
            spatial, global_embedding = batch_tensors(batch, self.device)
            features = self.head(spatial, global_embedding, self.text)
            scores.append(cosine_scores(features, self.text).cpu().numpy())
            labels.append(batch["labels"][:, self.seen_columns])
        return 100.0 * mean_average_precision(np.concatenate(scores), np.concatenate(labels))

    # --- checkpoints --------------------------------------------------------------------
    def checkpoint_state(self, epoch: int, best: tuple[int, float | None]) -> dict:
        return {"epoch": epoch, "best_epoch": best[0], "best_val_map": best[1],
                "head": self.head.state_dict(),
                "projector": self.projector.state_dict() if self.projector else {},
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def restore(self, state: dict) -> tuple[int, tuple[int, float | None]]:
        self.head.load_state_dict(state["head"])
        if self.projector:
            self.projector.load_state_dict(state["projector"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        return int(state["epoch"]), (int(state["best_epoch"]), state["best_val_map"])

    def describe(self) -> dict:
        """config.json: every setting, the cache and its fingerprint, the head, the held-out units."""
        return {"train": dataclasses.asdict(self.config),
                "cache": {"path": os.path.abspath(self.reader.path), "fingerprint": self.reader.fingerprint(),
                          "backbone": self.reader.backbone, "prompts": self.reader.prompts},
                "head": {"name": self.config.head, "options": head_options(self.config, self.reader.kind),
                         "num_heads": self.reader.num_heads, "embed_dim": self.reader.embed_dim,
                         "channels": self.reader.channels, "hw": self.reader.hw},
                "seed": self.config.seed, "label_columns": "seen",
                "pseudo_unseen_columns": self.pseudo_unseen.tolist(),
                "validation": {"split": self.config.split, "units": sorted(self.val_rows.rows_by_unit),
                               "rows": self.val_rows.count},
                "train_rows": self.train_rows.count}


RESUMABLE_CHANGES = {"epochs", "progress", "in_memory", "prefetch", "allow_partial", "cache", "out"}


def check_resumable(run: RunFolder, trainer: Trainer) -> None:
    """A resumed run must use the same cache and settings (the epochs and I/O options may change)."""
    previous = run.read_config()
    if previous["cache"]["fingerprint"] != trainer.reader.fingerprint():
        raise UsageError(f"{run.path}: was trained on another cache ({previous['cache']['path']})")
    before = dataclasses.asdict(from_dict(TrainConfig, previous["train"]))
    now = dataclasses.asdict(trainer.config)
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and before.get(k) != now[k])
    if changed:
        raise UsageError(f"{run.path}: --resume with other settings ({', '.join(changed)}); "
                         "use the run's own settings or --overwrite")
    head = previous["head"]
    if (head["embed_dim"], head["channels"], head["hw"]) != (trainer.reader.embed_dim, trainer.reader.channels,
                                                            trainer.reader.hw):
        raise UsageError(f"{run.path}: the head's dimensions do not match the cache's text/pool dimensions")


def train_head(config: TrainConfig, resume: bool = False, overwrite: bool = False,
               on_epoch_end: Callable[[int], None] | None = None) -> TrainResult:
    """Train, validate and checkpoint every epoch; returns the run's summary."""
    started = time.perf_counter()
    run = RunFolder(config.out)
    if run.exists() and not resume and not overwrite:
        raise UsageError(f"{config.out}: a run is already there; pass --resume to continue it "
                         "or --overwrite to replace it")
    if overwrite and os.path.isdir(config.out):
        shutil.rmtree(config.out)
    with CacheReader(config.cache, allow_partial=config.allow_partial) as reader:
        trainer = Trainer(config, reader)
        first, best = 1, (0, None)
        if resume and os.path.exists(run.file(CHECKPOINT_FILE)):
            check_resumable(run, trainer)
            done, best = trainer.restore(load_tensors(run.file(CHECKPOINT_FILE), flat=False))
            run.truncate_log(done)
            first = done + 1
        else:
            os.makedirs(config.out, exist_ok=True)
            for stale in (run.file(LOG_FILE), run.file(CHECKPOINT_FILE)):
                if os.path.exists(stale):
                    os.remove(stale)
        run.write_config(trainer.describe())
        last_loss = float("nan")
        for epoch in range(first, config.epochs + 1):
            entry = trainer.train_epoch(epoch)
            val_map = trainer.validate()
            entry.update(epoch=epoch, val_seen_mAP=val_map)
            last_loss = entry["loss"]
            if val_map is None or best[1] is None or val_map > best[1]:
                best = (epoch, val_map)
                save_tensors(run.file(HEAD_FILE), trainer.head.state_dict())
            run.append_log(entry)
            save_tensors(run.file(CHECKPOINT_FILE), trainer.checkpoint_state(epoch, best))
            if on_epoch_end is not None:
                on_epoch_end(epoch)
        summary = trainer.describe() | {"best_epoch": best[0], "best_val_seen_mAP": best[1]}
        run.write_config(summary)
    return TrainResult(config.out, config.epochs, best[0], best[1], last_loss, time.perf_counter() - started)
