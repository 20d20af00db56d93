# %% [markdown]
# # Lesson 02 — Autoregressive models
#
# MusicLM writes music the way you write a sentence: one token after another, each chosen in the
# light of everything before it. This lesson builds that idea from the probability rule it rests
# on to a working **decoder-only Transformer language model** over melodies: we train it, measure
# it against counting baselines, sample from it in several ways (and listen to the difference),
# and make generation fast with a **KV cache**. The model class, `transformer.TransformerLM`, is
# the one every MusicLM stage reuses in lesson 08.
#
# **Goals.** By the end you can
# 1. factorise the probability of a sequence with the chain rule and compute a model's
#    log-likelihood and perplexity;
# 2. explain teacher forcing, and why a causal mask lets one forward pass train every position;
# 3. sample with temperature, top-k and top-p, and compare the results by ear and by numbers;
# 4. say what a KV cache stores, why it gives exactly the same tokens, and measure what it saves.
#
# **Prerequisites.** Lesson 01 (attention, masks, positions, the Transformer block).

# %% [markdown]
# ## Set-up
# The model's size comes from the preset's `transformer` settings (`tiny`: width 128, 3 layers,
# 4 heads). With a GPU set `PRESET = "small"` and `DEVICE = "auto"`. In MusicLM's picture, this
# lesson is the stages' way of working: each is a decoder-only transformer that writes its tokens
# one after another.

# %%
import dataclasses
import math
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep instead of spinning: far faster on a busy CPU

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from mlm_lessons import diagrams, melody, runtime, train, transformer, viz
from mlm_lessons.melody import BOS, EOS, PAD, VOCAB

PRESET = "tiny"                 # "tiny" on a CPU; "small" on one GPU (see mlm_lessons.config)
DEVICE = "cpu"                  # "cpu", or "auto" to use a GPU when there is one
SEED = 0
STEPS, N_MELODIES = {"tiny": (300, 3_000), "small": (5_000, 50_000)}[PRESET]

run = runtime.set_up_lesson(PRESET, DEVICE, SEED, threads=2)
preset, SAMPLE_RATE, device = run.preset, run.sample_rate, run.device
print(f"LM with d_model={preset.transformer.d_model}, {preset.transformer.n_layers} layers, "
      f"{preset.transformer.n_heads} heads; {STEPS} training steps on {N_MELODIES} melodies")
diagrams.musiclm_diagram(highlight="autoregressive")
plt.show()

# %% [markdown]
# ## 1. The chain rule
#
# Any joint distribution over a sequence $x = (x_1, \dots, x_T)$ can be written, **exactly**, as a
# product of conditionals:
# $$p(x_1, \dots, x_T) = \prod_{t=1}^{T} p(x_t \mid x_{<t}).$$
# No assumption is made: this is the definition of conditional probability applied $T-1$ times.
# An **autoregressive model** learns each factor $p_\theta(x_t \mid x_{<t})$: a distribution over
# the vocabulary given the past. Two consequences:
#
# * **Likelihood is easy.** $\log p_\theta(x) = \sum_t \log p_\theta(x_t \mid x_{<t})$, so training
#   maximises it directly (cross-entropy on each next token), and we can score any sequence.
# * **Generation is sequential.** Sample $x_1$, then $x_2$ given $x_1$, and so on.
#
# The usual summary is **perplexity**: $\exp\big(-\frac{1}{T}\sum_t \log p_\theta(x_t\mid x_{<t})\big)$,
# the effective number of tokens the model hesitates between at each step. A model that knew
# nothing would score the vocabulary size, 108 here.
#
# The simplest autoregressive models **count**. A *unigram* model ignores the past: $p(x_t)$; a
# *bigram* model looks one token back: $p(x_t \mid x_{t-1}) \approx \frac{\#(x_{t-1}, x_t)}{\#(x_{t-1})}$.
# Here they are on the course's melodies (16 beats each; training and held-out melodies from
# disjoint seeds).

# %%
# NBVAL_CHECK_OUTPUT
train_melodies = melody.MelodyDataset(N_MELODIES, beats=16, first_seed=0)
test_melodies = melody.MelodyDataset(300, beats=16, first_seed=1_000_000)
print(f"{len(train_melodies)} training melodies, {len(test_melodies)} held-out; tokens {tuple(train_melodies.tokens.shape)}")
print(" ".join(VOCAB.to_names(test_melodies.tokens[0][:24])), "...")

