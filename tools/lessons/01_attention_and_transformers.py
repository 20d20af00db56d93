# %% [markdown]
# # Lesson 01 — Attention and transformers
#
# Most of what MusicLM chains together is built on one operation, **attention**: its semantic, coarse
# and fine stages and MuLan's text tower are **Transformers**, and w2v-BERT is a Conformer (a
# Transformer block with a convolution module added). Only the SoundStream codec and MuLan's audio
# tower (a ResNet) are convolutional networks without attention. This lesson derives attention,
# builds it from scratch, checks it against
# PyTorch and the course package, and then trains a small **encoder–decoder** Transformer on a
# musical task: *transpose this melody by a given interval*. You will see, in its attention maps,
# the decoder look up the matching note of the source melody as it writes each note.
#
# **Goals.** By the end you can
# 1. write scaled dot-product attention in a few lines and explain each factor (why $\sqrt{d}$?);
# 2. build padding and causal masks and say which model needs which;
# 3. split attention into heads, and give a model a sense of order with sinusoidal or rotary
#    position encodings, and say why rotary ones suit music and generation;
# 4. assemble pre-norm blocks into an encoder–decoder, train it with the course's training loop,
#    and read its attention maps.
#
# **Prerequisites.** Lesson 00 (the SynthCaps data); matrix products and the softmax; a little
# PyTorch (`nn.Module`, tensors and their shapes). Runs on a laptop CPU in about two minutes.

# %% [markdown]
# ## Set-up
# One cell holds every setting. The defaults suit a 2-core CPU; with a GPU set `PRESET = "small"`
# and `DEVICE = "auto"` for a wider model trained for longer. In the picture of MusicLM below, the
# parts built from attention are highlighted: the three stage transformers (MuLan's text tower is one
# too, and w2v-BERT's Conformer blocks contain attention).

# %%
import dataclasses
import math
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep instead of spinning: far faster on a busy CPU

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display

from mlm_lessons import attention, diagrams, melody, runtime, train, transformer, viz
from mlm_lessons.melody import VOCAB

PRESET = "tiny"                 # "tiny" on a CPU; "small" on one GPU (see mlm_lessons.config)
DEVICE = "cpu"                  # "cpu", or "auto" to use a GPU when there is one
SEED = 0
SIZES = {                       # the encoder-decoder of section 6, per preset
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, steps=600, melodies=3_000),
    "small": dict(d_model=256, n_layers=4, n_heads=8, steps=4_000, melodies=50_000),
}[PRESET]

run = runtime.set_up_lesson(PRESET, DEVICE, SEED, threads=2)
SAMPLE_RATE = run.sample_rate
print(f"section 6's encoder-decoder: d_model={SIZES['d_model']}, {SIZES['n_layers']}+{SIZES['n_layers']} layers")
diagrams.musiclm_diagram(highlight="attention")
plt.show()

# %% [markdown]
# ## 1. Music as a sequence of tokens
#
# A Transformer reads a sequence of **tokens**: integers from a fixed vocabulary. MusicLM's
# tokens come from three trained audio models: the SoundStream codec (lesson 05), the
# self-supervised w2v-BERT (lesson 06) and MuLan (lesson 07). To learn the machinery on something we can
# read, this lesson and the next use the *written melodies* of SynthCaps. `mlm_lessons.melody`
# turns a melody into tokens: a note is a **pitch** token followed by a **duration** token, a
# silence is `rest` plus a duration, `|` marks the start of a bar, and `<bos>`/`<eos>` open and
# close the sequence.

# %%
# NBVAL_CHECK_OUTPUT
notes, attrs = melody.compose_melody(seed=3, beats=8)
tokens = melody.encode_melody(notes)
print(f"{len(notes)} notes, {attrs.key} {attrs.mode}, {attrs.tempo_bpm} bpm -> {len(tokens)} tokens")
print(" ".join(VOCAB.to_names(tokens)))
print(f"vocabulary: {len(VOCAB)} tokens, e.g. {VOCAB.names[:8]} ... {VOCAB.names[-3:]}")
assert melody.decode_melody(tokens, strict=True) == notes

# %% [markdown]
# Seen as a piano roll and heard on the SynthCaps piano:

# %%
ax = melody.plot_piano_roll(notes, title=f"a SynthCaps melody in {attrs.key} {attrs.mode}")
ax.figure.set_size_inches(7, 2.2)
plt.show()
viz.play(melody.render_melody(notes, tempo_bpm=attrs.tempo_bpm, seconds=3.0), SAMPLE_RATE)

