# %% [markdown]
# # Lesson 08 — The MusicLM stages
#
# Lessons 05–07 built three tokenizers: SoundStream turns audio into **acoustic tokens** $A$ (enough to
# rebuild the waveform), w2v-BERT and k-means turn it into **semantic tokens** $S$ (slow, about what is
# played), and MuLan turns a clip, or a sentence, into a handful of **MuLan tokens** $M$. None of them
# makes music. What MusicLM trains is three language models over those tokens, each lesson 02's
# decoder-only Transformer, each predicting one kind of token from the kinds before it:
#
# $$p(S, A \mid M) \;=\; \underbrace{p(S \mid M)}_{\text{semantic stage}}\;
#   \underbrace{p(A_{\text{coarse}} \mid S, M)}_{\text{coarse stage}}\;
#   \underbrace{p(A_{\text{fine}} \mid A_{\text{coarse}})}_{\text{fine stage}}$$
#
# and each factor is itself a product over positions, $p(x) = \prod_t p(x_t \mid x_{<t}, \cdot)$.
#
# **Goals.** By the end you can
# 1. count the tokens each stage reads and writes, and say why MusicLM uses three models, not one;
# 2. lay several kinds of token out in one sequence of ids (flattening RVQ levels frame by frame) and
#    generate only ids that are valid where they are put;
# 3. turn a dataset into token files, train each stage briefly, then load longer-trained ones;
# 4. follow one clip from tokens to audio through every stage, listening at each step;
# 5. *measure* what the hierarchy buys: the coarse stage with and without the semantic tokens.
#
# **Prerequisites.** Lesson 02 (the decoder-only Transformer, the KV cache, sampling), lessons 05–07
# (the three tokenizers).

# %%
import dataclasses
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from mlm_lessons import (config, datasets, diagrams, metrics, mulan, musiclm, runtime, soundstream, synth,
                         token_files, tokenize, viz)

# ---- the one cell to change: scale and device ------------------------------------------------
PRESET = "tiny"          # the course scale (see mlm_lessons.config)
DEVICE = "cpu"           # "cuda" on a GPU machine
STEPS_SCALE = 1          # multiply the brief training (e.g. 50 on a GPU)
SEED = 0
# -----------------------------------------------------------------------------------------------

run = runtime.set_up_lesson(PRESET, DEVICE, SEED)   # seeds every generator, one CPU thread, compact figures
PRESET_CONFIG, SAMPLE_RATE = run.preset, run.sample_rate
CHECKPOINTS = datasets.default_data_root() / "checkpoints"
diagrams.musiclm_diagram(highlight="stages")
plt.show()

# %% [markdown]
# In the picture, this lesson builds the orange boxes. In **training** (top), every clip has already
# been turned into its three token sequences, and the three stages learn next-token prediction on
# them, each one separately: the coarse stage learns from the *true* semantic tokens of a clip, not
# from what the semantic stage would have generated (teacher forcing, lesson 02). At **generation**
# (bottom), they run one after the other, each reading what the one before it wrote.
#
# ## 1. Why three models?
# Count the tokens. At the paper's scale (`config.get_preset("paper")`, from Agostinelli et al., 2023):

# %%
# NBVAL_CHECK_OUTPUT
paper = config.get_preset("paper")
paper_kinds = musiclm.token_kinds(paper)
print(f"{'kind':<9} | {'levels':>6} | {'codes per level':>15} | {'tokens per second':>17} | in 30 s")
for name, kind in paper_kinds.items():
    per_second = "per clip" if kind.frame_rate is None else f"{kind.frame_rate * kind.levels:g}"
    in_30 = kind.levels if kind.frame_rate is None else int(30 * kind.frame_rate * kind.levels)
    print(f"{name:<9} | {kind.levels:>6} | {kind.codebook_size:>15,} | {per_second:>17} | {in_30:,}")
acoustic_per_second = sum(paper_kinds[name].frame_rate * paper_kinds[name].levels for name in ("coarse", "fine"))
flat = int(30 * (paper_kinds["semantic"].frame_rate + acoustic_per_second))
assert acoustic_per_second == 600 and flat == 18_750
print(f"\none flat sequence for 30 s of music: {flat:,} tokens, {flat ** 2 / 1e6:,.0f} million attention scores "
      "per layer and head")

# %% [markdown]
# Thirty seconds of SoundStream codes is 18,000 tokens: twelve levels at 50 frames per second. One
# Transformer over all of that would attend over 18,750 positions at every step, and self-attention
# costs grow with the square of the length. MusicLM divides the work three ways, each stage with the
# context its job needs:
#
# - the **semantic stage** sees 30 s of semantic tokens (750 of them): long enough to hold a piece's
#   structure, cheap because the tokens are slow;
# - the **coarse stage** sees 10 s: the semantic tokens of those 10 s and the first 4 RVQ levels of
#   their acoustic tokens, 2,000 of them;
# - the **fine stage** sees 3 s: the coarse levels of those 3 s and the remaining 8 levels, 1,200
#   tokens. Its job is local: sharpening the sound of frames whose content is already decided.
#
# Those are the paper's training crops as `config.get_preset("paper").stages` records them (30, 10 and
# 3 s; the course's notes on the paper mark them, and the temperatures below, as still to be checked
# against its text). The semantic stage plans and the acoustic stages render; §7 measures whether the
# planning actually reaches the sound.
# Every stage is also conditioned on something: the MuLan tokens (semantic and coarse) or the coarse
# tokens (fine). The exact number of positions each stage holds, prefix included:

# %%
# NBVAL_CHECK_OUTPUT
paper_layouts = musiclm.stage_layouts(paper)
tiny_layouts = musiclm.stage_layouts(PRESET_CONFIG)
print(f"{'stage':<9} | {'reads':<18} | {'paper: window, positions':>25} | {'tiny: window, positions':>24}")
for name in musiclm.STAGES:
    layout = paper_layouts[name]
    paper_len = musiclm.sequence_length(layout, paper.stages.seconds(name))
    tiny_len = musiclm.sequence_length(tiny_layouts[name], PRESET_CONFIG.stages.seconds(name))
    print(f"{name:<9} | {' + '.join(layout.prefix_kinds):<18} | {paper.stages.seconds(name):>8g} s, {paper_len:>6,} "
          f"positions | {PRESET_CONFIG.stages.seconds(name):>6g} s, {tiny_len:>5,} positions")