def bigram_perplexity(train_tokens, test_tokens, smoothing=0.1):
    counts = torch.zeros(len(VOCAB), len(VOCAB), dtype=torch.float64)
    for row in train_tokens:
        for previous, current in zip(row[:-1].tolist(), row[1:].tolist()):
            if current != PAD:
                counts[previous, current] += 1
    probabilities = (counts + smoothing) / (counts + smoothing).sum(dim=1, keepdim=True)
    previous, current = test_tokens[:, :-1], test_tokens[:, 1:]
    log_p = probabilities[previous, current].log()[current != PAD]
    return math.exp(-log_p.mean())

baselines = melody.unigram_bigram_baselines(train_melodies.tokens, test_melodies.tokens)
ours = bigram_perplexity(train_melodies.tokens, test_melodies.tokens)
assert abs(ours - baselines["bigram"]) < 1e-6
print(f"held-out perplexity: uniform {len(VOCAB)}, unigram {baselines['unigram']:.2f}, bigram {ours:.2f}")

# %% [markdown]
# The bigram already knows a lot: a pitch is followed by a duration, a duration by a pitch, a bar
# line or a rest. What it cannot know is anything further back: which key the melody is in, where
# in the bar we are, the motif of bar 1 that bar 2 repeats. For that the model needs the whole
# past, and a Transformer decoder reads it all.
#
# ## 2. A decoder-only Transformer, and teacher forcing
#
# A decoder-only LM is a stack of causal blocks (lesson 01) with a linear **head** that turns the
# last hidden state at each position $t$ into logits for token $t+1$. Because of the causal mask,
# position $t$ sees only tokens $\le t$, so **one forward pass over the true sequence gives all
# $T$ next-token predictions at once**. Feeding the true previous tokens during training (rather
# than the model's own guesses) is called **teacher forcing** (Williams & Zipser, 1989).
#
# Let us verify the claim on an untrained model: predicting token by token, feeding each prefix
# separately, gives exactly the logits of the single causal pass.

# %%
# NBVAL_CHECK_OUTPUT
lm_config = transformer.TransformerLMConfig(
    vocab_size=len(VOCAB), max_len=train_melodies.tokens.shape[1], d_model=preset.transformer.d_model,
    n_layers=preset.transformer.n_layers, n_heads=preset.transformer.n_heads, dropout=0.0,
    positions="rope")
torch.manual_seed(SEED)
model = transformer.TransformerLM(lm_config).eval()
sequence = test_melodies.tokens[:1, :20]
with torch.no_grad():
    one_pass = model(sequence)                                              # (1, 20, vocab): all positions
    prefix_by_prefix = torch.stack([model(sequence[:, :t + 1])[0, -1] for t in range(20)])
torch.testing.assert_close(one_pass[0], prefix_by_prefix, atol=1e-5, rtol=1e-4)
print(f"one causal pass == 20 separate prefix passes; logits {tuple(one_pass.shape)} = (batch, time, vocab)")
print(f"{model.num_parameters():,} parameters; config: {transformer.config_dict(lm_config)}")

# %% [markdown]
# ## 3. Train it
#
# The loss is the average negative log-likelihood of each next token: cross-entropy between the
# logits at positions $0..T-2$ and the tokens at $1..T-1$, ignoring padding. Its exponential is the
# perplexity.

# %%
def lm_loss(model, batch):
    """Mean next-token cross-entropy of a {"tokens": (batch, time)} batch, and the accuracy."""
    tokens = batch["tokens"]                                               # (batch, time)
    logits = model(tokens[:, :-1])                                         # predicts tokens[:, 1:]
    loss, accuracy = transformer.next_token_loss(logits, tokens[:, 1:], ignore_index=PAD)
    return loss, {"accuracy": accuracy}

# %% [markdown]
# ### The loop, by hand
# Training is the five steps of lesson 00's primer, repeated over batches: draw a batch, clear the
# gradients (`zero_grad`), compute the loss (*forward*), differentiate it (*backward*), update the
# weights (`step`). Here they are, written out, for 40 steps on a fresh model. The loss starts at or
# above $\log |V|$, the loss of a uniform guess over the vocabulary (an untrained model guesses a
# little worse than uniform), and within these 40 steps it falls below the bigram's.

# %%
torch.manual_seed(SEED)
by_hand = transformer.TransformerLM(lm_config).to(device).train()
optimizer = torch.optim.AdamW(by_hand.parameters(), lr=2e-3)
loader = torch.utils.data.DataLoader(train_melodies, batch_size=32, shuffle=True,
                                     generator=torch.Generator().manual_seed(SEED))
