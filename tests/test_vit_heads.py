"""The heads and dense CLIP read through a ViT's last block, on a small random ViT pool
(W = 128, 2 heads, D = 32, 3 x 3 patches), checked against openai CLIP's own modules."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from ovml.cache.pooling import vit_pool_global
from ovml.cache.schema import vit_pool_shapes
from ovml.errors import UsageError
from ovml.heads.attention import OVMLHead
from ovml.heads.attention_vit import PINV_REFUSAL, VitOVMLHead
from ovml.heads.baselines import dense_clip_scores
from ovml.heads.linear import LinearHead
from ovml.heads.registry import HEADS, build_head

W, D, GRID, HEADS_N, N, L = 128, 32, 3, 2, 5, 7
HW = GRID * GRID


@pytest.fixture
def pool() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    weights = {key: torch.randn(*shape, generator=g) * (0.1 if len(shape) == 1 else shape[-1] ** -0.5)
               for key, shape in vit_pool_shapes(W, D).items()}
    for name in ("ln_1", "ln_2", "ln_post"):
        weights[f"{name}_weight"] += 1.0
    return weights


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(N, 1 + HW, W, generator=g) * 2                         # [cls; X']
    global_embedding = torch.randn(N, D, generator=g)
    text = F.normalize(torch.randn(L, D, generator=g), dim=-1)
    return tokens, global_embedding, text


def clip_last_block(pool: dict[str, torch.Tensor]) -> torch.nn.Module:
    """openai CLIP's ResidualAttentionBlock holding the pool's weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip.model
    block = clip.model.ResidualAttentionBlock(W, HEADS_N).eval()
    names = {"ln_1.weight": "ln_1_weight", "ln_1.bias": "ln_1_bias", "attn.in_proj_weight": "in_proj_weight",
             "attn.in_proj_bias": "in_proj_bias", "attn.out_proj.weight": "out_proj_weight",
             "attn.out_proj.bias": "out_proj_bias", "ln_2.weight": "ln_2_weight", "ln_2.bias": "ln_2_bias",
             "mlp.c_fc.weight": "mlp_fc_weight", "mlp.c_fc.bias": "mlp_fc_bias",
             "mlp.c_proj.weight": "mlp_proj_weight", "mlp.c_proj.bias": "mlp_proj_bias"}
    block.load_state_dict({key: pool[name] for key, name in names.items()})
    return block


def clip_global(tokens: torch.Tensor, pool: dict[str, torch.Tensor]) -> torch.Tensor:
    """CLIP's own tail: the whole last block over every token, class token out, ln_post, proj."""
    with torch.no_grad():
        out = clip_last_block(pool)(tokens.permute(1, 0, 2)).permute(1, 0, 2)     # (N, T, W), seq-first inside
        cls = F.layer_norm(out[:, 0], (W,), pool["ln_post_weight"], pool["ln_post_bias"], 1e-5)
    return cls @ pool["proj"]


def clip_class_query(tokens: torch.Tensor, pool: dict[str, torch.Tensor]) -> torch.Tensor:
    """CLIP's own query: q(ln_1(cls)), one per image: (N, 1, W)."""
    normed = F.layer_norm(tokens[:, 0], (W,), pool["ln_1_weight"], pool["ln_1_bias"], 1e-5)
    q_weight, q_bias = pool["in_proj_weight"][:W], pool["in_proj_bias"][:W]
    return F.linear(normed, q_weight, q_bias)[:, None]