assert [musiclm.sequence_length(paper_layouts[n], paper.stages.seconds(n)) for n in musiclm.STAGES] == [763, 2263, 1801]

# %% [markdown]
# ## 2. One sequence of ids
# A Transformer reads one sequence of integers. A stage's sequence mixes kinds (MuLan, semantic,
# acoustic), and acoustic tokens come as a grid, frames × RVQ levels. Three decisions turn all of that
# into ids (`musiclm.TokenLayout`):
#
# 1. **Frame by frame.** The grid is read frame by frame: all levels of frame 1, then all of frame 2,
#    and so on ("flattened per frame", as in the paper). When the model predicts level 2 of a frame it
#    has just seen level 1 of the same frame, the residual it refines.
# 2. **A block of ids per (kind, level).** Code $c$ of level $\ell$ becomes id $\text{offset}(\ell) + c$,
#    so code 17 at level 1 and code 17 at level 2 are different tokens with different embeddings: they
#    mean different things (a coarse shape, a fine correction).
# 3. **Special ids first.** `PAD = 0` fills out sequences and is never predicted; `BOS = 1` starts what
#    a stage generates.
#
# The picture, drawn from the tiny preset's layouts (an acoustic cell's number is its position in its
# stage's sequence):

# %%
diagrams.stage_layouts_diagram(tiny_layouts, semantic_frames=3)
plt.show()

# %% [markdown]
# The same thing in code, on a toy example of 2 frames of coarse codes for the tiny coarse stage
# (2 levels of 256 codes):

# %%
coarse_layout = tiny_layouts["coarse"]
print(coarse_layout.target)
codes = torch.tensor([[[5, 17], [5, 200]]])                     # (batch 1, frames 2, levels 2)
ids = coarse_layout.target_ids(codes)
print(f"codes {codes.tolist()} -> ids {ids.tolist()}  (BOS, then frame 1's two levels, then frame 2's)")
assert ids.tolist() == [[musiclm.BOS_ID, 2 + 5, 2 + 256 + 17, 2 + 5, 2 + 256 + 200]]
assert torch.equal(coarse_layout.target_codes(ids), codes)     # and back

# %% [markdown]
# ### Only valid ids
# A stage's output layer scores every id of its vocabulary, including ids that make no sense where
# they would go: `PAD`, a level-2 code where level 1 is due. A trained model rarely picks them, but
# "rarely" is not "never", and one such id would crash the decoder hundreds of tokens later. So
# generation applies a **mask**: at each position only the block of the level that is due stays
# (`TokenLayout.valid_ids`); everything else gets probability 0 before sampling.

# %%
mask = coarse_layout.target.valid_ids("coarse", 6)                                # (positions, vocab)
fig, ax = plt.subplots(figsize=(10, 1.8))
ax.imshow(mask.numpy(), aspect="auto", cmap="Greys", interpolation="nearest")
ax.set_xlabel("id (0 = PAD, 1 = BOS, then level 1's 256 codes, then level 2's)")
ax.set_ylabel("position")
ax.set_title("valid ids at the first 6 generated positions of the coarse stage (black = allowed)")
plt.show()

# An untrained stage, sampled hot, with and without the mask:
torch.manual_seed(SEED)
untrained = musiclm.Stage.from_config(PRESET_CONFIG, "coarse").eval()
conditions = {"mulan": torch.zeros(8, 1, PRESET_CONFIG.tokens.mulan_rvq_levels, dtype=torch.long),
              "semantic": torch.zeros(8, 10, dtype=torch.long)}
prefix = coarse_layout.prefix_ids(conditions)
start = torch.full((8, 1), musiclm.BOS_ID)
unmasked = untrained.lm.generate(start, 40, temperature=1.5, prefix=prefix,
                                 generator=torch.Generator().manual_seed(SEED))[:, 1:]
due = coarse_layout.target.valid_ids("coarse", 40)
invalid = (~due.gather(1, unmasked.T).T).float().mean()
masked = untrained.generate(conditions, frames=20, temperature=1.5, generator=torch.Generator().manual_seed(SEED))
print(f"without the mask {invalid:.0%} of 320 sampled ids are invalid where they are; with it, "
      f"{tuple(masked.shape)} codes that all decode")
assert invalid > 0.3

# %% [markdown]
# ## 3. Token files
# The stages never see audio. Before training, every clip is turned into its tokens once, by the
# three frozen tokenizers of lessons 05–07, and saved: one small file per clip, plus a `tokens.json`
# recording the levels, codebook sizes and frame rates, and a SHA-256 digest of each model file that
# made them. Training on tokens made by another codec would be silently wrong, so a stage refuses
# token files whose description disagrees with its configuration. From a terminal, for a whole
# dataset (resumable: finished clips are skipped):
#
#     python -m mlm_lessons tokens --data data/synthcaps-tiny --out runs/tokens-tiny
#
# Here, for 48 of the course's training clips, in a temporary folder: a first call stops after 24 (as if
# interrupted), a second finishes the other 24, and a third finds nothing left to do.

# %%
codec = soundstream.SoundStream.load(CHECKPOINTS / f"soundstream-{PRESET}.pt").eval()
semantic_tokenizer = tokenize.SemanticTokenizer.load(CHECKPOINTS / f"w2v-bert-{PRESET}.pt")
mulan_model = mulan.MuLan.load(CHECKPOINTS / f"mulan-{PRESET}.pt")
data_root = datasets.ensure_synthcaps(PRESET, progress=False)
train_records = [record for record in datasets.read_synthcaps_manifest(data_root) if record.split == "train"][:48]
timings = {}
with tempfile.TemporaryDirectory() as token_dir:
    for name, records in (("24 clips, then interrupted", train_records[:24]), ("all 48: resumed", train_records),
                          ("all 48 again", train_records)):
        started = time.perf_counter()
        token_files.extract_tokens(records, token_dir, codec, semantic_tokenizer, mulan_model, progress=False)
        timings[name] = time.perf_counter() - started
    spec, train_tokens = token_files.read_token_files(token_dir, [record.ytid for record in train_records])
    stored = sorted(path.name for path in Path(token_dir).iterdir())