hand_losses = []
for step, batch in zip(range(40), loader):
    optimizer.zero_grad()                                        # 1. clear last step's gradients
    loss, _ = lm_loss(by_hand, {"tokens": batch["tokens"].to(device)})  # 2. forward
    loss.backward()                                              # 3. backward
    optimizer.step()                                             # 4. update
    hand_losses.append(loss.item())
print(f"step 0: loss {hand_losses[0]:.2f} nats (log |V| = {math.log(len(VOCAB)):.2f}); "
      f"step 39: {hand_losses[-1]:.2f}, already below the bigram's {math.log(baselines['bigram']):.2f}")
assert hand_losses[0] > math.log(len(VOCAB)) - 0.1 and hand_losses[-1] < math.log(baselines["bigram"])

# %% [markdown]
# The course's `Trainer` (`mlm_lessons.train`) runs exactly this loop and adds what a real run
# needs: a learning-rate warm-up and cosine decay, gradient clipping, logging, evaluation,
# checkpoints that an interrupted run resumes from, mixed precision and several GPUs. From here on
# we only write the loss function and hand it over.

# %%
torch.manual_seed(SEED)
model = transformer.TransformerLM(lm_config)
train_config = dataclasses.replace(preset.train, max_steps=STEPS, batch_size=32, learning_rate=2e-3,
                                   warmup_steps=20, log_every=20, device=DEVICE, seed=SEED)
history = train.Trainer(model, train_config, train_melodies, lm_loss, progress=False).fit()
model.eval()
with torch.no_grad():
    test_loss, test_metrics = lm_loss(model, {"tokens": test_melodies.tokens.to(device)})
perplexity, test_accuracy = math.exp(float(test_loss)), float(test_metrics["accuracy"])
print(f"held-out: perplexity {perplexity:.2f} (bigram {baselines['bigram']:.2f}, unigram {baselines['unigram']:.2f}), "
      f"next-token accuracy {test_accuracy:.1%}")
assert perplexity < 0.5 * baselines["bigram"], "the Transformer should beat the bigram by a wide margin"

# %%
fig, ax = plt.subplots(figsize=(7, 3))
steps = [row["step"] for row in history]
ax.plot(steps, [math.exp(row["loss"]) for row in history], label="Transformer (training batches)")
ax.axhline(baselines["bigram"], color="C1", linestyle="--", label="bigram (held-out)")
ax.axhline(baselines["unigram"], color="C2", linestyle=":", label="unigram (held-out)")
ax.axhline(perplexity, color="C0", linestyle="-.", label="Transformer (held-out, end)")
ax.set(yscale="log", xlabel="step", ylabel="perplexity", title="perplexity while training, against counting baselines")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Where is the model sure, and where does it hesitate? Per-token surprise
# $-\log p(x_t \mid x_{<t})$ on a held-out melody: durations and bar lines are nearly free once
# the rhythm is set, and pitches carry most of the surprise (the share is printed below the plot);
# the first pitch, which sets the key, costs more than a typical pitch.

# %%
with torch.no_grad():
    tokens = test_melodies.tokens[:1].to(device)
    length = int((tokens != PAD).sum())
    log_probs = torch.log_softmax(model(tokens[:, :length - 1]), dim=-1)[0]
    surprise = -log_probs.gather(-1, tokens[0, 1:length, None])[:, 0].cpu()
fig, ax = plt.subplots(figsize=(11, 2.8))
ax.bar(range(len(surprise)), surprise, color=["C3" if VOCAB.is_pitch(int(t)) else "C0" for t in tokens[0, 1:length]])
ax.set_xticks(range(len(surprise)), VOCAB.to_names(tokens[0, 1:length]), rotation=90, fontsize=7)
ax.set(ylabel="surprise (nats)", title="-log p(token | past) on a held-out melody (pitches red)")
plt.tight_layout()
plt.show()
is_pitch = torch.tensor([VOCAB.is_pitch(int(t)) for t in tokens[0, 1:length]])
pitch_share = (surprise[is_pitch].sum() / surprise.sum()).item()
first_pitch = surprise[is_pitch][0].item()
print(f"pitches: {int(is_pitch.sum())} of {len(surprise)} tokens, {pitch_share:.0%} of the surprise; "
      f"first pitch {first_pitch:.1f} nats, median pitch {surprise[is_pitch].median().item():.1f}")
