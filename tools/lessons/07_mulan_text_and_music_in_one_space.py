# %% [markdown]
# # Lesson 07 — MuLan: text and music in one space
#
# MusicLM turns a sentence into music, yet its three token models (lesson 08) never read a word: they
# read **MuLan tokens**, a dozen numbers that say what the music should be like. MuLan (Huang et al.,
# 2022) makes those numbers. It is a pair of encoders, one for audio and one for text, trained on
# (clip, description) pairs until a clip and its description land close together in one shared space,
# and a clip and someone else's description land far apart. Because the space is shared, a model
# trained on the MuLan embeddings of *audio* can be driven by the MuLan embedding of a *sentence*.
#
# **Goals.** By the end you can
# 1. write the symmetric InfoNCE loss small, explain its temperature, and check it against
#    `mlm_lessons.mulan`;
# 2. train a subword tokenizer and the two towers on the course's caption–clip pairs, then load a
#    longer-trained MuLan;
# 3. *measure* what the space has learned: retrieval in both directions on clips it never heard,
#    zero-shot tagging with no classifier, paraphrases and words it never saw, real MusicCaps captions;
# 4. explain why MusicLM trains on MuLan's *audio* tokens and generates from its *text* tokens, and
#    measure the gap between the two.
#
# **Prerequisites.** Lesson 01 (the Transformer encoder), lesson 05 (residual vector quantisation).

# %%
import collections
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.manifold import TSNE

from mlm_lessons import audio, config, datasets, diagrams, mulan, quantize, runtime, synth, viz

# ---- the one cell to change: scale and device ------------------------------------------------
PRESET = "tiny"          # the course scale (see mlm_lessons.config)
DEVICE = "cpu"           # "cuda" on a GPU machine
STEPS_SCALE = 1          # multiply the brief training (e.g. 50 on a GPU)
SEED = 0
# -----------------------------------------------------------------------------------------------

run = runtime.set_up_lesson(PRESET, DEVICE, SEED)   # seeds every generator, one CPU thread, compact figures
PRESET_CONFIG, SAMPLE_RATE = run.preset, run.sample_rate
diagrams.musiclm_diagram(highlight="mulan")
plt.show()

# %% [markdown]
# In the picture, MuLan sits at the start of both paths. In **training**, every clip of music goes
# through MuLan's *audio* tower and becomes MuLan tokens $M_A$, the condition the stages learn to
# follow; no caption is needed, which is how MusicLM could train on 280,000 hours of music that nobody
# described. At **generation**, the prompt goes through MuLan's *text* tower and becomes $M_T$, which
# takes the place of $M_A$.
#
# > **Fact check: is MuLan "a single vector with both audio and text"?** The article this course
# > started from says so. It is not one vector: MuLan is two separate encoders (in the paper a
# > ResNet-50 on log-mel spectrograms for audio and a pretrained BERT for text) whose outputs, two
# > different 128-dimensional vectors, live in *one space* where they can be compared (Huang et al.,
# > 2022, "MuLan: A Joint Embedding of Music Audio and Natural Language"). A clip has an audio
# > embedding; a sentence has a text embedding; training makes matching ones point the same way. They
# > are never merged. MuLan was trained on 44 million music recordings (about 370,000 hours) paired
# > with the noisy text of their metadata; MusicLM took it pretrained and frozen.
#
# ## 1. Learning from pairs
# Suppose we have $N$ pairs: clip $i$ and its caption $i$. Each tower maps its input to a unit-length
# vector, $a_i$ for the clip and $t_i$ for the caption, so the **similarity** of clip $i$ and caption
# $j$ is a cosine, $a_i \cdot t_j \in [-1, 1]$. Collect them in a matrix $S_{ij} = a_i \cdot t_j / \tau$.
# We want the diagonal large and everything else small. Read row $i$ as a classification: *which of
# the $N$ captions belongs to clip $i$?* The softmax of the row gives probabilities, and the loss is
# the cross-entropy with the right answer, $i$. Read column $j$ the same way: *which clip belongs to
# caption $j$?* **Symmetric InfoNCE** (van den Oord et al., 2018; CLIP, Radford et al., 2021) averages
# both:
# $$\mathcal L = \frac{1}{2N}\sum_{i=1}^{N}\left[-\log\frac{e^{S_{ii}}}{\sum_j e^{S_{ij}}}
#   \;-\; \log\frac{e^{S_{ii}}}{\sum_j e^{S_{ji}}}\right].$$
# No labels are needed beyond the pairing itself: every *other* caption in the batch is a negative
# example for free. Written small, and checked against the package (which stores $\log(1/\tau)$, a
# number that can take any sign and is learned):

# %%
def my_info_nce(audio_embeddings, text_embeddings, temperature):
    """(N, dim) unit vectors each -> scalar loss. Row i of the logits: clip i against every caption."""
    logits = audio_embeddings @ text_embeddings.T / temperature                     # (N, N)
    targets = torch.arange(len(logits))                                             # pair i sits on the diagonal
    clip_picks_caption = F.cross_entropy(logits, targets)
    caption_picks_clip = F.cross_entropy(logits.T, targets)
    return (clip_picks_caption + caption_picks_clip) / 2

generator = torch.Generator().manual_seed(SEED)
a = F.normalize(torch.randn(8, 16, generator=generator), dim=-1)
t = F.normalize(torch.randn(8, 16, generator=generator), dim=-1)
mine = my_info_nce(a, t, temperature=0.07)
package, metrics = mulan.info_nce(a, t, torch.tensor(np.log(1 / 0.07)))
torch.testing.assert_close(mine, package)
torch.testing.assert_close(my_info_nce(t, a, 0.07), mine)          # symmetric: swapping the towers changes nothing
print(f"random pairs: loss {mine:.3f}; the package agrees, and so does the loss with the towers swapped")

# %% [markdown]
# Three reference points make the number readable. If the towers output the same vector for
# everything, every row is a uniform guess among $N$ and the loss is $\log N$. If each caption's
# vector equals its clip's and the pairs are far apart, the loss goes to 0 as $\tau$ shrinks. The
# temperature sets how sharp the guesses are: cosines live in $[-1, 1]$, so at $\tau = 1$ even a
# perfect embedding cannot be confident (logits differ by at most 2), while at $\tau = 0.07$ (CLIP's
# starting value, and ours) they span $\pm 14$.

