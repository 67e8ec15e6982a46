"""The planted world written as a ViT cache (`PlantedWorld(backbone_kind="vit")`).

The same images (tokens, objects, labels) as the ResNet-shaped world; only CLIP's tail differs.
Here it is a ViT's last residual block (docs/cache.md, "Vision Transformer backbones") for which the
invariant holds by construction: `global` is that block applied to [cls; X'], then ln_post, proj.
- ln_1, ln_2, ln_post: identity affine (weight 1, bias 0); q, k, v and out_proj: identity, so the
  class token's query looks for tokens like itself and the keys and values carry the planted map;
- the MLP: small random weights (it is there, and the invariant exercises it, without hiding
  the planted directions);
- proj = P (W x D), the planted visual map, as c_proj = P^T in the ResNet-shaped world;
- the class token entering the block: the image's mean token, rescaled to
  `class_token_weight` x sqrt(W) (the norm of a LayerNorm'd token), a global summary in which,
  as in the ResNet world, small objects are diluted.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..cache.pooling import vit_pool_global

if TYPE_CHECKING:
    from .planted import PlantedWorld

MLP_STD = 0.02  # std of the MLP's random weights


def planted_vit_pool(world: PlantedWorld, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """The last block, ln_post and proj as `pool/*` arrays (float32) and the visual map P (W, D)."""
    gaussian = rng.standard_normal((world.channels, world.embed_dim))
    visual_map, _ = np.linalg.qr(gaussian)                                    # (W, D) orthonormal columns
    width = world.channels
    ones, zeros = np.ones(width), np.zeros(width)
    pool = {"ln_1_weight": ones, "ln_1_bias": zeros, "ln_2_weight": ones, "ln_2_bias": zeros,
            "ln_post_weight": ones, "ln_post_bias": zeros,
            "in_proj_weight": np.concatenate([np.eye(width)] * 3), "in_proj_bias": np.zeros(3 * width),
            "out_proj_weight": np.eye(width), "out_proj_bias": zeros,
            "mlp_fc_weight": rng.normal(0, MLP_STD, (4 * width, width)), "mlp_fc_bias": np.zeros(4 * width),
            "mlp_proj_weight": rng.normal(0, MLP_STD, (width, 4 * width)), "mlp_proj_bias": zeros,
            "proj": visual_map}
    return {key: value.astype(np.float32) for key, value in pool.items()}, visual_map


def class_tokens(tokens: np.ndarray, weight: float) -> np.ndarray:
    """Each image's mean token rescaled to norm weight x sqrt(W): (n, HW, W) -> (n, W)."""
    mean = tokens.mean(axis=1)                                                 # (n, W)
    norm = np.linalg.norm(mean, axis=1, keepdims=True).clip(1e-12)
    return mean / norm * weight * np.sqrt(tokens.shape[2])


def vit_rows(world: PlantedWorld, tokens: np.ndarray, pool: dict) -> tuple[np.ndarray, np.ndarray]:
    """The rows a ViT cache stores for planted tokens (n, HW, W): [cls; X'] (n, 1+HW, W) float16
    and `global` (n, D), the pool applied to those float16 tokens (float32, as CLIP computes)."""
    cls = class_tokens(tokens, world.class_token_weight)
    stored = np.concatenate([cls[:, None], tokens], axis=1).astype(np.float16)  # (n, 1+HW, W)
    as_tensors = {key: torch.from_numpy(value) for key, value in pool.items()}
    x = torch.from_numpy(stored.astype(np.float32))
    global_embedding = vit_pool_global(x[:, 0], x[:, 1:], as_tensors, world.num_heads).numpy()
    return stored, global_embedding
