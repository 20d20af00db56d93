"""Attention, written out: the one operation every MusicLM stage is built from.

Lesson 01 builds this file cell by cell. Read it top to bottom:

1. :func:`scaled_dot_product_attention` -- ``softmax(q k^T / sqrt(d)) v`` with masks, in five lines, and
   able to hand back its attention weights for plots. It equals PyTorch's fused
   ``F.scaled_dot_product_attention`` (``tests/test_attention.py`` proves it, masks included).
2. Masks -- :func:`padding_mask` (do not look at padding) and :func:`causal_mask` (do not look at the
   future). Convention, as in PyTorch: a boolean mask is ``True`` where attention is *allowed*.
3. Positions -- attention itself is blind to order. :func:`sinusoidal_positions` (Vaswani et al.,
   2017) adds an absolute position code to the input; :class:`RotaryEmbedding` (RoPE, Su et al.,
   2021) rotates queries and keys so that their dot product depends only on the *distance* between
   positions, which is what music (a motif repeated two bars later) and long generation need.
4. :class:`KVCache` -- the keys and values of the tokens generated so far, kept so that each new
   token costs one row of attention instead of a whole new pass (lesson 02 measures it).
5. :class:`MultiHeadAttention` -- ``n_heads`` attentions side by side on slices of ``d_model``; self-
   or cross-attention, optional rotary positions, optional cache, and a switch between the written-out
   version (gives weights) and the fused one (fast; FlashAttention-style kernels on GPUs).

Shapes: ``(batch, time, d_model)`` outside a head, ``(batch, n_heads, time, head_dim)`` inside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------------
# 1. Scaled dot-product attention


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 mask: torch.Tensor | None = None, is_causal: bool = False,
                                 dropout_p: float = 0.0, return_weights: bool = False,
                                 generator: torch.Generator | None = None):
    """``softmax(query @ key^T / sqrt(head_dim)) @ value``, written out.

    Each query asks "which keys are like me?"; the answer is a probability distribution over the keys
    (one row of the *attention weights*), and the output is the matching average of the values.
    Dividing by ``sqrt(head_dim)`` keeps the dot products of unit-variance vectors at unit variance, so
    the softmax does not saturate as heads get wider.

    Args:
        query: ``(..., query_len, head_dim)``, e.g. ``(batch, n_heads, query_len, head_dim)``.
        key: ``(..., key_len, head_dim)``.
        value: ``(..., key_len, value_dim)``.
        mask: boolean, broadcastable to ``(..., query_len, key_len)``, ``True`` where a query may attend
            to a key (PyTorch's convention); or a float tensor added to the scores (``-inf`` blocks).
            A query that may attend to nothing gets zero output, as in PyTorch.
        is_causal: let query ``i`` see keys ``0..i`` only (needs ``query_len == key_len``; for a block of
            new queries at the end of a longer sequence pass ``mask=causal_mask(query_len, key_len)``).
        dropout_p: probability of zeroing each attention weight (training only), the rest rescaled.
        return_weights: also return the ``(..., query_len, key_len)`` attention weights.

    Returns:
        ``(..., query_len, value_dim)``, or ``(output, weights)`` with ``return_weights=True``.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key need the same head_dim, got {query.shape[-1]} and {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key and value need the same length, got {key.shape[-2]} and {value.shape[-2]}")
    query_len, key_len = query.shape[-2], key.shape[-2]
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])   # (..., query_len, key_len)
    if is_causal:
        if query_len != key_len:
            raise ValueError(f"is_causal needs query_len == key_len (got {query_len} and {key_len}); pass "
                             "mask=causal_mask(query_len, key_len) for queries at the end of the keys")
        causal = causal_mask(query_len, key_len, device=query.device)
        mask = causal if mask is None else (mask & causal if mask.dtype == torch.bool else
                                            mask.masked_fill(~causal, float("-inf")))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:  # a row with every key blocked is all -inf: softmax gives NaN, PyTorch gives 0
        weights = torch.nan_to_num(weights, nan=0.0)
    if dropout_p > 0.0:
        keep = torch.rand(weights.shape, device=weights.device, generator=generator) >= dropout_p
        weights = weights * keep / (1.0 - dropout_p)
    output = weights @ value
    return (output, weights) if return_weights else output