# %% [markdown]
# ## 2. Attention: a soft dictionary look-up
#
# To understand a note in a melody you look at *other* notes: the one before it, the one a bar
# earlier that it repeats, the chord tone it resolves to. Attention lets every position of a
# sequence gather information from every other position, with weights it computes itself.
#
# Each position $i$ emits a **query** $q_i$ ("what am I looking for?"); each position $j$ offers a
# **key** $k_j$ ("what do I contain?") and a **value** $v_j$ ("what do I pass on?"). All three are
# learned linear maps of the token's vector. The match between query $i$ and key $j$ is their dot
# product; a softmax over $j$ turns the matches into weights that sum to one; the output is the
# weighted average of the values:
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}}\right) V,
# \qquad Q \in \mathbb{R}^{T_q \times d},\; K \in \mathbb{R}^{T_k \times d},\; V \in \mathbb{R}^{T_k \times d_v}.$$
# It is a dictionary look-up made differentiable: instead of returning the value of the one key
# that matches, it returns a blend, weighted by how well each key matches.
#
# **Why divide by $\sqrt{d}$?** If the entries of $q$ and $k$ are independent with unit variance,
# $q \cdot k = \sum_{n=1}^{d} q_n k_n$ is a sum of $d$ unit-variance terms: its standard deviation
# is $\sqrt{d}$. Wide heads would feed the softmax huge numbers, it would saturate into a one-hot,
# and its gradient would vanish. Dividing by $\sqrt{d}$ keeps the scores at unit scale, whatever
# the width. Let us check the arithmetic.

# %%
# NBVAL_CHECK_OUTPUT
generator = torch.Generator().manual_seed(SEED)
for d in (4, 64, 1024):
    q, k = torch.randn(20_000, d, generator=generator), torch.randn(20_000, d, generator=generator)
    scores = (q * k).sum(-1)
    print(f"d = {d:4d}: std of q.k = {scores.std():5.1f} (sqrt(d) = {math.sqrt(d):4.1f}); "
          f"after dividing by sqrt(d): {(scores / math.sqrt(d)).std():.2f}")

# %% [markdown]
# ### Build it
# Five lines. The shapes carry any leading batch dimensions: `(..., time, dim)`.