print(", ".join(f"{name}: {seconds:.2f} s" for name, seconds in timings.items()))
print(f"{len(stored)} files: {stored[0]}, ..., {stored[-1]}")
example = train_tokens[0]
for name in ("mulan", "semantic", "acoustic"):
    print(f"  {name:<9} {tuple(example[name].shape)}")
seconds = PRESET_CONFIG.data.clip_seconds
assert example["semantic"].shape == (seconds * spec["semantic"]["frame_rate"],)
assert example["acoustic"].shape == (seconds * spec["acoustic"]["frame_rate"], spec["acoustic"]["levels"])
assert timings["all 48 again"] < timings["all 48: resumed"] / 5 and len(stored) == 48 + 1

# %% [markdown]
# A 4-second clip is 4 MuLan tokens, 100 semantic tokens and 200 × 4 acoustic tokens: 904 small
# integers, stored as 16-bit, against 64,000 audio samples.
#
# ## 4. Training the stages
# A training example is a window of one clip, the same stretch of music cut from every kind
# (`musiclm.StageExamples`): a window starts on a semantic frame, and the acoustic frames of that
# stretch (two per semantic frame, at 50 and 25 Hz) come with it. Without that alignment the coarse
# stage would learn from semantic tokens of the wrong moment. One coarse example of the tiny preset
# (a 2-second window):

# %%
coarse_examples = musiclm.StageExamples(train_tokens, spec, PRESET_CONFIG, "coarse",
                                        PRESET_CONFIG.stages.seconds("coarse"))
one = coarse_examples[0]
mulan_count = PRESET_CONFIG.tokens.mulan_rvq_levels
print(f"prefix {tuple(one['prefix'].shape)}: {mulan_count} MuLan ids + {len(one['prefix']) - mulan_count} semantic ids")
print(f"target {tuple(one['target'].shape)}: BOS + 100 frames x 2 coarse levels")
assert len(one["prefix"]) == mulan_count + 50 and len(one["target"]) == 1 + 100 * 2

# %% [markdown]
# Each stage trains with the package's one `Trainer` on next-token cross-entropy. A few dozen steps
# each, on these 48 clips, to watch the losses fall (a uniform guess over a level's codes costs
# $\ln K$ nats: $\ln 128 = 4.85$ for semantic tokens, $\ln 256 = 5.55$ for acoustic ones):

# %%
brief = dataclasses.replace(PRESET_CONFIG, train=dataclasses.replace(
    PRESET_CONFIG.train, device=DEVICE, log_every=5, checkpoint_every=0, seed=SEED))
brief_steps = {"semantic": 60, "coarse": 30, "fine": 30}
brief_models, brief_histories = {}, {}
started = time.perf_counter()
for name, steps in brief_steps.items():
    brief_models[name], brief_histories[name] = musiclm.train_stage(brief, name, train_tokens, spec,
                                                                    steps=steps * STEPS_SCALE, progress=False)
print(f"{sum(brief_steps.values()) * STEPS_SCALE} steps in {time.perf_counter() - started:.0f} s")
fig, axes = plt.subplots(1, 3, figsize=(13, 2.8))
for ax, (name, history) in zip(axes, brief_histories.items()):
    codebook = PRESET_CONFIG.tokens.semantic_clusters if name == "semantic" else PRESET_CONFIG.tokens.codebook_size
    viz.plot_history(history, keys=["loss"], ax=ax, title=f"{name} stage")
    ax.axhline(np.log(codebook), color="grey", linestyle=":", label=f"uniform guess, ln {codebook}")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
for name, history in brief_histories.items():
    assert history[-1]["loss"] < history[0]["loss"], name
assert min(brief_histories["coarse"][0]["loss"], brief_histories["fine"][0]["loss"]) > np.log(256)

# %% [markdown]
# The acoustic stages start *above* the uniform-guess line: untrained, a stage spreads its probability
# over every id of its vocabulary ($\ln 514 = 6.24$ for two levels of 256 codes and two special ids),
# and the first thing it learns is which block of ids is due where. Three minutes of CPU do not make a
# useful stage. The longer-trained ones below ("load if present, else train") were made with the same
# code on the token files of 2,400 clips (the course's synthesizer, seed 0; the 2,160 of the training
# split), one command each. The CPU times are for one thread, measured on a 2-core machine:
#
#     python -m mlm_lessons tokens --data data/synthcaps-tiny-2400 --out runs/tokens-tiny-2400   # ~12 min
#     python -m mlm_lessons train --stage semantic --data data/synthcaps-tiny-2400 \
#         --tokens runs/tokens-tiny-2400 --steps 4000 --out runs/semantic-tiny \
#         --export data/checkpoints/semantic-tiny.pt                                  # 9 min
#     python -m mlm_lessons train --stage coarse ... --steps 5000 --out runs/coarse-tiny \
#         --export data/checkpoints/coarse-tiny.pt                                    # 39 min
#     python -m mlm_lessons train --stage fine ... --steps 4000 --out runs/fine-tiny \
#         --export data/checkpoints/fine-tiny.pt                                      # 21 min
#
# (`data/synthcaps-tiny-2400` is made by `python -m mlm_lessons data --num-clips 2400 --out
# data/synthcaps-tiny-2400`, or by the MuLan command of lesson 07.) The tiny stages use the paper's
# dropout of 0.1: without it, the semantic stage learned its training clips by heart (their MuLan
# tokens nearly name each clip): after 3,000 steps its training loss was 0.11 nats per token and its
# held-out loss 1.79, against 1.04 held-out for the shipped stage (§5). A fourth
# file, a coarse stage trained *without* semantic tokens, is for §7.

# %%
def load_stage(file_name, fallback):
    """The longer-trained stage if its file is present, else the briefly trained one."""
    path = CHECKPOINTS / file_name
    if path.exists():
        return musiclm.Stage.load(path), "longer-trained"
    print(f"no {file_name}: using the briefly trained stage; run the command above to make the better one")
    return fallback, "brief"

stages, provenance = {}, {}
for name in musiclm.STAGES:
    stages[name], provenance[name] = load_stage(f"{name}-{PRESET}.pt", brief_models[name])
for name, stage in stages.items():
    count = sum(parameter.numel() for parameter in stage.parameters())
    print(f"{name:<9} {provenance[name]:<15} {count / 1e6:.2f}M parameters, window {stage.seconds:g} s "
          f"({stage.lm.config.max_len} positions)")

