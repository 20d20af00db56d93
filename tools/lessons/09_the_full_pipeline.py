# %% [markdown]
# # Lesson 09 — The full pipeline: from a sentence to music, measured like the paper
#
# Everything is built. SoundStream turns audio into acoustic tokens and back (lesson 05), w2v-BERT and
# k-means give semantic tokens (06), MuLan puts text and music in one space (07), and three Transformers
# write semantic, coarse and fine tokens one after the other (08). This lesson chains them, the way
# MusicLM generates:
#
# $$\text{text} \xrightarrow{\text{MuLan text tower + RVQ}} M \xrightarrow{\text{semantic stage}} S
#   \xrightarrow{\text{coarse stage}} A_{\text{coarse}} \xrightarrow{\text{fine stage}} A_{\text{fine}}
#   \xrightarrow{\text{SoundStream decoder}} \text{audio}$$
#
# and then asks the harder question: **is the music any good, and does it follow the prompt?** The paper
# answers with three numbers (FAD, KLD, MCC), and so will we, with baselines beside them, because a
# number alone says nothing.
#
# **Goals.** By the end you can
# 1. load the six trained parts as one pipeline and say what must agree between them;
# 2. generate music from a sentence, in code and with a small interface;
# 3. compute FAD, KLD and MCC, and say what each does and does not measure;
# 4. read an evaluation table with its baselines, including the one that caps every other number;
# 5. check generated music for memorisation, and scale the whole pipeline up to GPUs and your own music.
#
# **Prerequisites.** Lessons 05–08.

# %%
import dataclasses
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import clear_output, display

from mlm_lessons import (config, datasets, diagrams, evaluation, metrics, musiclm, pipeline, runtime, soundstream,
                         synth, viz)
from mlm_lessons.audio import load_audio

# ---- the one cell to change: scale and device ------------------------------------------------
PRESET = "tiny"          # the course scale (see mlm_lessons.config)
DEVICE = "cpu"           # "cuda" on a GPU machine
STEPS_SCALE = 1          # multiply the brief training (e.g. 50 on a GPU)
SEED = 0
# -----------------------------------------------------------------------------------------------

run = runtime.set_up_lesson(PRESET, DEVICE, SEED)   # seeds every generator, one CPU thread, compact figures
PRESET_CONFIG, SAMPLE_RATE = run.preset, run.sample_rate
CHECKPOINTS = datasets.default_data_root() / "checkpoints"
diagrams.musiclm_diagram()
plt.show()

# %% [markdown]
# Every box of the picture is now a trained model. This lesson runs the bottom row, inference, end to
# end, and measures what comes out.
#
# ## 1. Six parts, one folder
# A pipeline is six files: the codec, the semantic tokenizer (w2v-BERT with its k-means centroids),
# MuLan (with its WordPiece tokenizer and the quantiser that makes MuLan tokens) and the three stages.
# `pipeline.MusicLM` holds them; `MusicLM.save(folder)` writes them beside a `pipeline.json` that
# records each file's SHA-256, and `MusicLM.load(folder)` reads them back. `python -m mlm_lessons
# train --stage all --out DIR` trains all six in order and writes such a folder. Here, the course's
# shipped tiny models:

# %%
musiclm_model = pipeline.shipped_pipeline(CHECKPOINTS, PRESET).to(DEVICE)
parts = {"SoundStream codec": musiclm_model.codec, "w2v-BERT (semantic tokenizer)": musiclm_model.semantic_tokenizer,
         "MuLan": musiclm_model.mulan, **{f"{name} stage": stage for name, stage in musiclm_model.stages.items()}}
print(f"{'part':<30} | {'parameters':>10}")
for name, part in parts.items():
    print(f"{name:<30} | {sum(p.numel() for p in part.parameters()):>10,}")
total = sum(p.numel() for part in parts.values() for p in part.parameters())
print(f"{'all six':<30} | {total:>10,}")
assert 5e6 < total < 1e7

# %% [markdown]
# About seven million parameters in all; the paper's stages alone have about 300 million each (§7).
#
# The parts must **agree**. The stages were trained on token files made by one codec, one tokenizer and
# one MuLan: a coarse stage that learned 4 RVQ levels of 256 codes cannot read the codes of a codec
# with 8 levels of 1,024, and would not say so: it would just produce noise. So the pipeline checks, when
# it is assembled, that what the three token models make is what each stage was built for, and names the
# first disagreement. Swap in an untrained codec of another size and see:

# %%
bigger = dataclasses.replace(PRESET_CONFIG, tokens=dataclasses.replace(PRESET_CONFIG.tokens, rvq_levels=8))
try:
    pipeline.MusicLM(soundstream.SoundStream.from_config(bigger), musiclm_model.semantic_tokenizer,
                     musiclm_model.mulan, musiclm_model.stages)
    raise AssertionError("a mismatched codec must be refused")
except pipeline.PipelineError as err:
    print(f"PipelineError: {err}")
    assert "acoustic.levels is 8 in the token models but 4 in the stage" in str(err)

# %% [markdown]
# ## 2. From a sentence to music
# `MusicLM.generate(prompts, seconds, ...)` does the whole bottom row of the picture. Step by step, for
# one prompt, with the time each step takes:

# %%
prompt = "a calming violin melody backed by a distorted guitar riff"
generator = torch.Generator().manual_seed(SEED)
steps = {}
started = time.perf_counter()
mulan_tokens = musiclm_model.prompt_tokens(prompt)                                   # (1, 1 frame, levels)
steps["MuLan text tower + quantiser"] = time.perf_counter() - started
temperatures = {name: PRESET_CONFIG.stages.temperature(name) for name in musiclm.STAGES}
conditions = {"mulan": mulan_tokens}
for name, frames in (("semantic", 100), ("coarse", 200), ("fine", 200)):
    started = time.perf_counter()
    stage = musiclm_model.stages[name]
    wanted = {kind: conditions[kind] for kind in stage.layout.prefix_kinds}
    conditions[name] = stage.generate(wanted, frames, temperature=temperatures[name], generator=generator)
    steps[f"{name} stage"] = time.perf_counter() - started
started = time.perf_counter()
audio = musiclm_model.decode(torch.cat([conditions["coarse"], conditions["fine"]], dim=2))
steps["SoundStream decoder"] = time.perf_counter() - started
for name, seconds in steps.items():
    print(f"{name:<30} {seconds * 1000:7.0f} ms")
for name in ("mulan", "semantic", "coarse", "fine"):
    print(f"  {name:<9} tokens {tuple(conditions[name].shape)}")
print(f"audio {tuple(audio.shape)}: {audio.shape[-1] / SAMPLE_RATE:g} s")
assert conditions["semantic"].shape == (1, 100, 1) and audio.shape == (1, 4 * SAMPLE_RATE)

# %% [markdown]
# Four MuLan tokens become 100 semantic tokens, then 200 frames of 2 coarse and 2 fine codes, then
# 64,000 samples. The three stages each slide their window over music longer than it (lesson 08): the
# coarse stage sees 2 s at a time, the fine stage 1 s. `generate` runs exactly this, in batches, and
# checks what it is given first. Three prompts, 4 s each, heard and seen:

# %%
prompts = ["a calming violin melody backed by a distorted guitar riff",
           "an energetic trumpet tune at a fast tempo with punchy drums",
           "a sad, slow piano piece in a minor key"]
started = time.perf_counter()
clips = musiclm_model.generate(prompts, seconds=4.0, seed=SEED)
elapsed = time.perf_counter() - started
print(f"{len(clips)} clips of 4 s in {elapsed:.1f} s: {elapsed / (4 * len(clips)):.2f} s of CPU per second of music")
fig, axes = plt.subplots(1, 3, figsize=(13, 2.6))
for ax, text, clip in zip(axes, prompts, clips):
    viz.plot_spectrogram(clip, SAMPLE_RATE, ax=ax, title=text[:42] + "...")
plt.tight_layout()
plt.show()
for text, clip in zip(prompts, clips):
    print(text)
    display(viz.play(clip, SAMPLE_RATE))

# %% [markdown]
# Listen before reading on: do the three sound different, and in the way their prompts say? The rest of
# the lesson turns that question into numbers.
#
# **Bad prompts** are refused before any work: an empty prompt, or one of which MuLan knows no word
# (its vocabulary came from the course's captions, plus MusicCaps' when the file was present), would
# condition the stages on noise. A prompt longer than the text tower reads is cut, with a warning.

# %%
for bad in ["", "!!! ???", "Ruhiges Geigenstück"]:
    try:
        musiclm_model.generate(bad, seconds=1.0)
        raise AssertionError(f"{bad!r} must be refused")
    except ValueError as err:
        print(f"{bad!r:32} -> {err}")