# %%
def my_attention(q, k, v, mask=None):
    """q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv); mask True where allowed -> (..., Tq, dv), weights."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])          # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))             # blocked pairs get zero weight
    weights = torch.softmax(scores, dim=-1)                           # each row sums to 1
    return weights @ v, weights

q, k, v = (torch.randn(2, 5, 8, generator=generator) for _ in range(3))
ours, weights = my_attention(q, k, v)
torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v))
torch.testing.assert_close(ours, attention.scaled_dot_product_attention(q, k, v))
print("my_attention == F.scaled_dot_product_attention == attention.scaled_dot_product_attention")

# %% [markdown]
# ### Masks
# Two kinds of positions must sometimes be hidden:
#
# * **padding.** Melodies have different lengths; a batch pads the short ones with `<pad>` tokens.
#   No real token should attend to them. A **padding mask** blocks those keys.
# * **the future.** A model that *generates* left to right (a decoder) must predict token $t+1$
#   from tokens $\le t$ only. During training we feed the whole sequence at once, so a **causal
#   mask** blocks every key $j > i$ for query $i$: the upper triangle of the score matrix.
#
# Here is a batch of two sequences, the second with two padding positions at the end, under each
# mask. Blocked scores become $-\infty$, so their weights are exactly zero.

# %%
# NBVAL_CHECK_OUTPUT
lengths = torch.tensor([5, 3])
key_is_real = torch.arange(5)[None, :] < lengths[:, None]             # (batch, time)
padding = key_is_real[:, None, :]                                      # (batch, 1, Tk): same for every query
causal = torch.ones(5, 5, dtype=torch.bool).tril()                     # (Tq, Tk): key j <= query i
torch.testing.assert_close(key_is_real, attention.padding_mask(lengths, 5))
torch.testing.assert_close(causal, attention.causal_mask(5))

_, padded_weights = my_attention(q, k, v, mask=padding)
_, causal_weights = my_attention(q, k, v, mask=padding & causal)
torch.testing.assert_close(my_attention(q, k, v, mask=padding & causal)[0],
                           F.scaled_dot_product_attention(q, k, v, attn_mask=padding & causal))
print("weights on padded keys:", padded_weights[1, :, 3:].abs().max().item())
print("weights on future keys:", causal_weights.triu(diagonal=1).abs().max().item())

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, (title, w) in zip(axes, [("no mask", weights[1]), ("padding mask", padded_weights[1]),
                                  ("padding + causal", causal_weights[1])]):
    attention.plot_attention(w, ax=ax, title=f"sequence 2 (length 3): {title}")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Many heads
# One attention computes one kind of relation. **Multi-head attention** runs $h$ of them side by
# side: project the $d_\text{model}$-wide input to queries, keys and values, cut each into $h$
# slices of width $d_\text{model}/h$, attend within each slice, concatenate the $h$ outputs and mix
# them with an output projection $W_O$:
# $$\mathrm{MultiHead}(X) = \mathrm{Concat}(\text{head}_1, \dots, \text{head}_h)\, W_O,\qquad
# \text{head}_i = \mathrm{Attention}(X W_Q^{(i)}, X W_K^{(i)}, X W_V^{(i)}).$$
# The cost is the same as one wide head; what we gain is that one head can follow the previous
# note while another follows the note one bar back. The "cutting" is a reshape:
# `(batch, time, d_model)` → `(batch, n_heads, time, head_dim)`. Let us write it and compare with
# the package's `MultiHeadAttention` using the same weights. With `memory` given, the keys and
# values come from another sequence: that is **cross-attention**, the bridge between an encoder and
# a decoder.

# %%
def my_multi_head(layer, x, memory=None, mask=None):
    """Multi-head attention with the weights of an attention.MultiHeadAttention layer."""
    batch, time, d_model = x.shape
    n_heads, head_dim = layer.n_heads, d_model // layer.n_heads
    source = x if memory is None else memory
    keys, values = layer.key_value_proj(source).chunk(2, dim=-1)
    split = lambda t: t.view(batch, -1, n_heads, head_dim).transpose(1, 2)   # (batch, heads, time, head_dim)
    out, weights = my_attention(split(layer.query_proj(x)), split(keys), split(values), mask)
    return layer.out_proj(out.transpose(1, 2).reshape(batch, time, d_model)), weights

layer = attention.MultiHeadAttention(d_model=32, n_heads=4)
x, memory = torch.randn(2, 6, 32, generator=generator), torch.randn(2, 9, 32, generator=generator)
for name, kwargs in [("self-attention", {}), ("cross-attention", {"memory": memory})]:
    ours, ours_weights = my_multi_head(layer, x, **kwargs)
    package, package_weights = layer(x, need_weights=True, **kwargs)
    torch.testing.assert_close(ours, package)
    print(f"{name}: output {tuple(ours.shape)}, weights {tuple(ours_weights.shape)} = (batch, heads, Tq, Tk); matches")

# %% [markdown]
# On a GPU the package computes the same thing with PyTorch's fused
# `F.scaled_dot_product_attention` (FlashAttention-style kernels that never store the
# `(Tq, Tk)` weight matrix); the written-out version is used when you ask for the weights, as the
# plots in this lesson do. `bench/bench_attention.py` measures the difference; the tests prove the
# two agree, masks included.
#
# ## 4. Where is each token? Positions
# Attention treats its input as a *set*: permute the tokens and the outputs are permuted the same
# way, nothing else changes. A melody read as a set of notes has lost its tune.

# %%
# NBVAL_CHECK_OUTPUT
order = torch.randperm(6, generator=generator)
out, _ = layer(x)
out_permuted, _ = layer(x[:, order])
torch.testing.assert_close(out_permuted, out[:, order])
print("permuting the input only permutes the output: attention alone cannot tell order")

# %% [markdown]
# **Sinusoidal encodings** (Vaswani et al., 2017) add to token $t$'s vector a code of its
# position: dimension pair $(2i, 2i+1)$ holds $\sin(t\,\omega_i)$ and $\cos(t\,\omega_i)$ with
# frequencies $\omega_i = 10000^{-2i/d}$ spaced geometrically, like the hands of a clock that
# turn at very different speeds. They are fixed, not learned, and any shift by $k$ positions is a
# rotation of each pair, so "$k$ steps back" is easy to express.

# %%
def my_sinusoidal(max_len, d_model):
    position = torch.arange(max_len)[:, None]
    frequency = 10_000 ** (-torch.arange(0, d_model, 2) / d_model)
    codes = torch.zeros(max_len, d_model)
    codes[:, 0::2], codes[:, 1::2] = torch.sin(position * frequency), torch.cos(position * frequency)
    return codes

codes = my_sinusoidal(64, 32)
torch.testing.assert_close(codes, attention.sinusoidal_positions(64, 32))
fig, axes = plt.subplots(1, 2, figsize=(11, 3))
image = axes[0].imshow(codes.T, aspect="auto", cmap="RdBu", origin="lower")
axes[0].set(xlabel="position", ylabel="dimension", title="sinusoidal position codes")
fig.colorbar(image, ax=axes[0])
axes[1].imshow(codes @ codes.T, cmap="viridis", origin="lower")
axes[1].set(xlabel="position", ylabel="position", title="dot products of codes: depend on the distance")
plt.tight_layout()
plt.show()

# %% [markdown]
# Adding a position code to the content mixes the two in every later layer. **Rotary position
# embeddings** (RoPE; Su et al., 2021) instead *rotate* each query and key, pair of dimensions by
# pair, by an angle proportional to its position: $R_t = $ rotation by $t\,\theta_i$ in plane $i$.
# Because rotations compose, $\langle R_m q, R_n k\rangle = \langle q, R_{n-m} k\rangle$: the
# attention score depends on the positions **only through their distance** $n - m$. Why we use it
# for the course's language models:
#
# * music is about relative time: a motif repeated one bar later is the same relation wherever it
#   happens, and a relative scheme shares what it learns across positions;
# * nothing is added to the token vectors, and nothing is learned;
# * with a KV cache (lesson 02) a stored key keeps the rotation of its own position, so caching
#   stays exact.
#
# Build it, then check the relative property numerically.

# %%
# NBVAL_CHECK_OUTPUT
def my_rotary(x, positions, base=10_000.0):
    """Rotate (..., time, d) by position: pair (2i, 2i+1) turns by position * base^(-2i/d)."""
    theta = base ** (-torch.arange(0, x.shape[-1], 2) / x.shape[-1])
    angle = positions[:, None] * theta                                 # (time, d/2)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * angle.cos() - odd * angle.sin(), even * angle.sin() + odd * angle.cos()], -1).flatten(-2)

rotary = attention.RotaryEmbedding(head_dim=16, max_len=256)
vectors = torch.randn(3, 10, 16, generator=generator)
torch.testing.assert_close(my_rotary(vectors, torch.arange(10)), rotary(vectors, torch.arange(10)))

query, key = torch.randn(16, generator=generator), torch.randn(16, generator=generator)
def rotary_score(m, n):
    return float(rotary(query[None], torch.tensor([m])) @ rotary(key[None], torch.tensor([n]))[0])
for distance in (1, 4):
    print(f"distance {distance}: scores at positions (0, {distance}), (50, {50 + distance}), "
          f"(200, {200 + distance}) = " + ", ".join(f"{rotary_score(m, m + distance):.4f}" for m in (0, 50, 200)))

# %% [markdown]
# ## 5. The Transformer block, and the encoder–decoder
#
# A **block** adds two sub-layers to a "residual stream" $x$: attention (tokens exchange
# information) and a position-wise MLP (each token thinks on its own), each behind a LayerNorm:
# $$x \leftarrow x + \mathrm{Attention}(\mathrm{LN}(x)), \qquad x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x)).$$
# This is the **pre-norm** arrangement (Xiong et al., 2020). The original Transformer normalised
# *after* each addition; putting the norm inside the branch leaves the stream a plain sum, which
# keeps gradients well scaled in deep stacks and trains without delicate learning-rate warm-up.
# Here is one block as `transformer.Block` builds it, read from the bottom up. It is drawn as a
# decoder block of an encoder–decoder (below): causal self-attention, then the cross-attention
# sub-layer that only such blocks have, then the MLP.

# %%
diagrams.transformer_block_diagram(causal=True, cross_attention=True, n_heads=SIZES["n_heads"])
plt.show()

# %% [markdown]
# The original Transformer (Vaswani et al., 2017) was built for translation, and it has two
# stacks:
#
# * the **encoder** reads the whole source (a French sentence; here, a melody plus an instruction)
#   with unmasked self-attention (padding mask only): every position sees every other;
# * the **decoder** writes the target one token at a time. Each of its blocks has causal
#   self-attention over what it has written so far, then **cross-attention** whose queries come
#   from the decoder and whose keys and values are the encoder's outputs, then the MLP.

# %%
diagrams.encoder_decoder_diagram(n_layers=SIZES["n_layers"])
plt.show()

# %% [markdown]
# `transformer.Seq2SeqTransformer` is exactly that, made of `transformer.Block`s; its decoder is a
# `transformer.TransformerLM` with cross-attention switched on, the same class lesson 02 trains
# alone and lesson 08 conditions on MuLan tokens. The encoder block must see the whole source,
# the decoder's must not see its own future. A quick check of both on an untrained model:

# %%
# NBVAL_CHECK_OUTPUT
toy = transformer.Seq2SeqTransformer(transformer.Seq2SeqConfig(len(VOCAB), len(VOCAB), d_model=32, n_heads=4))
source, target = torch.randint(5, 100, (1, 12), generator=generator), torch.randint(5, 100, (1, 10), generator=generator)
changed_source, changed_target = source.clone(), target.clone()
changed_source[0, -1] += 1          # change the LAST source token
changed_target[0, 6] += 1           # change target token 6
with torch.no_grad():
    logits = toy(source, target)
    print("changing the last source token changes the first output:", not torch.allclose(logits[0, 0], toy(changed_source, target)[0, 0]))
    after = toy(source, changed_target)
    print("changing target token 6 changes outputs 0-5:", not torch.allclose(logits[0, :6], after[0, :6]))
    print("... and outputs 6-9:", not torch.allclose(logits[0, 6:], after[0, 6:]))
print(f"{sum(p.numel() for p in toy.parameters()):,} parameters; blocks: {type(toy.decoder.blocks[0]).__name__} "
      f"with cross-attention = {toy.decoder.blocks[0].cross_attention is not None}")

# %% [markdown]
# ## 6. Train an encoder–decoder: transposing melodies
#
# The task: given an instruction token such as `<up 3>` followed by a melody, write the same
# melody three semitones higher. Rhythm, rests and bar lines are copied; every pitch moves.
# `melody.TranspositionDataset` makes such pairs from SynthCaps melodies (two bars each), with
# five intervals (down a fourth, down a tone, unchanged, up a minor third, up a fourth). Training
# and held-out melodies come from disjoint seeds, so the test melodies were never seen.

# %%
# NBVAL_CHECK_OUTPUT
train_pairs = melody.TranspositionDataset(SIZES["melodies"], beats=8, first_seed=0)
test_pairs = melody.TranspositionDataset(300, beats=8, first_seed=1_000_000)
example = test_pairs[0]
print("source:", " ".join(VOCAB.to_names(example["source"][example["source"] != melody.PAD])))
print("target:", " ".join(VOCAB.to_names(example["target"][example["target"] != melody.PAD])))
print(f"{len(train_pairs)} training pairs, {len(test_pairs)} held-out; tensors {tuple(train_pairs.sources.shape)}")

# %% [markdown]
# The decoder is trained with **teacher forcing**: it receives the true target shifted right
# (`<bos>` + all but the last token) and predicts every next token in one parallel pass; the loss
# is the cross-entropy over the real (non-padding) target tokens. We train with the course's one
# training loop, `mlm_lessons.train.Trainer`: all we write is how a batch becomes a loss.

# %%
def transposition_loss(model, batch):
    logits = model(batch["source"], batch["target"][:, :-1])          # (batch, time - 1, vocab)
    loss, accuracy = transformer.next_token_loss(logits, batch["target"][:, 1:], ignore_index=melody.PAD)
    return loss, {"accuracy": accuracy}

torch.manual_seed(SEED)
seq2seq_config = transformer.Seq2SeqConfig(
    source_vocab_size=len(VOCAB), target_vocab_size=len(VOCAB), max_source_len=40, max_target_len=40,
    d_model=SIZES["d_model"], n_encoder_layers=SIZES["n_layers"], n_decoder_layers=SIZES["n_layers"],
    n_heads=SIZES["n_heads"], positions="sinusoidal")
model = transformer.Seq2SeqTransformer(seq2seq_config)
train_config = dataclasses.replace(run.preset.train, max_steps=SIZES["steps"], batch_size=32,
                                   learning_rate=3e-3, warmup_steps=20, log_every=25, device=DEVICE, seed=SEED)
history = train.Trainer(model, train_config, train_pairs, transposition_loss, progress=False).fit()
print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {SIZES['steps']} steps; "
      f"final training loss {history[-1]['loss']:.3f}, accuracy {history[-1]['accuracy']:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3))
viz.plot_history(history, keys=["loss"], ax=axes[0], log_y=True, title="training loss (cross-entropy, nats)")
viz.plot_history(history, keys=["accuracy"], ax=axes[1], title="next-token accuracy (teacher forcing)")
plt.tight_layout()
plt.show()
by_step = {row["step"]: row for row in history}
early, middle, late = by_step[50], by_step[250], by_step[400]
print(f"accuracy at steps 50, 250, 400: {early['accuracy']:.0%}, {middle['accuracy']:.0%}, {late['accuracy']:.0%}; "
      f"loss from step 250 to 400: {middle['loss']:.2f} -> {late['loss']:.2f} nats")
assert early["accuracy"] < 0.5 < middle["accuracy"] < 0.8 and late["accuracy"] > 0.95
assert middle["loss"] / late["loss"] > 4

# %% [markdown]
# Training goes in two phases. Within 50 steps the accuracy reaches about 40%; it then climbs slowly, to
# about two thirds by step 250; between steps 250 and 400 the loss falls again, several-fold, and the
# accuracy passes 95% (the figures printed above). Now the real test: **generate** transpositions of the held-out
# melodies, token by token (greedy decoding), and compare with the right answer.

# %%
model.eval()
with torch.no_grad():
    generated = model.generate(test_pairs.sources.to(run.device), start_token=melody.BOS, max_new_tokens=39,
                               stop_token=melody.EOS).cpu()
answers = [melody.transpose(notes, shift) for notes, shift in zip(test_pairs.melodies, test_pairs.shifts)]
outputs = [melody.decode_melody(tokens) for tokens in generated]
exact = np.mean([out == answer for out, answer in zip(outputs, answers)])
pitch_hits = [a.pitch == b.pitch for out, answer in zip(outputs, answers) if len(out) == len(answer)
              for a, b in zip(out, answer)]
print(f"held-out melodies transposed exactly: {exact:.1%}; notes with the right pitch: {np.mean(pitch_hits):.1%}")
assert exact > 0.5, "the model should transpose most held-out melodies exactly"

# %%
index = next(i for i, shift in enumerate(test_pairs.shifts) if shift != 0)  # a real transposition, not a copy
fig, ax = plt.subplots(figsize=(8, 2.6))
melody.plot_piano_roll(test_pairs.melodies[index], ax=ax, label="source", color="0.6")
melody.plot_piano_roll(outputs[index], ax=ax, label=f"model: {VOCAB.names[int(test_pairs.sources[index, 0])]}",
                       color="C1", alpha=0.7)
ax.set_title("a held-out melody and the model's transposition")
plt.show()
display(viz.play(melody.render_melody(test_pairs.melodies[index], seconds=3.0), SAMPLE_RATE),
        viz.play(melody.render_melody(outputs[index], seconds=3.0), SAMPLE_RATE))

# %% [markdown]
# ## 7. See attention
#
# Which source tokens does the decoder look at while it writes? Run the model once with
# `return_attention=True` (the written-out attention keeps its weights) and pick a layer, a head
# and a kind of attention below. In **cross-attention** most heads draw a near-diagonal line:
# to write target token $t+1$, the decoder reads source token $t+1$, the note it is transposing,
# and some heads keep an eye on the instruction token at position 0. **Encoder** and decoder
# **self**-attention heads look at neighbours, bar lines and the instruction.

# %%
with torch.no_grad():
    source, target = test_pairs.sources[index:index + 1], test_pairs.targets[index:index + 1]
    length = int((source != melody.PAD).sum())
    _, maps = model(source[:, :length].to(run.device), target[:, :length - 1].to(run.device), return_attention=True)
maps = {kind: [weights.cpu() for weights in per_layer] for kind, per_layer in maps.items()}
source_labels = VOCAB.to_names(source[0, :length])
target_labels = VOCAB.to_names(target[0, :length - 1])
labels = {"cross": (target_labels, source_labels), "self": (target_labels, target_labels),
          "encoder": (source_labels, source_labels)}

def show_attention(kind="cross", layer=SIZES["n_layers"] - 1, head=0):
    """The widget's callback: one attention map (the selection is attention.select_attention_map)."""
    weights = attention.select_attention_map(maps[kind], layer, head)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    query_labels, key_labels = labels[kind]
    attention.plot_attention(weights, query_labels, key_labels, ax=ax, title=f"{kind}-attention, layer {layer}, head {head}")
    plt.show()