# ----------------------------------------------------------------------------------------------------
# 2. Masks


def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(batch, max_len)`` bool, ``True`` at real tokens, ``False`` at padding.

    Args:
        lengths: ``(batch,)`` number of real tokens in each (right-padded) sequence.
    """
    lengths = torch.as_tensor(lengths)
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def key_padding_to_attention_mask(key_is_real: torch.Tensor) -> torch.Tensor:
    """``(batch, key_len)`` bool -> ``(batch, 1, 1, key_len)``: broadcasts over heads and queries."""
    if key_is_real.dtype != torch.bool or key_is_real.dim() != 2:
        raise ValueError(f"a key padding mask must be (batch, key_len) bool, got {tuple(key_is_real.shape)} "
                         f"{key_is_real.dtype}")
    return key_is_real[:, None, None, :]


def causal_mask(query_len: int, key_len: int | None = None, device=None) -> torch.Tensor:
    """``(query_len, key_len)`` bool: query ``i`` may see key ``j`` iff ``j <= i + key_len - query_len``.

    With ``query_len == key_len`` this is the lower triangle. With fewer queries than keys the queries
    are the *last* ``query_len`` positions (new tokens after a cached past), so each sees the whole past
    and the new tokens up to itself.
    """
    key_len = query_len if key_len is None else key_len
    if query_len > key_len:
        raise ValueError(f"causal_mask needs query_len <= key_len, got {query_len} > {key_len}")
    offset = key_len - query_len
    return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(diagonal=offset)


# ----------------------------------------------------------------------------------------------------
# 3. Positions


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed position codes of "Attention Is All You Need": ``(max_len, d_model)``.

    Dimension pair ``(2i, 2i+1)`` holds ``sin`` and ``cos`` of ``position / 10000^(2i / d_model)``: a
    clock with hands turning at geometrically spaced speeds, from once every ~6 positions to once every
    ~60,000. Any fixed offset is a linear map (a rotation) of these codes, so a model can learn to
    attend "k steps back"; but the code is added to the content, so the two get mixed.
    """
    if d_model % 2:
        raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
    position = torch.arange(max_len, dtype=torch.float32)[:, None]                 # (max_len, 1)
    frequency = torch.exp(-math.log(10_000.0) * torch.arange(0, d_model, 2) / d_model)  # (d_model / 2,)
    codes = torch.zeros(max_len, d_model)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency)
    return codes


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE; Su et al., 2021, "RoFormer").

    Split each query and key vector into pairs of coordinates and rotate pair ``i`` of the vector at
    position ``m`` by the angle ``m * theta_i``, with ``theta_i = base^(-2i / head_dim)``. A rotation by
    ``m`` followed by a dot product with a vector rotated by ``n`` equals a single rotation by ``n - m``,
    so ``score(m, n) = <R_m q, R_n k> = <q, R_(n-m) k>`` depends on the positions only through their
    difference: relative positions, with nothing added to the token's content and nothing to learn. It
    is what LLaMA-style decoders use, and it works unchanged with a KV cache (a cached key keeps the
    rotation of its own position).

    Args:
        head_dim: size of each head (even).
        max_len: positions to precompute; longer inputs are an error.
        base: the slowest rotation's wavelength scale (10,000 as in RoFormer).
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10_000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
        self.head_dim, self.max_len = head_dim, max_len
        theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)   # (head_dim / 2,)
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] * theta              # (max_len, head_dim / 2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` of shape ``(..., time, head_dim)`` by its ``(time,)`` integer positions."""
        if positions.numel() and int(positions.max()) >= self.max_len:
            raise ValueError(f"position {int(positions.max())} is beyond the {self.max_len} positions this "
                             "rotary embedding was built for")
        cos, sin = self.cos[positions].to(x.dtype), self.sin[positions].to(x.dtype)   # (time, head_dim / 2)
        even, odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
        return rotated.flatten(-2)


# ----------------------------------------------------------------------------------------------------
# 4. The KV cache


