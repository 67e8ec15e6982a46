"""The frozen CLIP Vision Transformer (ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px).

A ViT has no attention pool: its image embedding is the class token after the last residual
block, `ln_post` and `proj`. So its "pool" is that last block (docs/cache.md, "Vision Transformer
backbones") and X' is what enters it: the patch tokens, with the class token beside them. One
forward pass gives both and the global embedding; the last block runs for the class token only,
the one output CLIP reads.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from .base import Backbone


class VitBackbone(Backbone):
    """A loaded CLIP ViT. `encode` returns [cls; X'] (N, 1+HW, W): the tokens a head reads,
    class token first; the cache stores token 0 as `cls` and the rest as `spatial`."""

    kind: ClassVar[str] = "vit"

    @property
    def grid(self) -> tuple[int, int]:
        side = round((self.visual.positional_embedding.shape[0] - 1) ** 0.5)
        return side, side

    @property
    def channels(self) -> int:
        return int(self.visual.conv1.weight.shape[0])

    @property
    def embed_dim(self) -> int:
        return int(self.visual.proj.shape[1])

    @property
    def last_block(self) -> torch.nn.Module:
        """The residual block that is this family's pool."""
        return self.visual.transformer.resblocks[-1]

    @property
    def num_heads(self) -> int:
        return int(self.last_block.attn.num_heads)

    def pool_weights(self) -> dict[str, np.ndarray]:
        """The last residual block, ln_post and proj as float32 arrays, named as in `pool/*`."""
        block, visual = self.last_block, self.visual
        arrays = {"ln_1_weight": block.ln_1.weight, "ln_1_bias": block.ln_1.bias,
                  "in_proj_weight": block.attn.in_proj_weight, "in_proj_bias": block.attn.in_proj_bias,
                  "out_proj_weight": block.attn.out_proj.weight, "out_proj_bias": block.attn.out_proj.bias,
                  "ln_2_weight": block.ln_2.weight, "ln_2_bias": block.ln_2.bias,
                  "mlp_fc_weight": block.mlp.c_fc.weight, "mlp_fc_bias": block.mlp.c_fc.bias,
                  "mlp_proj_weight": block.mlp.c_proj.weight, "mlp_proj_bias": block.mlp.c_proj.bias,
                  "ln_post_weight": visual.ln_post.weight, "ln_post_bias": visual.ln_post.bias,
                  "proj": visual.proj}
        return {key: value.detach().float().cpu().numpy() for key, value in arrays.items()}

    def tokens_and_global(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[cls; X'] entering the last block (N, 1+HW, W) and CLIP's global embedding (N, D),
        from one forward pass (as `VisionTransformer.forward`, split before the last block)."""
        visual = self.visual
        x = visual.conv1(x)                                                    # (N, W, g, g)
        x = x.flatten(2).permute(0, 2, 1)                                      # (N, HW, W)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)     # (N, 1, W)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (N, 1+HW, W)
        x = visual.ln_pre(x).permute(1, 0, 2)                                  # (1+HW, N, W), clip's layout
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        tokens = x.permute(1, 0, 2)                                            # (N, 1+HW, W)
        block = self.last_block
        with self.pool_precision():
            x = x.to(self.dtype)
            keys = block.ln_1(x)                                               # (1+HW, N, W)
            y = x[:1] + block.attn(keys[:1], keys, keys, need_weights=False)[0]  # (1, N, W): the class token
            y = y + block.mlp(block.ln_2(y))
            global_embedding = visual.ln_post(y[0]) @ visual.proj              # (N, D)
        return tokens, global_embedding