widgets.interact(show_attention, kind=widgets.Dropdown(options=list(labels), value="cross"),
                 layer=widgets.IntSlider(value=SIZES["n_layers"] - 1, min=0, max=SIZES["n_layers"] - 1),
                 head=widgets.IntSlider(value=0, min=0, max=SIZES["n_heads"] - 1));

# %% [markdown]
# The same, for every head of the last decoder layer's cross-attention at once (a static picture,
# for readers without a running kernel):

# %%
fig, axes = plt.subplots(1, SIZES["n_heads"], figsize=(3.2 * SIZES["n_heads"], 3.2))
for head, ax in enumerate(axes):
    ax.imshow(attention.select_attention_map(maps["cross"], SIZES["n_layers"] - 1, head), cmap="Blues", vmin=0, vmax=1)
    ax.set(title=f"head {head}", xlabel="source position", ylabel="target position")
fig.suptitle("cross-attention, last decoder layer: target token t reads source token t + 1")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exercises
# The tests call your functions on inputs you have not seen, so compute, don't copy numbers.
#
# **Exercise 1 (2 points): implement.** A decoder over a padded batch needs both masks at once. Write
# `decoder_mask(lengths, time)` returning a boolean tensor of shape `(batch, 1, time, time)` that
# is `True` where query $i$ of sequence $b$ may attend to key $j$: $j \le i$ **and** $j$ is a real
# token of sequence $b$.

