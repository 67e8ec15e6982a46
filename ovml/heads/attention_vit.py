"""The OVML head read through a CLIP ViT's last residual block (docs/method.md, "Vision
Transformer backbones").

The same substitution the paper makes in the ResNet's attention pool: each label's text becomes
the query of the last block's attention in place of the class token's, q_j = F_q(t_j); keys and
values come from ln_1 of the 1 + HW tokens [cls; X']. Two readings of the output:
- residual: r_j = cls + out_proj(attn_j), o_j = ln_post(r_j + mlp(ln_2(r_j))) @ proj. With CLIP's
  own class-token query this is exactly CLIP's `global`.
- direct (MaskCLIP's reading, the default): o_j = ln_post(out_proj(attn_j)) @ proj, no residual,
  no MLP. On the planted ViT world it learns where residual does not, and at ViT-B/16 shapes its
  step is several times cheaper (README "Vision Transformers").
F_q, the key and value projections and out_proj train; ln_1, ln_2, the MLP, ln_post and proj
stay CLIP's (frozen).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..cache.pooling import LAYER_NORM_EPS, quick_gelu
from ..errors import UsageError
from .attention import FORMULATIONS, fused_output, literal_output
from .base import Head
from .registry import register

OUTPUTS = ("residual", "direct")
DEFAULT_OUTPUT = "direct"  # measured on the planted ViT world: README "Vision Transformers"
PINV_REFUSAL = ("--q-init pinv has no Vision Transformer meaning: it inverts the linear c_proj that "
                "ends a ResNet's pool, while a ViT's output passes ln_post (a LayerNorm), which has no "
                "pseudo-inverse; use --q-init random")


def layer_norm(width: int) -> nn.LayerNorm:
    return nn.LayerNorm(width, eps=LAYER_NORM_EPS)


@register
class VitOVMLHead(Head):
    """Every label's text embedding queries [cls; X'] through (a copy of) a CLIP ViT's last block.

    Constructor arguments are shapes and switches only (`self.options`), so a saved state_dict
    loads into `VitOVMLHead(**options)` without the pool. `formulation` picks how out_proj is
    applied, as in the ResNet head ("auto": fewer multiply-adds for the call's shapes).
    """

    name = "ovml"
    backbones = ("vit",)

    def __init__(self, width: int, embed_dim: int, num_heads: int, vit_output: str = DEFAULT_OUTPUT,
                 formulation: str = "auto"):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width ({width}) must be divisible by num_heads ({num_heads})")
        if vit_output not in OUTPUTS:
            raise UsageError(f"--vit-output must be one of {', '.join(OUTPUTS)}, not {vit_output!r}")
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, not {formulation!r}")
        self.num_heads, self.vit_output, self.formulation = num_heads, vit_output, formulation
        self.q_proj = nn.Linear(embed_dim, width)                # F_q
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.ln_1, self.ln_post = layer_norm(width), layer_norm(width)
        self.proj = nn.Parameter(torch.zeros(width, embed_dim))
        frozen = [self.ln_1, self.ln_post, self.proj]
        if vit_output == "residual":
            self.ln_2 = layer_norm(width)
            self.mlp_fc = nn.Linear(width, 4 * width)
            self.mlp_proj = nn.Linear(4 * width, width)
            frozen += [self.ln_2, self.mlp_fc, self.mlp_proj]
        for part in frozen:
            part.requires_grad_(False)

    @property
    def options(self) -> dict:
        """The constructor arguments: `VitOVMLHead(**head.options)` has this head's shapes."""
        return {"width": self.k_proj.in_features, "embed_dim": self.q_proj.in_features,
                "num_heads": self.num_heads, "vit_output": self.vit_output, "formulation": self.formulation}

    @classmethod
    def from_pool(cls, pool: dict[str, Tensor], num_heads: int, text_dim: int, q_init: str = "random",
                  vit_output: str = DEFAULT_OUTPUT, formulation: str = "auto") -> VitOVMLHead:
        """The last block's k, v and out projections, LayerNorms, MLP, ln_post and proj copied from
        the ViT pool (docs/cache.md); F_q random (nn.Linear's init, from torch's global RNG)."""
        if q_init == "pinv":
            raise UsageError(PINV_REFUSAL)
        if q_init != "random":
            raise ValueError(f"q_init must be 'random' for a ViT, not {q_init!r}")
        width, embed_dim = pool["proj"].shape
        if text_dim != embed_dim:
            raise ValueError(f"text dimension {text_dim} differs from the pool's output dimension {embed_dim}")
        head = cls(width, embed_dim, num_heads, vit_output, formulation).to(pool["proj"].device)
        _, k_weight, v_weight = pool["in_proj_weight"].chunk(3)
        _, k_bias, v_bias = pool["in_proj_bias"].chunk(3)
        copies = {"k_proj.weight": k_weight, "k_proj.bias": k_bias, "v_proj.weight": v_weight,
                  "v_proj.bias": v_bias, "out_proj.weight": pool["out_proj_weight"],
                  "out_proj.bias": pool["out_proj_bias"], "proj": pool["proj"]}
        names = ("ln_1", "ln_post") + (("ln_2",) if vit_output == "residual" else ())
        copies |= {f"{name}.{part}": pool[f"{name}_{part}"] for name in names for part in ("weight", "bias")}
        if vit_output == "residual":
            copies |= {f"{name}.{part}": pool[f"{name}_{part}"] for name in ("mlp_fc", "mlp_proj")
                       for part in ("weight", "bias")}
        with torch.no_grad():
            for key, value in copies.items():
                head.get_parameter(key).copy_(value)
        return head

    def attention(self, tokens: Tensor, query: Tensor) -> Tensor:
        """Per-head softmax over the 1 + HW tokens of q . k / sqrt(W/h): (N, L, h, T).

        tokens: ln_1 of [cls; X'], (N, T, W); query: (L, W) shared or (N, L, W) per image.
        """
        n, t, width = tokens.shape
        per_head = width // self.num_heads
        keys = self.k_proj(tokens).view(n, t, self.num_heads, per_head)              # (N, T, h, W/h)
        query = (query / math.sqrt(per_head)).unflatten(-1, (self.num_heads, per_head))  # ([N,] L, h, W/h)
        pattern = "nlhc,nthc->nlht" if query.dim() == 4 else "lhc,nthc->nlht"
        return torch.einsum(pattern, query, keys).softmax(dim=-1)                    # (N, L, h, T)

    def mlp(self, residual: Tensor) -> Tensor:
        """The last block's MLP branch: mlp(ln_2(r)), (..., W) -> (..., W)."""
        return self.mlp_proj(quick_gelu(self.mlp_fc(self.ln_2(residual))))

    def attend(self, spatial: Tensor, query: Tensor) -> Tensor:
        """Class-specific features for raw W-space queries ((L, W) or (N, L, W)): (N, L, D).

        `spatial` is [cls; X'] (N, 1+HW, W). `forward` is attend(spatial, F_q(text)); with CLIP's
        own class-token query q(ln_1(cls)) and the residual reading this is CLIP's `global`.
        """
        tokens = self.ln_1(spatial)                                                  # (N, T, W)
        attn = self.attention(tokens, query)
        values = self.v_proj(tokens)                                                 # (N, T, W)
        output = self._output(attn, values)                                          # (N, L, W): out_proj(attn_j)
        if self.vit_output == "residual":
            output = spatial[:, :1] + output                                         # r_j = cls + out_proj(attn_j)
            output = output + self.mlp(output)
        return self.ln_post(output) @ self.proj                                      # (N, L, D)

    def _output(self, attn: Tensor, values: Tensor) -> Tensor:
        """out_proj(sum_i a_ji v_i) per (image, label), in the cheaper formulation for these shapes."""
        labels, tokens, width = attn.shape[1], values.shape[1], values.shape[2]
        if self.formulation == "auto":
            fused = tokens * width * width + labels * self.num_heads * tokens * width
            literal = labels * tokens * width + labels * width * width
            use_fused = fused < literal
        else:
            use_fused = self.formulation == "fused"
        return (fused_output if use_fused else literal_output)(attn, values, self.out_proj)

    def forward(self, tokens: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """o_ij for images [cls; X'] (N, 1+HW, W) and labels (L, D): (N, L, D), not normalised.

        global_embedding is part of the head interface and unused here.
        """
        return self.attend(tokens, self.q_proj(text))

    def attention_maps(self, spatial: Tensor, global_embedding: Tensor, text: Tensor) -> Tensor:
        """Where each label looks over the patch grid: attention, mean over heads, without the
        class token's share (N, L, HW); rows sum to at most 1."""
        attn = self.attention(self.ln_1(spatial), self.q_proj(text)).mean(dim=2)    # (N, L, 1+HW)
        return attn[..., 1:]
