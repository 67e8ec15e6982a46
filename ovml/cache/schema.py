"""Schema v1 of the cache (design/CACHE.md): names, dtypes and the checks a reader must make."""
from __future__ import annotations

import math

SCHEMA_VERSION = 1
POOL_KEYS = ("positional_embedding", "q_weight", "k_weight", "v_weight",
             "q_bias", "k_bias", "v_bias", "c_weight", "c_bias")
ROW_ARRAYS = ("spatial", "global", "labels", "ids", "ok")
LABEL_ARRAYS = ("names", "ids", "seen", "text")
TRAINING_SPLIT = "train"  # the split training reads; its unseen columns are never annotated
UNSEEN_ON_TRAINING = "0 (not annotated), whatever the dataset's files say: zero-shot training never sees unseen labels"


class CacheError(RuntimeError):
    """A cache that cannot be used as asked; the message names the path, the array and the problem."""


def units_in(rows: int, unit_rows: int) -> int:
    """Number of work units (row chunks) covering `rows` rows."""
    return math.ceil(rows / unit_rows)


def expected_split_shapes(n: int, hw: int, c: int, d: int, num_labels: int, unit_rows: int) -> dict:
    """The shape every array of one split must have."""
    return {"spatial": (n, hw, c), "global": (n, d), "labels": (n, num_labels), "ids": (n,),
            "ok": (n,), "units_done": (units_in(n, unit_rows),)}


def expected_pool_shapes(hw: int, c: int, d: int) -> dict:
    """The shape of each `pool/*` array for a backbone with HW positions, C channels, D dims."""
    square = (c, c)
    return {"positional_embedding": (hw + 1, c), "q_weight": square, "k_weight": square,
            "v_weight": square, "q_bias": (c,), "k_bias": (c,), "v_bias": (c,),
            "c_weight": (d, c), "c_bias": (d,)}
