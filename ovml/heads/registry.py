"""Head registry: names to classes, so the CLI, training and evaluation build any head by name.

A head class has a class attribute `name`, a classmethod `from_pool(pool, num_heads, text_dim,
**options)` that initialises it from CLIP's attention-pool weights, a constructor taking only
JSON-able shape options, and an attribute `options` holding those constructor arguments, so a
checkpoint (tensors only) loads into `head_from_options(name, options)` without the pool.
"""
from __future__ import annotations

from torch import Tensor, nn

HEADS: dict[str, type[nn.Module]] = {}


def register(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make `cls` buildable by its `name`."""
    if HEADS.get(cls.name, cls) is not cls:
        raise ValueError(f"a different head is already registered as {cls.name!r}")
    HEADS[cls.name] = cls
    return cls


def head_class(name: str) -> type[nn.Module]:
    """The registered class called `name`, or a ValueError listing the known names."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r} (known: {', '.join(sorted(HEADS))})")
    return HEADS[name]


def build_head(name: str, pool: dict[str, Tensor], num_heads: int, text_dim: int | None = None,
               **options) -> nn.Module:
    """A head initialised from CLIP's pool weights (CACHE.md `pool/*`); text_dim defaults to
    the pool's output dimension D."""
    if text_dim is None:
        text_dim = pool["c_weight"].shape[0]
    return head_class(name).from_pool(pool, num_heads, text_dim, **options)


def head_from_options(name: str, options: dict) -> nn.Module:
    """An untrained head with the shapes `options` (a head's `.options`) describe, ready for
    `load_state_dict`: rebuilds a checkpoint without the pool."""
    return head_class(name)(**options)


def has_own_loss(name: str) -> bool:
    """Whether the head brings its paper's training objective (`training_loss`, heads/base.py)."""
    return callable(getattr(head_class(name), "training_loss", None))


def default_contrastive_weight(name: str) -> float:
    """lambda when none is given: 1 (OVML's L_con) for heads trained with the trainer's losses,
    0 for heads with their own objective, which their papers train without L_con."""
    return 0.0 if has_own_loss(name) else 1.0