# %% [markdown]
# ## 3. Try it
# A text box, a slider per setting and a button. Pressing it runs the same call as above; the last line of
# the cell shows what one press shows, so the cell also works headless (nbval runs it).

# %%
prompt_box = widgets.Text(value="a happy flute melody at a medium tempo", description="prompt",
                          layout=widgets.Layout(width="640px"))
seconds_slider = widgets.FloatSlider(value=4.0, min=1.0, max=12.0, step=1.0, description="seconds",
                                     style={"description_width": "initial"})
temperature_sliders = {name: widgets.FloatSlider(value=PRESET_CONFIG.stages.temperature(name), min=0.0, max=1.5,
                                                 step=0.05, description=f"{name} temp.",
                                                 style={"description_width": "initial"})
                       for name in musiclm.STAGES}
seed_box = widgets.IntText(value=SEED, description="seed")
button = widgets.Button(description="generate", button_style="primary")
output = widgets.Output()


def generate_clip():
    """What the button does: one clip for the current settings, ``(1, samples)``."""
    return musiclm_model.generate(prompt_box.value, seconds_slider.value, seed=seed_box.value,
                                  temperatures={name: slider.value for name, slider in temperature_sliders.items()})


def show(clip):
    fig, ax = plt.subplots(figsize=(9, 2.2))
    viz.plot_spectrogram(clip[0], SAMPLE_RATE, ax=ax, title=prompt_box.value[:80])
    plt.show()
    display(viz.play(clip[0], SAMPLE_RATE))


def on_click(_):
    with output:
        clear_output(wait=True)
        try:
            show(generate_clip())
        except ValueError as err:                  # a prompt MuLan cannot read: say so, do not crash the widget
            print(f"cannot generate: {err}")


button.on_click(on_click)
display(widgets.VBox([prompt_box, widgets.HBox([seconds_slider, seed_box]),
                      widgets.HBox(list(temperature_sliders.values())), button, output]))
show(generate_clip())                               # what one press shows, here without pressing

# %% [markdown]
# Things to try: the same prompt with another seed; temperature 0 for every stage (greedy: the seed no
# longer matters, and the music tends to repeat itself); 12 s, three times the semantic stage's window;
# a prompt the course's captions never used ("lo-fi hip hop"): MuLan reads its words, but the stages
# never heard such music.
#
# ## 4. Judging the music: FAD, KLD, MCC
# The paper (Agostinelli et al. 2023, Table 1) scores text-to-music models on MusicCaps with three
# numbers, each answering another question:
#
# - **FAD**, Fréchet Audio Distance (Kilgour et al. 2019): *does the set of generated clips sound like
#   the set of real ones?* Embed every clip with a pretrained audio model, fit a Gaussian to each set, and
#   take the Fréchet distance between the two Gaussians,
#   $$\mathrm{FAD} = \lVert \mu_g - \mu_r \rVert^2 + \operatorname{tr}\!\big(\Sigma_g + \Sigma_r
#   - 2(\Sigma_g\Sigma_r)^{1/2}\big).$$
#   Lower is better. It never looks at the prompts.
# - **KLD**: *for each caption, does the generated clip get the same labels as the real clip?* A
#   classifier labels both, and the KL divergence $\mathrm{KL}(p_{\text{real}} \,\Vert\, p_{\text{gen}})$
#   of its two label distributions is averaged over captions. Lower is better.
# - **MCC**, MuLan cycle consistency: *does MuLan think the clip matches its prompt?* The cosine between
#   the MuLan text embedding of the prompt and the MuLan audio embedding of the clip. Higher is better.
#   MusicLM is *conditioned* on MuLan, so MCC partly asks the model whether it obeyed itself.
#
# The paper embeds with Trill and VGGish and labels with an AudioSet classifier; we have none of them, so
# the course uses its own models: **MuLan's audio tower and w2v-BERT** embed (two FADs), and an
# **attribute classifier** trained on real SynthCaps clips labels the lead instrument, the mood and the
# tempo band. Because SynthCaps knows what every clip plays, we add **attribute accuracy**: how often
# the classifier finds in a generated clip the attribute its prompt asked for.
#
# Closed forms first. Between two Gaussians with diagonal covariances, the matrix square root is taken
# element-wise and FAD becomes $\lVert \mu_g - \mu_r \rVert^2 + \sum_i (\sigma_{g,i} - \sigma_{r,i})^2$:

