"""B6: one OVML head training step at paper shapes, literal vs fused formulation.

Forward + backward of the attention head at N=64 images, L=925 labels (NUS-WIDE seen), HW=49,
C=2048, D=1024, 32 heads, random weights, float32, inputs frozen as in training (the gradient
reaches the head's parameters only). "literal" computes the head as docs/method.md writes it: tokens
z = x + p projected by F_k and F_v for every image, F_o applied to every (image, label) pair
(N L C D multiply-adds). "fused" is what training runs at these shapes: each head's values are
projected by its slice of F_o once per image, then contracted over (head, token) pairs
(N HW C D + N L h HW D), and the positional term is projected once instead of once per image
(which spares the N HW C^2 input gradients that only p needs). Both arms share the weights and
inputs and must agree to float rounding. Each repetition times both arms back to back (order
alternating); the ratio is the median of the repetitions' ratios, so that a shared machine's
drift hits both arms of a repetition alike.

Peak memory on the CPU is the resident-set high-water mark (VmHWM, Linux /proc) of a fresh
process running one step, minus its resident set just before the step: everything the step
holds at once (saved activations, gradients, temporaries, allocator slack), without the weights
and inputs. (getrusage's ru_maxrss would not do: Linux carries it over from the parent.) With --gpu: torch.cuda.max_memory_allocated during the step minus the allocation before.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

import torch

from benchmarks.common import REPOSITORY, module_command, write_figures
from ovml.heads.attention import OVMLHead

N, L, HW, C, D, HEADS = 64, 925, 49, 2048, 1024, 32
ARMS = ("literal", "fused")


def setup(device: torch.device) -> tuple[OVMLHead, tuple[torch.Tensor, ...], torch.Tensor]:
    """The head (random weights), frozen inputs (spatial, global, text) and an upstream gradient."""
    torch.manual_seed(0)
    head = OVMLHead(C, D, HW, HEADS).to(device)
    spatial = torch.rand(N, HW, C, device=device)
    global_embedding = torch.randn(N, D, device=device)
    text = torch.nn.functional.normalize(torch.randn(L, D, device=device), dim=-1)
    upstream = torch.randn(N, L, D, device=device)
    return head, (spatial, global_embedding, text), upstream


def step(head: OVMLHead, inputs: tuple[torch.Tensor, ...], upstream: torch.Tensor, arm: str) -> torch.Tensor:
    """One forward + backward with the arm's formulation; returns the output (detached)."""
    head.formulation = arm
    head.zero_grad(set_to_none=True)
    out = head(*inputs)
    out.backward(upstream)
    return out.detach()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_arms(device: torch.device, reps: int) -> tuple[dict[str, list[float]], float, float]:
    """Seconds per step of each arm, interleaved after one warm-up step each; also how far apart
    the arms' outputs and parameter gradients are (largest difference / largest entry)."""
    head, inputs, upstream = setup(device)
    results = {}
    for arm in ARMS:
        out = step(head, inputs, upstream, arm)
        results[arm] = (out, {k: p.grad.clone() for k, p in head.named_parameters()})
    (out_a, grads_a), (out_b, grads_b) = results["literal"], results["fused"]
    out_diff = float((out_a - out_b).abs().max() / out_a.abs().max())
    grad_diff = (max(float((grads_a[k] - grads_b[k]).abs().max()) for k in grads_a)
                 / max(float(g.abs().max()) for g in grads_a.values()))
    del results
    times = {arm: [] for arm in ARMS}
    for rep in range(reps):
        for arm in ARMS if rep % 2 == 0 else ARMS[::-1]:
            sync(device)
            started = time.perf_counter()
            step(head, inputs, upstream, arm)
            sync(device)
            times[arm].append(time.perf_counter() - started)
    return times, out_diff, grad_diff


def memory_status(field: str) -> int:
    """A size from /proc/self/status (VmRSS: resident now, VmHWM: resident high-water mark), bytes."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_bytes(arm: str, device: torch.device) -> int:
    """Peak memory of one step beyond what was held before it (see the module docstring)."""
    head, inputs, upstream = setup(device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(head, inputs, upstream, arm)
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = memory_status("VmRSS")
    step(head, inputs, upstream, arm)
    return memory_status("VmHWM") - before


def peak_bytes_fresh_process(arm: str) -> int:
    """peak_bytes in a new interpreter, so that one arm's high-water mark cannot hide the other's."""
    done = subprocess.run(module_command(__spec__.name, "--memory-arm", arm, "--images", str(N)),
                          check=True, capture_output=True, text=True, cwd=REPOSITORY)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def main() -> None:
    global N
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed steps per arm (median)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--images", type=int, default=N, help="N (the paper's batch: 64; fewer for a smoke test)")
    parser.add_argument("--gpu", action="store_true", help="run on cuda:0")
    parser.add_argument("--memory-arm", choices=ARMS, help=argparse.SUPPRESS)  # child process of the CPU run
    args = parser.parse_args()
    N = args.images
    device = torch.device("cuda:0" if args.gpu else "cpu")
    if args.memory_arm:
        print(json.dumps({"peak_bytes": peak_bytes(args.memory_arm, device)}))
        return

    print(f"B6 head step, N={N} L={L} HW={HW} C={C} D={D} h={HEADS}, float32, {device}"
          f"{'' if args.gpu else f', {torch.get_num_threads()} threads'}, forward + backward")
    literal_macs = N * L * C * D
    fused_macs = N * HW * C * D + N * L * HEADS * HW * D
    print(f"F_o stage multiply-adds: literal {literal_macs / 1e9:.1f} G, fused {fused_macs / 1e9:.1f} G")
    times, out_diff, grad_diff = time_arms(device, args.reps)
    print(f"arms agree: largest difference / largest entry, output {out_diff:.1e}, "
          f"parameter gradients {grad_diff:.1e}")
    peaks = {arm: peak_bytes(arm, device) if args.gpu else peak_bytes_fresh_process(arm) for arm in ARMS}
    what = "max_memory_allocated" if args.gpu else "peak RSS over pre-step RSS"
    medians = {arm: statistics.median(values) for arm, values in times.items()}
    ratio = statistics.median(a / b for a, b in zip(times["literal"], times["fused"]))
    for arm in ARMS:
        print(f"{arm:8s} median {medians[arm]:7.3f} s  (reps: {', '.join(f'{t:.3f}' for t in times[arm])})  "
              f"peak {peaks[arm] / 2 ** 20:7.0f} MiB ({what})")
    write_figures(args.json, {"B6": {"device": str(device), "seconds": medians, "reps": times, "ratio": ratio,
                                     "peak_mib": {arm: peaks[arm] / 2 ** 20 for arm in ARMS},
                                     "output_difference": out_diff, "gradient_difference": grad_diff}})
    print(f"RATIO B6 {ratio:.2f} literal-seconds / fused-seconds (median of {args.reps} paired repetitions; "
          f"N={N} L={L} HW={HW} C={C} D={D} h={HEADS}, fwd+bwd)")


if __name__ == "__main__":
    main()