assert pitch_share > 0.75 and first_pitch > surprise[is_pitch].median()

# %% [markdown]
# ## 4. Sampling strategies
#
# Generating means drawing $x_{t+1} \sim p_\theta(\cdot \mid x_{\le t})$ again and again. *How* we
# draw changes the music:
#
# * **greedy**: always the most likely token. Deterministic, safe, and prone to loops.
# * **temperature** $\tau$: sample from $\mathrm{softmax}(z / \tau)$. $\tau < 1$ sharpens the
#   distribution (more conservative), $\tau > 1$ flattens it (more surprising, more mistakes);
#   $\tau \to 0$ is greedy.
# * **top-k** (Fan et al., 2018): keep only the $k$ most likely tokens, renormalise, sample.
# * **top-p**, or nucleus sampling (Holtzman et al., 2020): keep the smallest set of most likely
#   tokens whose probability adds up to $p$: few candidates when the model is sure, many when it
#   is not. Cuts the long tail of unlikely tokens that top-k with a fixed $k$ can let through.
#
# Here is each filter from scratch, checked against `transformer.filter_logits`, and its effect on
# the model's actual next-token distribution after the first few tokens of a melody.

# %%
# NBVAL_CHECK_OUTPUT
def my_filter(logits, temperature=1.0, top_k=None, top_p=None):
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        probs, order = torch.sort(torch.softmax(logits, -1), descending=True)
        drop_sorted = probs.cumsum(-1) - probs >= top_p                       # the nucleus was full before it
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits

test_logits = torch.randn(4, len(VOCAB), generator=torch.Generator().manual_seed(SEED)) * 3
for settings in [dict(top_k=5), dict(top_p=0.9), dict(top_k=20, top_p=0.5)]:
    torch.testing.assert_close(my_filter(test_logits, **settings), transformer.filter_logits(test_logits, **settings))
    kept = torch.isfinite(my_filter(test_logits, **settings)).sum(-1).tolist()
    print(f"{settings}: tokens kept per row {kept}")

# %%
with torch.no_grad():
    context = test_melodies.tokens[:1, :8].to(device)
    next_logits = model(context)[0, -1].cpu()
strategies = {"temperature 0.5": dict(temperature=0.5), "temperature 1.0": dict(temperature=1.0),
              "temperature 1.5": dict(temperature=1.5), "top-k = 3": dict(top_k=3), "top-p = 0.9": dict(top_p=0.9)}
top = torch.topk(next_logits, 10).indices
fig, axes = plt.subplots(1, len(strategies), figsize=(14, 2.8), sharey=True)
for ax, (name, settings) in zip(axes, strategies.items()):
    probabilities = torch.softmax(my_filter(next_logits, **settings), dim=-1)
    ax.bar(range(10), probabilities[top])
    ax.set_xticks(range(10), VOCAB.to_names(top), rotation=90, fontsize=8)
    ax.set_title(name, fontsize=9)
