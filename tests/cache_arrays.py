"""Test helpers that read caches independently of ovml's reader."""
from __future__ import annotations

import math

import numpy as np

from ovml.cache.store import open_store


def all_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of a cache by its path in the tree (strings as str arrays)."""
    store = open_store(path, "r")
    arrays = {}
    keys = [f"labels/{k}" for k in ("names", "ids", "seen", "text")]
    keys += [f"pool/{k}" for k in store.children("pool")]
    for split in store.children("splits"):
        keys += [f"splits/{split}/{k}" for k in store.children(f"splits/{split}")]
    for key in keys:
        value = store.array(key)
        if value.dtype.kind in "OSUT":
            arrays[key] = np.array(store.read_strings(key))
        else:
            arrays[key] = np.asarray(value[...])
    store.close()
    return arrays


def assert_same_arrays(left: dict, right: dict) -> None:
    assert sorted(left) == sorted(right)
    for key in left:
        a, b = left[key], right[key]
        assert a.shape == b.shape and a.dtype == b.dtype, key
        if a.dtype.kind == "f":
            assert a.tobytes() == b.tobytes(), f"{key} differs"
        else:
            assert np.array_equal(a, b), f"{key} differs"


def clip_attention_pool(tokens: np.ndarray, pool: dict, heads: int) -> np.ndarray:
    """CLIP's AttentionPool2d in float64 numpy: mean token as the query over [mean; tokens] + p."""
    x = tokens.astype(np.float64)                                             # (N, HW, C)
    x = np.concatenate([x.mean(1, keepdims=True), x], 1) + pool["positional_embedding"][None]
    q = x[:, :1] @ pool["q_weight"].T + pool["q_bias"]                         # (N, 1, C)
    k = x @ pool["k_weight"].T + pool["k_bias"]                                # (N, T, C)
    v = x @ pool["v_weight"].T + pool["v_bias"]
    n, t, c = k.shape
    dh = c // heads
    q = q.reshape(n, 1, heads, dh).transpose(0, 2, 1, 3)                       # (N, h, 1, dh)
    k = k.reshape(n, t, heads, dh).transpose(0, 2, 1, 3)                       # (N, h, T, dh)
    v = v.reshape(n, t, heads, dh).transpose(0, 2, 1, 3)
    logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)                       # (N, h, 1, T)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    pooled = (weights @ v).transpose(0, 2, 1, 3).reshape(n, c)                 # (N, C)
    return pooled @ pool["c_weight"].T + pool["c_bias"]


def assert_cache_checks(path: str) -> None:
    """`ovml check PATH` finds no problem (the product's own schema check)."""
    from click.testing import CliRunner

    from ovml.cli import main
    result = CliRunner().invoke(main, ["check", path, "--json"])
    assert result.exit_code == 0, result.output
