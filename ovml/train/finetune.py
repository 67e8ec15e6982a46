"""`ovml finetune`: CLIP's image tower trained on the seen labels (the paper's Table III, row 2).

CLIP-ML scores every seen label by cos(g, t_j); fine-tuning trains the image tower, all of it, so
that those scores rank each training image's positives above its negatives (the ranking loss of
docs/method.md on logit_scale x cosines), while the text tower stays frozen and the seen labels' text
embeddings are computed once. Images come through the same dataset adapters and decoder as
`extract`. BatchNorm keeps CLIP's statistics (the tower runs in eval mode: CLIP's ResNet has no
dropout, so only the statistics differ), the usual practice at batch sizes this small.

Every epoch ends with a checkpoint beside the output, in a run folder with train-head's lifecycle
(`OUT.finetune/`: config.json, log.jsonl, and checkpoint.pt holding the tower, Adam and the
schedule), so a rerun of the same command resumes at the next epoch. The result is a plain state
dict of the whole CLIP in OpenAI's layout (fp16 weights, as `clip.model.build_model` loads them),
which `extract --model OUT` reads; its sha256 differs from the original's, so caches made from it
are kept apart.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import FinetuneConfig
from ..errors import UsageError
from ..extract.backbone.weights import file_sha256, import_clip, load_clip
from ..extract.datasets import Split, adapter_options, open_dataset, select_splits
from ..extract.images import ImageRows, collate, normalise
from ..extract.text import embed_labels, load_prompts
from ..files import save_tensors
from ..heads.losses import ranking_loss
from ..precision import scaled_step
from ..progress import progress
from .run_folder import RunFolder, check_resumable, schedule_state

LABEL_BLOCK = 4096  # label rows read at a time when looking for trainable images
RESUMABLE_CHANGES = {"epochs", "device", "workers", "threads", "progress", "download_root", "out", "lock"}


@dataclass
class FinetuneResult:
    """What a fine-tuning run ended with."""

    out: str
    epochs: int
    images: int            # training images (a seen positive, readable) per epoch
    last_loss: float
    seconds: float
    sha256: str            # of the written weights, as `extract` will record it


def sidecar(out: str) -> str:
    """`OUT.finetune/`: the checkpoint, settings and per-epoch log of a run writing OUT."""
    return out + ".finetune"


def load_trainable_clip(model: str, device: torch.device, download_root: str | None) -> tuple[torch.nn.Module, str]:
    """The whole CLIP in float32 on `device` with its image tower trainable, and its weights' sha256."""
    network, sha256 = load_clip(model, device, download_root)
    network.float()
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(name.startswith("visual."))
    return network, sha256


def trainable_images(split: Split, seen: np.ndarray) -> np.ndarray:
    """Rows with at least one seen positive, read LABEL_BLOCK rows at a time."""
    rows = []
    for start in range(0, len(split), LABEL_BLOCK):
        block = split.labels(start, min(start + LABEL_BLOCK, len(split)))
        rows.append(start + np.flatnonzero((block[:, seen] == 1).any(axis=1)))
    return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)