# %%
# NBVAL_CHECK_OUTPUT
n = 8
same = F.normalize(torch.ones(n, 16), dim=-1)
perfect = torch.eye(n, 16)                           # pairs identical, and orthogonal to every other pair
print(f"{'temperature':>12} | {'all embeddings alike':>21} | {'perfect pairs':>13}")
for temperature in (1.0, 0.3, 0.07):
    alike, ideal = my_info_nce(same, same, temperature), my_info_nce(perfect, perfect, temperature)
    torch.testing.assert_close(alike, torch.tensor(np.log(n), dtype=torch.float32))
    print(f"{temperature:>12} | {alike:>21.3f} | {ideal:>13.4f}")
assert my_info_nce(perfect, perfect, 0.07) < 1e-4 < my_info_nce(perfect, perfect, 1.0)

# %% [markdown]
# The batch size matters too: with $N = 32$ pairs a step asks each clip to beat 31 wrong captions,
# and the chance loss is $\log 32 \approx 3.47$. Bigger batches are harder questions and teach more,
# which is why the package gathers the embeddings of every GPU before computing the loss
# (`mulan.info_nce` under DDP: two processes of 16 pairs compute exactly the loss of one process with
# 32, tested in `tests/test_mulan.py`).
#
# ## 2. Two towers
# The whole model, drawn by code (the sizes are the tiny preset's):

# %%
section = PRESET_CONFIG.mulan
diagrams.mulan_diagram(audio_channels=section.audio_channels, text_layers=section.text_layers,
                       embed_dim=PRESET_CONFIG.tokens.mulan_dim, token_levels=PRESET_CONFIG.tokens.mulan_rvq_levels,
                       codebook_size=PRESET_CONFIG.tokens.mulan_codebook_size)
plt.show()

# %% [markdown]
# **Text in: subwords.** A Transformer reads token ids, so captions must first become tokens. A vocabulary
# of whole words fails on the first word it has not seen; a vocabulary of characters makes sequences
# long and each token meaningless. **WordPiece** (the tokenizer of BERT, which the paper's text tower
# is) sits between: it starts from characters and keeps merging the pieces that occur together most,
# until the vocabulary has the size we ask for. Frequent words end up whole; a rare word is spelled
# from pieces (`##` marks a piece that continues a word), so no input is ever out of vocabulary. We
# train one with the `tokenizers` library on the training captions, plus the 5,521 MusicCaps captions
# when their file is present, so that the words of real descriptions split into sensible pieces.

# %%
data_root = datasets.ensure_synthcaps(PRESET, progress=False)
records = datasets.read_synthcaps_manifest(data_root)
train_records = [record for record in records if record.split == "train"]
train_clips = [audio.load_audio(record.path, sample_rate=SAMPLE_RATE)[0] for record in train_records]
train_texts = [mulan.training_texts(record, section) for record in train_records]
musiccaps_csv = datasets.find_musiccaps_csv()
musiccaps = datasets.load_musiccaps(musiccaps_csv) if musiccaps_csv else []
print(f"{len(train_records)} training clips with {len(train_texts[0])} texts each; "
      f"{len(musiccaps):,} MusicCaps captions {'found' if musiccaps else 'not found (optional)'}")
for text in train_texts[0][:2] + train_texts[0][-2:]:
    print("  ", text[:110] + ("..." if len(text) > 110 else ""))

# %% [markdown]
# Each clip comes with its caption, seven re-wordings of it (different annotators, so to speak) and
# eight short **tag texts**: its lead instrument and up to three more of its MusicCaps aspects
# ("calming, violin"). MuLan's own training text was mostly short and noisy (titles and tags, not
# sentences). Tag texts also change *what* is learned first. A contrastive loss rewards whatever tells
# the pairs of a batch apart most cheaply (drums or none, fast or slow) and learns timbre late; when
# every tag text names the instrument, telling instruments apart pays from the first step. While
# building this lesson, tag texts that always name the lead instrument, instead of any one to four
# aspects, raised held-out zero-shot instrument accuracy (section 5) after 700 training steps from 53%
# to 85%, all else equal.

# %%
started = time.perf_counter()
tokenizer = mulan.CaptionTokenizer.train([text for texts in train_texts for text in texts] +
                                         [record.caption for record in musiccaps], section.vocab_size)
print(f"WordPiece vocabulary of {tokenizer.vocab_size:,} subwords in {time.perf_counter() - started:.1f} s")
for text in ["A calming violin melody backed by a distorted guitar riff.",
             "a harpsichord and a nyckelharpa", "Ünïcödé ünknöwns"]:
    pieces = tokenizer.tokenize(text)
    ids, _ = tokenizer.encode(text, section.max_text_len)
    normalised = tokenizer.tokenizer.normalizer.normalize_str(text)          # lower case, accents stripped
    assert "[UNK]" not in pieces
    assert tokenizer.decode(ids[0].tolist()).replace(" ", "") == normalised.replace(" ", "")
    print(f"{text!r}\n   -> {pieces}")

# %% [markdown]
# A word outside the vocabulary ("nyckelharpa", a Swedish keyed fiddle) is spelled from pieces, never
# an error, and decoding the ids gives the (lower-cased, accent-stripped) text back. "Harpsichord" is a
# whole token only when the MusicCaps captions were in the tokenizer's corpus; even then its embedding
# is never trained, since no training text of ours contains it (section 7 comes back to this). A
# caption longer than the text tower reads (`max_text_len` subwords) is cut, with a warning that says
# so.
#
# **The towers.** The audio tower is a small ResNet (the paper's is a ResNet-50) over the log-mel
# spectrogram, averaged over time, so a clip of any length gives one vector. Unlike an image ResNet it
# does not average over frequency too: it keeps its few remaining frequency bands side by side, since
# *where* in the spectrum the energy sits is much of what tells a flute from a clarinet (while
# building this lesson, keeping them raised held-out zero-shot instrument accuracy after 1,000
# training steps from 45% to 60%, all else equal). It uses GroupNorm where a ResNet has BatchNorm, so a clip's embedding never depends on the
# other clips in its batch. The text tower is lesson 01's Transformer encoder, averaged over the
# caption's real tokens (not its padding). Each ends in a linear layer into the shared
# `mulan_dim`-dimensional space and a division by its length:

# %%
torch.manual_seed(SEED)
model = mulan.MuLan.from_config(PRESET_CONFIG, tokenizer).eval()
clips = torch.stack([clip[: 3 * SAMPLE_RATE] for clip in train_clips[:4]])                 # (4, 48000)
mel = model.mel(clips)
audio_vectors = model.embed_audio(clips)
text_vectors = model.embed_text([texts[0] for texts in train_texts[:4]])
print(f"audio {tuple(clips.shape)} -> log-mel {tuple(mel.shape)} (batch, mel bands, frames) -> "
      f"embeddings {tuple(audio_vectors.shape)}")
ids, key_is_real = tokenizer.encode([texts[0] for texts in train_texts[:4]], section.max_text_len)
print(f"captions -> subword ids {tuple(ids.shape[:1])} x up to {section.max_text_len} -> embeddings "
      f"{tuple(text_vectors.shape)}")
count = lambda module: sum(p.numel() for p in module.parameters())
print(f"audio tower {count(model.audio_tower) / 1e3:.0f}k parameters, text tower "
      f"{count(model.text_tower) / 1e3:.0f}k parameters")
torch.testing.assert_close(audio_vectors.norm(dim=1), torch.ones(4))
torch.testing.assert_close(text_vectors.norm(dim=1), torch.ones(4))

# %% [markdown]
# ## 3. Train it (briefly), then load a longer-trained one
# `mulan.train_mulan` runs the package's one `Trainer`: each step draws a batch of clips, a random
# 3-second crop of each and one of its texts, and takes a step on the symmetric InfoNCE. The temperature
# is a parameter too (clamped at 0.01, as in CLIP). Eighty steps on the course clips, in batches of 16
# to keep it quick:

# %%
brief = dataclasses.replace(
    PRESET_CONFIG, mulan=dataclasses.replace(section, batch_size=16),
    train=dataclasses.replace(PRESET_CONFIG.train, device=DEVICE, log_every=10, checkpoint_every=0, seed=SEED))
started = time.perf_counter()
brief_model, brief_history = mulan.train_mulan(brief, train_clips, train_texts, tokenizer=tokenizer,
                                               steps=80 * STEPS_SCALE, progress=False)
print(f"{brief_history[-1]['step']} steps in {time.perf_counter() - started:.0f} s")
batch = brief.mulan.batch_size
fig, axes = plt.subplots(1, 2, figsize=(12, 3))
viz.plot_history(brief_history, keys=["loss"], ax=axes[0], title=f"symmetric InfoNCE (chance: log {batch} = {np.log(batch):.2f})")
viz.plot_history(brief_history, keys=["audio_to_text_accuracy", "text_to_audio_accuracy"], ax=axes[1],
                 title=f"how often the right partner wins, among the {batch} of a batch")
axes[0].axhline(np.log(batch), color="grey", linestyle=":")
axes[0].set_ylabel("loss")
axes[1].set_ylabel("accuracy")
plt.tight_layout()
plt.show()
first_row, last_row = brief_history[0], brief_history[-1]
assert last_row["loss"] < first_row["loss"] and last_row["text_to_audio_accuracy"] > 2 / batch
print(f"loss {first_row['loss']:.2f} -> {last_row['loss']:.2f}; text -> audio within a batch "
      f"{first_row['text_to_audio_accuracy']:.0%} -> {last_row['text_to_audio_accuracy']:.0%} (chance {1 / batch:.0%})")

# %% [markdown]
# A shared space that generalises needs more pairs and more steps than three minutes allow, and
# more clips than the course's 192: while building this lesson, 1,500 steps on them reached 99%
# accuracy within training batches, while a caption found its clip first among 48 held-out ones only
# about half the time. So we load a MuLan trained for longer, with the same code, on 1,920 clips (ten
# times the course set, rendered by the same synthesizer; "load if present, else train"). One command
# made it, with the MusicCaps file present for the tokenizer, in 45 minutes of CPU time (one
# thread) on a 2-core machine:
#
#     python -m mlm_lessons train --preset tiny --stage mulan --num-clips 2400 --steps 3000 \
#         --out runs/mulan-tiny --export data/checkpoints/mulan-tiny.pt

# %%
checkpoint = datasets.default_data_root() / "checkpoints" / f"mulan-{PRESET}.pt"
if checkpoint.exists():
    model = mulan.MuLan.load(checkpoint)
    print(f"loaded the longer-trained MuLan from {checkpoint.relative_to(datasets.default_data_root().parent)}")
else:
    model = brief_model
    print(f"no {checkpoint.name}: using the briefly trained model; run the command above to make the better one")

# %% [markdown]
# ## 4. Retrieval on clips it never heard
# The longer-trained model learned from clips rendered with data seed 0. To test it we render fresh
# ones with other seeds: three **galleries** of 100 clips, each with its own caption (a wording the
# model never saw with that clip). Rendering takes a few seconds; the synthesizer is fast.

# %%
started = time.perf_counter()
galleries = []
for gallery_seed in (1, 2, 3):
    planned = datasets.plan_synthcaps(100, gallery_seed)
    clips = datasets.render_planned(planned, PRESET_CONFIG.data.clip_seconds, SAMPLE_RATE)          # (100, samples)
    galleries.append({"planned": planned, "audio": clips})
print(f"rendered {sum(len(g['planned']) for g in galleries)} held-out clips in {time.perf_counter() - started:.0f} s")

def embed_gallery(a_model, gallery):
    """(100, dim) audio embeddings and (100, dim) caption embeddings of a gallery."""
    return a_model.embed_audio(gallery["audio"]), a_model.embed_text([clip.caption for clip in gallery["planned"]])

for gallery in galleries:
    gallery["audio_embeddings"], gallery["text_embeddings"] = embed_gallery(model, gallery)

# %% [markdown]
# The text × audio similarity matrix of the first 16 clips of a gallery: row $i$ is caption $i$,
# column $j$ clip $j$. A model that has learned the space lights up the diagonal.