# %%
# NBVAL_CHECK_OUTPUT
mean_a, mean_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
variance_a, variance_b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
closed_form = ((mean_a - mean_b) ** 2).sum() + ((variance_a.sqrt() - variance_b.sqrt()) ** 2).sum()
package = metrics.frechet_distance(mean_a, torch.diag(variance_a), mean_b, torch.diag(variance_b))
print(f"closed form {closed_form:.4f}, metrics.frechet_distance {package:.4f}")
assert abs(package - float(closed_form)) < 1e-6

# %% [markdown]
# ### The judge, trained briefly, then loaded
# The attribute classifier is a small CNN on log-mel spectrograms with three heads
# (`evaluation.AttributeClassifier`). A brief run on the course's 192 training clips, to see it learn:

# %%
data_root = datasets.ensure_synthcaps(PRESET, progress=False)
course_train = [record for record in datasets.read_synthcaps_manifest(data_root) if record.split == "train"]
course_clips = [load_audio(record.path, sample_rate=SAMPLE_RATE)[0] for record in course_train]
started = time.perf_counter()
brief_classifier, brief_history = evaluation.train_attribute_classifier(
    course_clips, [record.attributes for record in course_train], SAMPLE_RATE, PRESET_CONFIG.features,
    steps=60 * STEPS_SCALE, progress=False)
print(f"60 steps in {time.perf_counter() - started:.0f} s: loss {brief_history[0]['loss']:.2f} -> "
      f"{brief_history[-1]['loss']:.2f}")
assert brief_history[-1]["loss"] < brief_history[0]["loss"]

# %% [markdown]
# The shipped classifier trained for 1,500 steps on the 1,920 training clips the shipped MuLan and stages
# learned from (`python -m mlm_lessons train --stage attributes --data data/synthcaps-tiny-2400 --steps
# 1500 --out runs/attributes-tiny --export data/checkpoints/attributes-tiny.pt`):

# %%
def load_or_train_classifier():
    path = CHECKPOINTS / f"attributes-{PRESET}.pt"
    if path.exists():
        return evaluation.AttributeClassifier.load(path), "longer-trained"
    return brief_classifier, "brief"


classifier, classifier_kind = load_or_train_classifier()
judges = evaluation.Judges(musiclm_model.mulan, musiclm_model.semantic_tokenizer, classifier)
print(f"the {classifier_kind} classifier")

# %% [markdown]
# ### Clips no model has heard
# The evaluation needs captions and real clips that no part of the pipeline trained on: SynthCaps with
# another data seed (seed 1; the models trained on seed 0). The first 24 are the **prompts** and their
# **reference** clips; the next 24 are FAD's **background**, a second set of real clips, so that real
# clips are scored against *other* real music rather than against themselves. For the memorisation check
# and the retrieval baseline we also need **training clips**: 240 of the 1,920 the stages learned from,
# rendered again from their seeds (the bench uses all of them).

# %%
started = time.perf_counter()
held_out = datasets.plan_synthcaps(48, seed=1)
held_audio = datasets.render_planned(held_out, PRESET_CONFIG.data.clip_seconds, SAMPLE_RATE)
reference_plan, background_audio = held_out[:24], held_audio[24:]
reference_audio = held_audio[:24]
training_plan = datasets.plan_synthcaps(2400, seed=0)
training_split = datasets.split_planned(training_plan, PRESET_CONFIG.data.valid_fraction,
                                        PRESET_CONFIG.data.test_fraction, seed=0)
trained_on = [clip for clip, split in zip(training_plan, training_split) if split == "train"][:240]
training_audio = datasets.render_planned(trained_on, PRESET_CONFIG.data.clip_seconds, SAMPLE_RATE)
training = judges.describe(training_audio)
print(f"{len(held_out)} held-out clips and {len(trained_on)} training clips rendered and described in "
      f"{time.perf_counter() - started:.0f} s")
print("a prompt:", reference_plan[0].caption)

# %% [markdown]
# ## 5. The evaluation table
# `evaluation.evaluate_pipeline` generates a clip for each of the 24 prompts and scores it beside five
# baselines from the same run:
#
# | row | what it is | what it tells |
# |---|---|---|
# | real clips | the reference clips themselves | the best a system could do |
# | real clips through the codec | the references encoded and decoded by SoundStream | the best *this pipeline* could do: everything it writes goes through that decoder |
# | generated | the pipeline's clips | |
# | generated, prompts shuffled | the same clips, each scored against another clip's prompt | a model that ignores its prompt |
# | noise | Gaussian noise as loud as the reference | the worst case |
# | retrieval | for each prompt, the training clip MuLan finds closest to it | a copying baseline: real audio that may match the prompt |

