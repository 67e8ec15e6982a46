"""The heads, the training-free scorers and CLIP's pool, on a small random pool
(C = 64, D = 32, 3 x 3 grid, 4 heads)."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from ovml.cache import pooling
from ovml.cache.pooling import resnet_pool_global as clip_pool_global
from ovml.heads.attention import OVMLHead, pinv_query
from ovml.evaluation.scoring import clip_ml_scores
from ovml.heads.base import EPS, cosine_scores
from ovml.heads.baselines import dense_clip_scores
from ovml.heads.linear import LinearHead
from ovml.heads.registry import HEADS, build_head

C, D, GRID, HEADS_N, N, L = 64, 32, 3, 4, 5, 7
HW = GRID * GRID


def random_pool(channels: int = C, embed_dim: int = D, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g)
    return {"positional_embedding": randn(HW + 1, channels) / channels ** 0.5,
            "q_weight": randn(channels, channels) / channels ** 0.5, "q_bias": randn(channels) * 0.1,
            "k_weight": randn(channels, channels) / channels ** 0.5, "k_bias": randn(channels) * 0.1,
            "v_weight": randn(channels, channels) / channels ** 0.5, "v_bias": randn(channels) * 0.1,
            "c_weight": randn(embed_dim, channels) / channels ** 0.5, "c_bias": randn(embed_dim) * 0.1}


def interpolate(features: torch.Tensor, global_embedding: torch.Tensor, alpha: float) -> torch.Tensor:
    """docs/method.md's f_ij = (1 - alpha) o_ij/|o_ij| + alpha g_i/|g_i|: (N, L, D), (N, D) -> (N, L, D)."""
    head = F.normalize(features, dim=-1, eps=EPS)
    image = F.normalize(global_embedding, dim=-1, eps=EPS)[:, None, :]         # (N, 1, D)
    return (1 - alpha) * head + alpha * image


@pytest.fixture
def pool() -> dict[str, torch.Tensor]:
    return random_pool()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    spatial = torch.randn(N, HW, C, generator=g).relu() * 2          # post-ReLU-like tokens
    global_embedding = torch.randn(N, D, generator=g)
    text = F.normalize(torch.randn(L, D, generator=g), dim=-1)
    return spatial, global_embedding, text


def clip_mean_query(spatial: torch.Tensor, pool: dict[str, torch.Tensor]) -> torch.Tensor:
    """CLIP's own query: q_proj(mean_i x_i + p_0), one per image: (N, 1, C)."""
    mean_token = spatial.mean(dim=1) + pool["positional_embedding"][0]           # (N, C)
    return F.linear(mean_token, pool["q_weight"], pool["q_bias"])[:, None, :]    # (N, 1, C)