def epoch_batches(rows: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's shuffled row batches (seeded by seed and epoch, so a resumed run sees the same)."""
    order = np.random.default_rng([seed, epoch]).permutation(rows)
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


class Finetuner:
    """One fine-tuning run: the model, the optimiser, the images and the seen labels' text."""

    def __init__(self, config: FinetuneConfig):
        self.config = config
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"{self.device} asked for but CUDA is not available on this machine")
        if config.threads:
            torch.set_num_threads(config.threads)
        source = open_dataset(config.dataset, config.root, config.allow_outside_root, **adapter_options(config))
        self.split = select_splits(source, (config.split,), config.limit)[config.split]
        self.seen = np.asarray(source.vocabulary.seen, dtype=bool)
        if not self.seen.any():
            raise UsageError(f"{config.root}: no seen labels to fine-tune on")
        self.model, self.sha256 = load_trainable_clip(config.model, self.device, config.download_root)
        names = [name for name, seen in zip(source.vocabulary.names, self.seen) if seen]
        text = embed_labels(self.model, names, load_prompts(config.prompts), self.device, progress=config.progress)
        self.text = torch.from_numpy(text).to(self.device)                                    # (S, D)
        self.rows = trainable_images(self.split, self.seen)
        if len(self.rows) == 0:
            raise UsageError(f"{config.root}: split {config.split} has no image with a seen positive")
        self.scale = config.logit_scale or float(self.model.logit_scale.exp())
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
        steps = config.epochs * len(epoch_batches(self.rows, config.batch_size, config.seed, 0))
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=config.lr, total_steps=steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")

    def settings(self) -> dict:
        """What a resumed run must share with the run it continues."""
        return dataclasses.asdict(self.config) | {"weights_sha256": self.sha256}

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One Adam step of the ranking loss on CLIP-ML logits; returns the loss."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
            embedding = self.model.encode_image(normalise(images.to(self.device, non_blocking=True)))  # (B, D)
        logits = self.scale * F.normalize(embedding.float(), dim=-1) @ self.text.T           # (B, S)
        loss = ranking_loss(logits, labels.to(self.device))
        scaled_step(loss, self.optimizer, self.scaler, self.schedule)
        return float(loss.detach())

    def epoch(self, epoch: int) -> dict:
        """One pass over the trainable images; unreadable ones are left out of their batch."""
        batches = epoch_batches(self.rows, self.config.batch_size, self.config.seed, epoch)
        side = self.model.visual.input_resolution
        loader = torch.utils.data.DataLoader(
            ImageRows(self.split.paths, side, self.split.file_check, roots=self.split.roots), batch_sampler=batches,
            collate_fn=functools.partial(collate, side=side), num_workers=self.config.workers,
            pin_memory=self.device.type == "cuda")
        bar = progress(total=len(batches), desc=f"finetune epoch {epoch}", unit="batch", enabled=self.config.progress)
        total, steps, images, skipped, started = 0.0, 0, 0, 0, time.perf_counter()
        for batch in loader:
            rows, tensors = batch.rows, batch.pixels                                # (B,), (B, 3, S, S) uint8
            ok = torch.tensor([not reason for reason in batch.reasons])
            skipped += int((~ok).sum())
            if ok.any():
                kept = rows[ok].tolist()
                labels = np.stack([self.split.labels(r, r + 1)[0] for r in kept])[:, self.seen]
                total += self.step(tensors[ok], torch.from_numpy(labels.astype(np.int8)))
                steps, images = steps + 1, images + len(kept)
                bar.set_postfix(loss=f"{total / steps:.4f}")
            bar.update(1)
        bar.close()
        return {"epoch": epoch, "loss": total / max(steps, 1), "steps": steps, "images": images,
                "unreadable": skipped, "seconds": round(time.perf_counter() - started, 3),
                "lr": self.schedule.get_last_lr()[0]}

    def checkpoint(self, epoch: int) -> dict:
        return {"epoch": epoch, "visual": self.model.visual.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": schedule_state(self.schedule), "scaler": self.scaler.state_dict()}

    def restore(self, state: dict) -> int:
        self.model.visual.load_state_dict(state["visual"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return int(state["epoch"])

    def weights(self) -> dict[str, torch.Tensor]:
        """The whole CLIP as OpenAI publishes it (`clip.model.convert_weights`: fp16 weights)."""
        released = copy.deepcopy(self.model).cpu()
        import_clip().model.convert_weights(released)
        return {key: value.detach().clone() for key, value in released.state_dict().items()}


def finetune(config: FinetuneConfig, overwrite: bool = False) -> FinetuneResult:
    """Fine-tune, checkpointing every epoch (a rerun resumes), then write the weights to `config.out`;
    the run folder's writer lock is held throughout."""
    started = time.perf_counter()
    run = RunFolder(sidecar(config.out))
    with run.lock(config.lock):
        # OUT with a checkpoint still beside it: a run stopped between writing OUT and removing the
        # checkpoint, which the rerun finishes
        if os.path.exists(config.out) and not overwrite and not run.has_checkpoint():
            raise UsageError(f"{config.out}: already exists; pass --overwrite to replace it")
        run.claim(resume=True, overwrite=overwrite)
        finetuner = Finetuner(config)
        entry = finetune_in(run, finetuner, config)
    return FinetuneResult(config.out, config.epochs, len(finetuner.rows), entry["loss"],
                          time.perf_counter() - started, file_sha256(config.out))


def finetune_in(run: RunFolder, finetuner: Finetuner, config: FinetuneConfig) -> dict:
    """The claimed run's epochs (resumed from its checkpoint if there is one), then OUT; returns
    the last epoch's log entry."""
    first = 1
    if run.has_checkpoint():
        previous = run.read_config()
        check_resumable(run, config, previous, RESUMABLE_CHANGES, f"CLIP ({previous.get('model')})",
                        finetuner.sha256, previous.get("weights_sha256"))
        done = finetuner.restore(run.load_checkpoint())
        run.truncate_log(done)
        first = done + 1
    else:
        run.start()
    run.write_config(finetuner.settings())
    entry = run.read_log()[-1] if first > config.epochs and run.read_log() else {"loss": float("nan")}
    for epoch in range(first, config.epochs + 1):
        entry = finetuner.epoch(epoch)
        run.append_log(entry)
        run.save_checkpoint(finetuner.checkpoint(epoch))
    os.makedirs(os.path.dirname(os.path.abspath(config.out)), exist_ok=True)
    save_tensors(config.out, finetuner.weights())
    run.remove_checkpoint()
    return entry
