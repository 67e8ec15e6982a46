"""Schema v1 of the cache (docs/cache.md): names, dtypes and the checks a reader must make."""
from __future__ import annotations

import math

from ..errors import OvmlError

SCHEMA_VERSION = 1
POOL_KEYS = ("positional_embedding", "q_weight", "k_weight", "v_weight",
             "q_bias", "k_bias", "v_bias", "c_weight", "c_bias")
VIT_POOL_KEYS = ("ln_1_weight", "ln_1_bias", "in_proj_weight", "in_proj_bias", "out_proj_weight",
                 "out_proj_bias", "ln_2_weight", "ln_2_bias", "mlp_fc_weight", "mlp_fc_bias",
                 "mlp_proj_weight", "mlp_proj_bias", "ln_post_weight", "ln_post_bias", "proj")
BACKBONE_KINDS = {"resnet": "ResNet", "vit": "Vision Transformer"}  # backbone.kind -> its name in messages
ROW_ARRAYS = ("spatial", "global", "labels", "ids", "ok")
LABEL_ARRAYS = ("names", "ids", "seen", "text")
TRAINING_SPLIT = "train"  # the split training reads; its unseen columns are never annotated
UNSEEN_ON_TRAINING = "0 (not annotated), whatever the dataset's files say: zero-shot training never sees unseen labels"


class CacheError(OvmlError, RuntimeError):
    """A cache that cannot be used as asked; the message names the path, the array and the problem."""


def units_in(rows: int, unit_rows: int) -> int:
    """Number of work units (row chunks) covering `rows` rows."""
    return math.ceil(rows / unit_rows)


def backbone_kind(backbone: dict) -> str:
    """`backbone.kind`: "resnet" (also when absent, as in caches written before ViTs) or "vit"."""
    return backbone.get("kind", "resnet")


def expected_split_shapes(n: int, hw: int, c: int, d: int, num_labels: int, unit_rows: int,
                          kind: str = "resnet") -> dict:
    """The shape every array of one split must have (a ViT split also has `cls`, (N, W))."""
    shapes = {"spatial": (n, hw, c), "global": (n, d), "labels": (n, num_labels), "ids": (n,),
              "ok": (n,), "units_done": (units_in(n, unit_rows),)}
    if kind == "vit":
        shapes["cls"] = (n, c)
    return shapes


def expected_pool_shapes(hw: int, c: int, d: int) -> dict:
    """The shape of each `pool/*` array for a backbone with HW positions, C channels, D dims."""
    square = (c, c)
    return {"positional_embedding": (hw + 1, c), "q_weight": square, "k_weight": square,
            "v_weight": square, "q_bias": (c,), "k_bias": (c,), "v_bias": (c,),
            "c_weight": (d, c), "c_bias": (d,)}


def vit_pool_shapes(width: int, embed_dim: int) -> dict:
    """The shape of each `pool/*` array of a ViT cache with transformer width W and joint dimension D."""
    vector = (width,)
    return {"ln_1_weight": vector, "ln_1_bias": vector, "in_proj_weight": (3 * width, width),
            "in_proj_bias": (3 * width,), "out_proj_weight": (width, width), "out_proj_bias": vector,
            "ln_2_weight": vector, "ln_2_bias": vector, "mlp_fc_weight": (4 * width, width),
            "mlp_fc_bias": (4 * width,), "mlp_proj_weight": (width, 4 * width), "mlp_proj_bias": vector,
            "ln_post_weight": vector, "ln_post_bias": vector, "proj": (width, embed_dim)}
