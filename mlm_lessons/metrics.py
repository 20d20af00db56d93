"""Numbers that say how good a reconstruction or a codebook is.

Lesson 05 measures its codec with three of them, and lesson 09 adds the paper's FAD, KLD and MCC:

* **SI-SNR** (scale-invariant signal-to-noise ratio, Le Roux et al. 2019), in dB. Project the
  estimate onto the reference, ``target = (<estimate, reference> / ||reference||^2) reference``; what is
  left, ``estimate - target``, is noise: ``10 log10(||target||^2 / ||noise||^2)``. Scaling the estimate
  does not change it; 0 dB means as much noise as signal. It rewards getting the *waveform* right,
  phase included, so a codec that sounds right with a shifted phase can still score low.
* **Multi-scale mel distance**: the mean absolute difference of log-mel spectrograms, averaged over
  several FFT sizes (short windows judge timing, long ones pitch). It ignores phase, as ears mostly do;
  it is the loss SoundStream's decoder is trained with and a better proxy for what a listener hears.
* **Codebook usage and perplexity**: of ``codebook_size`` codes, the fraction a batch of codes uses,
  and ``exp(entropy)`` of their empirical distribution, the number of equally likely codes that would
  have the same entropy. A collapsed codebook has perplexity near 1; a perfectly used one near
  ``codebook_size``.
* **Chroma agreement** (lesson 08): how much two clips play the same notes at the same times. A
  *chromagram* folds a spectrogram's frequencies onto the 12 pitch classes of the octave (C, C#, ...,
  B): frame ``t`` says how much of each pitch class sounds then, whatever the octave or the timbre.
  The agreement of two equally long clips is the mean over frames of the *correlation* of their chroma
  vectors (each centred on its mean over the 12 classes, then the cosine): 1 when the same pitch
  classes stand out at the same moments, about 0 for unrelated notes, and 0 for noise, whose chroma is
  flat (a plain cosine would give noise about 0.7 against any music). It ignores timbre, so it asks
  whether a generated clip kept a melody, not whether it sounds like the original.
* **FAD** (Fréchet audio distance, Kilgour et al. 2019; lesson 09): embed every clip of two sets with one
  pretrained audio model (the paper uses two, Trill and VGGish), fit a Gaussian to each set's embeddings
  and take the Fréchet distance between the two Gaussians,
  ``||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^{1/2})``: 0 for identical statistics, lower is better.
  It compares *sets*, not pairs: it asks whether the generated music as a whole sounds like the
  reference music, not whether a clip fits its caption. Its scale belongs to the embedder (Table 1:
  MusicLM scores 0.44 with Trill and 4.0 with VGGish), and sampling noise inflates it for small sets, so
  compare only numbers from the same embedder and the same number of clips.
* **KLD** (lesson 09): whether a generated clip has the *content* its caption asks for. An audio
  classifier predicts a distribution over its classes for the reference clip of a caption and for the
  clip generated from that caption; KLD is ``KL(p_reference || p_generated)``, averaged over captions.
  0 when the classifier hears the same classes in both, lower is better (1.01 for MusicLM in Table 1).
  This direction punishes a generated clip most for missing a class the reference clearly has.
* **MCC** (MuLan cycle consistency, lesson 09): the mean, over prompts, of the cosine similarity between
  the MuLan text embedding of a prompt and the MuLan audio embedding of the clip generated from it; in
  ``[-1, 1]``, higher is better (0.51 for MusicLM, 0.32 and 0.34 for the baselines of Table 1). MuLan
  places music near the texts that describe it, so no reference clip is needed. MusicLM is conditioned
  on MuLan itself, so MCC is not a neutral judge between it and systems that do not use MuLan.
* **Nearest neighbours** (memorisation, lesson 09): for each generated clip, the training clips whose
  embeddings have the highest cosine similarity to its own. A similarity near 1 flags a possible copy to
  listen to. The paper's memorisation analysis matches semantic and acoustic *tokens* against the
  training data instead; embeddings give the same kind of check for any model with an embedder.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy import linalg

from mlm_lessons.audio import AudioError, log_mel

MEL_SCALES = (256, 512, 1024, 2048)  # FFT sizes of the multi-scale mel distance (hop = n_fft / 4)


def _paired_audio(estimate: torch.Tensor, reference: torch.Tensor, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    estimate, reference = torch.as_tensor(estimate).float(), torch.as_tensor(reference).float()
    if estimate.shape != reference.shape:
        raise AudioError(f"{who}: estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} must "
                         "have the same shape; trim both to the shorter length first")
    if estimate.dim() not in (1, 2) or estimate.shape[-1] == 0:
        raise AudioError(f"{who} expects (time,) or (batch, time) audio, got shape {tuple(estimate.shape)}")
    if not (torch.isfinite(estimate).all() and torch.isfinite(reference).all()):
        raise AudioError(f"{who} got NaN or infinite samples")
    return estimate, reference


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB.

    Args:
        estimate, reference: ``(time,)`` or ``(batch, time)`` waveforms of the same shape. Both are made
            zero-mean first.

    Returns:
        ``()`` or ``(batch,)``: higher is better; +inf only for a perfect copy (capped by ``eps``).
    """
    estimate, reference = _paired_audio(estimate, reference, "si_snr")
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def multi_scale_mel_distance(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int,
                             scales: Sequence[int] = MEL_SCALES, n_mels: int = 64) -> torch.Tensor:
    """Mean absolute log-mel difference (natural log), averaged over FFT sizes ``scales``.

    Args:
        estimate, reference: ``(time,)`` or ``(batch, time)`` waveforms of the same shape.

    Returns:
        ``()`` or ``(batch,)``: 0 for identical audio; differentiable, so it doubles as a training loss.
    """
    estimate, reference = _paired_audio(estimate, reference, "multi_scale_mel_distance")
    if estimate.shape[-1] < max(scales):
        raise AudioError(f"multi_scale_mel_distance needs at least {max(scales)} samples (its longest FFT); "
                         f"got {estimate.shape[-1]}; pass longer clips or smaller scales")
    distances = []
    for n_fft in scales:
        settings = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)
        distances.append((log_mel(estimate, **settings) - log_mel(reference, **settings)).abs().mean((-2, -1)))
    return torch.stack(distances).mean(0)