# %% solution ex1_decoder_mask
def decoder_mask(lengths, time):
    ### BEGIN SOLUTION
    real = torch.arange(time)[None, :] < torch.as_tensor(lengths)[:, None]         # (batch, time)
    causal = torch.ones(time, time, dtype=torch.bool).tril()
    return real[:, None, None, :] & causal
    ### END SOLUTION

# %% tests ex1_decoder_mask_tests 2
mask = decoder_mask(torch.tensor([4, 2]), 4)
assert mask.shape == (2, 1, 4, 4) and mask.dtype == torch.bool
assert mask[0, 0].tolist() == torch.ones(4, 4, dtype=torch.bool).tril().tolist(), "a full-length sequence: lower triangle"
assert not mask[1, 0, :, 2:].any(), "no query may attend to padding"
### BEGIN HIDDEN TESTS
generator = torch.Generator().manual_seed(101)
for time in (1, 5, 9):
    lengths = torch.randint(1, time + 1, (4,), generator=generator)
    expected = attention.key_padding_to_attention_mask(attention.padding_mask(lengths, time)) & attention.causal_mask(time)
    assert torch.equal(decoder_mask(lengths, time), expected)
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (3 points): implement.** How focused is a head? The **entropy** of an attention row,
# $H = -\sum_j w_j \log w_j$ (in nats, with $0 \log 0 = 0$), is 0 when the row looks at one key and
# $\log n$ when it spreads evenly over $n$ keys. Write `attention_entropy(weights)` that takes
# weights of shape `(..., query_len, key_len)` and returns the mean entropy over all rows (a float
# or a 0-d tensor), and `sharpest_head(layer_maps)` that takes one layer's maps of shape
# `(batch, heads, query_len, key_len)` and returns the index (an `int`) of the head whose rows have
# the lowest mean entropy over the whole batch. Then, in a cell of your own, ask it which head of the
# last decoder layer's cross-attention (`maps["cross"][-1]`) is the sharpest, and compare with the
# pictures above.