# %%
first = galleries[0]
shown = 16
similarity = (first["text_embeddings"][:shown] @ first["audio_embeddings"][:shown].T).numpy()
names = [f"{clip.attributes.lead}, {clip.attributes.mood}" for clip in first["planned"][:shown]]
fig, ax = plt.subplots(figsize=(8, 6.5))
image = ax.imshow(similarity, cmap="viridis")
ax.set_xticks(range(shown), [str(index) for index in range(shown)])
ax.set_yticks(range(shown), [f"{name} ({index})" for index, name in enumerate(names)], fontsize=8)
ax.set(xlabel="held-out clip", ylabel="its caption (lead, mood)", title="cosine similarity, caption x clip")
fig.colorbar(image, ax=ax, shrink=0.8)
plt.show()
diagonal_wins = int((similarity.argmax(axis=1) == np.arange(shown)).sum())
print(f"in {diagonal_wins} of {shown} rows the brightest cell is on the diagonal")

# %% [markdown]
# **Recall@k** asks, for each query, whether its true partner is among the $k$ most similar items of
# the gallery. Text → audio: each caption searches the 100 clips; audio → text: each clip searches the
# 100 captions. Chance is $k / 100$. For every gallery, the longer-trained model and the briefly
# trained one:

# %%
def retrieval(audio_embeddings, text_embeddings):
    similarity = text_embeddings @ audio_embeddings.T                                  # (captions, clips)
    return {"text->audio R@1": mulan.recall_at_k(similarity, 1), "text->audio R@10": mulan.recall_at_k(similarity, 10),
            "audio->text R@1": mulan.recall_at_k(similarity.T, 1), "audio->text R@10": mulan.recall_at_k(similarity.T, 10)}

brief_name = f"brief ({brief_history[-1]['step']} steps)"
scores = {"longer-trained": [retrieval(g["audio_embeddings"], g["text_embeddings"]) for g in galleries],
          brief_name: [retrieval(*embed_gallery(brief_model, g)) for g in galleries]}
columns = list(scores["longer-trained"][0])
print(f"{'model':<18} | " + " | ".join(f"{column:>16}" for column in columns))
for name, rows in scores.items():
    print(f"{name:<18} | " + " | ".join(f"{np.mean([row[c] for row in rows]):>9.2f} ({min(row[c] for row in rows):.2f}-"
                                         f"{max(row[c] for row in rows):.2f})"[-16:].rjust(16) for c in columns))
print(f"{'chance':<18} | " + " | ".join(f"{0.01 if 'R@1' in c and 'R@10' not in c else 0.10:>16.2f}" for c in columns))
top1 = [row["text->audio R@1"] for row in scores["longer-trained"]]
assert min(top1) >= 0.5 and np.mean(top1) > 4 * np.mean([row["text->audio R@1"] for row in scores[brief_name]])
assert min(row["text->audio R@10"] for row in scores["longer-trained"]) >= 0.95

# %% [markdown]
# (Each cell: the mean over the three galleries, and the lowest to highest.) On every gallery the
# longer-trained model puts the right clip first for at least half of the captions, fifty times
# chance, and more than four times as often as the briefly trained one. Most misses are near misses:
# the true clip is almost always in the top ten. What does it confuse? A free-text query, and the
# three clips it ranks first:

# %%
query = "a soothing flute melody over a soft pad"
query_similarity = (model.embed_text(query) @ first["audio_embeddings"].T)[0]
best = query_similarity.topk(3).indices.tolist()
print(f"query: {query!r}")
for rank, index in enumerate(best, start=1):
    attributes = first["planned"][index].attributes
    print(f"  {rank}. clip {index} (cosine {query_similarity[index]:.2f}): lead {attributes.lead}, mood "
          f"{attributes.mood}, backing {attributes.backing}")
viz.play(first["audio"][best[0]], SAMPLE_RATE)

# %% [markdown]
# ## 5. Zero-shot tagging
# A classifier usually needs labelled examples of every class. MuLan needs only the class *names*:
# embed one prompt per class ("a violin melody", "a flute melody", …) and give each clip the class
# whose prompt it is closest to. No classifier is trained; the text tower is the classifier
# (`mulan.zero_shot_classify`). CLIP's **prompt ensembling** helps a little: embed several wordings per
# class ("a {} melody", "{}", "a song led by a {}") and average them. On all 300 held-out clips, lead
# instrument and mood:

# %%
held_out_audio = torch.cat([g["audio"] for g in galleries])                          # (300, samples)
held_out = [clip for g in galleries for clip in g["planned"]]
instrument_truth = np.array([synth.INSTRUMENTS.index(clip.attributes.lead) for clip in held_out])
mood_truth = np.array([synth.MOODS.index(clip.attributes.mood) for clip in held_out])
instrument_templates = ["a {} melody", "{}", "a song led by a {}"]
single, _ = mulan.zero_shot_classify(model, held_out_audio, synth.INSTRUMENTS, "a {} melody")
ensembled, _ = mulan.zero_shot_classify(model, held_out_audio, synth.INSTRUMENTS, instrument_templates)
moods, _ = mulan.zero_shot_classify(model, held_out_audio, synth.MOODS, ["a {} song", "{}", "{} music"])
accuracy = {"instrument, 'a {} melody'": float((single.numpy() == instrument_truth).mean()),
            "instrument, 3 prompts": float((ensembled.numpy() == instrument_truth).mean()),
            "mood, 3 prompts": float((moods.numpy() == mood_truth).mean())}
for name, value in accuracy.items():
    print(f"{name:<28} {value:.1%}")
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
viz.plot_confusion(instrument_truth, ensembled.numpy(), synth.INSTRUMENTS, ax=axes[0], title="lead instrument")
viz.plot_confusion(mood_truth, moods.numpy(), synth.MOODS, ax=axes[1], title="mood")
plt.tight_layout()
plt.show()
assert accuracy["instrument, 3 prompts"] >= 0.8 and accuracy["mood, 3 prompts"] > 2 / len(synth.MOODS)
assert accuracy["mood, 3 prompts"] < accuracy["instrument, 3 prompts"]
mistakes = collections.Counter((synth.INSTRUMENTS[truth], synth.INSTRUMENTS[guess])
                               for truth, guess in zip(instrument_truth, ensembled.tolist()) if truth != guess)
riff_mistakes = sum(held_out[index].attributes.backing_instrument == synth.INSTRUMENTS[guess]
                    for index, guess in enumerate(ensembled.tolist()) if guess != instrument_truth[index])
print(f"commonest instrument mistakes: {mistakes.most_common(3)}; {riff_mistakes} of {sum(mistakes.values())} "
      "mistakes name the instrument of the backing riff")

