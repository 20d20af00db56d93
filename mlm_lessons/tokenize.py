"""Semantic tokens: k-means clusters of one w2v-BERT layer.

MusicLM's semantic tokens are not learned by the language models; they are fixed before any of them
trains (Agostinelli et al., 2023, following AudioLM): run a trained w2v-BERT over the music, take the
embeddings of one layer (the 7th of its masked-prediction module), fit k-means with 1,024 clusters to them,
and from then on describe every 40 ms frame by the index of its nearest centroid. Lesson 06 builds this::

    audio (batch, samples) --w2v-BERT, layer L--> (batch, frames, d_model) --nearest centroid--> (batch, frames)

Why cluster at all, when the embeddings are already there? The semantic stage is a language model: it
needs a *vocabulary*. Clustering keeps what the layer separates well (what notes are playing, lesson 06
measures it) and drops the fine detail that varies within a cluster, which the acoustic tokens restore
later.

* :meth:`SemanticTokenizer.fit` embeds a set of clips and runs the package's k-means
  (:func:`mlm_lessons.quantize.kmeans`: greedy k-means++ seeding, Lloyd steps to convergence, assignment in
  chunks, on the vectors' device, so a GPU clusters millions of frames). ``tests/test_tokenize.py`` checks
  it against scikit-learn's ``KMeans`` (inertia within 1%).
* :meth:`SemanticTokenizer.semantic_tokens` maps audio to token ids.
* :meth:`SemanticTokenizer.save` / :meth:`SemanticTokenizer.load` keep the centroids *with* the encoder
  in one file: centroids are meaningless with any other encoder, or another layer of the same one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mlm_lessons.audio import as_tensor
from mlm_lessons.quantize import assign_to_centroids, kmeans
from mlm_lessons.train import half_state_dict, load_tagged_file, save_atomically
from mlm_lessons.w2v_bert import W2V_BERT_FORMAT, W2VBert

TOKENIZER_FORMAT = "mlm_lessons.semantic_tokenizer/1"


def seeding_trials(num_clusters: int) -> int:
    """Candidates per centroid for greedy k-means++ seeding: ``2 + ln K``, as scikit-learn draws."""
    return 2 + int(math.log(num_clusters))


@torch.no_grad()
def embed_clips(encoder: W2VBert, clips: Iterable, layer: int | None = None, batch_size: int = 16,
                progress: bool = False) -> list[torch.Tensor]:
    """One layer's embeddings of each clip: a list of ``(frames, d_model)`` float32 tensors on the CPU.

    Clips (``(samples,)`` each, at the encoder's rate) of equal length are embedded ``batch_size`` at a time;
    each is embedded alone, without padding, so a clip's embeddings do not depend on its batch.
    """
    clips = [as_tensor(clip) for clip in clips]
    if not clips:
        raise ValueError("no clips to embed")
    order = sorted(range(len(clips)), key=lambda index: clips[index].shape[-1])
    embedded: dict[int, torch.Tensor] = {}
    bar = tqdm(total=len(clips), desc="embedding", unit="clip", disable=not progress)
    start = 0
    while start < len(order):
        length = clips[order[start]].shape[-1]
        group = [index for index in order[start:start + batch_size] if clips[index].shape[-1] == length]
        vectors = encoder.embeddings(torch.stack([clips[index] for index in group]), layer)
        for index, clip_vectors in zip(group, vectors.float().cpu()):
            embedded[index] = clip_vectors
        start += len(group)
        bar.update(len(group))
    bar.close()
    return [embedded[index] for index in range(len(clips))]


class SemanticTokenizer(nn.Module):
    """A w2v-BERT, one of its layers and k-means centroids: audio in, semantic token ids out.

    Args:
        encoder: a trained :class:`~mlm_lessons.w2v_bert.W2VBert` (kept frozen, in eval mode).
        centroids: ``(num_clusters, d_model)``.
        layer: the encoder layer the centroids were fitted on.
    """

    def __init__(self, encoder: W2VBert, centroids: torch.Tensor, layer: int):
        super().__init__()
        layer = encoder._check_layer(layer)
        centroids = torch.as_tensor(centroids).float()
        if centroids.dim() != 2 or centroids.shape[1] != encoder.config.d_model or len(centroids) < 1:
            raise ValueError(f"centroids must be (num_clusters, {encoder.config.d_model}) for this encoder "
                             f"(d_model={encoder.config.d_model}), got shape {tuple(centroids.shape)}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.layer = layer
        self.register_buffer("centroids", centroids)

    @property
    def num_clusters(self) -> int:
        """Size of the semantic vocabulary."""
        return len(self.centroids)

    @property
    def frame_rate(self) -> int:
        """Tokens per second."""
        return self.encoder.frame_rate

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    @classmethod
    def fit(cls, encoder: W2VBert, clips: Iterable, num_clusters: int, layer: int | None = None, *,
            iterations: int = 100, tolerance: float = 1e-4, batch_size: int = 16, seed: int = 0,
            progress: bool = False) -> "SemanticTokenizer":
        """Embed ``clips`` with ``encoder`` at ``layer`` (default: its config's ``token_layer``) and fit
        ``num_clusters`` centroids by k-means (greedy k-means++, then Lloyd steps until the inertia falls by less than
        ``tolerance`` per step, at most ``iterations``), on the encoder's device.

        Raises:
            ValueError: fewer embedding frames than clusters (more clips, or fewer clusters, fix it).
        """
        layer = encoder._check_layer(encoder.config.token_layer if layer is None else layer)
        vectors = torch.cat(embed_clips(encoder, clips, layer, batch_size, progress))
        if num_clusters > len(vectors):
            raise ValueError(f"cannot fit {num_clusters} clusters to {len(vectors)} frames of embeddings; use "
                             f"at most {len(vectors)} clusters, or more (or longer) clips")
        device = encoder.mlm_head.weight.device
        generator = torch.Generator(device=device).manual_seed(seed)
        centroids, _ = kmeans(vectors.to(device), num_clusters, iterations=iterations, generator=generator,
                              tolerance=tolerance, seeding_trials=seeding_trials(num_clusters))
        return cls(encoder, centroids, layer)

    @torch.no_grad()
    def semantic_tokens(self, audio, sample_rate: int | None = None) -> torch.Tensor:
        """Audio ``(samples,)`` or ``(batch, samples)`` -> token ids ``(batch, frames)`` int64 in
        ``[0, num_clusters)``, ``frame_rate`` per second."""
        vectors = self.encoder.embeddings(audio, self.layer, sample_rate)          # (batch, frames, d_model)
        return self.tokens_of(vectors)

    def tokens_of(self, vectors: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(..., d_model)`` of this tokenizer's layer -> token ids ``(...)``."""
        if vectors.shape[-1] != self.centroids.shape[1]:
            raise ValueError(f"embeddings have {vectors.shape[-1]} dimensions but the centroids "
                             f"{self.centroids.shape[1]}")
        flat = vectors.reshape(-1, vectors.shape[-1])
        return assign_to_centroids(flat, self.centroids.to(flat.device))[0].reshape(vectors.shape[:-1])

    def forward(self, audio) -> torch.Tensor:
        return self.semantic_tokens(audio)

    def inertia(self, clips: Sequence) -> float:
        """Mean squared distance of the clips' embedding frames to their nearest centroid."""
        vectors = torch.cat(embed_clips(self.encoder, clips, self.layer))
        return float(assign_to_centroids(vectors, self.centroids.cpu())[1].mean())

    # -- files ---------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write encoder (float16 weights), layer and centroids (float32) to one file, atomically."""
        encoder = {"format": W2V_BERT_FORMAT, "config": self.encoder.config_dict(),
                   "model": half_state_dict(self.encoder, keep_float32=("quantizer.",))}
        save_atomically({"format": TOKENIZER_FORMAT, "encoder": encoder, "layer": self.layer,
                         "centroids": self.centroids.cpu()}, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SemanticTokenizer":
        """Read a file written by :meth:`save`."""
        payload = load_tagged_file(path, TOKENIZER_FORMAT, "semantic tokenizer", "semantic tokenizer",
                                   hint="; a w2v-BERT alone loads with W2VBert.load, then SemanticTokenizer.fit "
                                        "gives tokens")
        encoder = W2VBert.from_payload(payload["encoder"], source=f"semantic tokenizer {path}")
        return cls(encoder, payload["centroids"], payload["layer"])
