"""Scores from cached features: CLIP-ML, dense CLIP and trained heads at any interpolation alpha.

For a head, every alpha comes from three (N, L) quantities computed once: with o' = o/|o|,
g' = g/|g|, f = (1 - a) o' + a g', cos(f, t) = ((1 - a) o'.t + a g'.t) / |f| and
|f|^2 = (1 - a)^2 + a^2 + 2 a (1 - a) o'.g'. A sweep therefore costs one head forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..heads.baselines import dense_clip_scores

TEXT_BLOCK = 512  # label columns per head forward, bounding (N, block, D) feature memory


@dataclass
class HeadParts:
    """The per-(image, label) quantities every alpha is computed from."""

    head_text: np.ndarray    # (N, L) o'.t
    global_text: np.ndarray  # (N, L) g'.t
    head_global: np.ndarray  # (N, L) o'.g'

    def scores(self, alpha: float) -> np.ndarray:
        norm = np.sqrt(np.maximum((1 - alpha) ** 2 + alpha ** 2 + 2 * alpha * (1 - alpha) * self.head_global, 1e-12))
        return ((1 - alpha) * self.head_text + alpha * self.global_text) / norm


def normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def head_parts(head: torch.nn.Module, tokens: torch.Tensor, global_embedding: torch.Tensor,
               text: torch.Tensor) -> HeadParts:
    """o'.t, g'.t and o'.g' for a batch, over label blocks of TEXT_BLOCK columns."""
    g = normalise(global_embedding)                                           # (N, D)
    head_text, head_global = [], []
    for start in range(0, len(text), TEXT_BLOCK):
        block = text[start:start + TEXT_BLOCK]                                # (l, D)
        o = normalise(head(tokens, global_embedding, block))                  # (N, l, D)
        head_text.append((o * block[None]).sum(-1))                           # (N, l)
        head_global.append((o * g[:, None]).sum(-1))
    global_text = g @ text.T                                                  # (N, L)
    as_numpy = lambda parts: torch.cat(parts, 1).float().cpu().numpy()
    return HeadParts(as_numpy(head_text), global_text.float().cpu().numpy(), as_numpy(head_global))


@torch.no_grad()
def clip_ml_scores(global_embedding: torch.Tensor, text: torch.Tensor) -> np.ndarray:
    """CLIP-ML: cos(g, t_j)."""
    return (normalise(global_embedding) @ text.T).float().cpu().numpy()


@torch.no_grad()
def baseline_scores(name: str, tokens: torch.Tensor, global_embedding: torch.Tensor, text: torch.Tensor,
                    pool: dict, dense_top_k: int) -> np.ndarray:
    if name == "clip-ml":
        return clip_ml_scores(global_embedding, text)
    if name == "dense":
        return dense_clip_scores(tokens, pool, text, top_k=dense_top_k).float().cpu().numpy()
    raise ValueError(f"unknown baseline {name!r} (known: clip-ml, dense)")