def _code_counts(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    codes = torch.as_tensor(codes)
    if codes.dtype not in (torch.int32, torch.int64) or codes.numel() == 0:
        raise ValueError(f"codes must be a non-empty integer tensor, got {codes.dtype} of shape {tuple(codes.shape)}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}); got values from {int(codes.min())} to "
                         f"{int(codes.max())}")
    return torch.bincount(codes.reshape(-1), minlength=codebook_size).float()


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the ``codebook_size`` codes that occur at least once in ``codes`` (any shape)."""
    return (_code_counts(codes, codebook_size) > 0).float().mean().item()


def codebook_perplexity(codes: torch.Tensor, codebook_size: int) -> float:
    """``exp(entropy)`` of the codes' empirical distribution: 1 (one code) to ``codebook_size`` (uniform)."""
    probabilities = _code_counts(codes, codebook_size)
    probabilities = probabilities / probabilities.sum()
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum()
    return entropy.exp().item()


# ----------------------------------------------------------------------------------------------------
# Chroma (lesson 08)

CHROMA_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def chroma(audio: torch.Tensor, sample_rate: int, n_fft: int = 2048, hop_length: int = 512,
           lowest: float = 100.0, highest: float = 4000.0) -> torch.Tensor:
    """Chromagram: ``(time,)`` or ``(batch, time)`` audio -> ``(batch, frames, 12)``, each frame's STFT
    magnitudes between ``lowest`` and ``highest`` Hz averaged over the bins of each pitch class (the class
    of the nearest equal-tempered note; index 0 = C, 9 = A at 440 Hz), then scaled to unit length
    (silent frames stay 0). Averaging rather than summing keeps white noise flat, though the classes
    cover different numbers of bins.

    ``n_fft`` = 2048 at 16 kHz resolves 7.8 Hz, under a semitone above about 130 Hz; below ``lowest``
    bins span several semitones and are left out.
    """
    audio = torch.as_tensor(audio).float()
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() != 2 or audio.shape[-1] < n_fft:
        raise AudioError(f"chroma expects (time,) or (batch, time) audio of at least n_fft={n_fft} samples, got "
                         f"shape {tuple(audio.shape)}")
    if not 0 < lowest < highest <= sample_rate / 2:
        raise AudioError(f"chroma needs 0 < lowest < highest <= sample_rate / 2, got {lowest}, {highest} at "
                         f"{sample_rate} Hz")
    spectrum = torch.stft(audio, n_fft, hop_length, window=torch.hann_window(n_fft, device=audio.device),
                          return_complex=True).abs()                                  # (batch, bins, frames)
    frequencies = torch.arange(spectrum.shape[1], device=audio.device) * sample_rate / n_fft
    used = (frequencies >= lowest) & (frequencies <= highest)
    midi = 69 + 12 * torch.log2(frequencies[used] / 440.0)
    pitch_class = torch.round(midi).long() % 12
    folding = torch.zeros(int(used.sum()), 12, device=audio.device)
    folding[torch.arange(len(pitch_class)), pitch_class] = 1.0                      # (used bins, 12)
    folding = folding / folding.sum(dim=0)      # a mean per class: white noise has a flat chroma, as it should
    classes = spectrum[:, used].transpose(1, 2) @ folding                           # (batch, frames, 12)
    return classes / classes.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def chroma_agreement(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean over frames of the correlation between the chroma vectors of two equally long clips: ``()`` or
    ``(batch,)`` in ``[-1, 1]``, 1 for the same pitch classes at the same times, 0 against a flat chroma
    (noise, silence; module docstring)."""
    estimate, reference = _paired_audio(estimate, reference, "chroma_agreement")

    def centred(classes):                                        # (batch, frames, 12), unit length or 0
        classes = classes - classes.mean(dim=-1, keepdim=True)
        return classes / classes.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    correlation = (centred(chroma(estimate, sample_rate)) * centred(chroma(reference, sample_rate))).sum(dim=-1)
    agreement = correlation.mean(dim=-1)
    return agreement[0] if estimate.dim() == 1 else agreement


# ----------------------------------------------------------------------------------------------------
# Distributions of clips (lesson 09)

SQRTM_OFFSET = 1e-6  # added to both covariances, times their mean variance, when (C_a C_b)^{1/2} fails


def _embedding_matrix(embeddings: torch.Tensor, who: str, name: str = "embeddings") -> torch.Tensor:
    embeddings = torch.as_tensor(embeddings)
    if embeddings.dim() != 2 or 0 in embeddings.shape:
        raise ValueError(f"{who}: {name} must be a non-empty (n, dim) matrix, one row per clip, got shape "
                         f"{tuple(embeddings.shape)}; stack the clips' rows into one tensor")
    if not embeddings.is_floating_point():
        embeddings = embeddings.float()
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{who}: {name} contain NaN or infinite values; check the embedder's input audio")
    return embeddings


def gaussian_statistics(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of a set of embeddings, the Gaussian that FAD fits to a set of clips.

    Args:
        embeddings: ``(n, dim)``, one row per clip, ``n >= 2``. With ``n <= dim`` the covariance is singular
            (rank at most ``n - 1``); :func:`frechet_distance` copes, but the estimate is poor.

    Returns:
        ``mean`` ``(dim,)`` and ``covariance`` ``(dim, dim)``, both float64: sums over 10^4 clips in float32
        would lose digits that the matrix square root of :func:`frechet_distance` amplifies.
    """
    embeddings = _embedding_matrix(embeddings, "gaussian_statistics").double()
    if embeddings.shape[0] < 2:
        raise ValueError(f"gaussian_statistics needs at least 2 embeddings to estimate a covariance, got shape "
                         f"{tuple(embeddings.shape)}; pass (n, dim) with n >= 2 (FAD needs thousands)")
    mean = embeddings.mean(dim=0)
    centred = embeddings - mean
    covariance = centred.T @ centred / (embeddings.shape[0] - 1)       # n - 1: unbiased
    return mean, covariance


def _float64_array(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"frechet_distance: {name} contains NaN or infinite values")
    return array


def _covariance_product_root(cov_a: np.ndarray, cov_b: np.ndarray) -> np.ndarray:
    """``(C_a C_b)^{1/2}`` as a real matrix, retrying with a small ridge where the product is near-singular."""
    dim = cov_a.shape[0]
    for attempt in range(2):
        if attempt == 1:
            # The product of two positive semi-definite matrices has real eigenvalues >= 0, but when some are
            # (near) 0, as with fewer clips than dimensions, sqrtm can return inf or NaN. A ridge proportional
            # to the mean variance makes both matrices definite and moves the distance only by about that much.
            scale = max(np.trace(cov_a) / dim, np.trace(cov_b) / dim, np.finfo(np.float64).tiny)
            ridge = SQRTM_OFFSET * scale * np.eye(dim)
            cov_a, cov_b = cov_a + ridge, cov_b + ridge
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)   # "singular matrix": handled right here
            root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():
            continue
        root = np.asarray(root)
        if not np.iscomplexobj(root):
            return root
        # Rounding turns eigenvalues that should be 0 into tiny negatives, whose roots are tiny imaginary
        # numbers; a large imaginary part means a covariance was not positive semi-definite.
        if np.abs(root.imag).max() <= 1e-3 * max(np.abs(root.real).max(), 1e-12):
            return root.real
    if not np.isfinite(root).all():
        raise ValueError("frechet_distance could not take the square root of C_a C_b even after adding a ridge; "
                         "check that the covariances come from gaussian_statistics")
    raise ValueError(f"frechet_distance: (C_a C_b)^(1/2) has a large imaginary part ({np.abs(root.imag).max():.3g}), "
                     "so a covariance is not positive semi-definite; pass covariances from gaussian_statistics")


def frechet_distance(mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """Fréchet (2-Wasserstein squared) distance between the Gaussians ``N(mean_a, cov_a)`` and ``N(mean_b, cov_b)``:
    ``||mean_a - mean_b||^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^{1/2})``.

    Args:
        mean_a, mean_b: ``(dim,)``.
        cov_a, cov_b: ``(dim, dim)`` symmetric positive semi-definite, as :func:`gaussian_statistics` returns.
            Tensors or NumPy arrays; the arithmetic is float64 on the CPU.

    Returns:
        A float >= 0; 0 for identical statistics. Symmetric in ``a`` and ``b``.
    """
    mean_a, cov_a = _float64_array(mean_a, "mean_a"), _float64_array(cov_a, "cov_a")
    mean_b, cov_b = _float64_array(mean_b, "mean_b"), _float64_array(cov_b, "cov_b")
    if mean_a.ndim != 1 or mean_a.shape != mean_b.shape:
        raise ValueError(f"frechet_distance needs two (dim,) means of the same width, got {mean_a.shape} and "
                         f"{mean_b.shape}")
    dim = mean_a.shape[0]
    if cov_a.shape != (dim, dim) or cov_b.shape != (dim, dim):
        raise ValueError(f"frechet_distance: with means of shape {mean_a.shape} the covariances must be "
                         f"{(dim, dim)}, got {cov_a.shape} and {cov_b.shape}")
    mean_term = float(np.sum((mean_a - mean_b) ** 2))
    root = _covariance_product_root(cov_a, cov_b)
    distance = mean_term + float(np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))
    # Identical or nearly identical statistics give a difference of large, nearly equal traces, which rounding
    # can push a little below 0; a distance cannot be negative, so such a value means 0.
    tolerance = 1e-6 * (mean_term + np.trace(cov_a) + np.trace(cov_b)) + 1e-12
    if distance < -tolerance:
        raise ValueError(f"frechet_distance came out negative ({distance:.3g}), so a covariance is not positive "
                         "semi-definite; pass covariances from gaussian_statistics")
    return max(distance, 0.0)


def frechet_audio_distance(embeddings_a: torch.Tensor, embeddings_b: torch.Tensor) -> float:
    """FAD (Kilgour et al. 2019) between two sets of clip embeddings: :func:`gaussian_statistics` of each,
    then :func:`frechet_distance`. Lower is better; 0 only for identical statistics.

    Args:
        embeddings_a, embeddings_b: ``(n_a, dim)`` and ``(n_b, dim)``, one row per clip, from the *same*
            embedding model (e.g. generated clips and reference clips).

    Returns:
        A float >= 0.

    FAD is biased upward for small ``n``: the sampling noise in each set's mean and covariance adds a
    positive amount, shrinking roughly like ``dim / n``, even between two samples of one distribution. It
    is therefore only comparable between sets of the same size embedded by the same model; a score on 200
    clips says little about one on 5,000, and a Trill FAD nothing about a VGGish FAD.
    """
    embeddings_a = _embedding_matrix(embeddings_a, "frechet_audio_distance", "embeddings_a")
    embeddings_b = _embedding_matrix(embeddings_b, "frechet_audio_distance", "embeddings_b")
    if embeddings_a.shape[1] != embeddings_b.shape[1]:
        raise ValueError(f"frechet_audio_distance: embeddings of width {embeddings_a.shape[1]} and "
                         f"{embeddings_b.shape[1]} (shapes {tuple(embeddings_a.shape)} and "
                         f"{tuple(embeddings_b.shape)}) cannot be compared; embed both sets with the same model")
    return frechet_distance(*gaussian_statistics(embeddings_a), *gaussian_statistics(embeddings_b))


def _probability_rows(probabilities: torch.Tensor, name: str) -> torch.Tensor:
    probabilities = _embedding_matrix(probabilities, "paired_kl_divergence", name).double()
    sums = probabilities.sum(dim=-1)
    if (probabilities < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ValueError(f"paired_kl_divergence: the rows of {name} must be probabilities (>= 0, summing to 1), "
                         f"got row sums from {sums.min().item():.4g} to {sums.max().item():.4g} and a minimum of "
                         f"{probabilities.min().item():.4g}; pass softmax outputs, not logits or sigmoid scores")
    return probabilities


def paired_kl_divergence(reference_probs: torch.Tensor, generated_probs: torch.Tensor, eps: float = 1e-6) -> float:
    """The paper's KLD: ``KL(p_reference || p_generated)`` for each caption, averaged over captions (nats).

    Args:
        reference_probs, generated_probs: ``(n, classes)``, row ``i`` the class distribution a classifier
            predicts for the reference clip of caption ``i`` and for the clip generated from caption ``i``.
            Each row must sum to 1 (within 1e-3).
        eps: added to every probability before renormalising, so that a class the generated clip
            misses entirely costs a large but finite amount instead of infinity.

    Returns:
        A float >= 0; 0 when every pair has the same distribution.
    """
    reference = _probability_rows(reference_probs, "reference_probs")
    generated = _probability_rows(generated_probs, "generated_probs")
    if reference.shape != generated.shape:
        raise ValueError(f"paired_kl_divergence: reference_probs {tuple(reference.shape)} and generated_probs "
                         f"{tuple(generated.shape)} must have the same shape: one row per caption, same classes")
    if eps < 0:
        raise ValueError(f"paired_kl_divergence: eps must be >= 0, got {eps}")
    reference = (reference + eps) / (reference + eps).sum(dim=-1, keepdim=True)
    generated = (generated + eps) / (generated + eps).sum(dim=-1, keepdim=True)
    # 0 log 0 = 0: a class the reference never has contributes nothing, whatever the generated clip does.
    terms = torch.where(reference > 0, reference * (reference.log() - generated.log()), torch.zeros_like(reference))
    return terms.sum(dim=-1).mean().item()


def _unit_rows(embeddings: torch.Tensor, who: str, name: str) -> torch.Tensor:
    embeddings = _embedding_matrix(embeddings, who, name)
    norms = embeddings.norm(dim=-1, keepdim=True)
    if (norms == 0).any():
        raise ValueError(f"{who}: row {int((norms[:, 0] == 0).nonzero()[0])} of {name} is all zeros and has no "
                         "direction, so no cosine similarity; drop it or check the embedder")
    return embeddings / norms


def mulan_cycle_consistency(text_embeddings: torch.Tensor, audio_embeddings: torch.Tensor) -> float:
    """MCC: the mean over pairs of the cosine similarity between ``text_embeddings[i]`` (a prompt) and
    ``audio_embeddings[i]`` (the clip generated from it).

    Args:
        text_embeddings, audio_embeddings: ``(n, dim)`` in one joint space (MuLan's is 128-d); any length,
            each row is scaled to unit length here.

    Returns:
        A float in ``[-1, 1]``; higher is better.
    """
    text = _unit_rows(text_embeddings, "mulan_cycle_consistency", "text_embeddings").double()
    audio = _unit_rows(audio_embeddings, "mulan_cycle_consistency", "audio_embeddings").double()
    if text.shape != audio.shape:
        raise ValueError(f"mulan_cycle_consistency: text_embeddings {tuple(text.shape)} and audio_embeddings "
                         f"{tuple(audio.shape)} must have the same shape: row i of each describes pair i")
    return (text * audio).sum(dim=-1).mean().item()


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, k: int = 1,
                       chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` keys most cosine-similar to each query, e.g. each generated clip's nearest training clips.

    Args:
        queries: ``(n, dim)``; keys: ``(m, dim)``, ``m >= k``. Any row length; zero rows are an error.
        k: neighbours per query, most similar first.
        chunk: queries compared at a time. The similarity matrix is built ``chunk`` rows at a time, so the
            memory peak is a ``(chunk, m)`` block (400 MB in float32 for 1024 x 10^5) rather than the whole
            ``(n, m)`` matrix (4 GB for 10^4 x 10^5).

    Returns:
        ``similarities`` ``(n, k)`` in ``[-1, 1]``, descending along each row, and ``indices`` ``(n, k)``
        (int64) into ``keys``.
    """
    queries = _unit_rows(queries, "nearest_neighbours", "queries")
    keys = _unit_rows(keys, "nearest_neighbours", "keys").to(queries.dtype)
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"nearest_neighbours: queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must "
                         "have the same width; embed both with the same model")
    if not 1 <= k <= keys.shape[0]:
        raise ValueError(f"nearest_neighbours: k must be between 1 and the number of keys ({keys.shape[0]}), "
                         f"got k={k}")
    if chunk < 1:
        raise ValueError(f"nearest_neighbours: chunk must be >= 1, got {chunk}")
    similarities, indices = [], []
    for start in range(0, queries.shape[0], chunk):
        block = queries[start:start + chunk] @ keys.T                              # (chunk, m)
        best = block.topk(k, dim=-1)
        similarities.append(best.values)
        indices.append(best.indices)
    return torch.cat(similarities), torch.cat(indices)