# %% [markdown]
# ## 5. Clips the stages never heard
# The longer-trained stages learned from the clips of data seed 0. To test them, we render 32 fresh
# clips with seed 1 and tokenize them with the same three models (this takes a few seconds):

# %%
started = time.perf_counter()
held_planned = datasets.plan_synthcaps(32, seed=1)
held_audio = datasets.render_planned(held_planned, PRESET_CONFIG.data.clip_seconds, SAMPLE_RATE)   # (32, samples)
held = token_files.clip_tokens(held_audio, codec, semantic_tokenizer, mulan_model)
held_clips = [{"mulan": held["mulan"][i], "semantic": held["semantic"][i], "acoustic": held["acoustic"][i]}
              for i in range(len(held_audio))]
print(f"32 held-out clips rendered and tokenized in {time.perf_counter() - started:.0f} s")

# %% [markdown]
# First, teacher-forced: how well does each stage predict the next token of held-out music, given the
# true tokens before it? Accuracy alone misleads here, because tokens repeat: a semantic token lasts
# for several frames while a note is held (lesson 06), so "the same code as in the previous frame" is
# a baseline any stage must beat.

# %%
def held_out_scores(stage, name, condition_on=None):
    """Teacher-forced loss and accuracy of ``stage`` on one random window of each held-out clip, and the
    accuracy of repeating each level's code from the previous frame."""
    torch.manual_seed(SEED)
    windows = musiclm.StageExamples(held_clips, spec, PRESET_CONFIG, name, stage.seconds,
                                    condition_on=condition_on)
    batch = torch.utils.data.default_collate([windows[i] for i in range(len(windows))])
    with torch.no_grad():
        loss, extra = stage.loss(batch["prefix"], batch["target"])
    codes = stage.layout.target_codes(batch["target"])                          # (clips, frames, levels)
    repeat = (codes[:, 1:] == codes[:, :-1]).float().mean()
    return {"loss": loss.item(), "accuracy": extra["accuracy"].item(), "repeat": repeat.item()}

held_scores = {name: held_out_scores(stage, name) for name, stage in stages.items()}
print(f"{'stage':<9} | {'nats/token':>10} | {'uniform guess':>13} | {'accuracy':>8} | {'repeat the last frame':>21}")
for name, row in held_scores.items():
    codebook = PRESET_CONFIG.tokens.semantic_clusters if name == "semantic" else PRESET_CONFIG.tokens.codebook_size
    print(f"{name:<9} | {row['loss']:>10.2f} | {np.log(codebook):>13.2f} | {row['accuracy']:>8.0%} | "
          f"{row['repeat']:>21.0%}")
    assert row["loss"] < np.log(codebook) - 0.5 and row["accuracy"] > row["repeat"], name

# %% [markdown]
# Every stage beats both baselines on music it never heard, by very different margins. Semantic tokens
# are easy to continue: they are slow (lesson 06), so most of the time the next one is the last one,
# and the stage adds to that what a melody makes likely next. Acoustic tokens are hard: an acoustic code
# describes 20 ms of waveform and changes at nearly every frame, so even the right *music* leaves many
# codes possible, and the stages learn a distribution that is still wide (a loss of 4 nats is as
# uncertain as a fair choice among $e^4 \approx 55$ codes). Part of that width is real (many renderings
# of the same notes sound equally right) and part is the size of the stages: under a million
# parameters each, trained for under an hour on one CPU thread.

# %% [markdown]
# ## 6. From tokens to audio, one stage at a time
# Now generation, on one held-out clip, the way MusicLM continues a recording: keep its first two
# seconds, and let the stages write the next two. Each stage samples at its temperature from
# `config.stages`: 1.0, 0.95 and 0.4 for the semantic, coarse and fine stages, as recorded for the paper.
# The later the stage, the cooler: the fine stage should commit to the most likely detail of a sound
# whose content is already decided.
#
# **The semantic stage** reads the clip's MuLan tokens and its first 50 semantic tokens (2 s), and
# writes 50 more. Three samples, from three seeds:

# %%
clip = 0
prompt_seconds = PRESET_CONFIG.data.clip_seconds / 2
semantic_rate = spec["semantic"]["frame_rate"]
prompt_frames = int(prompt_seconds * semantic_rate)
clip_mulan = held["mulan"][clip:clip + 1, None]                                  # (1, 1 frame, levels)
clip_semantic = held["semantic"][clip:clip + 1, :, None]                          # (1, frames, 1)
samples = 3
generator = torch.Generator().manual_seed(SEED)
continued = stages["semantic"].generate(
    {"mulan": clip_mulan.repeat(samples, 1, 1)}, frames=clip_semantic.shape[1] - prompt_frames,
    prompt=clip_semantic[:, :prompt_frames].repeat(samples, 1, 1),
    temperature=PRESET_CONFIG.stages.temperature("semantic"), generator=generator)   # (3, frames, 1)
strips = torch.cat([clip_semantic, continued])[:, :, 0]
fig, ax = plt.subplots(figsize=(11, 2.2))
ax.imshow(strips.numpy(), aspect="auto", cmap="tab20", interpolation="nearest",
          extent=(0, strips.shape[1] / semantic_rate, len(strips) - 0.5, -0.5))
ax.axvline(prompt_seconds, color="black", linewidth=2)
ax.set_yticks(range(len(strips)), ["the clip"] + [f"sample {i + 1}" for i in range(samples)])
ax.set_xlabel("seconds (left of the line: the prompt, kept; right: written by the semantic stage)")
ax.set_title(f"semantic tokens of held-out clip {clip} ({held_planned[clip].caption[:60]}...), one colour per token")
plt.show()
assert torch.equal(continued[:, :prompt_frames], clip_semantic[:, :prompt_frames].repeat(samples, 1, 1))
changes = (continued[:, prompt_frames + 1:] != continued[:, prompt_frames:-1]).float().mean()
print(f"the samples differ from each other and from the clip after the prompt; like the clip's own tokens "
      f"they change at {changes:.0%} of frames (the clip: "
      f"{(clip_semantic[:, 1:] != clip_semantic[:, :-1]).float().mean():.0%})")