# %% solution ex2_entropy
def attention_entropy(weights):
    ### BEGIN SOLUTION
    weights = torch.as_tensor(weights, dtype=torch.float64)
    plogp = torch.where(weights > 0, weights * weights.clamp_min(1e-300).log(), torch.zeros_like(weights))
    return -plogp.sum(-1).mean()
    ### END SOLUTION

def sharpest_head(layer_maps):
    ### BEGIN SOLUTION
    return int(np.argmin([float(attention_entropy(layer_maps[:, h])) for h in range(layer_maps.shape[1])]))
    ### END SOLUTION

# %% tests ex2_entropy_tests 3
assert abs(float(attention_entropy(torch.full((3, 8), 1 / 8))) - math.log(8)) < 1e-6, "uniform over 8 keys: log 8"
assert abs(float(attention_entropy(torch.eye(5)))) < 1e-9, "one-hot rows have zero entropy"
generator = torch.Generator().manual_seed(202)
sharpness = torch.tensor([1.0, 1.0, 8.0, 1.0])[None, :, None, None]        # head 2's scores are 8 times larger
maps_to_rank = torch.softmax(sharpness * torch.randn(3, 4, 6, 6, generator=generator), dim=-1)
assert sharpest_head(maps_to_rank) == 2
### BEGIN HIDDEN TESTS
assert abs(float(attention_entropy(torch.tensor([[0.5, 0.5, 0.0]]))) - math.log(2)) < 1e-6
for _ in range(4):
    heads = int(torch.randint(2, 9, (1,), generator=generator))
    winner = int(torch.randint(heads, (1,), generator=generator))
    scale = torch.ones(heads)
    scale[winner] = 10.0
    layer = torch.softmax(scale[None, :, None, None] * torch.randn(2, heads, 5, 7, generator=generator), dim=-1)
    assert sharpest_head(layer) == winner
    rows = torch.softmax(torch.randn(4, 6, generator=generator, dtype=torch.float64), dim=-1)
    assert abs(float(attention_entropy(rows)) - float(-(rows * rows.log()).sum(-1).mean())) < 1e-9
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (3 points): implement.** Put a trained model to work. Write
# `transpose_with_model(model, notes, semitones)` that builds the source tokens (the instruction
# token `VOCAB.shift_token(semitones)` followed by `melody.encode_melody(notes, bos=False)`) as a
# `(1, length)` tensor on `run.device`, lets `model.generate(source, start_token=melody.BOS,
# max_new_tokens=39, stop_token=melody.EOS)` write the target greedily, and returns the decoded notes
# (`melody.decode_melody` of its first row). The test hands your function a stand-in model that
# checks the source it receives; the cell after it uses our trained one.

