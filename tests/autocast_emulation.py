"""CUDA autocast's dtype rules emulated on the CPU, so that a machine without a GPU can show what
`--amp bf16|fp16` would break on one.

`EmulatedAutocast(dtype)` is a TorchDispatchMode: it sees every aten op below autograd, in the
forward and in the backward, and casts the inputs the way `torch.autocast("cuda", dtype)` would:

- matrix products and convolutions (autocast's "lower precision" list, and their backward ops)
  take float32 inputs in the low precision, so they return it;
- norms, softmax, log_softmax, logsumexp, exp, log, sums, layer/group norm and the losses
  (autocast's "float32" list, and their backward ops) take low-precision inputs in float32;
- a few ops that autocast runs in the widest input type (index_put, scatter_add, addcmul,
  addcdiv, ...) take every floating input in float32 when any is;
- everything else follows PyTorch's type promotion, as under autocast.

It is an approximation: since it sits below autograd, backward ops see the forward's original
inputs and are cast by the same lists, where autocast would have recorded the casts; and it
casts everything run under it, where `--amp` autocasts the head's forward and losses only. A
program that fails under it almost surely fails under CUDA autocast; one that passes may still
round differently there.

Used by the tests (tests/test_amp_emulated.py) and, as a program, by `benchmarks/gpu_suite.sh
--cpu-smoke`, which runs the amp steps under it:

    python -m tests.autocast_emulation --dtype bf16 -m ovml.cli train-head --cache c.zarr --amp bf16
    python -m tests.autocast_emulation --dtype fp16 path/to/program.py ARGS...
"""
from __future__ import annotations

import runpy
import sys

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

LOW_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# aten names (overload packets) of autocast's lists, as the ops reach the dispatcher on the CPU:
# torch.matmul, F.linear and F.conv2d are decomposed into these before a dispatch mode sees them
# convolutions compare their inputs' dtypes before reaching the dispatcher, so they are cast where
# autocast casts them, at the call (a TorchFunctionMode, above autograd)
CONVOLUTIONS = {torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d,
                torch.conv_transpose3d}
LOWER = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "addmv", "addr", "mv", "convolution", "_convolution",
         "convolution_backward", "prelu", "_scaled_dot_product_flash_attention_for_cpu",
         "_scaled_dot_product_attention_math"}
FLOAT32 = {"linalg_vector_norm", "norm", "_softmax", "_log_softmax", "logsumexp", "exp", "log", "log1p", "log2",
           "log10", "expm1", "pow", "softplus", "cumsum", "cumprod", "sum", "prod", "native_layer_norm",
           "native_group_norm", "nll_loss", "nll_loss_forward", "nll_loss2d", "nll_loss2d_forward", "binary_cross_entropy_with_logits",
           "mse_loss", "l1_loss", "smooth_l1_loss", "kl_div", "cosine_similarity", "_cdist", "_cdist_forward", "rsqrt",
           "reciprocal", "acos", "asin", "cosh", "sinh", "tan", "erfinv", "renorm"}
WIDEST = {"index_put", "scatter_add", "addcmul", "addcdiv", "atan2", "cross", "dot", "vdot", "tensordot",
          "grid_sampler_2d"}


def _forward_name(name: str) -> str:
    """The forward op a backward op belongs to ("softplus_backward" -> "softplus")."""
    for suffix in ("_backward_data", "_backward"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _cast(value, dtype: torch.dtype, sources: tuple[torch.dtype, ...]):
    if isinstance(value, torch.Tensor) and value.dtype in sources:
        return value.to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype, sources) for v in value)
    return value


def _floating(values) -> list[torch.dtype]:
    found = []
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            found.append(value.dtype)
        elif isinstance(value, (list, tuple)):
            found.extend(_floating(value))
    return found


class _LowPrecisionConvolutions(TorchFunctionMode):
    """Casts the float32 inputs of a convolution call to the low precision, as autocast does."""

    def __init__(self, low: torch.dtype):
        super().__init__()
        self.low = low

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in CONVOLUTIONS:
            args = _cast(args, self.low, (torch.float32,))
            kwargs = {key: _cast(value, self.low, (torch.float32,)) for key, value in kwargs.items()}
        return func(*args, **kwargs)


class EmulatedAutocast(TorchDispatchMode):
    """`with EmulatedAutocast(torch.bfloat16):` runs the block under CUDA autocast's dtype rules."""

    def __init__(self, low: torch.dtype):
        super().__init__()
        if low not in LOW_DTYPES.values():
            raise ValueError(f"autocast runs in bfloat16 or float16, not {low}")
        self.low = low
        self.convolutions = _LowPrecisionConvolutions(low)

    def __enter__(self):
        self.convolutions.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self.convolutions.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        packet = func.overloadpacket.__name__
        name = _forward_name(packet)
        target = None
        if name in LOWER or packet in LOWER:
            target, sources = self.low, (torch.float32,)
        elif name in FLOAT32:
            target, sources = torch.float32, (self.low,)
        elif name in WIDEST and not packet.endswith("_"):          # autocast leaves in-place ops alone
            present = set(_floating([*args, *kwargs.values()]))
            if torch.float32 in present and self.low in present:
                target, sources = torch.float32, (self.low,)
        if target is not None:
            args = _cast(args, target, sources)
            kwargs = {key: _cast(value, target, sources) for key, value in kwargs.items()}
            if target == torch.float32:   # a dtype argument (sum's dtype, softmax backward's input_dtype)
                args = tuple(torch.float32 if value is self.low else value for value in args)
                kwargs = {key: torch.float32 if value is self.low else value for key, value in kwargs.items()}
        return func(*args, **kwargs)


def main(argv: list[str]) -> None:
    """`[--dtype bf16|fp16] (-m MODULE | PROGRAM) ARGS...`: run a module or a script under the emulation."""
    low = torch.bfloat16
    if argv[:1] == ["--dtype"]:
        low = LOW_DTYPES[argv[1]]
        argv = argv[2:]
    if not argv or argv[:1] == ["-m"] and len(argv) < 2:
        raise SystemExit(__doc__)
    with EmulatedAutocast(low):
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
