"""Judging generated music as the MusicLM paper does, at the course's scale (lesson 09).

The paper (Agostinelli et al. 2023, Table 1) scores a text-to-music model on MusicCaps with three numbers,
each answering another question, and a memorisation check:

* **FAD** (Frechet Audio Distance, ``metrics.frechet_audio_distance``): does the *set* of generated clips
  sound like the set of real ones? Gaussians fitted to the embeddings of each set, compared. It never
  looks at the prompts. The paper embeds with Trill and VGGish; the course embeds with its own trained
  models, MuLan's audio tower and w2v-BERT (mean over frames of the semantic tokens' layer).
* **KLD** (``metrics.paired_kl_divergence``): for each prompt, does the generated clip get the same labels
  as the real clip of that caption? An audio classifier labels both; the KL divergence of the two label
  distributions, averaged over prompts. The paper uses an AudioSet classifier; the course trains its own
  :class:`AttributeClassifier` on real SynthCaps clips (lead instrument, mood, tempo band) and averages
  the three attributes' KLDs.
* **MCC** (MuLan cycle consistency, ``metrics.mulan_cycle_consistency``): the cosine between the MuLan text
  embedding of the prompt and the MuLan audio embedding of the clip. MusicLM is *conditioned* on MuLan,
  so MCC partly asks the model whether it obeyed itself; the other numbers do not share that weakness.
* **Attribute accuracy** (the course's addition, possible because SynthCaps knows what each clip plays):
  how often the classifier's label of a generated clip is the attribute its prompt names.
* **Memorisation**: does the model copy its training data? For each generated clip, its nearest training
  clip (MuLan audio embeddings, cosine) and the longest run of semantic tokens it shares with any
  training clip, each beside the same figure for *real held-out* clips, which were never trained on: a
  generated clip is suspicious only where it is closer to the training set than new real music is.

A number alone says little, so :func:`evaluation_table` scores baselines in the same run (:data:`ROWS`):
the reference clips themselves (against other real clips: the floor of FAD), the reference clips through
the codec (the best any generated clip can sound), the generated clips, the generated clips scored against
shuffled prompts (a model that ignores its prompt), noise, and a retrieval baseline that answers each
prompt with the training clip MuLan finds closest to it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from mlm_lessons import metrics, synth
from mlm_lessons.audio import as_tensor, scaled_log_mel
from mlm_lessons.config import AudioFeatureConfig, TrainConfig
from mlm_lessons.train import Trainer, half_state_dict, load_half_state_dict, load_tagged_file, save_atomically

CLASSIFIER_FORMAT = "mlm_lessons.evaluation.attribute_classifier/1"
#: What the attribute classifier names, and the classes of each, in SynthCaps' order.
ATTRIBUTES: dict[str, tuple[str, ...]] = {"instrument": synth.INSTRUMENTS, "mood": synth.MOODS,
                                          "tempo": tuple(synth.TEMPO_RANGES)}


def attribute_targets(attributes: Sequence[synth.SynthAttributes]) -> dict[str, torch.Tensor]:
    """The class index of each clip's lead instrument, mood and tempo band: ``{attribute: (n,) int64}``."""
    values = {"instrument": [a.lead for a in attributes], "mood": [a.mood for a in attributes],
              "tempo": [a.tempo_category for a in attributes]}
    return {name: torch.tensor([ATTRIBUTES[name].index(value) for value in values[name]]) for name in ATTRIBUTES}


# ----------------------------------------------------------------------------------------------------
# 1. The attribute classifier: the course's stand-in for the paper's AudioSet classifier