axes[0].set_ylabel("probability")
fig.suptitle("next-token distribution after: " + " ".join(VOCAB.to_names(context[0].cpu())), fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Compare by numbers
# For each strategy we generate 32 melodies from `<bos>` and measure:
# * **grammar errors**: tokens that break the pitch–duration pattern (0 is perfect);
# * **length in beats**: the training melodies fill 16 beats (less a final rest, which is not written);
# * **diatonic fit**: share of notes in the best-fitting 7-note scale (1.0 for every training
#   melody, ~0.7 for random notes);
# * **repetition**: share of 4-token n-grams already seen earlier in the same melody (training
#   melodies repeat motifs, so some repetition is right; a loop pushes it towards 1);
# * **distinct melodies** out of 32: does the strategy produce variety at all?

# %%
def describe(samples):
    decoded = [melody.decode_melody(s) for s in samples]
    return {"grammar errors": np.mean([melody.grammar_errors(s) for s in samples]),
            "beats": np.mean([sum(n.duration_beats for n in notes) for notes in decoded]),
            "diatonic fit": np.mean([melody.diatonic_fit(notes) for notes in decoded]),
            "repetition": np.mean([melody.repeated_ngram_fraction(s) for s in samples]),
            "distinct": len({tuple(notes) for notes in decoded})}

sampling = {"greedy": dict(temperature=0.0), "T = 0.7": dict(temperature=0.7), "T = 1.0": dict(temperature=1.0),
            "T = 1.5": dict(temperature=1.5), "T = 1.5, top-k 5": dict(temperature=1.5, top_k=5),
            "T = 1.0, top-p 0.9": dict(temperature=1.0, top_p=0.9)}
prompt = torch.full((32, 1), BOS, device=device)
samples, rows = {}, {}
for name, settings in sampling.items():
    generator = torch.Generator(device=device).manual_seed(SEED)
    samples[name] = model.generate(prompt, lm_config.max_len - 1, generator=generator, stop_token=EOS, **settings).cpu()
    rows[name] = describe(samples[name])
rows["training melodies"] = describe(train_melodies.tokens[:32])
print(f"{'':22s}" + "".join(f"{key:>16s}" for key in rows["greedy"]))
for name, row in rows.items():
    print(f"{name:22s}" + "".join(f"{value:16.2f}" if isinstance(value, float) else f"{value:16d}" for value in row.values()))

# %% [markdown]
# Read the table row by row. Greedy decoding writes one melody 32 times, and loops (high
# repetition). Sampling gives variety; as the temperature rises, the long tail of unlikely tokens
# leaks in: broken grammar, notes outside the scale, melodies of the wrong length. Even at
# temperature 1.0 a little of it gets through, because a model that is right on average still
# gives the tail some mass; **top-p (or top-k) cuts that tail off** and keeps the variety, which is
# why truncated sampling is the usual default. Now by ear (the first three seconds of one sample
# each, on the SynthCaps piano at 110 bpm), and by eye:

# %%
listen = ["greedy", "T = 1.0, top-p 0.9", "T = 1.5"]
fig, axes = plt.subplots(1, 3, figsize=(13, 2.6), sharey=True)
players = []
for ax, name in zip(axes, listen):
    notes = melody.decode_melody(samples[name][1])
    melody.plot_piano_roll(notes, ax=ax, title=name)
    players.append(viz.play(melody.render_melody(notes, tempo_bpm=110, seconds=3.0), SAMPLE_RATE))
plt.tight_layout()
plt.show()
display(*players)

# %% [markdown]
# ## 5. The KV cache
#
# Generating $N$ tokens naively re-runs the whole sequence at every step: step $t$ pushes $t$
# tokens through every layer, so the total work grows like $N^2$ (and attention's own cost like
# $N^3$). But with a causal mask, the keys and values of past positions **never change** when a
# token is added. A **KV cache** stores each layer's keys and values; each new step then computes
# the query, key and value of the *one* new token, appends to the cache, and attends over it: work
# per step grows only linearly (one row of attention). The result is the same logits, so the
# same tokens for the same random seed; only the time changes. (Rotary positions make this easy:
# a cached key already carries the rotation of its own position.)
#
# The loop of generation, with and without the cache:

# %%
for use_cache in (False, True):
    diagrams.autoregressive_loop_diagram(use_cache=use_cache)
    plt.show()

# %% [markdown]
# Let us measure it on an untrained model of the same size with room for 400 positions (speed
# does not depend on the weights).

# %%
timing_model = transformer.TransformerLM(dataclasses.replace(lm_config, max_len=401)).to(device).eval()
lengths, seconds = [50, 100, 200, 400], {True: [], False: []}
for length in lengths:
    outputs = {}
    for use_cache in (True, False):
        start = time.perf_counter()
        outputs[use_cache] = timing_model.generate(torch.full((1, 1), BOS, device=device), length, use_cache=use_cache,
                                                   generator=torch.Generator(device=device).manual_seed(SEED))
        seconds[use_cache].append(time.perf_counter() - start)
    assert torch.equal(outputs[True], outputs[False]), "the cache must not change the tokens"
fig, ax = plt.subplots(figsize=(6, 3))
for use_cache, label in ((False, "without cache"), (True, "with KV cache")):
    ax.plot(lengths, seconds[use_cache], "o-", label=label)
ax.set(xlabel="tokens generated", ylabel="seconds", title="generation time, batch 1 (same tokens both ways)")
ax.legend()
plt.show()
print(f"{lengths[-1]} tokens: {lengths[-1] / seconds[False][-1]:.0f} tokens/s without the cache, "
      f"{lengths[-1] / seconds[True][-1]:.0f} with it ({seconds[False][-1] / seconds[True][-1]:.1f}x faster)")

# %% [markdown]
# The gap widens with length: at MusicLM's scale (a 30 s clip is 1,500 coarse tokens per RVQ
# level at 50 Hz, flattened over several levels) generation without a cache would be hopeless.
# `bench/bench_generation.py` measures 1,000 tokens on a `d_model=256`, 4-layer decoder.


# %% [markdown]
# ## Exercises
# The tests run your functions on small fresh models and inputs you have not seen, so compute, don't
# copy numbers.
#
# **Exercise 1 (2 points): implement.** Write `sequence_log_prob(model, tokens)`: for a batch of
# token sequences `(batch, time)` that start with `<bos>` and may be right-padded with `<pad>`,
# return a `(batch,)` tensor with each sequence's log-probability under the model, by the chain
# rule: the sum over positions $t \ge 1$ of $\log p(x_t \mid x_{<t})$, skipping padding.

# %% solution ex1_log_prob
def sequence_log_prob(model, tokens):
    ### BEGIN SOLUTION
    with torch.no_grad():
        log_probs = torch.log_softmax(model(tokens[:, :-1]), dim=-1)
    targets = tokens[:, 1:]
    picked = log_probs.gather(-1, targets[..., None])[..., 0]
    return (picked * (targets != PAD)).sum(dim=1)
    ### END SOLUTION

# %% tests ex1_log_prob_tests 2
def small_lm(seed, max_len=64):
    """A small untrained decoder over the melody vocabulary, different for every seed."""
    torch.manual_seed(seed)
    return transformer.TransformerLM(transformer.TransformerLMConfig(
        vocab_size=len(VOCAB), max_len=max_len, d_model=16, n_layers=1, n_heads=2, dropout=0.0)).eval()

generator = torch.Generator().manual_seed(505)
lm = small_lm(1)
batch = torch.cat([torch.full((6, 1), BOS), torch.randint(PAD + 1, len(VOCAB), (6, 30), generator=generator)], dim=1)
log_p = sequence_log_prob(lm, batch)
assert log_p.shape == (6,) and torch.all(log_p < 0)
with torch.no_grad():
    mean_loss = float(lm_loss(lm, {"tokens": batch})[0])
assert abs(-float(log_p.sum()) / (6 * 30) - mean_loss) < 1e-4, "minus the total log-prob per token is the loss"
### BEGIN HIDDEN TESTS
lm = small_lm(2)
two_tokens = torch.stack([torch.tensor([BOS, token]) for token in range(len(VOCAB)) if token != PAD])
with torch.no_grad():
    p_pad = float(torch.softmax(lm(torch.tensor([[BOS]])), dim=-1)[0, -1, PAD])   # the one row that counts 0
assert abs(float(sequence_log_prob(lm, two_tokens).exp().sum()) + p_pad - 1.0) < 1e-4, "p(x_1 | <bos>) sums to one"
short = torch.cat([torch.tensor([[BOS]]), torch.randint(PAD + 1, len(VOCAB), (1, 20), generator=generator)], dim=1)
padded = torch.cat([short, torch.full((1, 5), PAD)], dim=1)
assert abs(float(sequence_log_prob(lm, padded)[0] - sequence_log_prob(lm, short)[0])) < 1e-4, "padding adds nothing"
with torch.no_grad():
    by_steps = sum(torch.log_softmax(lm(short[:, :t]), dim=-1)[0, -1, short[0, t]] for t in range(1, 21))
assert abs(float(sequence_log_prob(lm, short)[0]) - float(by_steps)) < 1e-4, "the chain rule, one factor at a time"
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (3 points): implement.** Another truncation rule, **min-p** sampling, keeps every token
# whose probability is at least `min_p` times the probability of the most likely token, and removes
# the rest. Write `min_p_filter(logits, min_p)` for `(batch, vocab)` logits: set removed logits to
# `-inf` and leave the kept ones unchanged.

# %% solution ex2_min_p
def min_p_filter(logits, min_p):
    ### BEGIN SOLUTION
    probabilities = torch.softmax(logits, dim=-1)
    threshold = min_p * probabilities.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probabilities < threshold, float("-inf"))
    ### END SOLUTION

