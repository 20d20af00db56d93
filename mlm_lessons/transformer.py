"""Transformers: pre-norm blocks, an encoder, a conditionable decoder-only LM, and sampling.

This is the building block every MusicLM stage reuses (lesson 08): the semantic stage is a
:class:`TransformerLM` over semantic tokens *prefixed* by MuLan tokens, and the acoustic stages are the
same class over SoundStream tokens, conditioned on MuLan and semantic tokens. Lessons 01 and 02 build it:

1. :class:`FeedForward` and :class:`Block` -- a pre-norm residual block: ``x + attention(norm(x))``,
   optionally ``x + cross_attention(norm(x), memory)``, then ``x + mlp(norm(x))``. Normalising *before*
   each sub-layer (Xiong et al., 2020) keeps the residual stream an untouched sum, which trains deep
   stacks without the warm-up tricks the original post-norm Transformer needed.
2. :class:`TransformerEncoder` -- bidirectional self-attention over a padded source sequence of tokens, or
   of continuous vectors (``vocab_size=None``: audio frames, spectrogram patches).
3. :class:`TransformerLM` -- a causal decoder over tokens, with two ways to condition it:
   *prefix* tokens (or embeddings) in front of the sequence, and *cross-attention* to a memory
   (an encoder's output, or any ``(batch, memory_len, memory_dim)`` sequence). ``generate`` samples
   with temperature, top-k and top-p, with or without a KV cache (same tokens for the same seed).
4. :class:`Seq2SeqTransformer` -- Vaswani et al.'s encoder--decoder: a :class:`TransformerEncoder`
   and a :class:`TransformerLM` that cross-attends to it.

Shapes: tokens ``(batch, time)`` int64; hidden states ``(batch, time, d_model)``; logits
``(batch, time, vocab_size)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlm_lessons.attention import (
    KVCache,
    MultiHeadAttention,
    RotaryEmbedding,
    key_padding_to_attention_mask,
    sinusoidal_positions,
)

POSITION_SCHEMES = ("rope", "sinusoidal", "none")


# ----------------------------------------------------------------------------------------------------
# 1. Blocks


class FeedForward(nn.Module):
    """Position-wise MLP ``d_model -> d_ff -> d_model`` with a GELU: ``(batch, time, d_model)`` in and out."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """One pre-norm Transformer block.

    ``x = x + SelfAttention(LayerNorm(x))``; with ``cross_attention``,
    ``x = x + CrossAttention(LayerNorm(x), memory)``; then ``x = x + FeedForward(LayerNorm(x))``.

    Args:
        causal: self-attention may not look ahead (decoders) or may (encoders).
        cross_attention: add a cross-attention sub-layer reading a ``(batch, memory_len, memory_dim)``
            memory.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, causal: bool = True,
                 cross_attention: bool = False, memory_dim: int | None = None, use_sdpa: bool | None = None):
        super().__init__()
        self.causal = causal
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attention = MultiHeadAttention(d_model, n_heads, dropout, use_sdpa=use_sdpa)
        self.cross_norm = nn.LayerNorm(d_model) if cross_attention else None
        self.cross_attention = (MultiHeadAttention(d_model, n_heads, dropout, memory_dim=memory_dim,
                                                   use_sdpa=use_sdpa) if cross_attention else None)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor, rotary: RotaryEmbedding | None = None,
                positions: torch.Tensor | None = None, self_mask: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                self_cache: KVCache | None = None, cross_cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        """``(batch, time, d_model)`` -> same shape, and ``{"self": weights, "cross": weights}``.

        ``self_mask`` and ``memory_mask`` are boolean attention masks broadcastable to
        ``(batch, n_heads, time, key_len)`` (``True`` = may attend).
        """
        attended, self_weights = self.self_attention(
            self.self_norm(x), mask=self_mask, is_causal=self.causal, rotary=rotary, positions=positions,
            cache=self_cache, need_weights=need_weights)
        x = x + attended
        cross_weights = None
        if self.cross_attention is not None:
            if memory is None and (cross_cache is None or cross_cache.length == 0):
                raise ValueError("this block cross-attends: pass memory=(batch, memory_len, memory_dim)")
            attended, cross_weights = self.cross_attention(
                self.cross_norm(x), memory=memory, mask=memory_mask, cache=cross_cache,
                need_weights=need_weights)
            x = x + attended
        x = x + self.mlp(self.mlp_norm(x))
        return x, {"self": self_weights, "cross": cross_weights}


