"""B6-ViT: the OVML head's training step at CLIP ViT-B/16 shapes, beside RN50's (B6 shapes).

Forward + backward, float32, random weights, inputs frozen as in training:
- RN50: N=64 images, L=925 labels, HW=49, C=2048, D=1024, 32 heads (the ResNet head, formulation auto);
- ViT-B/16: N=64, L=925, 1 + HW = 197 tokens ([cls; X']), W=768, D=512, 12 heads, the residual
  reading (cls + attention, then the block's MLP for every (image, label) pair) and the direct one.
Arms are interleaved rep by rep (median seconds). Peak memory as in benchmarks/speed/b6_head.py: on the CPU the
resident-set high-water mark of a fresh process running one step, minus its resident set just
before; with --gpu, torch.cuda.max_memory_allocated over the step.

    python -m benchmarks.speed.b6_vit_head [--reps 3] [--gpu]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

import torch

from benchmarks.common import REPOSITORY, module_command
from benchmarks.speed.b6_head import memory_status, sync
from ovml.cache.schema import vit_pool_shapes
from ovml.heads.attention import OVMLHead
from ovml.heads.attention_vit import VitOVMLHead

N, L = 64, 925
RN50 = dict(hw=49, channels=2048, embed_dim=1024, heads=32)
VIT_B16 = dict(hw=196, channels=768, embed_dim=512, heads=12)
ARMS = ("rn50", "vit-b16 residual", "vit-b16 direct")


def vit_pool(device: torch.device) -> dict[str, torch.Tensor]:
    """A random ViT-B/16-shaped pool/* (last block, ln_post, proj)."""
    pool = {key: torch.randn(*shape, device=device) * (0.02 if len(shape) > 1 else 0.1)
            for key, shape in vit_pool_shapes(VIT_B16["channels"], VIT_B16["embed_dim"]).items()}
    for name in ("ln_1", "ln_2", "ln_post"):
        pool[f"{name}_weight"] += 1.0
    return pool


def setup(arm: str, device: torch.device) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    """The arm's head, frozen inputs (tokens, global, text) and an upstream gradient."""
    torch.manual_seed(0)
    shape = RN50 if arm == "rn50" else VIT_B16
    if arm == "rn50":
        head = OVMLHead(shape["channels"], shape["embed_dim"], shape["hw"], shape["heads"]).to(device)
        tokens = torch.rand(N, shape["hw"], shape["channels"], device=device)                 # post-ReLU X'
    else:
        head = VitOVMLHead.from_pool(vit_pool(device), shape["heads"], shape["embed_dim"],
                                     vit_output=arm.split()[1]).to(device)
        tokens = torch.randn(N, 1 + shape["hw"], shape["channels"], device=device)           # [cls; X']
    global_embedding = torch.randn(N, shape["embed_dim"], device=device)
    text = torch.nn.functional.normalize(torch.randn(L, shape["embed_dim"], device=device), dim=-1)
    return head, (tokens, global_embedding, text), torch.randn(N, L, shape["embed_dim"], device=device)


def step(head: torch.nn.Module, inputs: tuple[torch.Tensor, ...], upstream: torch.Tensor) -> None:
    head.zero_grad(set_to_none=True)
    head(*inputs).backward(upstream)


def peak_bytes(arm: str, device: torch.device) -> int:
    head, inputs, upstream = setup(arm, device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(head, inputs, upstream)
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = memory_status("VmRSS")
    step(head, inputs, upstream)
    return memory_status("VmHWM") - before


def peak_bytes_fresh_process(arm: str) -> int:
    done = subprocess.run(module_command(__spec__.name, "--memory-arm", arm), check=True, capture_output=True,
                          text=True, cwd=REPOSITORY)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed steps per arm (median)")
    parser.add_argument("--gpu", action="store_true", help="run on cuda:0")
    parser.add_argument("--memory-arm", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device("cuda:0" if args.gpu else "cpu")
    if args.memory_arm:
        print(json.dumps({"peak_bytes": peak_bytes(args.memory_arm, device)}))
        return
    print(f"head step (forward + backward), N={N} L={L}, float32, {device}"
          f"{'' if args.gpu else f', {torch.get_num_threads()} threads'}")
    prepared = {arm: setup(arm, device) for arm in ARMS}
    times = {arm: [] for arm in ARMS}
    for arm in ARMS:                                      # warm-up
        step(*prepared[arm])
    for _ in range(args.reps):
        for arm in ARMS:
            sync(device)
            started = time.perf_counter()
            step(*prepared[arm])
            sync(device)
            times[arm].append(time.perf_counter() - started)
    del prepared
    medians = {arm: statistics.median(values) for arm, values in times.items()}
    for arm in ARMS:
        peak = peak_bytes(arm, device) if args.gpu else peak_bytes_fresh_process(arm)
        print(f"{arm:17s} median {medians[arm]:7.3f} s  (reps: {', '.join(f'{t:.3f}' for t in times[arm])})  "
              f"peak {peak / 2 ** 20:7.0f} MiB")
    print(f"RATIO B6-ViT {medians['rn50'] / medians['vit-b16 direct']:.2f} rn50-seconds / vit-b16-direct-seconds; "
          f"residual/direct {medians['vit-b16 residual'] / medians['vit-b16 direct']:.2f} "
          f"(N={N} L={L}, fwd+bwd, {device})")


if __name__ == "__main__":
    main()