# %%
started = time.perf_counter()
results = {seed: evaluation.evaluate_pipeline(musiclm_model, judges, [clip.caption for clip in reference_plan],
                                              [clip.attributes for clip in reference_plan], reference_audio,
                                              background_audio, training, seed=seed, progress=False)
           for seed in (0, 1, 2)}
print(f"evaluated with 3 generation seeds in {time.perf_counter() - started:.0f} s\n")
result = results[SEED]
print(result.table())
print("\nthe generated row over the three seeds (min - max):")
for column in result.rows["generated"]:
    values = [outcome.rows["generated"][column] for outcome in results.values()]
    shown = [f"{v:.0%}" if column.endswith("accuracy") else f"{v:.3f}" for v in (min(values), max(values))]
    print(f"  {column:<20} {shown[0]} - {shown[1]}")

# %% [markdown]
# How to read it, row by row; each sentence is checked, on all three seeds, by the assertions below:
#
# - **The judges work on real audio.** The classifier names the lead instrument of nearly every held-out
#   real clip; MCC is highest for real clips and lowest for noise; both FADs put noise farthest of all.
# - **The codec caps everything.** Through the tiny codec the same real clips lose their instrument (the
#   classifier's accuracy falls to about chance, 10%) and most of their MCC, but keep much of their tempo
#   and some of their mood: at 1.6 kbit/s the codec keeps notes and rhythm, not timbre (lesson 08 found the
#   same with MuLan). Everything the pipeline writes goes through that decoder, so the codec's row, not
#   the real clips' row, is the ceiling the generated row should be compared with.
# - **The generated clips follow what survives the codec.** They find the prompt's tempo band far more
#   often than chance (33%) and than the shuffled row, on every seed; the mood less clearly (on average
#   about twice chance, 17%, and above the shuffled row; on single seeds of 24 prompts the two can tie).
#   Their MCC is most of the codec row's. The instrument, which the codec loses, is at chance for them
#   too.
# - **FAD is blind to prompts**: the shuffled row has exactly the generated row's FAD, because it is the
#   same set of clips. Only the paired numbers (KLD, MCC, accuracy) notice that the prompts no longer
#   match, which is why the paper reports both kinds.
# - **Retrieval is a strong baseline**: real training audio chosen by MuLan, close to the real clips on
#   every column. At this scale a model that copies its training set would score far better than one
#   that makes new music; §6 checks that ours does not copy.

# %%
for seed, outcome in results.items():
    rows = outcome.rows
    generated, real, codec_row = rows["generated"], rows["real clips"], rows["real clips through the codec"]
    shuffled, noise = rows["generated, prompts shuffled"], rows["noise"]
    assert real["instrument accuracy"] >= 0.8 and real["MCC"] > codec_row["MCC"] > noise["MCC"]
    assert all(noise[fad] == max(row[fad] for row in rows.values()) for fad in ("FAD MuLan", "FAD w2v-BERT"))
    assert codec_row["instrument accuracy"] <= 0.2 and generated["instrument accuracy"] <= 0.2
    assert codec_row["tempo accuracy"] >= 0.6 and codec_row["mood accuracy"] >= 0.3
    assert generated["tempo accuracy"] > max(0.5, shuffled["tempo accuracy"])
    assert generated["mood accuracy"] >= shuffled["mood accuracy"]
    assert codec_row["MCC"] > generated["MCC"] > 0.5 * codec_row["MCC"] and generated["MCC"] > 2 * shuffled["MCC"]
    assert abs(generated["FAD MuLan"] - shuffled["FAD MuLan"]) < 1e-6 * generated["FAD MuLan"]   # row order only
    assert rows["retrieval: nearest training clip"]["MCC"] > 0.9 * real["MCC"]
mood = {name: np.mean([outcome.rows[name]["mood accuracy"] for outcome in results.values()])
        for name in ("generated", "generated, prompts shuffled")}
assert mood["generated"] > max(1.8 / len(synth.MOODS), mood["generated, prompts shuffled"] + 0.05)
print(f"every claim above holds for the three seeds (mood, mean over seeds: generated {mood['generated']:.0%}, "
      f"shuffled {mood['generated, prompts shuffled']:.0%}, chance {1 / len(synth.MOODS):.0%})")

# %% [markdown]
# ### Beside the paper's Table 1
# The paper's numbers (MusicCaps, 10-s clips; lower is better for FAD and KLD, higher for MCC):