# %% tests ex2_min_p_tests 3
logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]]))
filtered = min_p_filter(logits, 0.5)
assert torch.isfinite(filtered).tolist() == [[True, True, False, False], [True, True, True, True]]
assert torch.equal(filtered[torch.isfinite(filtered)], logits[torch.isfinite(filtered)]), "kept logits are unchanged"
### BEGIN HIDDEN TESTS
assert torch.isfinite(min_p_filter(logits, 1.0)).sum().item() == 1 + 4
random_logits = torch.randn(16, 50, generator=torch.Generator().manual_seed(1))
for min_p in (0.05, 0.2, 0.6):
    kept = torch.isfinite(min_p_filter(random_logits, min_p))
    probabilities = torch.softmax(random_logits, dim=-1)
    assert torch.equal(kept, probabilities >= min_p * probabilities.max(dim=-1, keepdim=True).values)
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (3 points): implement.** Write the generation loop yourself, with the cache (the
# second diagram of section 5). Implement `generate_with_cache(model, prompt, n_new, temperature,
# generator)`: create a cache with `model.new_cache(batch_size)`; call `model(prompt, cache=cache)`
# once; then repeat `n_new` times: draw the next token from the last position's logits with
# `transformer.sample_next_token(logits, temperature, generator=generator)`, append it, and feed
# **only that token** to `model(..., cache=cache)`. Return the prompt followed by the new tokens. With
# the same generator seed it must give exactly what `model.generate` gives.

# %% solution ex3_cache_loop
def generate_with_cache(model, prompt, n_new, temperature, generator):
    ### BEGIN SOLUTION
    cache = model.new_cache(prompt.shape[0])
    with torch.no_grad():
        logits = model(prompt, cache=cache)[:, -1]
        tokens = prompt
        for step in range(n_new):
            next_token = transformer.sample_next_token(logits, temperature, generator=generator)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            if step < n_new - 1:
                logits = model(next_token[:, None], cache=cache)[:, -1]
    return tokens
    ### END SOLUTION

# %% tests ex3_cache_loop_tests 3
lm = small_lm(3)
start = torch.full((4, 1), BOS)
mine = generate_with_cache(lm, start, 30, 1.0, torch.Generator().manual_seed(7))
reference = lm.generate(start, 30, temperature=1.0, generator=torch.Generator().manual_seed(7))
assert mine.shape == (4, 31) and torch.equal(mine, reference)
### BEGIN HIDDEN TESTS
lm = small_lm(4)
prompt = torch.cat([torch.full((2, 1), BOS), torch.randint(PAD + 1, len(VOCAB), (2, 4), generator=generator)], dim=1)
mine = generate_with_cache(lm, prompt, 12, 0.7, torch.Generator().manual_seed(3))
assert torch.equal(mine, lm.generate(prompt, 12, temperature=0.7, generator=torch.Generator().manual_seed(3)))
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 4 (3 points): debug.** A colleague's training loop runs without an error, yet the model
# never learns: the loss after a hundred steps is what it was at the start. Copy it into the solution
# cell, find the bug, and fix it (nothing else needs changing). `train_steps` runs one optimiser step
# per batch of `batches` (each a `(batch, time)` tensor of tokens) and returns the losses.
#
# ```python
# def train_steps(model, batches, optimizer):
#     losses = []
#     for tokens in batches:
#         loss, _ = lm_loss(model, {"tokens": tokens})
#         loss.backward()
#         optimizer.zero_grad()
#         optimizer.step()
#         losses.append(loss.item())
#     return losses
# ```

# %% solution ex4_debug_loop
def train_steps(model, batches, optimizer):
    ### BEGIN SOLUTION
    losses = []
    for tokens in batches:
        optimizer.zero_grad()
        loss, _ = lm_loss(model, {"tokens": tokens})
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
    ### END SOLUTION

# %% tests ex4_debug_loop_tests 3
def random_batches(seed, count, size=8, length=24):
    generator = torch.Generator().manual_seed(seed)
    return [torch.cat([torch.full((size, 1), BOS), torch.randint(PAD + 1, 30, (size, length - 1), generator=generator)],
                      dim=1) for _ in range(count)]

lm = small_lm(5).train()
batches = random_batches(6, 20)
losses = train_steps(lm, batches, torch.optim.AdamW(lm.parameters(), lr=1e-2))
assert len(losses) == 20 and losses[-1] < losses[0] - 0.5, "the loss must fall"
### BEGIN HIDDEN TESTS
mine, reference = small_lm(8).train(), small_lm(8).train()
batches = random_batches(9, 8)
my_losses = train_steps(mine, batches, torch.optim.AdamW(mine.parameters(), lr=1e-3))
reference_optimizer, reference_losses = torch.optim.AdamW(reference.parameters(), lr=1e-3), []
for tokens in batches:
    reference_optimizer.zero_grad()
    loss, _ = lm_loss(reference, {"tokens": tokens})
    loss.backward()
    reference_optimizer.step()
    reference_losses.append(loss.item())
assert np.allclose(my_losses, reference_losses, atol=1e-5)
assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(mine.parameters(), reference.parameters()))
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 5 (2 points, graded by hand): predict.** Our model beat the bigram's held-out
# perplexity by a wide margin (section 3). Someone trains the same model on the same melodies but **without the
# causal mask** (every position may attend to every other, in training and in generation). Predict,
# before trying it, what happens to (a) its training loss and (b) the melodies it generates, and
# explain why in a few sentences. Write your answer in the next cell.