# %% solution ex3_use_the_model
def transpose_with_model(model, notes, semitones):
    ### BEGIN SOLUTION
    source = torch.tensor([[VOCAB.shift_token(semitones)] + melody.encode_melody(notes, bos=False)])
    with torch.no_grad():
        out = model.generate(source.to(run.device), start_token=melody.BOS, max_new_tokens=39,
                             stop_token=melody.EOS)
    return melody.decode_melody(out[0].cpu())
    ### END SOLUTION

# %% tests ex3_use_the_model_tests 3
class TranspositionOracle:
    """Stands in for a perfect model: checks the source it is given, then writes the right target."""

    def __init__(self, notes, semitones):
        self.notes, self.semitones = notes, semitones

    def generate(self, source, start_token, max_new_tokens, **options):
        expected = [VOCAB.shift_token(self.semitones)] + melody.encode_melody(self.notes, bos=False)
        assert source.shape == (1, len(expected)), "the source is one row: the instruction, then the melody"
        assert source[0].tolist() == expected, "the instruction token first, then the melody without <bos>"
        assert start_token == melody.BOS
        return torch.tensor([melody.encode_melody(melody.transpose(self.notes, self.semitones))])

seeds = torch.randint(3_000_000, 4_000_000, (6,), generator=torch.Generator().manual_seed(303)).tolist()
for seed, shift in zip(seeds, [3, -2, 5, 0, -5, 3]):
    tune = melody.compose_melody(seed, beats=8)[0]
    assert transpose_with_model(TranspositionOracle(tune, shift), tune, shift) == melody.transpose(tune, shift)
### BEGIN HIDDEN TESTS
for seed in torch.randint(5_000_000, 6_000_000, (4,), generator=torch.Generator().manual_seed(404)).tolist():
    tune = melody.compose_melody(seed, beats=4)[0]
    got = transpose_with_model(TranspositionOracle(tune, -2), tune, -2)
    assert all(isinstance(note, melody.MelodyNote) for note in got) and got == melody.transpose(tune, -2)
### END HIDDEN TESTS