# %%
# NBVAL_CHECK_OUTPUT
paper_table = {"Riffusion": (0.76, 13.4, 1.19, 0.34), "Mubert": (0.45, 9.6, 1.58, 0.32),
               "MusicLM": (0.44, 4.0, 1.01, 0.51)}
print(f"{'system':<10} | {'FAD Trill':>9} | {'FAD VGGish':>10} | {'KLD':>5} | {'MCC':>5}")
for name, (trill, vggish, kld, mcc) in paper_table.items():
    print(f"{name:<10} | {trill:>9.2f} | {vggish:>10.1f} | {kld:>5.2f} | {mcc:>5.2f}")

# %% [markdown]
# **What is comparable, and what is not.** Not one number of our table can be set beside the paper's:
# FAD depends on the embedding model (ours are MuLan and w2v-BERT trained on SynthCaps, theirs Trill and
# VGGish trained on speech and YouTube audio) and on the number of clips (FAD is biased upward for small
# sets: 24 here, 5,521 there); KLD depends on the classifier and its label set (3 attributes here, 527
# AudioSet classes there); MCC depends on the MuLan model (ours is 2.7 MB). What carries over is the
# *method*: every number beside baselines from the same run, and the question each number answers.
# The paper's own comparison is like our rows: MusicLM against two other systems, not against an
# absolute scale.
#
# ## 6. Does it copy? Memorisation
# A generative model can memorise: a prompt close to a training caption might return that training clip.
# The paper checked its semantic tokens for exact and approximate matches with the training data. We do
# two checks for each generated clip: its **nearest training clip** (cosine of MuLan audio embeddings) and
# the **longest run of semantic tokens** it shares with any training clip. Neither means anything alone:
# held-out real clips, which no model saw, share some of both with the training set by chance (one
# synthesiser, one set of scales). So each figure stands beside the held-out clips' own.

# %%
print(result.memorisation_summary(PRESET_CONFIG.tokens.semantic_frame_rate))
found_generated, found_real = result.memorisation["generated"], result.memorisation["real held-out clips"]
fig, axes = plt.subplots(1, 2, figsize=(11, 2.8))
for ax, key, label in ((axes[0], "nearest similarity", "cosine to the nearest training clip"),
                       (axes[1], "shared run", "longest shared run of semantic tokens (frames)")):
    bins = np.histogram_bin_edges(torch.cat([found_generated[key], found_real[key]]).float().numpy(), 12)
    ax.hist(found_real[key].float().numpy(), bins, alpha=0.6, label="held-out real clips")
    ax.hist(found_generated[key].float().numpy(), bins, alpha=0.6, label="generated clips")
    ax.set_xlabel(label)
    ax.set_ylabel("clips")
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
for seed, outcome in results.items():
    mine, new_music = outcome.memorisation["generated"], outcome.memorisation["real held-out clips"]
    assert mine["nearest similarity"].max() < new_music["nearest similarity"].max()
    assert mine["nearest similarity"].median() < new_music["nearest similarity"].median()
    assert mine["shared run"].float().median() <= new_music["shared run"].float().median()

# %% [markdown]
# On all three seeds, no generated clip comes as close to a training clip as the closest real held-out clip
# does, the typical (median) generated clip is farther from the training set than the typical real one,
# and the generated clips share no longer runs of semantic tokens with the training clips than new real
# music does (real clips of one synthesiser repeat its patterns by chance).
# At this scale the model does not copy; it also does not yet sound like its training data (§5). Both
# facts matter for the closing discussion (§8).
#
# ## 7. Scaling up
# The same package trains every part at three scales (`mlm_lessons.config`). Parameters of one stage,
# counted from the models themselves:

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'preset':<6} | {'audio':>6} | {'codec':>16} | {'stage width x depth':>19} | {'parameters per stage':>20}")
for name in ("tiny", "small", "paper"):
    preset = config.get_preset(name)
    stage = musiclm.Stage.from_config(preset, "coarse")
    tokens = preset.tokens
    codec = f"{tokens.rvq_levels} x {tokens.codebook_size:,} codes"
    print(f"{name:<6} | {preset.data.sample_rate // 1000:>2} kHz | {codec:>16} | "
          f"{preset.transformer.d_model:>10} x {preset.transformer.n_layers:<6} | "
          f"{sum(p.numel() for p in stage.parameters()) / 1e6:>17.1f} M")