# %% [markdown]
# Without a single labelled example, the lead instrument is right in at least 80% of held-out clips
# (chance: 10%), and the mood in more than twice chance. The confusion matrices show where it fails,
# and the line under them counts the mistakes that are forgivable: a clip often has a second
# instrument playing a riff, and naming that one is wrong only about which part leads. Mood is harder
# than instrument for a reason the synthesizer makes plain: a mood is not one sound but a bundle of
# tendencies (tempo, mode, register, loudness, drums) that moods share, and the captions often name
# it with a synonym.
#
# ## 6. The space, drawn
# The audio embeddings of the 300 held-out clips, projected to two dimensions by t-SNE (which keeps
# neighbours together and cares little about large distances), coloured by lead instrument and by
# mood:

# %%
audio_embeddings = torch.cat([g["audio_embeddings"] for g in galleries]).numpy()
points = TSNE(n_components=2, perplexity=30, init="pca", random_state=SEED).fit_transform(audio_embeddings)
fig, axes = plt.subplots(1, 2, figsize=(13, 5))
for ax, truth, names, title in ((axes[0], instrument_truth, synth.INSTRUMENTS, "lead instrument"),
                                (axes[1], mood_truth, synth.MOODS, "mood")):
    colors = plt.get_cmap("tab10")
    for index, name in enumerate(names):
        chosen = truth == index
        ax.scatter(points[chosen, 0], points[chosen, 1], s=12, color=colors(index), label=name)
    ax.set(title=f"300 held-out clips by {title} (t-SNE of the audio embeddings)", xticks=[], yticks=[])
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7. Paraphrases and words it never saw
# The training texts come from a caption writer with a fixed vocabulary. A user will write their own
# words. Does "a calm violin tune" land near "a calming violin melody"? "Calm" and "tune" never occur
# in a training text, so their subword embeddings were never trained; only the rest of the sentence
# can carry it. We pair six prompts in new wordings with six in the course's wording and ask, for each
# new one, which of the six course prompts is nearest:

# %%
pairs = [("a calm violin tune", "a calming violin melody"),
         ("a cheerful piano song", "a happy piano melody"),
         ("a spooky organ tune", "a mysterious organ melody"),
         ("a mournful clarinet solo", "a sad clarinet melody"),
         ("a furious fast trumpet track", "an aggressive trumpet melody at a fast tempo"),
         ("a peaceful marimba tune", "a relaxing marimba melody")]
seen_words = {word.strip(".,").lower() for texts in train_texts for text in texts for word in text.split()}
new_words = sorted({word for new, _ in pairs for word in new.split()} - seen_words)
new_side = model.embed_text([new for new, _ in pairs])
course_side = model.embed_text([course for _, course in pairs])
pair_similarity = (new_side @ course_side.T).numpy()                                 # (6, 6)
matched = np.diag(pair_similarity)
unmatched = pair_similarity[~np.eye(len(pairs), dtype=bool)]
nearest_is_partner = pair_similarity.argmax(axis=1) == np.arange(len(pairs))
print(f"words never seen in training: {new_words}")
for (new, course), similarity_value, hit in zip(pairs, matched, nearest_is_partner):
    print(f"  {new!r:32} ~ {course!r:48} cosine {similarity_value:.2f}{'' if hit else '  (not the nearest)'}")
print(f"mean cosine: paraphrase pairs {matched.mean():.2f}, other pairs {unmatched.mean():.2f}; "
      f"the nearest course prompt is the paraphrase for {nearest_is_partner.sum()} of {len(pairs)}")
assert matched.mean() > unmatched.mean() + 0.2 and nearest_is_partner.sum() >= 5

# %% [markdown]
# The new wordings land close to their partners, much closer than to the other prompts. But which
# words carry that? A sharper test puts one mood word into the same sentence ("a ___ violin melody")
# and asks whether it pulls the sentence towards the right mood ("calming") rather than a wrong one
# ("aggressive"): the margin $\cos(\text{new}, \text{right}) - \cos(\text{new}, \text{wrong})$,
# averaged over three instruments, for synonyms the training captions use and for words they never
# use:

# %%
mood_words = {"seen in training": [("soothing", "calming", "aggressive"), ("eerie", "mysterious", "happy"),
                                   ("fierce", "aggressive", "calming"), ("mournful", "sad", "happy")],
              "never seen": [("calm", "calming", "aggressive"), ("spooky", "mysterious", "happy"),
                             ("furious", "aggressive", "calming"), ("gloomy", "sad", "happy")]}
margins = {}
for kind, triples in mood_words.items():
    assert all((word in seen_words) == (kind == "seen in training") for word, _, _ in triples)
    rows = []
    for word, right, wrong in triples:
        values = []
        for instrument in ("violin", "piano", "trumpet"):
            new, near, far = model.embed_text([f"a {w} {instrument} melody" for w in (word, right, wrong)])
            values.append(float(new @ near - new @ far))
        rows.append(np.mean(values))
        print(f"{kind:<17} {word!r:>11}: towards {right!r} rather than {wrong!r} by {rows[-1]:+.3f}")
    margins[kind] = float(np.mean(rows))
print(f"mean margin: synonyms seen in training {margins['seen in training']:+.3f}, words never seen "
      f"{margins['never seen']:+.3f}")
assert margins["seen in training"] > 0.03 and margins["seen in training"] > margins["never seen"] + 0.03

# %% [markdown]
# Synonyms the captions use ("soothing" for calming) pull the sentence the right way; words the
# model never read ("calm", "gloomy") pull it nowhere in particular: their subword embeddings are
# still the random ones they started with. The paraphrases above landed close because of the words
# around the new one: the instrument, "melody", "tune". The paper's text tower starts from BERT,
# pretrained on billions of words, which already knows that "calm" and "calming" mean nearly the
# same; ours learned English from the course's captions alone.
#
# Does a new wording still *find* the music? Retrieval with each wording: the share of the ten clips
# it ranks highest, among the 300 held-out clips, that have the prompt's lead instrument (chance: 10%):

# %%
def top10_lead_share(prompts, leads):
    similarity = model.embed_text(prompts) @ torch.from_numpy(audio_embeddings).T                 # (prompts, 300)
    top = similarity.topk(10, dim=1).indices.numpy()
    return np.mean([[held_out[index].attributes.lead == lead for index in row] for row, lead in zip(top, leads)])

