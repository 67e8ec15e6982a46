"""How the image tower runs: its engine (eager PyTorch or ONNX Runtime) and the precision it
computes in, chosen once when the backbone loads, so that every caller of `Backbone.encode`
(extract, predict, serve, tag) takes the same path, and recorded in the cache's `backbone`
attribute (`engine`, `precision`) so that one cache never mixes paths.

On the CPU the torch engine runs a ResNet with its BatchNorms folded into the convolutions and in
channels_last layout (`resnet.ResnetBackbone.fold_for_cpu`), and the tower under bf16 autocast
where the CPU computes bf16 natively (the `avx512_bf16` or `amx_bf16` instructions); a CPU
without them runs float32 (said once when bf16 was asked for by name; the cache records the
precision either way). The onnxruntime engine runs the tower exported
to ONNX (`onnx_tower.py`) in float32. On CUDA the tower runs in fp16, as clip does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...config import TOWER_ENGINES as ENGINES
from ...config import TOWER_PRECISIONS as PRECISIONS
from .weights import BackboneError

BF16_FLAGS = ("avx512_bf16", "amx_bf16")        # CPU flags (/proc/cpuinfo) of native bf16 arithmetic
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TowerPath:
    """The engine and precision the tower runs in, and why they differ from what was asked."""

    engine: str          # torch or onnxruntime
    precision: str       # fp32, bf16 or fp16: what the tower computes in
    note: str | None     # one line for the user when the request could not be met as given


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, as on macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16_flags() -> list[str]:
    """The flags of native bf16 arithmetic this CPU has, and that oneDNN (torch's CPU kernels)
    can use; empty when it has none."""
    if not torch.backends.mkldnn.is_available():
        return []
    flags = cpu_flags()
    return [flag for flag in BF16_FLAGS if flag in flags]


def resolve_path(engine: str, precision: str, device: torch.device) -> TowerPath:
    """The path the tower takes on `device` for `--engine` and `--tower-precision`."""
    if engine not in ENGINES:
        raise BackboneError(f"engine {engine!r} unknown (known: {', '.join(ENGINES)})")
    if precision not in PRECISIONS:
        raise BackboneError(f"precision {precision!r} unknown (known: {', '.join(PRECISIONS)})")
    if device.type != "cpu":
        if engine == "onnxruntime":
            raise BackboneError(f"--engine onnxruntime runs the tower on the CPU, not on {device}; "
                                "drop --engine or the device")
        half = device.type == "cuda"
        asked = precision != "auto" and precision != ("fp16" if half else "fp32")
        note = f"--tower-precision {precision}: the tower runs in {'fp16 on CUDA, as clip does' if half else 'fp32'}"
        return TowerPath("torch", "fp16" if half else "fp32", note if asked else None)
    if engine == "onnxruntime":
        note = "--tower-precision bf16: the onnxruntime engine runs the tower in fp32" if precision == "bf16" else None
        return TowerPath("onnxruntime", "fp32", note)
    if precision == "fp32":
        return TowerPath("torch", "fp32", None)
    if native_bf16_flags():
        return TowerPath("torch", "bf16", None)
    note = (f"--tower-precision bf16: this CPU has no native bf16 (neither {' nor '.join(BF16_FLAGS)}), so the "
            "tower runs in fp32")
    return TowerPath("torch", "fp32", note if precision == "bf16" else None)


def describe_cpu() -> str:
    """One line: the flags the CPU path relies on, as found on this machine."""
    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_vnni") + BF16_FLAGS + ("amx_tile",)
    found = [flag for flag in wanted if flag in flags]
    return f"CPU flags: {', '.join(found) or 'none of ' + ', '.join(wanted)}; torch threads {torch.get_num_threads()}"