assert config.get_preset("paper").transformer.n_layers == 24 and config.get_preset("paper").tokens.rvq_levels == 12

# %% [markdown]
# - **On one GPU** (`small`): `python -m mlm_lessons train --preset small --stage all --out runs/small`
#   trains everything in order, bf16 autocast on, each stage resumable; `--compile` adds `torch.compile`.
#   `bench/bench_flops.py` counts each stage's FLOPs per token and estimates its training memory: every
#   `small` stage fits one 80 GB GPU at its batch of 32.
# - **On several GPUs**: the same command under `torchrun --nproc_per_node 8 -m mlm_lessons train ...`
#   runs DDP; the global batch is split across processes (and `grad_accum_steps` micro-batches), so the
#   result does not depend on the number of GPUs.
# - **On your own music**: a CSV in MusicCaps' format (at least `ytid` and `caption` columns) and a folder
#   of audio files named by `ytid`: `python -m mlm_lessons train --stage all --data mine.csv --audio
#   my_audio/ --out runs/mine`. Recordings are cut into clips of the preset's length; missing or
#   unreadable files are skipped and counted before training starts; about 10% of rows are held out.
#   Then `python -m mlm_lessons generate "..." --pipeline runs/mine/pipeline --out clip.wav`, and
#   `python -m mlm_lessons evaluate` on SynthCaps-format data.
#
# Where to spend compute first: this lesson's table says it. The codec's row caps every other, so a
# better codec (the `small` preset's has 8 levels of 1,024 codes, 4 kbit/s) lifts every number before a
# bigger stage does.
#
# ## 8. Closing discussion: uses, originality, copying
# The article the course follows ends on what text-to-music is for and what it puts at risk. The
# measurements of this lesson ground three points:
#
# - **Copying is measurable, and must be measured.** MusicLM's authors checked their generations for
#   exact and approximate matches with their training data (the paper's memorisation analysis); §6 is the
#   same kind of check at our scale. It needs the training data to run: a model whose training set is
#   secret cannot be checked this way by anyone else.
# - **"Original" is a distribution question.** Our generated clips are far from every training clip we
#   checked and also far from sounding like the data (FAD, §5): at this scale they are novel mainly
#   because they are imperfect. As models improve, the retrieval row and the generated row converge, and
#   the memorisation check becomes the only line between them.
# - **Numbers judge what their judges can hear.** The codec row showed a judge (the classifier) blind to
#   timbre after the codec. The paper's MCC shares a judge with the model it scores. Numbers narrow down
#   what to listen to; they do not replace listening (§2, §3).
#
# ## Exercises
# **Exercise 1 (2 points).** Write `my_diagonal_frechet(mean_a, variance_a, mean_b, variance_b)`: the
# Fréchet distance between two Gaussians with diagonal covariances, from their means and variances
# (1-D tensors), as a float.

# %% solution ex1_diagonal_frechet
def my_diagonal_frechet(mean_a, variance_a, mean_b, variance_b):
    ### BEGIN SOLUTION
    return float(((mean_a - mean_b) ** 2).sum() + ((variance_a.sqrt() - variance_b.sqrt()) ** 2).sum())
    ### END SOLUTION

# %% tests ex1_diagonal_frechet_tests 2
assert abs(my_diagonal_frechet(torch.zeros(2), torch.ones(2), torch.ones(2), torch.ones(2)) - 2.0) < 1e-6
### BEGIN HIDDEN TESTS
check = torch.Generator().manual_seed(11)
for dims in (1, 5, 16):
    m_a, m_b = torch.randn(dims, generator=check), torch.randn(dims, generator=check)
    v_a, v_b = torch.rand(dims, generator=check) + 0.1, torch.rand(dims, generator=check) + 0.1
    expected = metrics.frechet_distance(m_a, torch.diag(v_a), m_b, torch.diag(v_b))
    assert abs(my_diagonal_frechet(m_a, v_a, m_b, v_b) - expected) < 1e-5
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (2 points).** Write `my_mcc(text_embeddings, audio_embeddings)`: MuLan cycle consistency,
# the mean over rows of the cosine similarity between row $i$ of each `(n, dim)` tensor (the rows need not
# have unit length), as a float.

# %% solution ex2_mcc
def my_mcc(text_embeddings, audio_embeddings):
    ### BEGIN SOLUTION
    text = text_embeddings / text_embeddings.norm(dim=1, keepdim=True)
    sound = audio_embeddings / audio_embeddings.norm(dim=1, keepdim=True)
    return float((text * sound).sum(dim=1).mean())
    ### END SOLUTION

