"""B8: each head's cost per training step at NUS-WIDE shapes (N=64, L=925, HW=49, C=2048, D=1024).

One step is what the trainer does per batch once the batch is in memory: the head's forward, its
loss (OVML: ranking + supervised contrastive with its projector, lambda 1; linear: ranking;
zssdl, biam, lesa: their own losses and regularisers), backward and one Adam step. Inputs are
random and frozen, float32, 32 pool heads, 8 positives per image among the 925 seen labels (the
rest -1), logit scale 20. Heads are interleaved rep by rep (median seconds). Peak memory on the
CPU is the resident-set high-water mark of a fresh process running one step minus its resident
set before the step (as B6); with --gpu, torch.cuda.max_memory_allocated over the step.

    python -m benchmarks.speed.b8_head_steps [--reps 3] [--gpu] [--heads ovml,linear,zssdl,biam,lesa]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F

from benchmarks.common import REPOSITORY, module_command
from ovml.heads.base import cosine_scores
from ovml.heads.losses import ProjectionHead, ranking_loss, supervised_contrastive_loss
from ovml.heads.registry import build_head, default_contrastive_weight

N, L, HW, C, D, HEADS, POSITIVES, SCALE = 64, 925, 49, 2048, 1024, 32, 8, 20.0


class Step:
    """One head with its optimiser and fixed inputs; `run()` is one training step."""

    def __init__(self, name: str, device: torch.device):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        pool = {"positional_embedding": torch.randn(HW + 1, C, generator=g) / C ** 0.5,
                **{f"{k}_weight": torch.randn(C, C, generator=g) / C ** 0.5 for k in "qkv"},
                **{f"{k}_bias": torch.zeros(C) for k in "qkv"},
                "c_weight": torch.randn(D, C, generator=g) / C ** 0.5, "c_bias": torch.zeros(D)}
        self.head = build_head(name, {k: v.to(device) for k, v in pool.items()}, HEADS).to(device).train()
        self.projector = ProjectionHead(D).to(device) if default_contrastive_weight(name) > 0 and name != "linear" \
            else None
        parameters = list(self.head.parameters()) + (list(self.projector.parameters()) if self.projector else [])
        self.optimizer = torch.optim.Adam(parameters, lr=1e-4)
        self.spatial = torch.rand(N, HW, C, generator=g).to(device)
        self.global_embedding = torch.randn(N, D, generator=g).to(device)
        self.text = F.normalize(torch.randn(L, D, generator=g), dim=-1).to(device)
        labels = -torch.ones(N, L, dtype=torch.int8)
        for row in labels:
            row[torch.randperm(L, generator=g)[:POSITIVES]] = 1
        self.labels = labels.to(device)

    def loss(self) -> torch.Tensor:
        own = getattr(self.head, "training_loss", None)
        if own is not None:
            return own(self.spatial, self.global_embedding, self.text, self.labels, SCALE, need_features=False)[1]
        features = self.head(self.spatial, self.global_embedding, self.text)
        loss = ranking_loss(SCALE * cosine_scores(features, self.text), self.labels)
        if self.projector is not None:
            loss = loss + supervised_contrastive_loss(features, self.labels, self.projector, 0.2)
        return loss

    def run(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.loss().backward()
        self.optimizer.step()

    def parameters(self) -> int:
        return sum(p.numel() for p in self.head.parameters())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_status(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(field + ":")).split()[1]) * 1024


def peak_bytes(name: str, device: torch.device) -> int:
    step = Step(name, device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step.run()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = memory_status("VmRSS")
    step.run()
    return memory_status("VmHWM") - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--heads", default="ovml,linear,zssdl,biam,lesa")
    parser.add_argument("--memory-head", help=argparse.SUPPRESS)  # child process of the CPU run
    args = parser.parse_args()
    device = torch.device("cuda:0" if args.gpu else "cpu")
    if args.memory_head:
        print(json.dumps({"peak_bytes": peak_bytes(args.memory_head, device)}))
        return
    names = args.heads.split(",")
    print(f"B8 training step per head, N={N} L={L} HW={HW} C={C} D={D} h={HEADS}, {POSITIVES} positives per image, "
          f"float32, {device}{'' if args.gpu else f', {torch.get_num_threads()} threads'}")
    steps = {name: Step(name, device) for name in names}
    for step in steps.values():
        step.run()                                            # warm-up
    times = {name: [] for name in names}
    for _ in range(args.reps):
        for name, step in steps.items():
            sync(device)
            started = time.perf_counter()
            step.run()
            sync(device)
            times[name].append(time.perf_counter() - started)
    parameters = {name: step.parameters() for name, step in steps.items()}
    del steps
    if args.gpu:
        peaks = {name: peak_bytes(name, device) for name in names}
    else:
        peaks = {name: json.loads(subprocess.run(module_command(__spec__.name, "--memory-head", name),
                                                 check=True, capture_output=True, text=True,
                                                 cwd=REPOSITORY).stdout.strip().splitlines()[-1])
                 ["peak_bytes"] for name in names}
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = medians.get("ovml")
    print("| head | parameters | median s/step | x OVML | peak MiB |")
    print("|---|---|---|---|---|")
    for name in names:
        ratio = f"{medians[name] / reference:.2f}" if reference else ""
        reps = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"| {name} | {parameters[name] / 1e6:.1f} M | {medians[name]:.3f} | {ratio} | "
              f"{peaks[name] / 2 ** 20:.0f} |  (reps: {reps})")
    others = [name for name in names if name not in ("ovml", "linear")]
    if reference and others:
        slowest = max(others, key=medians.get)
        print(f"RATIO B8 {medians[slowest] / reference:.2f} {slowest}-step-seconds / ovml-step-seconds "
              f"(slowest of {', '.join(others)}; N={N} L={L} HW={HW} C={C} D={D}, fwd+loss+bwd+Adam)")


if __name__ == "__main__":
    main()