class KVCache:
    """Keys and values of every position seen so far, for one attention layer.

    Preallocated to ``max_len`` so that appending one token copies one row, not the whole history.

    Args:
        batch_size, n_heads, max_len, head_dim: the buffer is ``(batch, n_heads, max_len, head_dim)``.
    """

    def __init__(self, batch_size: int, n_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        self.keys = torch.zeros(batch_size, n_heads, max_len, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys.shape[2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``(batch, n_heads, new, head_dim)`` keys and values; return all of them so far."""
        new = keys.shape[2]
        if self.length + new > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions; cannot add {new} to {self.length}")
        self.keys[:, :, self.length:self.length + new] = keys
        self.values[:, :, self.length:self.length + new] = values
        self.length += new
        return self.keys[:, :, :self.length], self.values[:, :, :self.length]


# ----------------------------------------------------------------------------------------------------
# 5. Multi-head attention


class MultiHeadAttention(nn.Module):
    """``n_heads`` scaled dot-product attentions in parallel, each on a ``d_model / n_heads`` slice.

    One projection makes queries (from ``x``), one makes keys and values (from ``x`` for
    self-attention, from ``memory`` for cross-attention); the heads' outputs are concatenated and
    mixed by an output projection. Different heads are free to attend to different things (the
    previous note, the note one bar ago, the matching note of the source melody).

    Args:
        d_model: width of the residual stream.
        n_heads: number of heads; must divide ``d_model``.
        dropout: dropout on the attention weights and on the output (training only).
        memory_dim: width of the sequence cross-attention reads (``None``: same as ``d_model``).
        bias: biases in the projections (off, as in most modern LMs).
        use_sdpa: ``True`` always use ``F.scaled_dot_product_attention``; ``False`` always use the
            written-out version; ``None`` (default) use the fused kernel unless attention weights are
            requested (it cannot return them), i.e. on GPUs and for all generation.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, memory_dim: int | None = None,
                 bias: bool = False, use_sdpa: bool | None = None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.dropout = dropout
        self.use_sdpa = use_sdpa
        self.query_proj = nn.Linear(d_model, d_model, bias=bias)
        self.key_value_proj = nn.Linear(memory_dim or d_model, 2 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_dropout = nn.Dropout(dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, time, d_model)`` -> ``(batch, n_heads, time, head_dim)``."""
        batch, time, _ = x.shape
        return x.view(batch, time, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                is_causal: bool = False, rotary: RotaryEmbedding | None = None,
                positions: torch.Tensor | None = None, cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``x`` to itself (or to ``memory``).

        Args:
            x: ``(batch, query_len, d_model)``.
            memory: ``(batch, memory_len, memory_dim)`` for cross-attention; ``None`` for self-attention.
            mask: boolean, broadcastable to ``(batch, n_heads, query_len, key_len)``, ``True`` = may attend.
            is_causal: self-attention may not look ahead. With a ``cache`` the queries are the last
                ``query_len`` positions of the keys (:func:`causal_mask`).
            rotary: rotate queries and keys by their ``positions`` (self-attention only).
            positions: ``(query_len,)`` absolute positions of ``x``'s tokens (default ``0..query_len-1``,
                or following the cache).
            cache: a :class:`KVCache`. Self-attention appends the new keys/values and attends to all
                stored; cross-attention fills it from ``memory`` on the first call and reuses it after.
            need_weights: also return the ``(batch, n_heads, query_len, key_len)`` attention weights.

        Returns:
            ``(output (batch, query_len, d_model), weights or None)``.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (batch, time, {self.d_model}), got {tuple(x.shape)}")
        query = self._split_heads(self.query_proj(x))
        if memory is not None and cache is not None and cache.length > 0:
            # Cross-attention while generating: the memory does not change, so its keys and values were
            # projected once, on the first call, and are read back from the cache.
            keys, values = cache.keys[:, :, :cache.length], cache.values[:, :, :cache.length]
            return self._attend(x, query, keys, values, mask, False, need_weights)
        source = x if memory is None else memory
        keys, values = (self._split_heads(t) for t in self.key_value_proj(source).chunk(2, dim=-1))
        if rotary is not None:
            if memory is not None:
                raise ValueError("rotary positions are for self-attention; cross-attention has no shared axis")
            if positions is None:
                start = cache.length if cache is not None else 0
                positions = torch.arange(start, start + x.shape[1], device=x.device)
            query, keys = rotary(query, positions), rotary(keys, positions)
        if cache is not None:
            keys, values = cache.append(keys, values)
        return self._attend(x, query, keys, values, mask, is_causal, need_weights)

    def _attend(self, x: torch.Tensor, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | None, is_causal: bool, need_weights: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention of ``(batch, n_heads, query_len, head_dim)`` queries over the keys; heads merged."""
        query_len, key_len = query.shape[2], keys.shape[2]
        if is_causal and query_len != key_len:       # new queries at the end of a cached past
            causal = causal_mask(query_len, key_len, device=x.device)
            mask = causal if mask is None else mask & causal
            is_causal = False
        if is_causal and query_len == 1:
            is_causal = False                          # one query sees all (i.e. the one) keys
        dropout_p = self.dropout if self.training else 0.0
        use_sdpa = (not need_weights) if self.use_sdpa is None else self.use_sdpa
        if use_sdpa and need_weights:
            raise ValueError("F.scaled_dot_product_attention cannot return attention weights; "
                             "build the layer with use_sdpa=None or False to plot them")
        weights = None
        if use_sdpa:
            if is_causal and mask is not None:         # SDPA takes one or the other: merge them
                mask = mask & causal_mask(query_len, key_len, device=x.device)
                is_causal = False
            output = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, dropout_p=dropout_p,
                                                    is_causal=is_causal)
        else:
            output, weights = scaled_dot_product_attention(query, keys, values, mask=mask, is_causal=is_causal,
                                                           dropout_p=dropout_p, return_weights=True)
        output = output.transpose(1, 2).reshape(x.shape[0], query_len, self.d_model)   # heads side by side
        return self.out_dropout(self.out_proj(output)), (weights if need_weights else None)


# ----------------------------------------------------------------------------------------------------
# 6. Looking at attention


def select_attention_map(maps, layer: int, head: int, example: int = 0) -> torch.Tensor:
    """One ``(query_len, key_len)`` map out of per-layer ``(batch, n_heads, query_len, key_len)`` weights.

    This is the pure part of the notebooks' layer/head widget, so it can be tested without a browser.

    Args:
        maps: a list (one entry per layer) of attention weights, as ``return_attention=True`` gives.
        layer, head, example: which one; each must exist (a clear ``IndexError`` otherwise).
    """
    if not maps or any(m is None for m in maps):
        raise ValueError("no attention weights: run the model with return_attention=True")
    if not 0 <= layer < len(maps):
        raise IndexError(f"layer {layer} does not exist; the model has layers 0..{len(maps) - 1}")
    batch, n_heads = maps[layer].shape[:2]
    if not 0 <= head < n_heads:
        raise IndexError(f"head {head} does not exist; each layer has heads 0..{n_heads - 1}")
    if not 0 <= example < batch:
        raise IndexError(f"example {example} does not exist; the batch has examples 0..{batch - 1}")
    return maps[layer][example, head].detach().float().cpu()


def plot_attention(weights: torch.Tensor, query_labels: list[str] | None = None,
                   key_labels: list[str] | None = None, ax=None, title: str | None = None):
    """Draw a ``(query_len, key_len)`` attention map: one row per query, darker = more weight."""
    import matplotlib.pyplot as plt

    weights = torch.as_tensor(weights).detach().float().cpu()
    if weights.dim() != 2:
        raise ValueError(f"plot_attention expects (query_len, key_len), got {tuple(weights.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    image = ax.imshow(weights.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label="attention weight", pad=0.01)
    for labels, set_ticks, set_labels, size in ((query_labels, ax.set_yticks, ax.set_yticklabels, weights.shape[0]),
                                                 (key_labels, ax.set_xticks, ax.set_xticklabels, weights.shape[1])):
        if labels is not None:
            if len(labels) != size:
                raise ValueError(f"{len(labels)} labels for {size} rows/columns")
            set_ticks(range(size))
            set_labels(labels, fontsize=7)
    if key_labels is not None:
        ax.tick_params(axis="x", labelrotation=90)
    ax.set_xlabel("key position (attended to)")
    ax.set_ylabel("query position (attending)")
    if title:
        ax.set_title(title)
    return ax