# %% tests ex2_mcc_tests 2
assert abs(my_mcc(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[3.0, 0.0], [0.0, -1.0]]))) < 1e-6
### BEGIN HIDDEN TESTS
check = torch.Generator().manual_seed(12)
texts, sounds = torch.randn(30, 8, generator=check), torch.randn(30, 8, generator=check)
assert abs(my_mcc(texts, sounds) - metrics.mulan_cycle_consistency(texts, sounds)) < 1e-5
assert abs(my_mcc(texts, 3 * texts) - 1.0) < 1e-5
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (3 points).** Write `my_longest_shared_run(query, corpus)`: the length of the longest run of
# consecutive tokens of `query` (a 1-D tensor) that also occurs, consecutively and in the same order, in
# some row of `corpus` (a list of 1-D tensors), as an int; 0 if no token is shared. A plain search over
# every start and length is fine for clips this short.

# %% solution ex3_longest_shared_run
def my_longest_shared_run(query, corpus):
    ### BEGIN SOLUTION
    rows = [row.tolist() for row in corpus]
    best = 0
    tokens = query.tolist()
    for start in range(len(tokens)):
        for end in range(start + best + 1, len(tokens) + 1):
            piece = tokens[start:end]
            if any(row[i:i + len(piece)] == piece for row in rows for i in range(len(row) - len(piece) + 1)):
                best = end - start
            else:
                break
    return best
    ### END SOLUTION

# %% tests ex3_longest_shared_run_tests 3
assert my_longest_shared_run(torch.tensor([1, 2, 3, 4]), [torch.tensor([9, 2, 3, 9]), torch.tensor([4])]) == 2
### BEGIN HIDDEN TESTS
check = torch.Generator().manual_seed(13)
for _ in range(5):
    some_queries = torch.randint(0, 4, (3, 15), generator=check)
    some_corpus = torch.randint(0, 4, (4, 12), generator=check)
    expected = evaluation.longest_shared_runs(some_queries, some_corpus).tolist()
    assert [my_longest_shared_run(q, list(some_corpus)) for q in some_queries] == expected
assert my_longest_shared_run(torch.tensor([7, 7]), [torch.tensor([1, 2])]) == 0
### END HIDDEN TESTS

# %% [markdown]
# ## Summary
# - A MusicLM pipeline is six trained parts that must agree on every kind of token; `pipeline.MusicLM`
#   loads them from one folder, checks them, and turns prompts into audio through the MuLan text tower,
#   the three stages (sliding their windows) and the SoundStream decoder.
# - FAD compares distributions and ignores the prompts; KLD and attribute accuracy compare each clip with
#   what its prompt asked for; MCC asks MuLan, the model's own conditioning. Each needs baselines from the
#   same run, and none can be compared across papers without the same embedders, classifier and data.
# - The codec's row caps every number: at the course's scale, the tiny codec keeps notes and rhythm but
#   loses the instrument, and the generated clips sit near that ceiling. A better codec is the first
#   place to spend compute.
# - Memorisation is checked against the training set and beside held-out real clips; ours does not copy.
#
# The figures measured in this run:

# %%
print(f"brief attribute classifier: loss {brief_history[0]['loss']:.2f} -> {brief_history[-1]['loss']:.2f}")
for name in ("real clips", "real clips through the codec", "generated", "noise"):
    row = result.rows[name]
    print(f"{name:<30} FAD MuLan {row['FAD MuLan']:.3f}, KLD {row['KLD']:.3f}, MCC {row['MCC']:.3f}, "
          f"instrument {row['instrument accuracy']:.0%}, tempo {row['tempo accuracy']:.0%}")

# %% [markdown]
# **Check your understanding.** (1) Why is FAD the same for the generated and the shuffled rows, and
# which numbers tell them apart? (2) A new codec doubles the instrument accuracy of the codec row; what
# would you expect of the generated row, and why? (3) Why is a memorisation figure meaningless without
# the held-out row beside it?
#
# **Going further.** Agostinelli et al. 2023, *MusicLM* (section 5: the metrics and Table 1; the
# memorisation analysis); Kilgour et al. 2019, *Fréchet Audio Distance*; Copet et al. 2023, *MusicGen*
# (the same metrics with other embedders); Borsos et al. 2022, *AudioLM* (the token hierarchy). This is
# the last lesson: `python -m mlm_lessons train --stage all` is where the course hands over to you.
