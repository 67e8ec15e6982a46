"""Head registry: names to classes, so the CLI, training and evaluation build any head by name.

A registered head subclasses `base.Head`: a class attribute `name`, a classmethod
`from_pool(pool, num_heads, text_dim, **options)` that initialises it from CLIP's pool weights,
and `forward(tokens, global_embedding, text)`. A run records the options it built its head with,
and the head is rebuilt with `build_head` over the cache's pool before `head.pt` fills it
(train/saved_head.py).

Heads are registered per backbone kind (the class attribute `backbones`, default ("resnet",)):
one name, e.g. "ovml", may have a ResNet reading and a ViT reading in two classes. `build_head`
picks the reading from the pool it is given (`pooling.pool_kind`).
"""
from __future__ import annotations

from torch import Tensor

from ..cache.pooling import pool_kind, pool_output_dim
from ..cache.schema import BACKBONE_KINDS
from ..errors import UsageError
from .base import Head

HEADS: dict[str, type[Head]] = {}       # name -> the head for ResNet caches
VIT_HEADS: dict[str, type[Head]] = {}   # name -> the head for ViT caches
BY_KIND = {"resnet": HEADS, "vit": VIT_HEADS}


def register(cls: type[Head]) -> type[Head]:
    """Class decorator: make `cls` (a `Head`) buildable by its `name` for each kind in `cls.backbones`."""
    if not issubclass(cls, Head):
        raise TypeError(f"{cls.__name__} is not a Head (heads/base.py); only heads are registered")
    for kind in cls.backbones:
        table = BY_KIND[kind]
        if table.get(cls.name, cls) is not cls:
            raise ValueError(f"a different {kind} head is already registered as {cls.name!r}")
        table[cls.name] = cls
    return cls


def head_class(name: str, kind: str = "resnet") -> type[Head]:
    """The registered class called `name` for a `kind` backbone, or a UsageError (a ValueError)
    saying why not."""
    table = BY_KIND[kind]
    if name not in table:
        known = set(HEADS) | set(VIT_HEADS)
        if name in known:
            raise UsageError(f"head {name!r} has no {BACKBONE_KINDS[kind]} reading "
                             f"(heads for {BACKBONE_KINDS[kind]} caches: {', '.join(sorted(table))})")
        raise UsageError(f"unknown head {name!r} (known: {', '.join(sorted(known))})")
    return table[name]


def build_head(name: str, pool: dict[str, Tensor], num_heads: int, text_dim: int | None = None,
               **options) -> Head:
    """A head initialised from CLIP's pool weights (docs/cache.md `pool/*`, either kind); text_dim
    defaults to the pool's output dimension D."""
    if text_dim is None:
        text_dim = pool_output_dim(pool)
    return head_class(name, pool_kind(pool)).from_pool(pool, num_heads, text_dim, **options)


def has_own_loss(name: str) -> bool:
    """Whether the head brings its paper's training objective (`training_loss`, heads/base.py)."""
    return callable(getattr(head_class(name), "training_loss", None))


def default_contrastive_weight(name: str) -> float:
    """lambda when none is given: 1 (OVML's L_con) for heads trained with the trainer's losses,
    0 for heads with their own objective, which their papers train without L_con."""
    return 0.0 if has_own_loss(name) else 1.0