leads = ["violin", "piano", "organ", "clarinet", "trumpet", "marimba"]
new_share = top10_lead_share([new for new, _ in pairs], leads)
course_share = top10_lead_share([course for _, course in pairs], leads)
print(f"top-10 clips with the right lead: new wording {new_share:.0%}, course wording {course_share:.0%}")
assert min(new_share, course_share) > 0.5

# %% [markdown]
# ## 8. Real MusicCaps captions
# MusicCaps' captions were written by musicians about real recordings: longer, freer and full of words
# our captions never use. We embed those that name exactly one of the course's lead instruments and
# look up their nearest held-out clips. Does the nearest clip have that instrument? (The MusicCaps file
# is optional; without it this section says so and moves on.)

# %%
instrument_words = {"violin": "violin", "flute": "flute", "piano": "piano", "organ": "organ",
                    "trumpet": "trumpet", "marimba": "marimba", "clarinet": "clarinet",
                    "acoustic guitar": "acoustic guitar", "distorted guitar": "distorted electric guitar"}
if musiccaps:
    naming_one = []
    for record in musiccaps:
        named = [lead for word, lead in instrument_words.items() if word in record.caption.lower()]
        if len(named) == 1:
            naming_one.append((record, named[0]))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # a few MusicCaps captions exceed the tower's 96 subwords
        real = model.embed_text([record.caption for record, _ in naming_one])
    nearest = (real @ torch.from_numpy(audio_embeddings).T).argmax(dim=1)
    hits = np.array([held_out[index].attributes.lead == lead for index, (_, lead) in zip(nearest.tolist(), naming_one)])
    per_lead = collections.Counter(lead for _, lead in naming_one)
    print(f"{len(naming_one)} MusicCaps captions name exactly one course instrument ({dict(per_lead.most_common(4))}, ...)")
    print(f"their nearest held-out clip has that lead instrument for {hits.mean():.0%} of them (chance 10%)")
    for (record, lead), index in list(zip(naming_one, nearest.tolist()))[:4]:
        print(f"  {record.ytid}: {record.caption[:120]}...\n      -> nearest clip: lead {held_out[index].attributes.lead}, "
              f"mood {held_out[index].attributes.mood}")
    assert hits.mean() > 3 * 0.10
else:
    print("no MusicCaps file (set MUSICCAPS_CSV or put musiccaps-public.csv in ../shared/data): section skipped")

# %% [markdown]
# With the MusicCaps file present (as when this notebook was stored), the nearest synthetic clip has
# the instrument a real caption names more than three times as often as chance. That is as much as
# our MuLan can do: it never read a musician's sentence in training, most of a real caption is words it
# has never seen (vocals, recording quality, genres), and SynthCaps has no voices, no genres and ten
# instruments. MusicLM's MuLan was trained on the text of 44 million real recordings: the same two
# towers and the same loss, fed with real pairs, learn the words that real descriptions use.
#
# ## 9. MuLan tokens: why MusicLM trains on audio and generates from text
# MusicLM does not feed embeddings to its stages; it quantises them, with lesson 05's residual vector
# quantiser, into **MuLan tokens** (the paper: 12 levels of 1,024 codes; ours: 4 of 256). In training,
# a stage sees $M_A$, the tokens of the clip it is learning to generate; at generation it sees $M_T$,
# the tokens of a prompt. That swap only works if a caption's tokens look like its clip's. Do they?
# First the embeddings themselves, on the 300 held-out pairs: how similar is a clip to its own caption,
# compared with other captions, and with the clip most like it?

# %%
text_embeddings = torch.cat([g["text_embeddings"] for g in galleries])               # (300, dim)
audio_tensor = torch.from_numpy(audio_embeddings)
off_diagonal = ~torch.eye(len(audio_tensor), dtype=torch.bool)
own_caption = (audio_tensor * text_embeddings).sum(dim=1)                             # (300,)
clip_to_other_caption = (audio_tensor @ text_embeddings.T)[off_diagonal]

def nearest_other(embeddings):
    """For each row, the cosine of the most similar *other* row: (n, dim) -> (n,)."""
    similarity = embeddings @ embeddings.T
    return similarity.masked_fill(~off_diagonal, -1.0).max(dim=1).values

nearest_other_clip, nearest_other_caption = nearest_other(audio_tensor), nearest_other(text_embeddings)
clip_nearer_than_caption = float((nearest_other_clip > own_caption).float().mean())
caption_nearer_than_clip = float((nearest_other_caption > own_caption).float().mean())
print(f"mean cosine of a clip with its own caption {own_caption.mean():.2f}, with another caption "
      f"{clip_to_other_caption.mean():.2f}, with its most similar other clip {nearest_other_clip.mean():.2f}")
print(f"another clip is more similar to a clip than its own caption for {clip_nearer_than_caption:.0%} of clips; "
      f"another caption is more similar to a caption than its own clip for {caption_nearer_than_clip:.0%}")
fig, ax = plt.subplots(figsize=(7, 3.2))
bins = np.linspace(-0.2, 1.0, 49)
for values, label in ((clip_to_other_caption, "other captions"), (own_caption, "its own caption"),
                      (nearest_other_clip, "its most similar other clip")):
    ax.hist(values.numpy(), bins=bins, alpha=0.6, density=True, label=label)
ax.set(title="how similar a held-out clip is to ...", xlabel="cosine similarity", ylabel="density")
ax.legend()
plt.show()
assert own_caption.mean() > clip_to_other_caption.mean() + 0.3 and own_caption.mean() < 0.95
assert clip_nearer_than_caption > 0.5 and caption_nearer_than_clip > 0.5

# %% [markdown]
# A clip sits much closer to its own caption than to anyone else's, which is what retrieval uses, but
# not on top of it, and for most clips some *other clip* is closer still. Clips crowd together with
# clips and captions with captions, and matching pairs face each other across a gap. This **modality
# gap** is a known property of two-tower contrastive models (Liang et al., 2022): the loss only asks a
# clip to be nearer its own caption than the other captions, never to coincide with it.
#
# The gap decides how the token quantiser must be fitted. Fit it on audio and text embeddings together
# and k-means may give part of the text cloud codes of its own: captions that get a code no clip ever
# gets, a token that a stage trained on audio tokens has never seen. Fit it on audio alone and a caption
# can only get the codes of clips. We compare the two on equal terms: a small quantiser (2 levels of 32
# codes) fitted on two galleries and measured on the third.