def _init_weights(module: nn.Module, n_layers: int) -> None:
    """Fan-in initialisation: every weight matrix ``N(0, 1 / fan_in)`` (embeddings ``N(0, 1 / d_model)``),
    so each layer's outputs start at about unit variance whatever the width; zero biases; and, as in
    GPT-2, the projections that write into the residual stream scaled by ``1 / sqrt(2 n_layers)`` so the
    stream's variance does not grow with depth. (GPT-2's fixed 0.02 suits ``d_model`` ~ 768; at the
    course's widths it leaves attention near a flat, slow-to-escape start.)"""
    for name, parameter in module.named_parameters():
        if parameter.dim() < 2:
            continue
        std = parameter.shape[1] ** -0.5
        if name.endswith(("out_proj.weight", "down.weight")):
            std /= math.sqrt(2 * n_layers)
        nn.init.normal_(parameter, mean=0.0, std=std)
    for submodule in module.modules():
        if isinstance(submodule, nn.Linear) and submodule.bias is not None:
            nn.init.zeros_(submodule.bias)


def _check_tokens(tokens: torch.Tensor, vocab_size: int, name: str = "tokens") -> None:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64 token ids, got {type(tokens).__name__}")
    if tokens.dtype != torch.long:
        raise TypeError(f"{name} must be int64 (torch.long) token ids, got {tokens.dtype}; "
                        "convert with .long()")
    if tokens.dim() != 2:
        raise ValueError(f"{name} must be (batch, time), got shape {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got values in "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")


class _Positions(nn.Module):
    """Sinusoidal codes added to the input, or rotary embeddings applied inside attention, or none."""

    def __init__(self, scheme: str, max_len: int, d_model: int, n_heads: int):
        super().__init__()
        if scheme not in POSITION_SCHEMES:
            raise ValueError(f"positions must be one of {POSITION_SCHEMES}, got {scheme!r}")
        self.scheme, self.max_len = scheme, max_len
        self.rotary = RotaryEmbedding(d_model // n_heads, max_len) if scheme == "rope" else None
        if scheme == "sinusoidal":
            self.register_buffer("table", sinusoidal_positions(max_len, d_model), persistent=False)

    def add_to_input(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Add the position codes to ``(batch, time, d_model)`` embeddings (sinusoidal scheme only).

        As in Vaswani et al., the embeddings are first multiplied by ``sqrt(d_model)``: initialised with
        standard deviation ``1 / sqrt(d_model)`` (:func:`_init_weights`), they then have unit variance
        per dimension, like the sines and cosines, so neither drowns the other.
        """
        if int(positions[-1]) >= self.max_len:
            raise ValueError(f"sequence of {int(positions[-1]) + 1} positions is longer than max_len="
                             f"{self.max_len}; build the model with a larger max_len or shorten the input")
        if self.scheme != "sinusoidal":
            return x
        return x * math.sqrt(x.shape[-1]) + self.table[positions].to(x.dtype)


# ----------------------------------------------------------------------------------------------------
# 2. Encoder


class TransformerEncoder(nn.Module):
    """Token embedding (or a sequence of vectors), bidirectional pre-norm blocks, a final LayerNorm.

    Args:
        vocab_size: token ids in ``[0, vocab_size)``; ``None`` builds an encoder of *continuous* inputs,
            ``(batch, time, d_model)`` vectors such as audio frames or patches, with no embedding table.
        max_len: at most this many positions.
        positions: ``"sinusoidal"`` (added to the embeddings, as in Vaswani et al.), ``"rope"`` or ``"none"``.
    """

    def __init__(self, vocab_size: int | None, max_len: int, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4, d_ff: int | None = None, dropout: float = 0.0, positions: str = "sinusoidal",
                 use_sdpa: bool | None = None):
        super().__init__()
        self.vocab_size, self.max_len, self.d_model = vocab_size, max_len, d_model
        self.embedding = nn.Embedding(vocab_size, d_model) if vocab_size is not None else None
        self.positions = _Positions(positions, max_len, d_model, n_heads)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff or 4 * d_model, dropout, causal=False,
                                          use_sdpa=use_sdpa) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)
        _init_weights(self, n_layers)

    def _embed(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            _check_tokens(inputs, self.vocab_size)
            return self.embedding(inputs)
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            raise TypeError("this encoder was built with vocab_size=None: it takes float vectors "
                            f"(batch, time, {self.d_model}), not token ids")
        if inputs.dim() != 3 or inputs.shape[-1] != self.d_model:
            raise ValueError(f"inputs must be (batch, time, {self.d_model}), got shape {tuple(inputs.shape)}")
        # Scaled like an embedding lookup, so that add_to_input's sqrt(d_model) brings them to unit size.
        return inputs / math.sqrt(self.d_model) if self.positions.scheme == "sinusoidal" else inputs

    def forward(self, inputs: torch.Tensor, key_is_real: torch.Tensor | None = None,
                return_attention: bool = False):
        """Encode ``(batch, time)`` token ids (or ``(batch, time, d_model)`` vectors when ``vocab_size`` is
        ``None``) to ``(batch, time, d_model)``.

        Args:
            key_is_real: ``(batch, time)`` bool, ``False`` at padding (no position attends to padding).
            return_attention: also return a list with each layer's ``(batch, n_heads, time, time)`` weights.
        """
        positions = torch.arange(inputs.shape[1], device=inputs.device)
        x = self.dropout(self.positions.add_to_input(self._embed(inputs), positions))
        mask = None if key_is_real is None else key_padding_to_attention_mask(key_is_real)
        maps = []
        for block in self.blocks:
            x, weights = block(x, rotary=self.positions.rotary, positions=positions, self_mask=mask,
                               need_weights=return_attention)
            maps.append(weights["self"])
        x = self.final_norm(x)
        return (x, maps) if return_attention else x


# ----------------------------------------------------------------------------------------------------
# 3. Decoder-only language model


@dataclass(frozen=True)
class TransformerLMConfig:
    """Hyper-parameters of a :class:`TransformerLM` (stored in checkpoints by the trainer).

    Attributes:
        vocab_size: number of token ids the model reads and predicts.
        max_len: longest sequence, prefix included (positions ``0 .. max_len - 1``).
        d_model, n_layers, n_heads: width, depth, heads (``n_heads`` divides ``d_model``).
        d_ff: hidden width of the MLPs (``None``: ``4 * d_model``).
        dropout: on embeddings, attention weights and sub-layer outputs.
        positions: ``"rope"`` (relative, the default), ``"sinusoidal"`` (absolute, added) or ``"none"``.
        prefix_vocab_size: if > 0, prefix *tokens* from their own vocabulary (e.g. MuLan tokens) can
            condition the model; prefix *embeddings* ``(batch, prefix_len, d_model)`` always can.
        cross_attention: every block also attends to a ``memory`` (e.g. an encoder's output).
        memory_dim: width of that memory (``None``: ``d_model``).
        tie_embeddings: the output projection shares the input embedding's matrix.
    """

    vocab_size: int
    max_len: int = 256
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int | None = None
    dropout: float = 0.0
    positions: str = "rope"
    prefix_vocab_size: int = 0
    cross_attention: bool = False
    memory_dim: int | None = None
    tie_embeddings: bool = True


class GenerationCache:
    """Every layer's :class:`KVCache` for one generation: self-attention over the growing sequence and,
    for a cross-attending model, the memory's keys and values (computed once)."""

    def __init__(self, config: TransformerLMConfig, batch_size: int, memory_len: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        head_dim = config.d_model // config.n_heads
        self.self_attention = [KVCache(batch_size, config.n_heads, config.max_len, head_dim, dtype, device)
                               for _ in range(config.n_layers)]
        self.cross_attention = ([KVCache(batch_size, config.n_heads, memory_len, head_dim, dtype, device)
                                 for _ in range(config.n_layers)] if config.cross_attention else
                                [None] * config.n_layers)

    @property
    def length(self) -> int:
        """Positions (prefix included) already processed."""
        return self.self_attention[0].length


class TransformerLM(nn.Module):
    """A decoder-only Transformer language model: ``p(x_t | x_<t, condition)``.

    ``forward(tokens)`` returns next-token logits at every position (position ``t`` predicts token
    ``t + 1``), computed in one parallel pass thanks to the causal mask: that is teacher forcing.
    ``generate`` samples one token at a time.

    Conditioning (both optional, both usable at once):

    * ``prefix``: ``(batch, prefix_len)`` int64 tokens of the prefix vocabulary (needs
      ``config.prefix_vocab_size > 0``) or ``(batch, prefix_len, d_model)`` float embeddings, placed in
      front of the tokens. The tokens attend to it; no logits are produced for it. MusicLM's semantic
      stage is exactly this with MuLan tokens as the prefix.
    * ``memory``: ``(batch, memory_len, memory_dim)``, read by cross-attention in every block (needs
      ``config.cross_attention``), with ``memory_mask`` ``(batch, memory_len)`` bool (``False`` = padding).
    """

    def __init__(self, config: TransformerLMConfig, use_sdpa: bool | None = None):
        super().__init__()
        if config.d_model % config.n_heads:
            raise ValueError(f"n_heads={config.n_heads} must divide d_model={config.d_model}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.prefix_embedding = (nn.Embedding(config.prefix_vocab_size, config.d_model)
                                 if config.prefix_vocab_size > 0 else None)
        self.positions = _Positions(config.positions, config.max_len, config.d_model, config.n_heads)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_heads, config.d_ff or 4 * config.d_model, config.dropout,
                  causal=True, cross_attention=config.cross_attention, memory_dim=config.memory_dim,
                  use_sdpa=use_sdpa)
            for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        _init_weights(self, config.n_layers)
        if config.tie_embeddings:
            self.head.weight = self.embedding.weight

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        if prefix.dtype == torch.long:
            if self.prefix_embedding is None:
                raise ValueError("prefix tokens need a model built with prefix_vocab_size > 0; or pass "
                                 "prefix embeddings of shape (batch, prefix_len, d_model)")
            _check_tokens(prefix, self.config.prefix_vocab_size, name="prefix")
            return self.prefix_embedding(prefix)
        if not prefix.is_floating_point() or prefix.dim() != 3 or prefix.shape[-1] != self.config.d_model:
            raise ValueError(f"prefix must be (batch, prefix_len) int64 tokens or (batch, prefix_len, "
                             f"{self.config.d_model}) float embeddings, got {tuple(prefix.shape)} {prefix.dtype}")
        return prefix

    def forward(self, tokens: torch.Tensor, prefix: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                cache: GenerationCache | None = None, return_attention: bool = False):
        """Next-token logits ``(batch, time, vocab_size)`` for ``(batch, time)`` int64 ``tokens``.

        Args:
            prefix, memory, memory_mask: the conditioning (see the class docstring).
            cache: a :class:`GenerationCache`; the tokens continue what it holds (pass the prefix only on
                the first call, when it is empty).
            return_attention: also return ``{"self": [...], "cross": [...]}``, one
                ``(batch, n_heads, query_len, key_len)`` tensor per layer (self-attention maps include
                the prefix positions).
        """
        _check_tokens(tokens, self.config.vocab_size)
        if memory is not None and not self.config.cross_attention:
            raise ValueError("memory given, but this model has no cross-attention (cross_attention=False)")
        if self.config.cross_attention and memory is None and (cache is None or cache.length == 0):
            raise ValueError("this model cross-attends: pass memory=(batch, memory_len, memory_dim)")
        x = self.embedding(tokens)                                        # (batch, time, d_model)
        prefix_len = 0
        if prefix is not None:
            if cache is not None and cache.length > 0:
                raise ValueError("the prefix goes in the first call only; the cache already holds it")
            prefix_embeddings = self._embed_prefix(prefix)
            if prefix_embeddings.shape[0] != tokens.shape[0]:
                raise ValueError(f"prefix has batch {prefix_embeddings.shape[0]}, tokens {tokens.shape[0]}")
            prefix_len = prefix_embeddings.shape[1]
            x = torch.cat([prefix_embeddings.to(x.dtype), x], dim=1)
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        if start + x.shape[1] > self.config.max_len:
            raise ValueError(f"sequence of {start + x.shape[1]} positions (prefix included) is longer than "
                             f"max_len={self.config.max_len}")
        x = self.dropout(self.positions.add_to_input(x, positions))
        cross_mask = None if memory_mask is None else key_padding_to_attention_mask(memory_mask)
        maps: dict[str, list] = {"self": [], "cross": []}
        for index, block in enumerate(self.blocks):
            x, weights = block(
                x, rotary=self.positions.rotary, positions=positions, memory=memory, memory_mask=cross_mask,
                self_cache=cache.self_attention[index] if cache is not None else None,
                cross_cache=cache.cross_attention[index] if cache is not None else None,
                need_weights=return_attention)
            maps["self"].append(weights["self"])
            maps["cross"].append(weights["cross"])
        logits = self.head(self.final_norm(x[:, prefix_len:]))
        return (logits, maps) if return_attention else logits

    def new_cache(self, batch_size: int, memory: torch.Tensor | None = None) -> GenerationCache:
        """An empty :class:`GenerationCache` on this model's device and dtype."""
        weight = self.embedding.weight
        return GenerationCache(self.config, batch_size, None if memory is None else memory.shape[1],
                               dtype=weight.dtype, device=weight.device)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None, prefix: torch.Tensor | None = None,
                 memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                 stop_token: int | None = None, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Sample a continuation of ``prompt`` one token at a time.

        Args:
            prompt: ``(batch, prompt_len)`` int64, at least one token (e.g. a BOS token).
            max_new_tokens: tokens to add; prefix + prompt + new must fit in ``max_len``.
            temperature, top_k, top_p: see :func:`sample_next_token` (``temperature=0``: greedy).
            use_cache: keep keys/values of past positions (one new row of attention per token) instead
                of re-running the whole sequence each step. Both give the same tokens for the same seed.
            generator: a ``torch.Generator`` for reproducible samples.
            prefix, memory, memory_mask: the conditioning, as in :meth:`forward`.
            stop_token: once a sequence emits it, it repeats it; generation ends early when all have.
            allowed: ``(max_new_tokens, vocab_size)`` bool, the ids that new token ``i`` may take (a
                per-step vocabulary mask, e.g. :meth:`mlm_lessons.musiclm.TokenLayout.valid_ids`): the others
                get probability 0 before sampling, greedy or not.

        Returns:
            ``(batch, prompt_len + new)`` int64: the prompt followed by the samples.
        """
        _check_tokens(prompt, self.config.vocab_size, name="prompt")
        if prompt.shape[1] < 1:
            raise ValueError("prompt needs at least one token (e.g. a start token)")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        _check_sampling(temperature, top_k, top_p)
        if allowed is not None and (allowed.dtype != torch.bool or allowed.shape != (max_new_tokens,
                                                                                     self.config.vocab_size)):
            raise ValueError(f"allowed must be a bool mask of shape (max_new_tokens, vocab_size) = "
                             f"{(max_new_tokens, self.config.vocab_size)}, got {allowed.dtype} {tuple(allowed.shape)}")
        if allowed is not None and not bool(allowed.any(dim=1).all()):
            raise ValueError(f"allowed leaves no valid id for new token {int((~allowed.any(dim=1)).nonzero()[0])}")
        prefix_len = 0 if prefix is None else prefix.shape[1]
        total = prefix_len + prompt.shape[1] + max_new_tokens
        if total > self.config.max_len:
            raise ValueError(f"prefix ({prefix_len}) + prompt ({prompt.shape[1]}) + max_new_tokens "
                             f"({max_new_tokens}) = {total} positions exceeds max_len={self.config.max_len}")
        was_training = self.training
        self.eval()
        try:
            tokens = prompt
            cache = self.new_cache(prompt.shape[0], memory) if use_cache else None
            finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
            logits = self(tokens, prefix=prefix, memory=memory, memory_mask=memory_mask, cache=cache)[:, -1]
            for step in range(max_new_tokens):
                if step > 0:
                    if use_cache:   # only the newest token goes through the network
                        logits = self(tokens[:, -1:], memory=memory, memory_mask=memory_mask, cache=cache)[:, -1]
                    else:           # the whole sequence again, every step
                        logits = self(tokens, prefix=prefix, memory=memory, memory_mask=memory_mask)[:, -1]
                if allowed is not None:
                    logits = logits.masked_fill(~allowed[step].to(logits.device), float("-inf"))
                next_token = sample_next_token(logits, temperature, top_k, top_p, generator)
                if stop_token is not None:
                    next_token = torch.where(finished, torch.full_like(next_token, stop_token), next_token)
                    finished |= next_token == stop_token
                tokens = torch.cat([tokens, next_token[:, None]], dim=1)
                if stop_token is not None and bool(finished.all()):
                    break
        finally:
            self.train(was_training)
        return tokens


# ----------------------------------------------------------------------------------------------------
# Sampling


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to ``-inf`` the logits that top-k and/or top-p (nucleus) sampling exclude.

    * top-k keeps the ``k`` most likely tokens;
    * top-p keeps the smallest set of most likely tokens whose probabilities add up to at least ``p``
      (Holtzman et al., 2020): few tokens when the model is sure, many when it is not.

    Args:
        logits: ``(..., vocab_size)``.

    Returns:
        ``(..., vocab_size)``; the most likely token is always kept.
    """
    _check_sampling(1.0, top_k, top_p)
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probabilities = torch.softmax(sorted_logits, dim=-1)
        mass_before = probabilities.cumsum(dim=-1) - probabilities     # probability of the better tokens
        remove_sorted = mass_before >= top_p                           # the nucleus is already full
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits / temperature)`` after top-k / top-p filtering.

    The draw is an inverse-CDF lookup of one uniform number per row, so the same generator state gives
    the same tokens whatever path computed the logits.

    Args:
        logits: ``(batch, vocab_size)``.
        temperature: < 1 sharpens the distribution, > 1 flattens it; 0 takes the argmax (greedy).

    Returns:
        ``(batch,)`` int64.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (batch, vocab_size), got {tuple(logits.shape)}")
    _check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)                  # (batch, vocab)
    uniform = torch.rand(logits.shape[0], 1, generator=generator,
                         device=generator.device if generator is not None else logits.device).to(logits.device)
    index = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)  # first token whose CDF passes u
    return index.clamp_max(logits.shape[-1] - 1).squeeze(-1)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (nats per token) and accuracy of ``(batch, time, vocab)`` logits against
    ``(batch, time)`` targets, skipping targets equal to ``ignore_index`` (e.g. padding)."""
    loss = F.cross_entropy(logits.transpose(1, 2).float(), targets, ignore_index=ignore_index)
    counted = targets != ignore_index
    accuracy = ((logits.argmax(-1) == targets) & counted).sum() / counted.sum().clamp_min(1)
    return loss, accuracy


# ----------------------------------------------------------------------------------------------------
# 4. Encoder--decoder


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Hyper-parameters of a :class:`Seq2SeqTransformer`."""

    source_vocab_size: int
    target_vocab_size: int
    max_source_len: int = 128
    max_target_len: int = 128
    d_model: int = 128
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None
    dropout: float = 0.0
    positions: str = "sinusoidal"
    pad_token: int = 0


class Seq2SeqTransformer(nn.Module):
    """The encoder--decoder of "Attention Is All You Need" (Vaswani et al., 2017), pre-norm.

    The encoder reads the whole source at once; the decoder writes the target left to right, attending
    causally to what it has written and, through cross-attention, to every encoded source position.
    """

    def __init__(self, config: Seq2SeqConfig, use_sdpa: bool | None = None):
        super().__init__()
        self.config = config
        self.encoder = TransformerEncoder(config.source_vocab_size, config.max_source_len, config.d_model,
                                          config.n_encoder_layers, config.n_heads, config.d_ff, config.dropout,
                                          config.positions, use_sdpa=use_sdpa)
        self.decoder = TransformerLM(TransformerLMConfig(
            vocab_size=config.target_vocab_size, max_len=config.max_target_len, d_model=config.d_model,
            n_layers=config.n_decoder_layers, n_heads=config.n_heads, d_ff=config.d_ff, dropout=config.dropout,
            positions=config.positions, cross_attention=True), use_sdpa=use_sdpa)

    def encode(self, source: torch.Tensor, return_attention: bool = False):
        """``(batch, source_len)`` -> memory ``(batch, source_len, d_model)`` and its padding mask."""
        source_is_real = source != self.config.pad_token
        encoded = self.encoder(source, source_is_real, return_attention=return_attention)
        return (*encoded, source_is_real) if return_attention else (encoded, source_is_real)

    def forward(self, source: torch.Tensor, target: torch.Tensor, return_attention: bool = False):
        """Teacher-forced logits ``(batch, target_len, target_vocab_size)``: position ``t`` predicts
        ``target[:, t + 1]``. With ``return_attention``, also ``{"encoder", "self", "cross"}`` maps."""
        if return_attention:
            memory, encoder_maps, source_is_real = self.encode(source, return_attention=True)
            logits, maps = self.decoder(target, memory=memory, memory_mask=source_is_real, return_attention=True)
            return logits, {"encoder": encoder_maps, **maps}
        memory, source_is_real = self.encode(source)
        return self.decoder(target, memory=memory, memory_mask=source_is_real)

    @torch.no_grad()
    def generate(self, source: torch.Tensor, start_token: int, max_new_tokens: int,
                 stop_token: int | None = None, **sampling) -> torch.Tensor:
        """Decode a target for each source, starting from ``start_token``; greedy unless ``sampling``
        (``temperature``, ``top_k``, ``top_p``, ``generator``, ``use_cache``) says otherwise."""
        sampling.setdefault("temperature", 0.0)
        was_training = self.training
        self.eval()
        try:
            memory, source_is_real = self.encode(source)
        finally:
            self.train(was_training)
        prompt = torch.full((source.shape[0], 1), start_token, dtype=torch.long, device=source.device)
        return self.decoder.generate(prompt, max_new_tokens, memory=memory, memory_mask=source_is_real,
                                     stop_token=stop_token, **sampling)


def config_dict(config) -> dict:
    """A model config as a plain dict (for ``Trainer(model_config=...)`` and printing)."""
    return dataclasses.asdict(config)