class AttributeClassifier(nn.Module):
    """A small CNN on log-mel spectrograms with one head per attribute of :data:`ATTRIBUTES`.

    Four blocks of 3x3 convolution, batch norm, ReLU and 2x2 max-pooling, then the mean over frequency and
    time (so any clip length works) and a linear head per attribute.

    Args:
        sample_rate: the audio it reads; ``features`` the log-mel settings (a preset's ``features``).
        channels: widths of the four blocks.
    """

    def __init__(self, sample_rate: int, features: AudioFeatureConfig, channels: Sequence[int] = (16, 32, 64, 96)):
        super().__init__()
        self.sample_rate, self.features, self.channels = sample_rate, features, tuple(channels)
        blocks, width = [], 1
        for out in self.channels:
            blocks += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.body = nn.Sequential(*blocks)
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(classes)) for name, classes in ATTRIBUTES.items()})

    def mel(self, audio) -> torch.Tensor:
        """Audio ``(samples,)`` or ``(batch, samples)`` -> ``(batch, n_mels, frames)`` scaled log-mel."""
        audio = as_tensor(audio)
        audio = audio[None] if audio.dim() == 1 else audio
        return scaled_log_mel(audio.to(self.heads["mood"].weight.device), self.sample_rate, self.features.n_fft,
                              self.features.hop_length, self.features.n_mels)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Log-mel ``(batch, n_mels, frames)`` -> ``{attribute: logits (batch, classes)}``."""
        pooled = self.body(mel[:, None]).mean(dim=(2, 3))                               # (batch, channels)
        return {name: head(pooled) for name, head in self.heads.items()}

    @torch.no_grad()
    def probabilities(self, audio, chunk: int = 64) -> dict[str, torch.Tensor]:
        """``{attribute: (batch, classes)}`` softmax probabilities of audio ``(batch, samples)``, on the CPU."""
        audio = as_tensor(audio)
        audio = audio[None] if audio.dim() == 1 else audio
        parts = [{name: logits.softmax(-1).cpu() for name, logits in self(self.mel(piece)).items()}
                 for piece in audio.split(chunk)]
        return {name: torch.cat([part[name] for part in parts]) for name in ATTRIBUTES}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the classifier (float16 weights) with its settings, atomically."""
        save_atomically({"format": CLASSIFIER_FORMAT, "sample_rate": self.sample_rate,
                         "features": dataclasses.asdict(self.features), "channels": list(self.channels),
                         "classes": {name: list(classes) for name, classes in ATTRIBUTES.items()},
                         "model": half_state_dict(self)}, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AttributeClassifier":
        """Read a file written by :meth:`save` (in eval mode)."""
        payload = load_tagged_file(path, CLASSIFIER_FORMAT, "attribute classifier", "attribute classifier")
        if payload["classes"] != {name: list(classes) for name, classes in ATTRIBUTES.items()}:
            raise ValueError(f"{path} names other classes than this version's SynthCaps; train it again")
        model = cls(payload["sample_rate"], AudioFeatureConfig(**payload["features"]), payload["channels"])
        load_half_state_dict(model, payload["model"], source=f"attribute classifier {path}")
        return model.eval()


class MelCrops(Dataset):
    """Random ``crop_frames`` crops of precomputed log-mels ``(clips, n_mels, frames)``, with their targets and
    a random gain (a constant added to the log-mel): the classifier must not key on a clip's exact start or
    loudness."""

    def __init__(self, mels: torch.Tensor, targets: dict[str, torch.Tensor], crop_frames: int, gain: float = 0.05):
        if crop_frames > mels.shape[-1]:
            raise ValueError(f"crops of {crop_frames} frames do not fit clips of {mels.shape[-1]}")
        self.mels, self.targets, self.crop_frames, self.gain = mels, targets, crop_frames, gain

    def __len__(self) -> int:
        return len(self.mels)

    def __getitem__(self, index: int) -> dict:
        start = int(torch.randint(0, self.mels.shape[-1] - self.crop_frames + 1, ()))
        mel = self.mels[index, :, start:start + self.crop_frames] + self.gain * torch.randn(())
        return {"mel": mel, **{name: values[index] for name, values in self.targets.items()}}


def classifier_objective(model: AttributeClassifier, batch: dict):
    """The sum of the attributes' cross-entropies, logging each attribute's accuracy."""
    logits = model(batch["mel"])
    losses = {name: F.cross_entropy(logits[name], batch[name]) for name in ATTRIBUTES}
    accuracy = {f"accuracy/{name}": (logits[name].argmax(-1) == batch[name]).float().mean() for name in ATTRIBUTES}
    return sum(losses.values()), accuracy


def train_attribute_classifier(clips: Sequence[torch.Tensor], attributes: Sequence[synth.SynthAttributes],
                               sample_rate: int, features: AudioFeatureConfig, steps: int = 1500,
                               crop_seconds: float = 3.0, out_dir: str | os.PathLike | None = None, seed: int = 0,
                               progress: bool = True) -> tuple[AttributeClassifier, list[dict[str, float]]]:
    """Train an :class:`AttributeClassifier` on real clips ``(samples,)`` and their attributes. Returns ``(model,
    history)``, the model in eval mode. The log-mels are computed once, then each step reads random crops of them
    (with ``out_dir``, checkpoints are kept there and an interrupted run resumes)."""
    if len(clips) != len(attributes) or not clips:
        raise ValueError(f"need one attribute set per clip, got {len(clips)} clips and {len(attributes)}")
    torch.manual_seed(seed)
    model = AttributeClassifier(sample_rate, features)
    mels = torch.cat([model.mel(torch.stack(list(clips[start:start + 64]))) for start in range(0, len(clips), 64)])
    crop_frames = int(crop_seconds * sample_rate / features.hop_length)
    data = MelCrops(mels, attribute_targets(attributes), min(crop_frames, mels.shape[-1]))
    config = TrainConfig(batch_size=min(32, len(clips)), learning_rate=2e-3, max_steps=steps,
                         warmup_steps=min(100, steps // 10), device="cpu",
                         log_every=max(1, min(100, steps // 10)), checkpoint_every=500 if out_dir else 0, seed=seed)
    history = Trainer(model, config, data, classifier_objective, out_dir=out_dir, resume=out_dir is not None,
                      progress=progress, model_config={"channels": list(model.channels)}).fit()
    return model.eval(), history


# ----------------------------------------------------------------------------------------------------
# 2. What the judges see of a set of clips


@dataclasses.dataclass
class ClipDescription:
    """What the judges make of ``n`` clips: ``mulan`` ``(n, mulan_dim)`` unit embeddings, ``w2v_bert``
    ``(n, d_model)`` (the token layer, mean over frames), ``semantic_tokens`` ``(n, frames)`` and
    ``probabilities`` ``{attribute: (n, classes)}``."""

    mulan: torch.Tensor
    w2v_bert: torch.Tensor
    semantic_tokens: torch.Tensor
    probabilities: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.mulan)

    def select(self, indices: torch.Tensor) -> "ClipDescription":
        """The description of the clips at ``indices`` (any order, repeats allowed)."""
        return ClipDescription(self.mulan[indices], self.w2v_bert[indices], self.semantic_tokens[indices],
                               {name: values[indices] for name, values in self.probabilities.items()})


@dataclasses.dataclass
class Judges:
    """The models that look at clips: MuLan (FAD, MCC, retrieval), w2v-BERT through the semantic tokenizer (FAD,
    memorisation) and the attribute classifier (KLD, accuracy)."""

    mulan: object                       # mlm_lessons.mulan.MuLan
    semantic_tokenizer: object          # mlm_lessons.tokenize.SemanticTokenizer
    classifier: AttributeClassifier

    @torch.no_grad()
    def describe(self, audio: torch.Tensor, chunk: int = 32) -> ClipDescription:
        """:class:`ClipDescription` of audio ``(n, samples)`` at the judges' sample rate, ``chunk`` clips at a time."""
        audio = as_tensor(audio)
        if audio.dim() != 2 or len(audio) == 0:
            raise ValueError(f"describe takes a batch of clips (n, samples), got shape {tuple(audio.shape)}")
        parts = []
        for piece in audio.split(chunk):
            hidden = self.semantic_tokenizer.encoder.embeddings(piece, self.semantic_tokenizer.layer)
            parts.append(ClipDescription(self.mulan.embed_audio(piece).cpu(), hidden.mean(dim=1).cpu(),
                                         self.semantic_tokenizer.tokens_of(hidden).cpu(),
                                         self.classifier.probabilities(piece)))
        return ClipDescription(torch.cat([part.mulan for part in parts]),
                               torch.cat([part.w2v_bert for part in parts]),
                               torch.cat([part.semantic_tokens for part in parts]),
                               {name: torch.cat([part.probabilities[name] for part in parts]) for name in ATTRIBUTES})


# ----------------------------------------------------------------------------------------------------
# 3. The scores of one set of clips


def score(clips: ClipDescription, prompt_embeddings: torch.Tensor, targets: dict[str, torch.Tensor],
          reference: ClipDescription, background: ClipDescription) -> dict[str, float]:
    """The row of one system: ``clips[i]`` answers the prompt whose MuLan text embedding is ``prompt_embeddings[i]``,
    whose attributes are ``targets[...][i]`` and whose real clip is ``reference[i]``; ``background`` is another
    set of real clips, the reference distribution of FAD (so that real clips do not score 0 against themselves).

    Returns ``{"FAD MuLan", "FAD w2v-BERT", "KLD", "MCC", "<attribute> accuracy" ...}``.
    """
    if not len(clips) == len(prompt_embeddings) == len(reference) or any(len(t) != len(clips) for t in
                                                                           targets.values()):
        raise ValueError(f"one prompt, target and reference per clip: {len(clips)} clips, {len(prompt_embeddings)} "
                         f"prompts, {len(reference)} references")
    row = {"FAD MuLan": metrics.frechet_audio_distance(clips.mulan, background.mulan),
           "FAD w2v-BERT": metrics.frechet_audio_distance(clips.w2v_bert, background.w2v_bert),
           "KLD": sum(metrics.paired_kl_divergence(reference.probabilities[name], clips.probabilities[name])
                      for name in ATTRIBUTES) / len(ATTRIBUTES),
           "MCC": metrics.mulan_cycle_consistency(prompt_embeddings, clips.mulan)}
    for name in ATTRIBUTES:
        row[f"{name} accuracy"] = (clips.probabilities[name].argmax(-1) == targets[name]).float().mean().item()
    return row


# ----------------------------------------------------------------------------------------------------
# 4. Memorisation


def longest_shared_runs(queries: torch.Tensor, corpus: torch.Tensor) -> torch.Tensor:
    """For each row of ``queries`` ``(n, frames)``, the length of the longest run of consecutive tokens that also
    occurs, in that order, in some row of ``corpus`` ``(m, frames')``: ``(n,)`` int64.

    A binary search on the length: a shared run of length ``L`` contains one of every shorter length, so "is
    some ``L``-gram of the query among the corpus's ``L``-grams" is monotone in ``L``.
    """
    queries, corpus = torch.as_tensor(queries), torch.as_tensor(corpus)
    if queries.dim() != 2 or corpus.dim() != 2 or len(corpus) == 0:
        raise ValueError(f"queries and corpus must be (n, frames) token grids, got {tuple(queries.shape)} and "
                         f"{tuple(corpus.shape)}")

    def grams(rows: torch.Tensor, length: int) -> list[set[bytes]]:
        windows = rows.unfold(1, length, 1).contiguous()                          # (rows, positions, length)
        return [{bytes(window.numpy().tobytes()) for window in row} for row in windows]

    corpus_grams: dict[int, set[bytes]] = {}

    def shared(query: torch.Tensor, length: int) -> bool:
        if length > min(query.shape[0], corpus.shape[1]):
            return False
        if length not in corpus_grams:
            corpus_grams[length] = set().union(*grams(corpus, length))
        return not grams(query[None], length)[0].isdisjoint(corpus_grams[length])

    runs = []
    for query in queries:
        low, high = 0, min(query.shape[0], corpus.shape[1])                         # shared(low) holds
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if shared(query, middle) else (low, middle - 1)
        runs.append(low)
    return torch.tensor(runs)


def memorisation(clips: ClipDescription, training: ClipDescription) -> dict[str, torch.Tensor]:
    """How close each clip comes to the training set: ``{"nearest similarity": (n,)`` cosine of its MuLan audio
    embedding with the nearest training clip's, ``"nearest": (n,)`` that clip's index, ``"shared run": (n,)``
    frames of the longest run of semantic tokens it shares with any training clip}``."""
    similarity, nearest = metrics.nearest_neighbours(clips.mulan, training.mulan, k=1)
    return {"nearest similarity": similarity[:, 0], "nearest": nearest[:, 0],
            "shared run": longest_shared_runs(clips.semantic_tokens, training.semantic_tokens)}


# ----------------------------------------------------------------------------------------------------
# 5. The table: the generated clips beside their baselines

#: The systems of :func:`evaluate_pipeline`'s table, in its order.
ROWS = ("real clips", "real clips through the codec", "generated", "generated, prompts shuffled", "noise",
        "retrieval: nearest training clip")


@dataclasses.dataclass
class Evaluation:
    """What :func:`evaluate_pipeline` measured: ``rows`` ``{system: score(...)}`` (:data:`ROWS`), ``memorisation``
    ``{"generated" | "real held-out clips": memorisation(...)}``, and the ``generated`` audio ``(n, samples)``."""

    rows: dict[str, dict[str, float]]
    memorisation: dict[str, dict[str, torch.Tensor]]
    generated: torch.Tensor

    def table(self) -> str:
        """The rows as a Markdown table (FAD and KLD: lower is better; the rest: higher)."""
        columns = list(next(iter(self.rows.values())))
        lines = ["| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name, row in self.rows.items():
            cells = [f"{row[column]:.0%}" if column.endswith("accuracy") else f"{row[column]:.3f}"
                     for column in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def memorisation_summary(self, frame_rate: float) -> str:
        """The memorisation check in three lines: generated clips against held-out real ones, which were never
        trained on and so show how close new music comes to the training set by itself."""
        generated, real = self.memorisation["generated"], self.memorisation["real held-out clips"]
        closest_real = real["nearest similarity"].max()
        closer = (generated["nearest similarity"] > closest_real).float().mean().item()
        lines = []
        for name, found in (("generated clips", generated), ("held-out real clips", real)):
            runs = found["shared run"].float() / frame_rate
            lines.append(f"{name}: nearest training clip at cosine {found['nearest similarity'].median():.3f} "
                         f"(median); longest run of semantic tokens shared with a training clip {runs.median():.2f} s "
                         f"(median; at most {runs.max():.2f} s)")
        lines.append(f"generated clips closer to a training clip than any held-out real clip comes: {closer:.0%}")
        return "\n".join(lines)


def _derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation with no fixed point: each clip is paired with another clip's prompt."""
    order = torch.randperm(n, generator=generator)
    shuffled = torch.empty(n, dtype=torch.long)
    shuffled[order] = order.roll(-1)
    return shuffled


def evaluate_pipeline(pipeline, judges: Judges, prompts: Sequence[str], attributes: Sequence[synth.SynthAttributes],
                      reference_audio: torch.Tensor, background_audio: torch.Tensor,
                      training: torch.Tensor | ClipDescription, seed: int = 0, batch_size: int = 16,
                      progress: bool = True) -> Evaluation:
    """Generate a clip for each prompt with ``pipeline`` (a :class:`~mlm_lessons.pipeline.MusicLM`) and score it
    beside the baselines of :data:`ROWS`.

    Args:
        prompts, attributes: held-out captions and the attributes of the real clip each describes.
        reference_audio: ``(n, samples)`` those real clips; the generated clips are as long.
        background_audio: ``(m, samples)`` other real held-out clips: FAD's reference set.
        training: the training clips ``(k, samples)``, or their :meth:`Judges.describe` (computing it is the
            slow part; keep it to score several pipelines): the retrieval baseline and the memorisation check.
    """
    if not len(prompts) == len(attributes) == len(reference_audio) >= 2:
        raise ValueError(f"need one attribute set and one reference clip per prompt, at least 2: got {len(prompts)} "
                         f"prompts, {len(attributes)} attribute sets, {len(reference_audio)} clips")
    generator = torch.Generator().manual_seed(seed)
    seconds = reference_audio.shape[-1] / pipeline.sample_rate
    generated = pipeline.generate(list(prompts), seconds, seed=seed, batch_size=batch_size, progress=progress)
    generated = generated[:, :reference_audio.shape[-1]]
    reconstructed = torch.cat([pipeline.codec.reconstruct(part) for part in reference_audio.split(batch_size)]).cpu()
    rms = reference_audio.pow(2).mean(dim=-1, keepdim=True).sqrt()
    noise = rms * torch.randn(reference_audio.shape, generator=generator)
    if not isinstance(training, ClipDescription):
        training = judges.describe(training)
    background = judges.describe(background_audio)
    reference = judges.describe(reference_audio)
    described_generated = judges.describe(generated)
    text = judges.mulan.embed_text(list(prompts)).cpu()
    targets = attribute_targets(attributes)
    shuffled = _derangement(len(prompts), generator)
    retrieved = (text @ training.mulan.T).argmax(dim=1)
    clips = {"real clips": reference, "real clips through the codec": judges.describe(reconstructed),
             "generated": described_generated, "generated, prompts shuffled": described_generated.select(shuffled),
             "noise": judges.describe(noise), "retrieval: nearest training clip": training.select(retrieved)}
    rows = {name: score(described, text, targets, reference, background) for name, described in clips.items()}
    return Evaluation(rows, {"generated": memorisation(described_generated, training),
                             "real held-out clips": memorisation(reference, training)}, generated)


def evaluate_on_synthcaps(pipeline, classifier: AttributeClassifier, folder: str | os.PathLike,
                          num_prompts: int = 64, seed: int = 0, progress: bool = True) -> Evaluation:
    """:func:`evaluate_pipeline` on a SynthCaps folder: the captions of its first ``num_prompts`` test clips as
    prompts (the clips as references), as many valid clips as FAD's background, every train clip as the
    training set."""
    from mlm_lessons.audio import load_audio
    from mlm_lessons.datasets import read_synthcaps_manifest

    records = read_synthcaps_manifest(folder)
    splits = {split: [record for record in records if record.split == split] for split in ("train", "valid", "test")}
    if min(len(splits["test"]), len(splits["valid"]), num_prompts) < 2 or not splits["train"]:
        raise ValueError(f"{folder} has {len(splits['test'])} test, {len(splits['valid'])} valid and "
                         f"{len(splits['train'])} train clips, and num_prompts is {num_prompts}: the evaluation needs "
                         "at least 2 prompts and 2 clips of each held-out split; make more clips (data --num-clips)")

    def audio(chosen):
        return torch.stack([load_audio(record.path, sample_rate=pipeline.sample_rate)[0] for record in chosen])

    test, valid = splits["test"][:num_prompts], splits["valid"][:num_prompts]
    judges = Judges(pipeline.mulan, pipeline.semantic_tokenizer, classifier)
    return evaluate_pipeline(pipeline, judges, [record.caption for record in test],
                             [record.attributes for record in test], audio(test), audio(valid),
                             audio(splits["train"]), seed=seed, progress=progress)