# %%
unseen = [melody.compose_melody(seed, beats=8)[0] for seed in range(2_000_000, 2_000_010)]
right = sum(transpose_with_model(model, tune, 3) == melody.transpose(tune, 3) for tune in unseen)
print(f"the trained model transposes {right} of 10 unseen melodies up a minor third exactly")

# %% [markdown]
# **Exercise 4 (2 points, graded by hand): predict.** A colleague deletes the position encodings
# from the **encoder** only (the decoder keeps its own) and retrains the transposer for as long as
# ours. Predict, before trying it, what happens to (a) the held-out accuracy and (b) the
# cross-attention map of section 7, and explain why in a few sentences. Write your answer in the next
# cell.

# %% answer ex4_no_positions 2
# *Model answer and marking guide.* 1 point: without positions, self-attention is
# permutation-equivariant, so the encoder's output for a token depends on its own content and on the
# *set* of tokens around it, not on where it stands: two notes of the same pitch and duration get
# identical encodings, and the melody's order is lost. Accuracy drops sharply (the decoder can still
# learn which pitches occur and transpose them, but not in which order), most of all for melodies
# with repeated notes. 1 point: the cross-attention map loses its diagonal band, because a decoder
# query can find a source key only by content; it spreads over every source position that holds the
# same token (a vertical stripe per repeated note) instead of the one at the matching place.

# %% [markdown]
# ## What you built
# - Attention is a soft look-up: $\mathrm{softmax}(QK^\top/\sqrt{d})V$. The $\sqrt{d}$ keeps the
#   scores at unit scale; masks (padding, causal) set blocked scores to $-\infty$.
# - Multi-head attention runs several look-ups on slices of the model width; cross-attention takes
#   its keys and values from another sequence.
# - Attention alone ignores order. Sinusoidal codes add absolute positions; rotary embeddings make
#   scores depend on relative distance, with nothing added and nothing learned.
# - A pre-norm block is `x + attn(norm(x))`, `x + mlp(norm(x))`. An encoder–decoder stacks
#   unmasked blocks (encoder) and causal blocks with cross-attention (decoder); trained with
#   teacher forcing, ours transposes melodies it has never seen, and its cross-attention shows the
#   alignment it learned.
#
# > **Fact check: what the Transformer is, and what MusicLM uses.**
# > * A common description credits the Transformer paper with generative adversarial networks, or
# >   mixes the two up. In fact the Transformer comes from Vaswani et al., *Attention Is All You
# >   Need* (NeurIPS 2017, [arXiv:1706.03762](https://arxiv.org/abs/1706.03762)), which introduced
# >   an encoder–decoder built only from attention, for machine translation (WMT 2014
# >   English→German and English→French). GANs come from a different paper: Goodfellow et al.,
# >   *Generative Adversarial Nets* (NeurIPS 2014, [arXiv:1406.2661](https://arxiv.org/abs/1406.2661)),
# >   the subject of lesson 03.
# > * A common description says MusicLM is an encoder–decoder Transformer that "translates" text
# >   into music. In fact each of MusicLM's generation stages (semantic, coarse acoustic, fine
# >   acoustic) is a **decoder-only** Transformer (Agostinelli et al., 2023,
# >   [arXiv:2301.11325](https://arxiv.org/abs/2301.11325)), following AudioLM (Borsos et al., 2022,
# >   [arXiv:2209.03143](https://arxiv.org/abs/2209.03143)). The text is not encoded by an encoder
# >   the decoder cross-attends to: it is mapped by MuLan (Huang et al., 2022) to discrete tokens
# >   that condition the stages. Lesson 02 builds that decoder-only model; lesson 08 conditions it.
# > * The encoder–decoder we trained here is the 2017 design (with pre-norm, Xiong et al., 2020,
# >   [arXiv:2002.04745](https://arxiv.org/abs/2002.04745), and optionally rotary positions, Su et
# >   al., 2021, [arXiv:2104.09864](https://arxiv.org/abs/2104.09864)): the right tool when an
# >   input sequence is given whole and an output is written from it, as in translation.
#
# **Check your understanding.** (1) Without the $\sqrt{d}$, what happens to the softmax of 512-wide
# vectors with unit-variance entries, and to its gradient? (2) Shuffle the source melody's tokens: what
# does an encoder without positional codes output, and why? (3) Your transposer's cross-attention map
# is a diagonal band: what does a point off the band mean? (4) Why does the decoder need a causal mask
# in training but the encoder does not?
#
# **Going further.** Train on all thirteen intervals (`shifts=melody.SHIFTS`; it needs a few
# times more steps), or on four-bar melodies, and watch when the "pitch" plateau breaks. Try
# `positions="rope"` for the seq2seq model and think about why cross-attention alignment gets
# harder (cross-attention has no shared position axis to rotate). Read: Jay Alammar, *The
# Illustrated Transformer*; the d2l.ai chapter on attention; Phuong & Hutter, *Formal Algorithms
# for Transformers* (2022). Next: **lesson 02**, the decoder alone, and how to sample from it.