def test_vit_pool_global_matches_openai_residual_block(pool, inputs):
    tokens = inputs[0]
    expected = clip_global(tokens, pool)
    torch.testing.assert_close(vit_pool_global(tokens[:, 0], tokens[:, 1:], pool, HEADS_N), expected,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("formulation", ["literal", "fused"])
def test_residual_head_with_the_class_token_query_is_clip_global(pool, inputs, formulation):
    tokens = inputs[0]
    head = VitOVMLHead.from_pool(pool, HEADS_N, D, vit_output="residual", formulation=formulation)
    with torch.no_grad():
        pooled = head.attend(tokens, clip_class_query(tokens, pool))[:, 0]           # (N, D)
    torch.testing.assert_close(pooled, clip_global(tokens, pool), atol=1e-4, rtol=1e-4)


def test_direct_head_is_ln_post_of_the_attention_output(pool, inputs):
    tokens, global_embedding, text = inputs
    head = VitOVMLHead.from_pool(pool, HEADS_N, D, vit_output="direct")
    assert not hasattr(head, "mlp_fc")
    with torch.no_grad():
        features = head(tokens, global_embedding, text)                              # (N, L, D)
        attention = head.attention(head.ln_1(tokens), head.q_proj(text))            # (N, L, h, T)
        values = head.v_proj(head.ln_1(tokens)).view(N, 1 + HW, HEADS_N, W // HEADS_N)
        mixed = torch.einsum("nlht,nthc->nlhc", attention, values).flatten(2)       # (N, L, W)
        z = F.layer_norm(head.out_proj(mixed), (W,), pool["ln_post_weight"], pool["ln_post_bias"], 1e-5)
    torch.testing.assert_close(features, z @ pool["proj"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vit_output", ["residual", "direct"])
def test_literal_and_fused_agree_and_only_the_attention_trains(pool, inputs, vit_output):
    tokens, global_embedding, text = inputs
    literal = VitOVMLHead.from_pool(pool, HEADS_N, D, vit_output=vit_output, formulation="literal")
    fused = VitOVMLHead(**{**literal.options, "formulation": "fused"})
    fused.load_state_dict(literal.state_dict())
    upstream = torch.randn(N, L, D, generator=torch.Generator().manual_seed(2))
    results = []
    for head in (literal, fused):
        out = head(tokens, global_embedding, text)
        out.backward(upstream)
        results.append((out.detach(), {k: p.grad for k, p in head.named_parameters() if p.grad is not None}))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)
    trained = {f"{name}.{part}" for name in ("q_proj", "k_proj", "v_proj", "out_proj") for part in ("weight", "bias")}
    assert set(grads_a) == set(grads_b) == trained
    for key in trained:
        torch.testing.assert_close(grads_a[key], grads_b[key], atol=1e-4, rtol=1e-4, msg=key)


@pytest.mark.parametrize("vit_output", ["residual", "direct"])
def test_vit_head_rebuilds_from_options_and_state_dict(pool, inputs, vit_output):
    head = build_head("ovml", pool, HEADS_N, vit_output=vit_output)
    assert isinstance(head, VitOVMLHead)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    rebuilt = build_head("ovml", pool, HEADS_N, vit_output=vit_output)                  # as a run rebuilds its head
    assert isinstance(rebuilt, VitOVMLHead) and rebuilt.options == json.loads(json.dumps(head.options))
    rebuilt.load_state_dict(head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*inputs), head(*inputs), atol=0, rtol=0)


def test_registry_picks_the_reading_from_the_pool_and_refuses_what_has_none(pool, monkeypatch):
    assert isinstance(build_head("linear", pool, HEADS_N), LinearHead)
    with pytest.raises(UsageError) as refused:
        build_head("ovml", pool, HEADS_N, q_init="pinv")
    assert str(refused.value) == PINV_REFUSAL and "\n" not in PINV_REFUSAL
    monkeypatch.setitem(HEADS, "resnet_only", OVMLHead)
    with pytest.raises(UsageError, match="head 'resnet_only' has no Vision Transformer reading"):
        build_head("resnet_only", pool, HEADS_N)
    with pytest.raises(UsageError, match="--vit-output must be one of residual, direct"):
        build_head("ovml", pool, HEADS_N, vit_output="sideways")


def test_attention_maps_cover_the_patches(pool, inputs):
    head = VitOVMLHead.from_pool(pool, HEADS_N, D)
    with torch.no_grad():
        maps = head.attention_maps(*inputs)
    assert maps.shape == (N, L, HW) and (maps >= 0).all() and (maps.sum(dim=-1) < 1).all()


def test_dense_clip_for_a_vit_is_maskclips_reading(pool, inputs):
    tokens, _, text = inputs
    scores = dense_clip_scores(tokens, pool, text, top_k=2)
    v_weight, v_bias = pool["in_proj_weight"][2 * W:], pool["in_proj_bias"][2 * W:]
    expected = torch.empty(N, L)
    for i in range(N):
        local = []
        for patch in range(1, 1 + HW):
            value = v_weight @ F.layer_norm(tokens[i, patch], (W,), pool["ln_1_weight"], pool["ln_1_bias"]) + v_bias
            out = pool["out_proj_weight"] @ value + pool["out_proj_bias"]
            local.append(F.layer_norm(out, (W,), pool["ln_post_weight"], pool["ln_post_bias"]) @ pool["proj"])
        cosines = F.normalize(torch.stack(local), dim=-1) @ text.T                  # (HW, L)
        expected[i] = cosines.topk(2, dim=0).values.mean(dim=0)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=f"HW = {HW}"):
        dense_clip_scores(tokens, pool, text, top_k=HW + 1)