def clip_attention_pool(pool: dict[str, torch.Tensor]) -> torch.nn.Module:
    """openai CLIP's AttentionPool2d holding the pool's weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip.model
    module = clip.model.AttentionPool2d(GRID, C, HEADS_N, D).eval()
    with torch.no_grad():
        module.positional_embedding.copy_(pool["positional_embedding"])
        for key in "qkvc":
            getattr(module, f"{key}_proj").weight.copy_(pool[f"{key}_weight"])
            getattr(module, f"{key}_proj").bias.copy_(pool[f"{key}_bias"])
    return module


def test_clip_pool_global_matches_openai_attention_pool(pool, inputs, monkeypatch):
    spatial = inputs[0]
    nchw = spatial.transpose(1, 2).reshape(N, C, GRID, GRID)                      # (N, C, H, W)
    with torch.no_grad():
        expected = clip_attention_pool(pool)(nchw)
    monkeypatch.setattr(pooling, "CHUNK", 2)                                     # chunks of 2, 2, 1 images
    torch.testing.assert_close(clip_pool_global(spatial, pool, HEADS_N), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("formulation", ["literal", "fused"])
def test_head_with_clip_query_reproduces_clip_global(pool, inputs, formulation):
    """The head really starts as CLIP's pooling: given CLIP's mean-token query (and the mean token
    as a key/value, as CLIP's pool has), its output is CLIP's global embedding."""
    spatial = inputs[0]
    head = OVMLHead.from_pool(pool, HEADS_N, D, include_mean_token=True, formulation=formulation)
    with torch.no_grad():
        pooled = head.attend(spatial, clip_mean_query(spatial, pool))[:, 0]        # (N, D)
        expected = clip_attention_pool(pool)(spatial.transpose(1, 2).reshape(N, C, GRID, GRID))
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, clip_pool_global(spatial, pool, HEADS_N), atol=1e-5, rtol=1e-5)


def test_forward_with_query_set_to_clip_query_reproduces_clip_global(pool, inputs):
    """The same through forward(): F_q set to a constant that is image 0's mean-token query."""
    spatial, global_embedding, text = inputs
    head = OVMLHead.from_pool(pool, HEADS_N, D, include_mean_token=True)
    with torch.no_grad():
        head.q_proj.weight.zero_()
        head.q_proj.bias.copy_(clip_mean_query(spatial[:1], pool)[0, 0])
        features = head(spatial[:1], global_embedding[:1], text)                  # (1, L, D)
    expected = clip_pool_global(spatial[:1], pool, HEADS_N)                       # (1, D)
    torch.testing.assert_close(features, expected[:, None].expand(1, L, D), atol=1e-5, rtol=1e-5)


def test_literal_and_fused_formulations_agree_with_gradients(pool, inputs):
    spatial, global_embedding, text = inputs
    literal = OVMLHead.from_pool(pool, HEADS_N, D, formulation="literal")
    fused = OVMLHead(**{**literal.options, "formulation": "fused"})
    fused.load_state_dict(literal.state_dict())
    upstream = torch.randn(N, L, D, generator=torch.Generator().manual_seed(2))
    results = []
    for head in (literal, fused):
        x = spatial.clone().requires_grad_()
        t = text.clone().requires_grad_()
        out = head(x, global_embedding, t)
        out.backward(upstream)
        results.append((out.detach(), x.grad, t.grad, {k: p.grad for k, p in head.named_parameters()}))
    (out_a, x_a, t_a, grads_a), (out_b, x_b, t_b, grads_b) = results
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_a, x_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t_a, t_b, atol=1e-5, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for key in grads_a:
        torch.testing.assert_close(grads_a[key], grads_b[key], atol=1e-4, rtol=1e-4, msg=key)


def test_auto_formulation_chooses_by_multiply_adds():
    paper = OVMLHead(2048, 1024, 49, 32)            # h T = 1568 < C = 2048: fused is cheaper
    planted = OVMLHead(128, 64, 49, 4)              # h T = 196 > C = 128: literal is cheaper
    assert paper._fused(925, 49) and not planted._fused(50, 49)


def test_from_pool_copies_pool_and_inits_query(pool):
    torch.manual_seed(0)
    head = OVMLHead.from_pool(pool, HEADS_N, D)
    for key in "kvc":
        assert torch.equal(getattr(head, f"{key}_proj").weight, pool[f"{key}_weight"])
        assert torch.equal(getattr(head, f"{key}_proj").bias, pool[f"{key}_bias"])
    assert torch.equal(head.positional_embedding, pool["positional_embedding"])
    assert head.q_proj.weight.shape == (C, D)
    pinv = OVMLHead.from_pool(pool, HEADS_N, D, q_init="pinv")
    weight, bias = pinv_query(pool)
    assert torch.equal(pinv.q_proj.weight, weight) and torch.equal(pinv.q_proj.bias, bias)
    with pytest.raises(ValueError, match="q_init"):
        OVMLHead.from_pool(pool, HEADS_N, D, q_init="zeros")
    with pytest.raises(ValueError, match="text dimension"):
        OVMLHead.from_pool(pool, HEADS_N, D + 1)


def test_pinv_query_composes_with_c_proj():
    """W_c square and invertible: the query of a pooled output W_c y + b_c is q_proj(y)."""
    pool = random_pool(channels=D, embed_dim=D)
    orthogonal, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(3)))
    pool["c_weight"] = 0.5 * orthogonal                                           # well conditioned
    weight, bias = pinv_query(pool)
    assert weight.shape == (D, D) and bias.shape == (D,) and weight.dtype == torch.float32
    y = torch.randn(6, D, generator=torch.Generator().manual_seed(4))
    pooled = F.linear(y, pool["c_weight"], pool["c_bias"])
    torch.testing.assert_close(F.linear(pooled, weight, bias), F.linear(y, pool["q_weight"], pool["q_bias"]),
                               atol=1e-5, rtol=1e-4)
    weight, bias = pinv_query(random_pool())                                      # C = 64 > D = 32
    assert weight.shape == (C, D) and bias.shape == (C,)