# %% [markdown]
# Semantic tokens cannot be played: nothing decodes them. **The coarse stage** turns them into sound.
# It reads the MuLan tokens and all 100 semantic frames (the prompt's and the new ones), continues
# the clip's own coarse codes for the first two seconds, and writes the coarse levels of the last two.
# Its window is 2 s in the tiny preset, so 4 s of music takes several windows: each new window starts
# one second back and continues the codes already there, reading the semantic tokens of its own two
# seconds (`Stage.generate` slides the window; §2 of `musiclm.py` explains it).
#
# **The fine stage** then reads the coarse codes and writes the fine levels, continuing the clip's own
# fine codes for the prompt's two seconds. SoundStream's decoder turns codes into audio with however
# many levels it is given (quantiser dropout, lesson 05), so we can listen to the coarse levels alone,
# then to all four.

# %%
acoustic_rate = spec["acoustic"]["frame_rate"]
coarse_levels = PRESET_CONFIG.tokens.coarse_levels
prompt_acoustic = int(prompt_seconds * acoustic_rate)
clip_acoustic = held["acoustic"][clip:clip + 1]                                  # (1, frames, levels)
generator = torch.Generator().manual_seed(SEED)
started = time.perf_counter()
coarse = stages["coarse"].generate(
    {"mulan": clip_mulan, "semantic": continued[:1]}, frames=clip_acoustic.shape[1] - prompt_acoustic,
    prompt=clip_acoustic[:, :prompt_acoustic, :coarse_levels],
    temperature=PRESET_CONFIG.stages.temperature("coarse"), generator=generator)   # (1, 200, 2)
fine = stages["fine"].generate(
    {"coarse": coarse}, frames=clip_acoustic.shape[1] - prompt_acoustic,
    prompt=clip_acoustic[:, :prompt_acoustic, coarse_levels:],
    temperature=PRESET_CONFIG.stages.temperature("fine"), generator=generator)     # (1, 200, 2)
print(f"coarse and fine codes for 2 s in {time.perf_counter() - started:.1f} s")
samples_in_clip = held_audio.shape[1]
with torch.no_grad():
    versions = {
        "the held-out clip": held_audio[clip],
        "its codes, decoded (all 4 levels)": codec.decode(clip_acoustic.transpose(1, 2))[0, :samples_in_clip],
        "generated coarse levels alone": codec.decode(coarse.transpose(1, 2))[0, :samples_in_clip],
        "generated coarse + fine levels": codec.decode(torch.cat([coarse, fine], dim=2).transpose(1, 2))[0, :samples_in_clip],
    }
fig, axes = plt.subplots(2, 2, figsize=(13, 5.5))
for ax, (title, wave) in zip(axes.flat, versions.items()):
    viz.plot_spectrogram(wave, SAMPLE_RATE, ax=ax, title=title)
    ax.axvline(prompt_seconds, color="white", linewidth=2, linestyle="--")
plt.tight_layout()
plt.show()
assert torch.equal(coarse[:, :prompt_acoustic], clip_acoustic[:, :prompt_acoustic, :coarse_levels])

# %% [markdown]
# Listen in order. Left of the dashed line, all four are the same music (the last three through the
# codec, the third with its two coarse levels only); right of it, the stages wrote the last two seconds
# from the MuLan tokens and the semantic tokens the semantic stage had just written. Does the
# continuation keep the character of the first two seconds? What do the fine levels add to the coarse
# ones? Sections 7 and 8 turn such questions into numbers.

# %%
for title, wave in versions.items():
    print(title)
    display(viz.play(wave, SAMPLE_RATE))

# %% [markdown]
# ## 7. Why a hierarchy? Measured
# The claim behind the three stages (from AudioLM, Borsos et al., 2022, which MusicLM builds on):
# semantic tokens carry the *structure* of the music, acoustic tokens its *sound*, and a model that
# writes the structure first makes more coherent music than one that writes sound directly. Lesson 06
# measured half of it: a semantic token names the melody's pitch class far more often than chance.
# Does the coarse stage actually *use* that? An ablation answers it: a second coarse stage, the same
# size and trained the same way on the same clips, that reads the MuLan tokens only
# (`musiclm.stage_layout(config, "coarse", condition_on=["mulan"])`, made by
# `python -m mlm_lessons train --stage coarse --condition-on mulan ... --steps 5000 --out
# runs/coarse-mulan-tiny --export data/checkpoints/coarse-mulan-tiny.pt`, 30 min of CPU).
#
# The number to compare is **chroma agreement** (`metrics.chroma_agreement`): fold each clip's spectrum
# onto the 12 pitch classes, frame by frame, and average over time the correlation between the
# generated clip's chroma and the held-out clip's, over one coarse window (the clips' first two
# seconds). It is 1 when the same notes stand out at the same moments, whatever the timbre, and about
# 0 for unrelated notes or noise; notes are what the semantic tokens should carry. Two references
# bound it: the clip's own coarse codes decoded (what a perfect coarse stage would reach), and a
# *different* held-out clip (music of the same synthesizer, other notes).

# %%
if (CHECKPOINTS / f"coarse-mulan-{PRESET}.pt").exists():
    ablation, _ = load_stage(f"coarse-mulan-{PRESET}.pt", None)
else:
    ablation, _ = musiclm.train_stage(brief, "coarse", train_tokens, spec, steps=brief_steps["coarse"] * STEPS_SCALE,
                                      progress=False, condition_on=["mulan"])
    print("no coarse-mulan file: using a briefly trained ablation")
all_conditions = {"mulan": held["mulan"][:, None], "semantic": held["semantic"]}

