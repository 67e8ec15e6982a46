"""What every command shares: one-line errors, the device options, list parsing."""
from __future__ import annotations

import dataclasses
import functools

import click

from ..errors import OvmlError


def user_errors(command):
    """Turn the library's expected failures into one-line errors (exit status 1)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OvmlError as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            raise click.ClickException(f"{where}{err.strerror or err}") from err
    return wrapper


def device_options(command):
    """`--gpu N` and `--device cpu|cuda:N` (resolved with `resolve_device`)."""
    command = click.option("--device", default=None, help="torch device: cpu or cuda:N (default cpu).")(command)
    return click.option("--gpu", type=int, default=None, help="Use cuda:N.")(command)


def tower_options(command):
    """`--engine torch|onnxruntime` and `--precision auto|fp32|bf16`: the image tower's path
    (ovml/extract/backbone/engine.py), defaults as ExtractConfig's."""
    from ..config import ExtractConfig
    defaults = {field.name: field.default for field in dataclasses.fields(ExtractConfig)}
    command = click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=defaults["precision"],
                           show_default=True,
                           help="What the image tower computes in. auto: bf16 on a CPU with native bf16 "
                           "(avx512_bf16 or amx_bf16; features within cosine 0.999 of fp32, see the README), "
                           "else fp32; fp16 on CUDA.")(command)
    return click.option("--engine", type=click.Choice(["torch", "onnxruntime"]), default=defaults["engine"],
                        show_default=True,
                        help="The image tower's engine: torch, or onnxruntime on the CPU (fp32; "
                        "pip install 'ovml[onnx]').")(command)


def amp_option(command):
    """`--amp bf16|fp16`: mixed precision for the head on CUDA (ignored, said once, elsewhere)."""
    return click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None,
                        help="Autocast the head in bf16 or fp16 on CUDA (fp16 adds loss scaling); "
                        "on the CPU the head stays float32 and a line says so.")(command)


def resolve_device(gpu: int | None, device: str | None) -> str:
    """The torch device named by `--gpu` or `--device` (cpu when neither is given)."""
    if gpu is not None and device is not None:
        raise click.UsageError("give --gpu or --device, not both")
    return f"cuda:{gpu}" if gpu is not None else (device or "cpu")


def split_list(value: str | None) -> tuple[str, ...] | None:
    """'a, b' -> ('a', 'b'); None or '' -> None."""
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else None


def parse_floats(value: str, option: str) -> tuple[float, ...]:
    """'0,0.5' -> (0.0, 0.5), or a usage error naming `option`."""
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {value!r}", param_hint=option) from None


class AutoOrFloat(click.ParamType):
    """A number, or the word 'auto'."""

    name = "auto|number"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == "auto":
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"expected a number or 'auto', got {value!r}", param, ctx)


AUTO_OR_FLOAT = AutoOrFloat()


class Scales(click.ParamType):
    """Positive numbers separated by commas, or 'none' (an empty tuple)."""

    name = "b1,b2,...|none"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        if value.strip().lower() == "none":
            return ()
        try:
            scales = tuple(float(part) for part in value.split(",") if part.strip())
        except ValueError:
            self.fail(f"expected numbers separated by commas or 'none', got {value!r}", param, ctx)
        if not scales or any(scale <= 0 for scale in scales):
            self.fail(f"scales must be positive numbers, got {value!r}", param, ctx)
        return scales


class HeadsOrPool(click.ParamType):
    """A positive number of attention heads, or 'pool' (CLIP's pool's own count)."""

    name = "n|pool"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int) or value == "pool":
            return value
        if value.isdigit() and int(value) > 0:
            return int(value)
        self.fail(f"expected a positive number or 'pool', got {value!r}", param, ctx)


class Names(click.ParamType):
    """Names separated by commas, or 'none' (an empty tuple)."""

    name = "a,b,...|none"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        return () if value.strip().lower() == "none" else tuple(p.strip() for p in value.split(",") if p.strip())


SCALES, HEADS_OR_POOL, NAMES = Scales(), HeadsOrPool(), Names()
