"""A trained head as an ONNX graph: the image's tokens (N, T, C), CLIP's global feature (N, D),
the labels' text embeddings (L, D) and alpha () in; the scores (N, L) out, and where the head
draws them its attention maps (N, L, HW). Batch and label axes are dynamic.

The scores are `ovml predict`'s: cos(f, t) with f = (1 - alpha) o' + alpha g', o' and g' the
unit head output and global feature (evaluation/scoring.py's `HeadParts.scores`, in torch here so
that it is part of the graph).
"""
from __future__ import annotations

import torch
from torch import nn

from ..extract.backbone.onnx_tower import export_graph


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class HeadGraph(nn.Module):
    """A head's scores at any alpha (and its attention maps, with `attention`) as one module."""

    def __init__(self, head: nn.Module, attention: bool):
        super().__init__()
        self.head, self.attention = head, attention

    def forward(self, tokens: torch.Tensor, global_embedding: torch.Tensor, text: torch.Tensor,
                alpha: torch.Tensor):
        g = unit(global_embedding)                                              # (N, D)
        o = unit(self.head(tokens, global_embedding, text))                     # (N, L, D)
        head_text = (o * text[None]).sum(-1)                                    # (N, L) o'.t
        head_global = (o * g[:, None]).sum(-1)                                  # (N, L) o'.g'
        global_text = g @ text.T                                                # (N, L) g'.t
        norm = ((1 - alpha) ** 2 + alpha ** 2 + 2 * alpha * (1 - alpha) * head_global).clamp_min(1e-12).sqrt()
        scores = ((1 - alpha) * head_text + alpha * global_text) / norm
        if not self.attention:
            return scores
        return scores, self.head.attention_maps(tokens, global_embedding, text)  # (N, L), (N, L, HW)


def export_head(head: nn.Module, attention: bool, tokens: torch.Tensor, global_embedding: torch.Tensor,
                text: torch.Tensor, path: str) -> list[str]:
    """Write the head's graph, traced on example features of two images (the tower's) and the
    labels' text (its count picks the head's cheaper formulation for that many labels; any other
    count still runs); returns the output names."""
    outputs = ["scores", "attention"] if attention else ["scores"]
    axes = {"tokens": {0: "images"}, "global": {0: "images"}, "text": {0: "labels"},
            "scores": {0: "images", 1: "labels"}, "attention": {0: "images", 1: "labels"}}
    export_graph(HeadGraph(head, attention).eval(), (tokens, global_embedding, text, torch.tensor(0.0)), path,
                 ["tokens", "global", "text", "alpha"], outputs, {k: v for k, v in axes.items()
                                                                  if k not in ("scores", "attention") or k in outputs})
    return outputs