def decoded(codes):
    """Codes (clips, frames, levels) -> audio (clips, samples): the decoder's output, trimmed to the music."""
    with torch.no_grad():
        return codec.decode(codes.transpose(1, 2))[:, :codes.shape[1] * SAMPLE_RATE // acoustic_rate]

# One window of the coarse stage (2 s in the tiny preset): the first two seconds of every held-out clip.
frames = stages["coarse"].window
reference = held_audio[:, :frames * SAMPLE_RATE // acoustic_rate]

def agreement(waves, against=reference):
    return metrics.chroma_agreement(waves, against, SAMPLE_RATE)                        # (clips,)

def coarse_audio(stage, conditions, seed):
    codes = stage.generate(conditions, frames=frames, generator=torch.Generator().manual_seed(seed),
                           temperature=PRESET_CONFIG.stages.temperature("coarse"))
    return decoded(codes)

seeds = (0, 1, 2)
started = time.perf_counter()
chroma_rows = {
    "the clip's own coarse codes, decoded": [agreement(decoded(held["acoustic"][:, :frames, :coarse_levels]))],
    "coarse stage, given MuLan + semantic tokens": [agreement(coarse_audio(stages["coarse"], all_conditions, seed))
                                                   for seed in seeds],
    "coarse stage, given MuLan tokens only": [agreement(coarse_audio(ablation, {"mulan": all_conditions["mulan"]},
                                                                     seed)) for seed in seeds],
    "a different held-out clip": [agreement(reference.roll(1, dims=0))],
}
print(f"{len(seeds) * 2 * len(held_audio)} clips of coarse codes generated and decoded in "
      f"{time.perf_counter() - started:.0f} s\n")
print(f"{'chroma agreement with the held-out clip, 2 s':<45} | mean of 32 clips | per seed")
for name, runs in chroma_rows.items():
    means = [float(run.mean()) for run in runs]
    per_seed = ", ".join(f"{m:.3f}" for m in means) if len(runs) > 1 else "(no sampling)"
    print(f"{name:<45} | {np.mean(means):>16.3f} | {per_seed}")

# %%
with_semantic = [float(run.mean()) for run in chroma_rows["coarse stage, given MuLan + semantic tokens"]]
mulan_only = [float(run.mean()) for run in chroma_rows["coarse stage, given MuLan tokens only"]]
other_clip = float(chroma_rows["a different held-out clip"][0].mean())
own_codes = float(chroma_rows["the clip's own coarse codes, decoded"][0].mean())
ablation_scores = held_out_scores(ablation, "coarse", condition_on=["mulan"])
print(f"teacher-forced, held-out: {held_scores['coarse']['loss']:.3f} nats per coarse token with semantic tokens, "
      f"{ablation_scores['loss']:.3f} without")
gap = (np.mean(with_semantic) - other_clip) / (own_codes - other_clip)
print(f"the full coarse stage closes {gap:.0%} of the gap between another clip and the clip's own codes")
assert other_clip < 0.1 < 0.5 < own_codes and 0.03 < gap < 0.3
assert min(with_semantic) > max(mulan_only) > other_clip                   # on every seed
assert abs(held_scores["coarse"]["loss"] - ablation_scores["loss"]) < 0.15    # about the same cross-entropy

# %% [markdown]
# A sharper question: when MuLan tokens and semantic tokens disagree, which one decides the notes?
# Give the coarse stage the MuLan tokens of clip $i$ and the semantic tokens of clip $i-1$, and ask
# whose notes come out:

# %%
swapped = {"mulan": all_conditions["mulan"], "semantic": all_conditions["semantic"].roll(1, dims=0)}
follows = {"the clip that gave the semantic tokens": [], "the clip that gave the MuLan tokens": []}
for seed in seeds:
    waves = coarse_audio(stages["coarse"], swapped, seed)
    follows["the clip that gave the semantic tokens"].append(float(agreement(waves, reference.roll(1, dims=0)).mean()))
    follows["the clip that gave the MuLan tokens"].append(float(agreement(waves).mean()))
for name, values in follows.items():
    print(f"chroma agreement with {name:<40} {np.mean(values):.3f}  (seeds: {', '.join(f'{v:.3f}' for v in values)})")
assert min(follows["the clip that gave the semantic tokens"]) > max(follows["the clip that gave the MuLan tokens"])

# %% [markdown]
# What the numbers say:
#
# - The clip's own coarse codes keep most of its notes (two RVQ levels of the tiny codec lose some), and
#   another clip shares almost none.
# - The coarse stage that reads semantic tokens keeps more of the held-out clip's notes than the same
#   stage without them, on every seed. The effect is real but small: it closes a small share of the
#   gap between another clip and the clip's own codes. The MuLan tokens alone already do better than
#   another clip, probably through the key and mode, which MuLan learned from the captions (lesson 07);
#   what the semantic tokens add is which notes sound when.
# - The swap settles who decides: given one clip's MuLan tokens and another clip's semantic tokens, the
#   notes follow the semantic tokens.
# - The cross-entropy hardly moves. Most of what is uncertain about an acoustic code is waveform detail
#   that neither kind of token fixes, and the notes are a small share of its bits, though they are the
#   share a listener follows. A loss curve would not have shown what the hierarchy buys; a measurement
#   aimed at the notes does.
#
# This is the division of labour the papers describe (AudioLM, and MusicLM after it, credit the semantic
# tokens with a piece's long-term structure), seen at a scale where it is only beginning: a coarse stage
# of under a million parameters uses a little of what the semantic tokens offer. Larger stages, longer
# training, and a semantic stage planning 30 s rather than 4 are how the paper gets more.

# %% [markdown]
# ## 8. The whole cascade, from MuLan tokens alone
# So far the stages were given real tokens to continue. Now nothing but the MuLan tokens of each
# held-out clip: the semantic stage writes 4 s of semantic tokens from scratch, the coarse stage
# renders them, the fine stage refines, SoundStream decodes. This is MusicLM's generation path with
# the MuLan *audio* tokens of a clip in place of the *text* tokens of a prompt (lesson 09 puts the text
# tower in front). `musiclm.cascade` runs it: each stage's output is the next one's condition.

# %%
temperatures = {name: PRESET_CONFIG.stages.temperature(name) for name in musiclm.STAGES}
started = time.perf_counter()
generated = musiclm.cascade(stages, held["mulan"][:, None], PRESET_CONFIG.data.clip_seconds, temperatures,
                            generator=torch.Generator().manual_seed(SEED))
generated_audio = decoded(generated["acoustic"])
elapsed = time.perf_counter() - started
print(f"{len(generated_audio)} clips of {PRESET_CONFIG.data.clip_seconds:g} s in {elapsed:.0f} s: "
      f"{elapsed / (len(generated_audio) * PRESET_CONFIG.data.clip_seconds):.2f} s of CPU per second of music, "
      "in batches of 32")
fig, axes = plt.subplots(1, 3, figsize=(13, 2.6))
for ax, index in zip(axes, range(3)):
    attributes = held_planned[index].attributes
    viz.plot_spectrogram(generated_audio[index], SAMPLE_RATE, ax=ax,
                         title=f"from the MuLan tokens of a {attributes.mood} {attributes.lead} clip")
plt.tight_layout()
plt.show()
for index in range(3):
    print(held_planned[index].caption)
    display(viz.play(generated_audio[index], SAMPLE_RATE))

# %% [markdown]
# Does the generated music keep what the MuLan tokens say, say the lead instrument? MuLan's zero-shot
# tagging (lesson 07) could judge it, but first check the judge on what the codec makes of the real
# clips: everything the stages write goes through the same decoder.

# %%
instruments = list(synth.INSTRUMENTS)
truth = torch.tensor([instruments.index(clip.attributes.lead) for clip in held_planned])
templates = ["a {} melody", "{}", "a song led by a {}"]

def instrument_accuracy(waves):
    guesses, _ = mulan.zero_shot_classify(mulan_model, waves, instruments, templates)
    return (guesses == truth).float().mean().item()

judged = {"the held-out clips": instrument_accuracy(held_audio),
          "their own codes, decoded": instrument_accuracy(decoded(held["acoustic"])),
          "generated from their MuLan tokens": instrument_accuracy(generated_audio)}
for name, value in judged.items():
    print(f"lead instrument named by MuLan: {name:<34} {value:.0%}   (chance {1 / len(instruments):.0%})")
codec_chroma = float(agreement(decoded(held["acoustic"]), held_audio).mean())
print(f"chroma agreement of the decoded codes with the clips: {codec_chroma:.2f}")
assert judged["the held-out clips"] >= 0.8 and judged["their own codes, decoded"] <= 0.4 and codec_chroma > 0.5

# %% [markdown]
# The judge fails before the stages are involved: MuLan names the instrument of nearly every real clip,
# but of only a small share of the *same clips after the codec*, whose notes survive (a chroma agreement
# well above that of another clip, §7) while their timbre does not. The tiny codec spends 1,600 bits per
# second (lesson 05), and what it loses first is exactly what MuLan listens to. So at this scale MuLan
# cannot tell us whether the cascade kept the instrument; whatever the generated clips score is capped
# by the decoded codes' score. Two lessons follow: an evaluation must be checked on the reference audio
# *after the codec* before it judges generated audio (lesson 09 does this for every metric), and the
# weakest link of the course's MusicLM is the codec, which is where a practitioner with a GPU should
# spend first (the `small` preset's codec has 8 levels of 1,024 codes).
#
# %% [markdown]
# ## 9. The paper's stages beside ours
# Everything in this lesson runs the paper's design at a scale a laptop can train. The settings side
# by side (the paper's from Agostinelli et al., 2023, as in `config.get_preset("paper")`; the crop
# lengths and temperatures are from the paper's description and should be checked against it):

# %%
# NBVAL_CHECK_OUTPUT
count = lambda module: sum(parameter.numel() for parameter in module.parameters())
tiny_stage_parameters = count(musiclm.Stage.from_config(PRESET_CONFIG, "coarse"))
rows = [
    ("stage Transformer", f"{paper.transformer.n_layers} layers, width {paper.transformer.d_model}, "
                          f"{paper.transformer.n_heads} heads",
     f"{PRESET_CONFIG.transformer.n_layers} layers, width {PRESET_CONFIG.transformer.d_model}, "
     f"{PRESET_CONFIG.transformer.n_heads} heads"),
    ("parameters per stage", "about 430M", f"{tiny_stage_parameters / 1e6:.2f}M (coarse)"),
    ("dropout", f"{paper.transformer.dropout}", f"{PRESET_CONFIG.transformer.dropout}"),
    ("windows (semantic / coarse / fine)", " / ".join(f"{paper.stages.seconds(n):g} s" for n in musiclm.STAGES),
     " / ".join(f"{PRESET_CONFIG.stages.seconds(n):g} s" for n in musiclm.STAGES)),
    ("temperatures", " / ".join(f"{paper.stages.temperature(n):g}" for n in musiclm.STAGES),
     " / ".join(f"{PRESET_CONFIG.stages.temperature(n):g}" for n in musiclm.STAGES)),
    ("RVQ levels (coarse + fine)", f"{paper.tokens.coarse_levels} + {paper.tokens.rvq_levels - paper.tokens.coarse_levels}"
     f" of {paper.tokens.codebook_size:,} codes",
     f"{PRESET_CONFIG.tokens.coarse_levels} + {PRESET_CONFIG.tokens.rvq_levels - PRESET_CONFIG.tokens.coarse_levels}"
     f" of {PRESET_CONFIG.tokens.codebook_size} codes"),
    ("semantic tokens", f"{paper.tokens.semantic_clusters:,} clusters at {paper.tokens.semantic_frame_rate} Hz",
     f"{PRESET_CONFIG.tokens.semantic_clusters} clusters at {PRESET_CONFIG.tokens.semantic_frame_rate} Hz"),
    ("MuLan tokens", f"{paper.tokens.mulan_rvq_levels} x {paper.tokens.mulan_codebook_size:,}",
     f"{PRESET_CONFIG.tokens.mulan_rvq_levels} x {PRESET_CONFIG.tokens.mulan_codebook_size}"),
    ("training music", "5M clips, 280,000 hours", "2,160 SynthCaps clips, 2.4 hours"),
]
print(f"{'':<35} | {'MusicLM (paper)':<32} | this course (tiny)")
for name, theirs, ours in rows:
    print(f"{name:<35} | {theirs:<32} | {ours}")
assert 0.5e6 < tiny_stage_parameters < 1e6

# %% [markdown]
# **One stage instead of three.** MusicGen (Copet et al., 2023) showed that the cascade is not the only
# way: a single Transformer over EnCodec's tokens (32 kHz, 4 codebooks at 50 Hz) predicts all four
# codebooks at once, each offset by one step from the one before (a *delay pattern*), so one position
# holds level 1 of frame $t$, level 2 of frame $t-1$, and so on: as many steps as frames, not frames ×
# levels, and no semantic tokens at all. Its text conditioning enters by cross-attention (the
# `memory` argument of our `TransformerLM`) rather than as a prefix.
#
# ## Exercises
# **Exercise 1 (2 points).** Write `my_flatten(codes, first_id, codebook_size)`: codes
# `(batch, frames, levels)` → ids `(batch, frames * levels)`, read frame by frame, where code $c$ of
# level $\ell$ becomes `first_id + ℓ * codebook_size + c`.

# %% solution ex1_flatten
def my_flatten(codes, first_id, codebook_size):
    ### BEGIN SOLUTION
    levels = codes.shape[-1]
    return (codes + first_id + codebook_size * torch.arange(levels)).flatten(1)
    ### END SOLUTION

# %% tests ex1_flatten_tests 2
assert my_flatten(torch.tensor([[[0, 0], [4, 1]]]), 4, 5).tolist() == [[4, 9, 8, 10]]
### BEGIN HIDDEN TESTS
some_codes = torch.randint(256, (3, 7, 2), generator=torch.Generator().manual_seed(1))
assert torch.equal(my_flatten(some_codes, coarse_layout.target.offset("coarse", 0), 256),
                   coarse_layout.target.flatten("coarse", some_codes))
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (2 points).** Write `my_valid_ids(length, levels, first_id, codebook_size, vocab_size)`: the
# `(length, vocab_size)` bool mask whose row $p$ allows exactly the ids of the level due at flat position
# $p$ (level $p \bmod$ `levels`), with ids laid out as in exercise 1.

# %% solution ex2_valid_ids
def my_valid_ids(length, levels, first_id, codebook_size, vocab_size):
    ### BEGIN SOLUTION
    low = first_id + (torch.arange(length) % levels) * codebook_size
    ids = torch.arange(vocab_size)
    return (ids >= low[:, None]) & (ids < low[:, None] + codebook_size)
    ### END SOLUTION

# %% tests ex2_valid_ids_tests 2
toy_mask = my_valid_ids(3, 2, 1, 2, 5)
assert toy_mask.tolist() == [[False, True, True, False, False], [False, False, False, True, True],
                             [False, True, True, False, False]]
### BEGIN HIDDEN TESTS
fine_layout = tiny_layouts["fine"].target
assert torch.equal(my_valid_ids(9, 2, fine_layout.offset("fine", 0), 256, fine_layout.vocab_size),
                   fine_layout.valid_ids("fine", 9))
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (3 points).** Write `my_sequence_length(layout, seconds)`: the positions a stage needs for
# `seconds` of music, its prefix, `BOS` and its targets. A kind with `frame_rate` of `None` (MuLan) has
# one frame whatever the length; the others have `round(seconds * frame_rate)` frames; every frame
# holds `levels` tokens. `layout.prefix.kinds` and `layout.target.kinds` map names to `TokenKind`s, and
# `layout.target_kind` names the target. Check: the paper's coarse stage needs 2,263 positions for 10 s.

# %% solution ex3_sequence_length
def my_sequence_length(layout, seconds):
    ### BEGIN SOLUTION
    def tokens(kind):
        frames = 1 if kind.frame_rate is None else round(seconds * kind.frame_rate)
        return frames * kind.levels
    return sum(tokens(kind) for kind in layout.prefix.kinds.values()) + 1 + tokens(layout.target.kinds[layout.target_kind])
    ### END SOLUTION

# %% tests ex3_sequence_length_tests 3
assert my_sequence_length(paper_layouts["coarse"], 10) == 2263
### BEGIN HIDDEN TESTS
for preset_layouts in (paper_layouts, tiny_layouts):
    for stage_name, stage_layout in preset_layouts.items():
        for window in (0.5, 3, 30):
            assert my_sequence_length(stage_layout, window) == musiclm.sequence_length(stage_layout, window)
### END HIDDEN TESTS

# %% [markdown]
# ## Summary
# - MusicLM's three stages are three decoder-only Transformers, each predicting one kind of token from
#   the kinds before it: semantic given MuLan, coarse acoustic given MuLan and semantic, fine acoustic
#   given coarse. Splitting the work keeps every context short (763, 2,263 and 1,801 positions at the
#   paper's scale, against 18,750 for one flat sequence of 30 s) and lets each stage see as much music
#   as its job needs.
# - A stage reads one sequence of ids: acoustic levels flattened frame by frame, a block of ids for
#   every (kind, level), `PAD` and `BOS` first. Generation masks every id not valid at its position, so
#   whatever is sampled decodes.
# - The stages learn from token files made once by the frozen tokenizers, on windows cut from the
#   same stretch of music for every kind, and generate longer music window by window.
# - The hierarchy, measured with an ablation: the coarse stage given semantic tokens keeps more of a
#   held-out clip's notes than the same stage given MuLan tokens alone, on every seed, and when the two
#   kinds of conditioning disagree, the notes follow the semantic tokens. At this scale the effect is
#   real but small: the tiny coarse stage recovers a modest share of what the clip's own codes keep.
# - Judge generated audio only with a judge checked on the codec's reconstructions: MuLan names the
#   instrument of nearly every real clip and of few decoded ones.
#
# The figures measured in this run:

# %%
for name, history in brief_histories.items():
    print(f"brief training, {name}: loss {history[0]['loss']:.2f} -> {history[-1]['loss']:.2f}")
for name, row in held_scores.items():
    print(f"held-out {name}: {row['loss']:.2f} nats/token, accuracy {row['accuracy']:.0%} (repeat: {row['repeat']:.0%})")
for name, runs in chroma_rows.items():
    print(f"chroma agreement, {name}: {np.mean([float(run.mean()) for run in runs]):.3f}")
for name, values in follows.items():
    print(f"swapped conditioning, agreement with {name}: {np.mean(values):.3f}")
for name, value in judged.items():
    print(f"MuLan names the instrument of {name}: {value:.0%}")

# %% [markdown]
# **Going further.** Agostinelli et al. 2023, *MusicLM*, section 3 (the stages and their conditioning);
# Borsos et al. 2022, *AudioLM* (the semantic → coarse → fine hierarchy, and why semantic tokens carry
# long-term structure); Copet et al. 2023, *MusicGen* (one stage and a delay pattern instead of a
# cascade); Vaswani et al. 2017 (the Transformer these stages are made of). Next: **lesson 09**, the
# whole pipeline from a sentence to music, measured like the paper.