# %%
def fitted_quantizer(embeddings, seed=SEED):
    torch.manual_seed(seed)
    quantizer = quantize.ResidualVQ(model.embed_dim, 32, 2, dead_code_steps=2).train()
    for _ in range(20):
        quantizer(embeddings[None])
    return quantizer.eval()

def level_one(quantizer, embeddings):
    return quantizer.encode(embeddings[:, None])[:, 0, 0]                             # (n,) codes of level 1

fit_audio, fit_text = audio_tensor[:200], text_embeddings[:200]                       # galleries 1 and 2
test_audio, test_text = audio_tensor[200:], text_embeddings[200:]                     # gallery 3
print(f"{'quantiser fitted on':<20} | {'captions given a code some clip has':>36} | {'caption code = its clip code':>29}")
shares = {}
for name, embeddings in (("audio and text", torch.cat([fit_audio, fit_text])), ("audio only", fit_audio)):
    quantizer = fitted_quantizer(embeddings)
    clip_codes, caption_codes = level_one(quantizer, test_audio), level_one(quantizer, test_text)
    shares[name] = float(np.isin(caption_codes.numpy(), clip_codes.numpy()).mean())
    print(f"{name:<20} | {shares[name]:>36.0%} | {(clip_codes == caption_codes).float().mean():>29.0%}")
assert shares["audio only"] >= 0.9 and shares["audio only"] > shares["audio and text"]

# %% [markdown]
# Fitted on audio alone, (nearly) every held-out caption gets a level-1 code that clips get too;
# fitted on both, some captions get codes of their own. How many depends on how wide the gap is: while
# building this lesson, a model trained for fewer steps, whose two clouds were further apart, gave 2%
# of captions a clip's code when the quantiser was fitted on both, against 95% when fitted on audio.
# So the package fits the MuLan-token quantiser on the training clips' audio embeddings only
# (`MuLan.fit_token_quantizer`), as the stages will be trained on audio tokens. The longer-trained
# model's quantiser was fitted that way on its 1,920 training clips. Its tokens on the held-out pairs,
# and what they keep: retrieval with the captions' *tokens* (decoded back to vectors) instead of their
# embeddings.

# %%
clip_tokens = model.audio_tokens(first["audio"])                                      # (100, levels)
caption_tokens = model.text_tokens([clip.caption for clip in first["planned"]])
print(f"audio tokens {tuple(clip_tokens.shape)} (clips, levels), text tokens {tuple(caption_tokens.shape)}; "
      f"first clip {clip_tokens[0].tolist()}, its caption {caption_tokens[0].tolist()}")
agreement = (clip_tokens == caption_tokens).float().mean(dim=0)
print("a clip's token equals its caption's, per level: " + ", ".join(f"{value:.0%}" for value in agreement))
decoded = F.normalize(model.token_quantizer.decode(caption_tokens[:, :, None])[:, 0], dim=-1)
token_recall = mulan.recall_at_k(decoded @ first["audio_embeddings"].T, 10)
embedding_recall = scores["longer-trained"][0]["text->audio R@10"]
print(f"text -> audio R@10 on gallery 1: from caption embeddings {embedding_recall:.2f}, from caption tokens "
      f"{token_recall:.2f} (chance 0.10)")
assert clip_tokens.shape == caption_tokens.shape == (100, PRESET_CONFIG.tokens.mulan_rvq_levels)
assert agreement[0] > 0.1 and agreement[1:].max() < 0.1 and token_recall >= embedding_recall - 0.1

# %% [markdown]
# A caption's first-level token is its clip's for a fair share of pairs and its deeper tokens almost
# never are: each level quantises what the levels before it left over, and that residue is where a clip
# and its caption differ. Yet the tokens keep what matters: decoded back to vectors, the captions'
# tokens find their clips about as well as their embeddings do. This is the bargain MusicLM makes. Its
# stages learn from $M_A$, so any music can be training data without a word of description; at
# generation they are driven by $M_T$, near $M_A$ but rarely equal to it. Lesson 08 trains the stages on
# audio tokens; lesson 09 drives them with text tokens and measures, with the paper's MuLan cycle
# consistency, how well the music follows the prompt.
#
# ## 10. The paper's MuLan and ours

# %%
# NBVAL_CHECK_OUTPUT
paper = config.get_preset("paper")
rows = [("audio tower", "ResNet-50 on log-mel", f"ResNet, {len(model.config.audio_channels)} stages of "
                                                 f"{'/'.join(map(str, model.config.audio_channels))} channels"),
        ("text tower", "BERT (pretrained on text)", f"Transformer encoder, {model.config.text_layers} layers, "
                                                     f"trained from scratch"),
        ("embedding", f"{paper.tokens.mulan_dim} dimensions", f"{model.embed_dim} dimensions"),
        ("training pairs", "44M music recordings with their text", "1,920 SynthCaps clips x 16 texts"),
        ("MuLan tokens", f"{paper.tokens.mulan_rvq_levels} levels x {paper.tokens.mulan_codebook_size:,} codes",
         f"{model.token_levels} levels x {model.token_codebook_size} codes")]
print(f"{'':<15} | {'MuLan (Huang et al., 2022)':<36} | this course (tiny)")
for name, theirs_value, ours_value in rows:
    print(f"{name:<15} | {theirs_value:<36} | {ours_value}")

# %% [markdown]
# ## Exercises
# **Exercise 1 (2 points).** Write `my_recall_at_k(similarity, k)`: for a `(queries, gallery)`
# similarity matrix whose query $i$'s true partner is gallery item $i$, return the fraction of queries
# whose partner is among their `k` most similar items, as a float.

# %% solution ex1_recall
def my_recall_at_k(similarity, k):
    ### BEGIN SOLUTION
    top = similarity.topk(k, dim=1).indices
    found = (top == torch.arange(len(similarity))[:, None]).any(dim=1)
    return float(found.float().mean())
    ### END SOLUTION

