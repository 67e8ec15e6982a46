"""Mixed precision for the head (`train-head --amp`, `eval --amp`): autocast on CUDA only.

On a CUDA device, bf16 or fp16 autocast runs the head's matrix products in half precision (with
a gradient scaler for fp16 training); reductions, softmax and the losses stay float32, as
autocast chooses. On any other device the head stays float32 and the run says so in one line:
CPU autocast would be slower than float32 on most CPUs and would change the numbers that
the CPU run exists to reproduce, while ignoring the option lets one script run on both.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import UsageError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class MixedPrecision:
    """What `--amp` resolved to on one device."""

    device_type: str               # torch device type: cuda, cpu, ...
    dtype: torch.dtype | None      # autocast dtype; None: float32 throughout
    note: str | None = None        # one line when the request was ignored

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward (and the loss); a no-op context without a dtype."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def wrap(self, module: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """`module` called under autocast with a float32 result (itself without a dtype), so
        scores built from its output are computed in float32."""
        if self.dtype is None:
            return module

        def forward(*args: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return module(*args).float()
        return forward

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, active for fp16 only (bf16 has float32's range and needs none)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)


def mixed_precision(amp: str | None, device: torch.device | str) -> MixedPrecision:
    """Resolve `--amp` (None, 'bf16' or 'fp16') for `device`; ignored with a note off CUDA."""
    device = torch.device(device)
    if amp is None:
        return MixedPrecision(device.type, None)
    if amp not in AMP_DTYPES:
        raise UsageError(f"--amp must be one of {', '.join(AMP_DTYPES)}, not {amp!r}")
    if device.type != "cuda":
        return MixedPrecision(device.type, None, f"--amp {amp} ignored on {device}: the head runs in float32 "
                                                 "(autocast is used on CUDA devices only)")
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                         "use --amp fp16")
    return MixedPrecision(device.type, AMP_DTYPES[amp])


def scaled_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                schedule: torch.optim.lr_scheduler.LRScheduler) -> None:
    """One optimisation step: (scaled) backward, step, scaler update, and the schedule's next
    step while it lasts (OneCycleLR refuses steps past its total). A step the fp16 scaler skips
    (gradients overflowed; the scale then drops) does not advance the schedule either."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scale = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    skipped = scale is not None and scaler.get_scale() < scale
    if not skipped and schedule.last_epoch + 1 < schedule.total_steps:
        schedule.step()
