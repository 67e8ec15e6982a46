"""What every command shares: one-line errors, the device options, list parsing, and the defaults
of the config dataclasses (the only place they are written) in the form the options take them."""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterable

import click
from click.core import ParameterSource

from ..errors import OvmlError, os_reason


def default(config: type, name: str):
    """The default of field `name` of the config dataclass `config`: what an option carrying that
    field defaults to, so that the command line and the library cannot drift apart."""
    for field in dataclasses.fields(config):
        if field.name == name:
            if field.default is not dataclasses.MISSING:
                return field.default
            raise TypeError(f"{config.__name__}.{name} has no default; the command computes it")
    raise TypeError(f"{config.__name__} has no field {name!r}")


def comma_list(values: tuple | None) -> str | None:
    """A tuple as an option writes it: ('a', 'b') -> 'a,b', (0.0, 0.5) -> '0,0.5', () -> 'none'."""
    if values is None:
        return None
    return ",".join(f"{value:g}" if isinstance(value, float) else str(value) for value in values) or "none"


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
            raise click.ClickException(f"{where}{os_reason(err)}") from err
    return wrapper


def device_options(config: type):
    """`--gpu N` and `--device cpu|cuda:N` (resolved with `resolve_device`), defaulting to
    `config`'s device."""
    def decorate(command):
        command = click.option("--device", default=default(config, "device"), show_default=True,
                               help="torch device: cpu or cuda:N.")(command)
        return click.option("--gpu", type=int, default=None, help="Use cuda:N (instead of --device).")(command)
    return decorate


def lock_option(config: type):
    """`--lock/--no-lock`: whether a writer holds its lock (ovml/lock.py); --no-lock is for file
    systems without locks, on the user's word that no other process writes the same output."""
    return click.option("--lock/--no-lock", default=default(config, "lock"), show_default=True,
                        help="Hold the output's writer lock, so a second writer is refused; --no-lock for "
                        "file systems without locks, when nothing else writes it.")


def tower_options(config: type):
    """`--engine torch|onnxruntime` and `--tower-precision auto|fp32|bf16`: the image tower's path
    (extract/backbone/engine.py), defaulting to `config`'s."""
    from ..config import TOWER_ENGINES, TOWER_PRECISIONS

    def decorate(command):
        command = click.option("--tower-precision", type=click.Choice(TOWER_PRECISIONS),
                               default=default(config, "tower_precision"), show_default=True,
                               help="What the image tower computes in. auto: bf16 on a CPU with native bf16 "
                               "(avx512_bf16 or amx_bf16; features within cosine 0.999 of fp32, see the "
                               "README), else fp32; fp16 on CUDA.")(command)
        return click.option("--engine", type=click.Choice(TOWER_ENGINES), default=default(config, "engine"),
                            show_default=True, help="The image tower's engine: torch, or onnxruntime on the CPU "
                            "(fp32; pip install 'ovml[onnx]').")(command)
    return decorate


def amp_option(config: type):
    """`--amp bf16|fp16`: mixed precision for the head on CUDA (ignored, said once, elsewhere)."""
    return click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=default(config, "amp"),
                        help="Autocast the head in bf16 or fp16 on CUDA (fp16 adds loss scaling); "
                        "on the CPU the head stays float32 and a line says so.")


def resolve_device(gpu: int | None, device: str) -> str:
    """The torch device named by `--gpu` or `--device` (--device's default when neither is given)."""
    given = click.get_current_context().get_parameter_source("device")
    if gpu is not None and given not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
        raise click.UsageError("give --gpu or --device, not both")
    return f"cuda:{gpu}" if gpu is not None else device


def dataset_names() -> list[str]:
    """The dataset adapters' names (extract/datasets ADAPTERS)."""
    from ..extract.datasets import ADAPTERS
    return list(ADAPTERS)


def head_names() -> list[str]:
    """The registered heads' names (heads HEADS, then any that only a ViT reading has)."""
    from ..heads import HEADS, VIT_HEADS
    return list(dict.fromkeys([*HEADS, *VIT_HEADS]))


def default_prompt() -> str:
    """CLIP's own template, used when no --prompts is given (extract/text.py DEFAULT_PROMPTS)."""
    from ..extract.text import DEFAULT_PROMPTS
    return " ".join(repr(template) for template in DEFAULT_PROMPTS)


class RegistryChoice(click.Choice):
    """One of a registry's names, read when first needed: the registries import numpy or torch,
    which `import ovml.cli` must not."""

    def __init__(self, names: Callable[[], Iterable[str]]):
        self.names, self.case_sensitive = names, True

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self.names())


class DefaultFrom(click.Option):
    """An option whose help ends with `[default: ...]` written, when help is shown, by
    `default_text` from a library table that imports torch (which `import ovml.cli` must not)."""

    def __init__(self, *args, default_text: Callable[[], str], **kwargs):
        super().__init__(*args, **kwargs)
        self.default_text = default_text

    def get_help_record(self, ctx):
        record = super().get_help_record(ctx)
        return record and (record[0], f"{record[1]}  [default: {self.default_text()}]")


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


class ThresholdType(click.ParamType):
    """A number, or a word naming a rule (mcut, auto, auto-f1)."""

    name = "number|mcut|auto|auto-f1"

    def convert(self, value, param, ctx):
        from ..tag.rules import THRESHOLD_WORDS
        if isinstance(value, float) or str(value).strip().lower() in THRESHOLD_WORDS:
            return value if isinstance(value, float) else str(value).strip().lower()
        try:
            return float(value)
        except ValueError:
            self.fail(f"expected a number or one of {', '.join(THRESHOLD_WORDS)}, got {value!r}", param, ctx)