# %% tests ex1_recall_tests 2
toy = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.0, 0.3, 0.2]])
assert abs(my_recall_at_k(toy, 1) - 1 / 3) < 1e-6, "only query 0 ranks its partner first"
assert abs(my_recall_at_k(toy, 2) - 1.0) < 1e-6
### BEGIN HIDDEN TESTS
random_similarity = torch.randn(40, 40, generator=torch.Generator().manual_seed(3))
for k in (1, 5, 40):
    assert abs(my_recall_at_k(random_similarity, k) - mulan.recall_at_k(random_similarity, k)) < 1e-9
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (3 points).** Write `my_zero_shot(model, audio, class_names, templates)` with prompt
# ensembling: for each class, embed `template.format(name)` for every template, average the unit
# embeddings and normalise the mean to unit length; give each clip the class with the highest cosine.
# Return the predictions, a `(clips,)` int64 tensor of indices into `class_names`. The test hands your
# function stand-in models with the two methods it needs (`embed_text` and `embed_audio`, unit vectors);
# then try it on our trained `model` with `instrument_templates` in a cell of your own.

# %% solution ex2_zero_shot
def my_zero_shot(model, audio, class_names, templates):
    ### BEGIN SOLUTION
    prompts = torch.stack([model.embed_text([template.format(name) for template in templates]).mean(dim=0)
                           for name in class_names])
    prompts = F.normalize(prompts, dim=-1)
    return (model.embed_audio(audio) @ prompts.T).argmax(dim=1)
    ### END SOLUTION

# %% tests ex2_zero_shot_tests 3
class StandInMuLan:
    """Fixed random unit embeddings: one per distinct text, and a random projection of the audio."""

    def __init__(self, seed, samples, dim=16):
        self.seed, self.dim = seed, dim
        self.projection = torch.randn(samples, dim, generator=torch.Generator().manual_seed(seed))

    def embed_text(self, texts):
        texts = [texts] if isinstance(texts, str) else list(texts)
        seeds = [self.seed + sum((i + 1) * ord(c) for i, c in enumerate(text)) for text in texts]
        return F.normalize(torch.stack([torch.randn(self.dim, generator=torch.Generator().manual_seed(s))
                                        for s in seeds]), dim=-1)

    def embed_audio(self, audio):
        return F.normalize(torch.as_tensor(audio, dtype=torch.float32) @ self.projection, dim=-1)

generator = torch.Generator().manual_seed(72)
clips = torch.randn(20, 300, generator=generator)
stand_in = StandInMuLan(1, 300)
guesses = my_zero_shot(stand_in, clips, synth.INSTRUMENTS, ["a {} melody"])
assert guesses.shape == (20,) and guesses.dtype == torch.long
assert torch.equal(guesses, mulan.zero_shot_classify(stand_in, clips, synth.INSTRUMENTS, ["a {} melody"])[0])
### BEGIN HIDDEN TESTS
for seed, names in ((2, synth.INSTRUMENTS), (3, ["happy", "sad", "calm"]), (4, ["x", "y"])):
    stand_in, audio_batch = StandInMuLan(seed, 200), torch.randn(15, 200, generator=generator)
    templates = ["a {} melody", "music that is {}", "{}"]
    reference, _ = mulan.zero_shot_classify(stand_in, audio_batch, names, templates)
    assert torch.equal(my_zero_shot(stand_in, audio_batch, names, templates), reference)
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (2 points).** Recall@k depends on a choice of $k$. The **median rank** does not: write
# `my_median_rank(similarity)`, the median over queries of the rank of the true partner (1 = ranked
# first) in a `(queries, gallery)` matrix whose query $i$'s partner is item $i$. Return a float
# (`torch.median` takes the lower middle value of an even count; use `np.median`, which averages the two).

# %% solution ex3_median_rank
def my_median_rank(similarity):
    ### BEGIN SOLUTION
    partner = similarity.diagonal()[:, None]
    ranks = (similarity > partner).sum(dim=1) + 1
    return float(np.median(ranks.numpy()))
    ### END SOLUTION

# %% tests ex3_median_rank_tests 2
assert my_median_rank(torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.0, 0.3, 0.2]])) == 2.0
### BEGIN HIDDEN TESTS
assert my_median_rank(torch.eye(6)) == 1.0
assert my_median_rank(torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == 2.0
### END HIDDEN TESTS

# %% [markdown]
# ## Summary
# - MuLan is a *pair* of encoders, not one vector: an audio tower (a ResNet on log-mel) and a text
#   tower (a Transformer on WordPiece subwords) whose unit-length outputs share one space.
# - It learns from pairs alone, with the symmetric InfoNCE loss: in a batch of $N$ pairs, each clip must
#   pick its caption among $N$ and each caption its clip; the temperature is learned.
# - Measured on 300 clips it never heard: text → audio recall@1 of at least 0.5 on every 100-clip
#   gallery (chance 0.01), and zero-shot lead-instrument tagging of at least 80% with no classifier.
# - New wordings work as far as the words the tower knows carry them: a text tower trained on our
#   captions alone does not know that "calm" means "calming"; the paper's started from BERT.
# - Zero-shot tagging needs texts that state one fact at a time: trained on tag texts that all name
#   the lead instrument beside the captions, the towers learn timbre early.
# - MusicLM conditions on MuLan *tokens*: audio tokens in training (any music will do, no captions),
#   text tokens at generation. A clip and its caption are close but not equal in the space (the
#   modality gap), so the token quantiser is fitted on audio alone: every code a caption gets is one
#   the stages have seen.
#
# The figures measured in this run:

# %%
print(f"brief training: loss {first_row['loss']:.2f} -> {last_row['loss']:.2f} in "
      f"{brief_history[-1]['step']} steps")
for column in columns:
    print(f"{column}: {np.mean([row[column] for row in scores['longer-trained']]):.2f} (mean of 3 galleries of 100)")
for name, value in accuracy.items():
    print(f"zero-shot {name}: {value:.1%}")
print(f"cosine clip-caption {own_caption.mean():.2f}; tokens equal, level 1: {agreement[0]:.0%}")

# %% [markdown]
# **Going further.** Huang et al. 2022, *MuLan* (the model); Radford et al. 2021, *CLIP* (the same idea
# for images, prompt ensembling); van den Oord et al. 2018, *Representation Learning with Contrastive
# Predictive Coding* (InfoNCE); Elizalde et al. 2023, *CLAP* (an open audio–text model of the same
# kind); Liang et al. 2022, *Mind the Gap* (why the two towers' embeddings form separate clouds);
# Agostinelli et al. 2023, *MusicLM*, section 3 (how MuLan conditions the stages). Next: **lesson 08**,
# the three stages that turn MuLan tokens into music.