@pytest.mark.parametrize("name,options", [("ovml", {"q_init": "pinv", "include_mean_token": True}),
                                          ("linear", {})])
def test_head_rebuilds_from_options_and_state_dict(pool, inputs, name, options):
    head = build_head(name, pool, HEADS_N, **options)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))                   # "trained"
    rebuilt = build_head(name, pool, HEADS_N, **json.loads(json.dumps(options)))  # as a run rebuilds its head
    assert rebuilt.options == json.loads(json.dumps(head.options))
    rebuilt.load_state_dict(head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*inputs), head(*inputs), atol=0, rtol=0)


def test_registry(pool):
    assert {"ovml", "linear"} <= set(HEADS)
    assert HEADS["ovml"].name == "ovml" and HEADS["linear"].name == "linear"
    assert isinstance(build_head("linear", pool, HEADS_N), LinearHead)
    with pytest.raises(ValueError, match="unknown head 'nope'"):
        build_head("nope", pool, HEADS_N)


def test_linear_head_starts_as_clip_ml_and_expands(pool, inputs):
    spatial, global_embedding, text = inputs
    head = LinearHead.from_pool(pool, HEADS_N, D)
    features = head(spatial, global_embedding, text)
    assert features.shape == (N, L, D) and features.stride(1) == 0              # a view, no copy
    torch.testing.assert_close(cosine_scores(features, text), torch.from_numpy(clip_ml_scores(global_embedding, text)))


def test_cosine_scores_and_interpolation(pool, inputs):
    spatial, global_embedding, text = inputs
    features = OVMLHead.from_pool(pool, HEADS_N, D)(spatial, global_embedding, text).detach()
    expected = F.cosine_similarity(features, text[None], dim=-1)
    torch.testing.assert_close(cosine_scores(features, text), expected)
    expanded = global_embedding[:, None].expand(N, L, D)
    torch.testing.assert_close(cosine_scores(expanded, text), cosine_scores(expanded.contiguous(), text))
    torch.testing.assert_close(cosine_scores(interpolate(features, global_embedding, 0.0), text), expected)
    torch.testing.assert_close(cosine_scores(interpolate(features, global_embedding, 1.0), text),
                               torch.from_numpy(clip_ml_scores(global_embedding, text)))
    half = interpolate(features, global_embedding, 0.5)
    torch.testing.assert_close(half, 0.5 * F.normalize(features, dim=-1) + 0.5 * F.normalize(expanded, dim=-1))


@pytest.mark.parametrize("include_mean_token", [False, True])
def test_attention_maps(pool, inputs, include_mean_token):
    head = OVMLHead.from_pool(pool, HEADS_N, D, include_mean_token=include_mean_token)
    with torch.no_grad():
        maps = head.attention_maps(*inputs)
    assert maps.shape == (N, L, HW) and (maps >= 0).all()
    sums = maps.sum(dim=-1)
    if include_mean_token:
        assert (sums < 1).all()
    else:
        torch.testing.assert_close(sums, torch.ones(N, L))


def test_dense_clip_scores_against_a_loop(pool, inputs):
    spatial, _, text = inputs
    for top_k in (1, 3, HW):
        scores = dense_clip_scores(spatial, pool, text, top_k=top_k)
        expected = torch.empty(N, L)
        for i in range(N):
            for j in range(L):
                cosines = []
                for location in range(HW):
                    z = spatial[i, location] + pool["positional_embedding"][1 + location]
                    u = pool["c_weight"] @ (pool["v_weight"] @ z + pool["v_bias"]) + pool["c_bias"]
                    cosines.append(float(u @ text[j] / u.norm()))
                expected[i, j] = sum(sorted(cosines, reverse=True)[:top_k]) / top_k
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="top_k"):
        dense_clip_scores(spatial, pool, text, top_k=HW + 1)


def test_clip_ml_scores_is_cosine(inputs):
    """CLIP-ML against unit text embeddings, as the cache holds them."""
    _, global_embedding, text = inputs
    expected = torch.tensor([[float(g @ t / g.norm() / t.norm()) for t in text] for g in global_embedding])
    torch.testing.assert_close(torch.from_numpy(clip_ml_scores(3 * global_embedding, text)), expected)
    unit = F.normalize(global_embedding[:1], dim=-1)
    assert math.isclose(float(clip_ml_scores(global_embedding[:1], unit)[0, 0]), 1.0, rel_tol=1e-6)
