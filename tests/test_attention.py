"""Attention written out equals PyTorch's fused kernel; masks, positions and the cache do what they say."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mlm_lessons.attention import (  # noqa: E402
    KVCache,
    MultiHeadAttention,
    RotaryEmbedding,
    causal_mask,
    key_padding_to_attention_mask,
    padding_mask,
    plot_attention,
    scaled_dot_product_attention,
    select_attention_map,
    sinusoidal_positions,
)


def qkv(batch=3, heads=2, query_len=7, key_len=7, head_dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, query_len, head_dim, generator=generator),
            torch.randn(batch, heads, key_len, head_dim, generator=generator),
            torch.randn(batch, heads, key_len, head_dim, generator=generator))


LENGTHS = torch.tensor([7, 4, 1])                       # real keys per example; the rest is padding


@pytest.mark.parametrize("case", ["none", "padding", "causal", "padding+causal", "float", "cross", "cross+padding"])
def test_written_out_attention_equals_pytorch(case):
    key_len = 5 if case.startswith("cross") else 7
    q, k, v = qkv(key_len=key_len)
    mask, is_causal = None, False
    if "padding" in case:
        mask = key_padding_to_attention_mask(padding_mask(LENGTHS.clamp_max(key_len), key_len))
    if case == "padding+causal":
        mask = mask & causal_mask(7)
    if case == "causal":
        is_causal = True
    if case == "float":
        mask = torch.randn(3, 1, 7, 7)
    ours, weights = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal, return_weights=True)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    torch.testing.assert_close(ours, theirs)
    assert ours.shape == (3, 2, 7, 8) and weights.shape == (3, 2, 7, key_len)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 7))


def test_causal_weights_are_zero_on_the_future_and_padding_gets_none():
    q, k, v = qkv()
    mask = key_padding_to_attention_mask(padding_mask(LENGTHS, 7))
    _, weights = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True, return_weights=True)
    assert torch.all(weights.triu(diagonal=1) == 0)
    assert torch.all(weights[1, :, :, 4:] == 0) and torch.all(weights[2, :, :, 1:] == 0)


def test_a_query_that_may_see_nothing_gets_zeros_like_pytorch():
    q, k, v = qkv()
    mask = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    mask[0, :, 2] = False
    ours = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.all(ours[0, :, 2] == 0) and not torch.isnan(ours).any()
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_causal_mask_puts_fewer_queries_at_the_end():
    assert torch.equal(causal_mask(3), torch.ones(3, 3, dtype=torch.bool).tril())
    block = causal_mask(2, 5)
    assert block.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    with pytest.raises(ValueError, match="query_len <= key_len"):
        causal_mask(4, 3)
    q, k, v = qkv(query_len=2, key_len=5)
    with pytest.raises(ValueError, match="causal_mask"):
        scaled_dot_product_attention(q, k, v, is_causal=True)


def test_shape_errors_are_clear():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="same head_dim"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="same length"):
        scaled_dot_product_attention(q, k, v[..., :3, :])
    with pytest.raises(ValueError, match="bool"):
        key_padding_to_attention_mask(torch.ones(2, 3))


@pytest.mark.parametrize("case", ["self", "causal", "padding+causal", "cross+padding"])
def test_multi_head_attention_is_the_same_with_and_without_the_fused_kernel(case):
    torch.manual_seed(0)
    written = MultiHeadAttention(d_model=16, n_heads=4, memory_dim=12 if case.startswith("cross") else None,
                                 use_sdpa=False)
    fused = MultiHeadAttention(d_model=16, n_heads=4, memory_dim=12 if case.startswith("cross") else None,
                               use_sdpa=True)
    fused.load_state_dict(written.state_dict())
    x = torch.randn(3, 7, 16)
    kwargs = {"is_causal": "causal" in case}
    if case.startswith("cross"):
        kwargs["memory"] = torch.randn(3, 5, 12)
    if "padding" in case:
        key_len = 5 if case.startswith("cross") else 7
        kwargs["mask"] = key_padding_to_attention_mask(padding_mask(LENGTHS.clamp_max(key_len), key_len))
    out_written, weights = written(x, need_weights=True, **kwargs)
    out_fused, no_weights = fused(x, **kwargs)
    torch.testing.assert_close(out_written, out_fused)
    assert out_written.shape == (3, 7, 16) and no_weights is None
    assert weights.shape == (3, 4, 7, 5 if case.startswith("cross") else 7)


def test_multi_head_attention_uses_the_fused_kernel_unless_weights_are_wanted():
    layer = MultiHeadAttention(16, 4)
    x = torch.randn(2, 5, 16)
    _, weights = layer(x, is_causal=True, need_weights=True)
    assert weights is not None and torch.all(weights.triu(1) == 0)
    with pytest.raises(ValueError, match="cannot return attention weights"):
        MultiHeadAttention(16, 4, use_sdpa=True)(x, need_weights=True)
    with pytest.raises(ValueError, match="must divide"):
        MultiHeadAttention(16, 5)
    with pytest.raises(ValueError, match=r"\(batch, time, 16\)"):
        layer(torch.randn(2, 5, 8))


def test_sinusoidal_positions_are_the_paper_formula():
    codes = sinusoidal_positions(50, 16)
    assert codes.shape == (50, 16) and codes.abs().max() <= 1.0
    assert torch.equal(codes[0, 0::2], torch.zeros(8)) and torch.equal(codes[0, 1::2], torch.ones(8))
    torch.testing.assert_close(codes[7, 2], torch.sin(torch.tensor(7.0) / 10_000 ** (2 / 16)))
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(10, 7)


def test_rotary_scores_depend_only_on_the_distance_between_positions():
    rotary = RotaryEmbedding(head_dim=8, max_len=64)
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(8, generator=generator), torch.randn(8, generator=generator)

    def score(m, n):
        rotated_query = rotary(query[None], torch.tensor([m]))[0]
        rotated_key = rotary(key[None], torch.tensor([n]))[0]
        return rotated_query @ rotated_key

    for distance in (0, 1, 5, -3):
        scores = torch.stack([score(m, m + distance) for m in (3, 10, 20, 40)])
        torch.testing.assert_close(scores, scores[:1].expand(4), atol=1e-5, rtol=1e-5)
    assert abs(score(3, 4) - score(3, 9)) > 1e-3          # but different distances differ
    x = torch.randn(2, 5, 8, generator=generator)
    rotated = rotary(x, torch.arange(5))
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))   # a rotation keeps lengths
    torch.testing.assert_close(rotated[:, 0], x[:, 0])                 # position 0 is not rotated
    with pytest.raises(ValueError, match="beyond"):
        rotary(x, torch.arange(60, 65))


def test_kv_cache_returns_everything_so_far_and_refuses_overflow():
    cache = KVCache(batch_size=2, n_heads=3, max_len=4, head_dim=5)
    first = torch.randn(2, 3, 3, 5)
    keys, values = cache.append(first, first + 1)
    assert keys.shape == (2, 3, 3, 5) and torch.equal(values, first + 1)
    keys, _ = cache.append(torch.zeros(2, 3, 1, 5), torch.zeros(2, 3, 1, 5))
    assert cache.length == 4 and torch.equal(keys[:, :, :3], first)
    with pytest.raises(ValueError, match="holds 4 positions"):
        cache.append(torch.zeros(2, 3, 1, 5), torch.zeros(2, 3, 1, 5))


def test_multi_head_attention_with_a_cache_equals_the_full_causal_pass():
    torch.manual_seed(0)
    layer = MultiHeadAttention(16, 4).eval()
    rotary = RotaryEmbedding(4, 32)
    x = torch.randn(2, 9, 16)
    full, _ = layer(x, is_causal=True, rotary=rotary)
    cache = KVCache(2, 4, 32, 4)
    pieces = [layer(x[:, :5], is_causal=True, rotary=rotary, cache=cache)[0]]        # a prompt, then
    pieces += [layer(x[:, t:t + 1], is_causal=True, rotary=rotary, cache=cache)[0] for t in range(5, 7)]
    pieces += [layer(x[:, 7:9], is_causal=True, rotary=rotary, cache=cache)[0]]      # a block of two
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_widget_selects_the_right_map_and_names_what_exists():
    maps = [torch.rand(2, 3, 4, 5) for _ in range(2)]
    assert torch.equal(select_attention_map(maps, layer=1, head=2, example=1), maps[1][1, 2])
    with pytest.raises(IndexError, match="layers 0..1"):
        select_attention_map(maps, layer=2, head=0)
    with pytest.raises(IndexError, match="heads 0..2"):
        select_attention_map(maps, layer=0, head=3)
    with pytest.raises(IndexError, match="examples 0..1"):
        select_attention_map(maps, layer=0, head=0, example=5)
    with pytest.raises(ValueError, match="return_attention=True"):
        select_attention_map([None], 0, 0)


def test_attention_plot_is_labelled():
    ax = plot_attention(torch.rand(3, 4), query_labels=list("abc"), key_labels=list("wxyz"), title="layer 0")
    assert ax.get_title() == "layer 0" and "key" in ax.get_xlabel() and "query" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == list("abc")
    with pytest.raises(ValueError, match="labels"):
        plot_attention(torch.rand(3, 4), query_labels=list("ab"))
    plt.close("all")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_fused_kernel_matches_the_written_out_attention():
    q, k, v = (t.cuda() for t in qkv(query_len=64, key_len=64, head_dim=32))
    mask = key_padding_to_attention_mask(padding_mask(torch.tensor([64, 40, 10]), 64)).cuda() & causal_mask(64, device="cuda")
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask=mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=2e-3, rtol=2e-3)
    layer = MultiHeadAttention(32, 4).cuda()
    x = torch.randn(2, 16, 32, device="cuda")
    fused, _ = layer(x, is_causal=True)                     # the default on a GPU: the fused kernel
    written, _ = layer(x, is_causal=True, need_weights=True)
    torch.testing.assert_close(fused, written, atol=2e-3, rtol=2e-3)