# %% answer ex5_no_mask 2
# *Model answer and marking guide.* 1 point: the training loss drops far below the causal model's,
# towards zero, because position $t$ can now read token $t+1$, the very token it is asked to predict:
# the task becomes copying, and teacher forcing hands it the answer. 1 point: generation falls
# apart, because at generation time the future tokens do not exist yet; the model was never trained
# to predict from the past alone, so its next-token distributions at the last position are poor and
# the melodies are close to random (wrong durations after pitches, no bar structure). A low
# training loss with bad samples is the signature of a leak from the future.

# %% [markdown]
# ## What you built
# - The chain rule turns modelling a sequence into modelling next-token distributions; the
#   log-likelihood is a sum, perplexity its exponentiated average. Counting models (unigram,
#   bigram) are the baselines to beat; the Transformer, which sees the whole past, beats them
#   by far.
# - A causal mask makes one forward pass compute every next-token prediction: teacher forcing.
# - Generation is sequential and a choice: greedy, temperature, top-k, top-p (and min-p) trade
#   fidelity against variety, visibly in the numbers and audibly in the melodies.
# - A KV cache stores past keys and values; it gives the same tokens for less work. Per new token,
#   attention costs time linear in the length so far instead of quadratic (no recomputing the whole
#   prefix), and the rest of the network a constant instead of linear; over a sequence of $T$ tokens,
#   attention totals $O(T^2)$ instead of $O(T^3)$.
#
# > **Fact check: how autoregressive generation works, and what MusicLM does.**
# > * A common description says that a language model "looks at the whole sequence at once" when it
# >   writes. In fact that is only true in *training*, thanks to teacher forcing and the causal mask;
# >   *generation* is sequential, one token per forward pass (Vaswani et al., 2017; Radford et al.,
# >   2019, the GPT-2 report). The KV cache speeds each step up but does not change what is computed.
# > * A common description says the model "picks the most likely next note". In fact MusicLM, like
# >   AudioLM (Borsos et al., 2022, [arXiv:2209.03143](https://arxiv.org/abs/2209.03143)), *samples*
# >   each token of each stage from the model's distribution (Agostinelli et al., 2023,
# >   [arXiv:2301.11325](https://arxiv.org/abs/2301.11325)), which is why one text prompt yields
# >   many different pieces; greedy decoding, as you heard, collapses to one tune and tends to loop
# >   (Holtzman et al., 2020, [arXiv:1904.09751](https://arxiv.org/abs/1904.09751)).
# > * The chain rule itself is exact, not an approximation: what an autoregressive model assumes is
# >   only the *order* of the tokens and the family of conditionals $p_\theta(x_t \mid x_{<t})$ it
# >   can represent. MusicLM applies it three times in a row (semantic tokens, then coarse, then fine
# >   acoustic tokens), each stage a decoder-only Transformer conditioned on the previous ones
# >   (lesson 08).
#
# **Check your understanding.** (1) A model's perplexity is 3.1 on held-out melodies: what does that
# number mean in tokens, and what would a model that knows nothing score? (2) Why does one forward
# pass under a causal mask give the loss of every position, but generation still needs one pass per
# token? (3) Greedy decoding loops on one bar: which sampling rule would you try first, and what does
# it trade away? (4) With a KV cache, how much attention work does the 1,000th token cost compared
# with the 10th, and without one?
#
# **Going further.** Condition the model: `TransformerLMConfig(prefix_vocab_size=4)` and a
# `prefix=` tensor holding each melody's mode (`train_melodies.attributes[i].mode`) give a model
# you can ask for a *minor* tune, exactly the way MusicLM's stages take MuLan tokens as a prefix.
# Compare `positions="sinusoidal"` with `"rope"` on held-out perplexity. Read: Bengio et al.,
# *A Neural Probabilistic Language Model* (2003); Holtzman et al., *The Curious Case of Neural Text
# Degeneration* (2020); Pope et al., *Efficiently Scaling Transformer Inference* (2022) on KV-cache
# memory. Next: **lesson 03**, a different way to generate: GANs.
