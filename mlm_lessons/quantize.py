"""Vector quantisation: how SoundStream turns each frame of an encoder's output into a few integers.

Lesson 05 builds this file. A *codebook* is a table of ``codebook_size`` vectors (the *codes*); quantising
a vector means replacing it by the nearest code and remembering only that code's index. The acoustic
tokens of MusicLM are exactly these indices. Read top to bottom:

1. **Nearest-code lookup** (:func:`squared_distances`). The code of ``x`` is
   ``argmin_k ||x - c_k||^2 = argmin_k ||x||^2 - 2 x.c_k + ||c_k||^2``: one matrix product for a whole
   batch. Always in float32 and outside autocast: in bfloat16 (8 bits of mantissa) the three large terms
   nearly cancel, and the "nearest" code would often be the wrong one.
2. **Straight-through estimator** (van den Oord et al., 2017, VQ-VAE). ``argmin`` has no gradient, so the
   decoder's gradient could never reach the encoder. The trick: output ``sg(q) + (x - sg(x))``, where
   ``sg`` is stop-gradient (``.detach()``). Its value is exactly the code ``q``; its gradient with respect
   to ``x`` is the identity, as if quantisation were not there.
3. **Codebook and commitment losses.** The codebook loss ``||sg(x) - q||^2`` pulls each used code towards
   the vectors it stands for; the commitment loss ``beta ||x - sg(q)||^2`` pulls the encoder's vectors
   towards their codes, so that they do not drift away from the codebook faster than it can follow.
4. **EMA codebook updates** (VQ-VAE, appendix A.1). Instead of learning the codebook by gradient descent,
   keep running averages of how many vectors each code won, ``N_k``, and of their sum, ``m_k``::

       N_k <- decay N_k + (1 - decay) n_k          n_k: vectors of this batch whose nearest code is k
       m_k <- decay m_k + (1 - decay) sum x        the sum over those vectors
       c_k  = m_k / N~_k,   N~_k = (N_k + eps) / (N + K eps) N,   N = sum_k N_k

   so each code follows the running mean of its vectors, like an online k-means. ``N~`` is ``N`` after
   Laplace smoothing: it never reaches zero, so a code that wins nothing for a while is not divided by
   zero (it slowly shrinks instead). The codebook loss is then dropped (only the commitment loss is
   left), and the codebook is a buffer the optimiser never sees. Faster and steadier than gradients.
5. **k-means initialisation** (:func:`kmeans`). A random codebook sits far from the encoder's vectors:
   a few codes win everything and the rest are never used ("dead") from the start. So the first
   training batch is clustered (k-means++ seeding, then ``kmeans_iterations`` Lloyd steps) and the
   codebook starts at its centroids. Better still (``ResidualVQ(warmup_steps=...)``): let the codec
   train as a plain autoencoder for a while, the vectors passing through unquantised, then cluster the
   vectors of its last steps, level by level: the codes start where a trained encoder puts its vectors,
   not where a random one did.
6. **Dead-code replacement.** Codes still die during training, as the encoder's vectors move. A code
   that won no vector for ``dead_code_steps`` consecutive training steps is re-seeded from a random
   vector ``v`` of the current batch: it is put a tenth of the way from ``v``'s nearest code to ``v``.
   So it *splits* a code in use (busy codes, owning many vectors, are the likeliest to be split) and
   takes over the vectors on ``v``'s side of it. Why not on ``v`` itself? In many dimensions a single
   sample is about twice as far (in squared distance) from the other samples of its cluster as their
   mean is: a code placed on a sample wins almost nothing on the next batch, and dies again.
7. **Residual VQ** (:class:`ResidualVQ`, Zeghidour et al., 2021, SoundStream). One codebook of 1024 codes
   is 10 bits per frame: far too coarse. ``L`` levels each quantise what the previous ones left over::

       r_0 = x,    q_l = VQ_l(r_l),    r_{l+1} = r_l - q_l,    output = q_0 + ... + q_{L-1}

   ``L x 10`` bits per frame from ``L x 1024`` stored codes (one flat codebook would need ``1024^L``).
   The levels are coarse to fine: the first carries most of the signal, each next one a finer correction.
8. **Quantiser dropout** (SoundStream). During training each example uses a random number of levels
   ``n`` in ``1..L``; levels ``>= n`` add nothing to its output or its loss. One codec then works at
   every bitrate: decode with the first ``n`` levels' codes only. (``quantizer_dropout`` is the share of
   examples that draw; DAC lets half of them.)
9. **Factorised, normalised codes** (:class:`FactorisedResidualVQ`, Kumar et al., 2023, DAC). Each level
   projects its residual to a few dimensions, looks up the unit-length code at the smallest angle, and
   maps it back up; the codebook and both projections learn by gradient.

Several processes (DDP, :mod:`mlm_lessons.train`): the EMA statistics are summed over ranks, and k-means
and dead-code replacement draw from the vectors of all ranks, with the same random generator everywhere,
so ``P`` processes that each see ``1/P`` of a global batch keep the codebooks of one process that sees all
of it (up to the rounding of sums added in another order). All randomness comes from a generator seeded
by ``(seed, training step)``: runs repeat.

Shapes: ``x`` is ``(batch, frames, dim)``; codes are ``(batch, frames)`` int64 for one quantiser and
``(batch, levels, frames)`` for a residual one (level-major, like the acoustic tokens of the later
stages).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mlm_lessons.metrics import codebook_perplexity, codebook_usage

# ----------------------------------------------------------------------------------------------------
# 1. Nearest code


def squared_distances(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``||x - c||^2`` for every vector and code, as ``||x||^2 - 2 x.c + ||c||^2``, in float32.

    Args:
        vectors: ``(n, dim)``, any float dtype.
        codebook: ``(codebook_size, dim)``.

    Returns:
        ``(n, codebook_size)`` float32. May be a hair below zero where a vector equals a code (rounding).
    """
    with torch.autocast(vectors.device.type, enabled=False):  # bfloat16 would pick wrong codes
        vectors, codebook = vectors.float(), codebook.float()
        distances = vectors @ codebook.T                                                   # x.c, (n, K)
        return distances.mul_(-2.0).add_(codebook.pow(2).sum(-1)).add_(vectors.pow(2).sum(-1, keepdim=True))


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``(n, dim), (codebook_size, dim) -> (n,)`` int64: the index of each vector's nearest code."""
    return squared_distances(vectors, codebook).min(dim=-1).indices  # argmin; min's indices are faster on CPU


# ----------------------------------------------------------------------------------------------------
# 2. k-means, to start the codebook where the data is

KMEANS_SEEDING_POOL = 4096  # up to this many vectors, seeding precomputes all their distances (64 MiB)
KMEANS_CHUNK = 16_384       # vectors assigned per matrix product: bounds memory at chunk x K floats


def assign_to_centroids(vectors: torch.Tensor, centroids: torch.Tensor, chunk_size: int = KMEANS_CHUNK
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each vector, ``chunk_size`` vectors at a time.

    Args:
        vectors: ``(n, dim)``; centroids: ``(K, dim)``; same device (CPU or GPU).

    Returns:
        ``(assignment, squared_distance)``: ``(n,)`` int64 and ``(n,)`` float32 (clamped at 0). The sum of
        the distances is the k-means *inertia*, the quantity Lloyd steps lower.
    """
    assignments, distances = [], []
    for chunk in vectors.split(chunk_size):
        nearest = squared_distances(chunk, centroids).min(dim=-1)
        assignments.append(nearest.indices)
        distances.append(nearest.values.clamp_min_(0.0))
    return torch.cat(assignments), torch.cat(distances)


def kmeans(vectors: torch.Tensor, num_clusters: int, iterations: int = 10,
           generator: torch.Generator | None = None, tolerance: float = 0.0,
           chunk_size: int = KMEANS_CHUNK, seeding_trials: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007), then up to ``iterations`` Lloyd steps.

    Seeding picks the first centroid uniformly among the vectors and each next one with probability
    proportional to its squared distance from the nearest centroid so far, so the centroids spread over
    all clusters instead of piling into the densest one. Since centroids are picked *among the vectors*,
    every distance it needs is an entry of the vectors' own ``(n, n)`` distance matrix: up to
    ``KMEANS_SEEDING_POOL`` vectors it is computed once, with one matrix product, and each of the ``K`` draws
    only reads one row (cheap, which matters for 1024 draws in a row); beyond, each draw computes its row
    (the matrix would not fit in memory). *Greedy* k-means++ (``seeding_trials > 1``) draws several
    candidates per centroid and keeps the one that lowers the seeding inertia most: better starts, fewer
    bad local minima (scikit-learn's ``KMeans`` does this with ``2 + ln K`` trials).

    A Lloyd step assigns every vector to its nearest centroid (:func:`assign_to_centroids`, in chunks, so
    millions of vectors fit in memory) and moves each centroid to the mean of its vectors (an empty
    cluster keeps its centroid); it never increases the inertia (the sum of squared distances to the
    nearest centroids). Everything runs on ``vectors.device``: a GPU clusters a large corpus quickly.

    With fewer (distinct) vectors than clusters, every vector becomes a centroid and the remaining
    centroids repeat vectors drawn uniformly, i.e. the codebook is sampled *with replacement*; the
    repeats win nothing and are left for dead-code replacement to re-seed.

    Args:
        vectors: ``(n, dim)``, any float dtype, ``n >= 1``.
        num_clusters: ``K``.
        iterations: at most this many Lloyd steps after seeding (0: seeding only).
        generator: on ``vectors.device``; ``None`` uses torch's global one.
        tolerance: stop early once a step lowers the inertia by less than this fraction (0: never stop
            early; ``1e-4`` is a good value for fitting semantic tokens to convergence).
        chunk_size: vectors per assignment matrix product.
        seeding_trials: candidates drawn per centroid when seeding (1: plain k-means++).

    Returns:
        ``(centroids, counts)``: ``(K, dim)`` float32, and ``(K,)`` float32, the number of vectors whose
        nearest centroid each one is.
    """
    vectors = vectors.detach().float()
    if vectors.dim() != 2 or vectors.shape[0] == 0:
        raise ValueError(f"kmeans expects (n, dim) vectors with n >= 1, got shape {tuple(vectors.shape)}")
    if num_clusters < 1 or iterations < 0 or tolerance < 0 or seeding_trials < 1:
        raise ValueError(f"num_clusters and seeding_trials must be >= 1 and iterations, tolerance >= 0; got "
                         f"{num_clusters}, {seeding_trials}, {iterations}, {tolerance}")
    device = vectors.device
    if len(vectors) <= KMEANS_SEEDING_POOL:        # every distance seeding needs, in one matrix product
        pool_distances = squared_distances(vectors, vectors).clamp_min_(0.0)             # (n, n)
        distances_to = pool_distances.__getitem__
    else:                                          # too many for an (n, n) matrix: compute rows when drawn
        def distances_to(picked: torch.Tensor) -> torch.Tensor:
            rows = squared_distances(vectors[picked.reshape(-1)], vectors).clamp_min_(0.0)
            return rows.reshape(*picked.shape, len(vectors))
    picks = [torch.randint(len(vectors), (), generator=generator, device=device)]
    nearest_distance = distances_to(picks[0])                                            # (n,)
    for _ in range(1, num_clusters):
        # Draw with probability proportional to nearest_distance by inverting its cumulative sum. Once every
        # distinct vector is a centroid all distances are 0: the floor then makes the draw uniform.
        cumulative = nearest_distance.clamp_min(1e-30).cumsum(0)
        shape = () if seeding_trials == 1 else (seeding_trials,)
        thresholds = torch.rand(shape, generator=generator, device=device) * cumulative[-1]
        candidates = torch.searchsorted(cumulative, thresholds, right=True).clamp_max_(len(vectors) - 1)
        candidate_distances = distances_to(candidates)                                   # (n,) or (trials, n)
        if seeding_trials > 1:  # keep the candidate that leaves the smallest total distance
            best = torch.minimum(nearest_distance, candidate_distances).sum(dim=1).argmin()
            candidates, candidate_distances = candidates[best], candidate_distances[best]
        picks.append(candidates)
        nearest_distance = torch.minimum(nearest_distance, candidate_distances)
    centroids = vectors[torch.stack(picks)]                                              # (K, dim)
    previous_inertia = None
    for _ in range(iterations):
        assignment, distance = assign_to_centroids(vectors, centroids, chunk_size)
        inertia = float(distance.sum())
        if previous_inertia is not None and previous_inertia - inertia <= tolerance * previous_inertia:
            break
        previous_inertia = inertia
        sizes = torch.bincount(assignment, minlength=num_clusters).float()
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        centroids = torch.where(sizes[:, None] > 0, sums / sizes.clamp_min(1.0)[:, None], centroids)
    counts = torch.bincount(assign_to_centroids(vectors, centroids, chunk_size)[0], minlength=num_clusters)
    return centroids, counts.float()


# ----------------------------------------------------------------------------------------------------
# 3. Several processes: the statistics of one global batch


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all DDP ranks, in place (a no-op in a single process)."""
    if _world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def _rows_of_all_ranks(vectors: torch.Tensor) -> torch.Tensor:
    """``(n_rank, dim) -> (sum of n over ranks, dim)``: every rank's rows, rank 0's first.

    ``all_gather`` needs tensors of one shape, so ranks with fewer rows (a last, smaller batch) pad theirs
    and the padding is cut off again.
    """
    world_size = _world_size()
    if world_size == 1:
        return vectors
    sizes = [torch.zeros((), dtype=torch.int64, device=vectors.device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor(vectors.shape[0], device=vectors.device))
    sizes = [int(size) for size in sizes]
    padded = F.pad(vectors, (0, 0, 0, max(sizes) - vectors.shape[0])).contiguous()
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([rows[:size] for rows, size in zip(gathered, sizes)])


def _step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """A generator that depends only on ``(seed, step)``: the same on every rank and on every rerun."""
    return torch.Generator(device=device).manual_seed(seed * 2**32 + step)


# ----------------------------------------------------------------------------------------------------
# 4. Input checks, with messages that say what to fix; loss and logging helpers


def _check_vectors(x: torch.Tensor, dim: int, who: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{who} expects a float tensor x of shape (batch, frames, {dim}), got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"{who} expects x of shape (batch, frames, {dim}), got {tuple(x.shape)}; one vector "
                         f"per example is (batch, 1, {dim}), a channels-first (batch, {dim}, frames) encoder "
                         "output needs .transpose(1, 2)")
    if x.shape[0] * x.shape[1] == 0:
        raise ValueError(f"{who} got no vectors to quantise: x has shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{who} got NaN or infinite values in x: the encoder has diverged; lower the learning "
                         "rate, clip gradients, or look for a bfloat16 overflow before the quantiser")


def _check_codes(codes: torch.Tensor, codebook_size: int, shape: str, rank: int, who: str) -> None:
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex() \
            or codes.dtype == torch.bool:
        raise TypeError(f"{who} expects integer codes (int64) of shape {shape}, got "
                        f"{getattr(codes, 'dtype', type(codes).__name__)}; convert indices with .long()")
    if codes.dim() != rank:
        raise ValueError(f"{who} expects codes of shape {shape}, got {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"{who}: codes must lie in [0, {codebook_size}) for a codebook of {codebook_size} "
                         f"codes, got values from {int(codes.min())} to {int(codes.max())}")


def _mean_per_example(squared_errors: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``(batch, frames, dim)`` errors; ``keep`` (batch,) 0/1 zeroes dropped examples' share."""
    if keep is None:
        return squared_errors.mean()
    return (squared_errors.mean((1, 2)) * keep).mean()


def _level_use(codes: torch.Tensor, codebook_size: int, level: int) -> dict[str, float]:
    """``perplexity/l`` and ``usage/l``: how evenly and how widely level ``l``'s ``codes`` use its codebook."""
    return {f"perplexity/{level}": codebook_perplexity(codes, codebook_size),
            f"usage/{level}": codebook_usage(codes, codebook_size)}


def _scalar_tensors(metrics: dict[str, float | torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Numbers to log, as detached float32 scalars on ``device``."""
    return {name: torch.as_tensor(value, dtype=torch.float32, device=device).detach()
            for name, value in metrics.items()}


# ----------------------------------------------------------------------------------------------------
# 5. One quantiser

DEAD_CODE_SPLIT = 0.1  # a re-seeded code starts this fraction of the way from a code in use to one of its vectors


@dataclass
class QuantizerOutput:
    """What a quantiser's ``forward`` returns.

    Attributes:
        quantized: ``(batch, frames, dim)`` in ``x``'s dtype: the codes' vectors in value, the identity to
            ``x`` in gradient (straight-through).
        codes: ``(batch, frames)`` int64, or ``(batch, levels, frames)`` for :class:`ResidualVQ`.
        loss: scalar float32 to add to the training loss: ``commitment_weight * commitment`` (plus the
            codebook loss when ``ema=False``); summed over levels for :class:`ResidualVQ`.
        metrics: scalar detached tensors for logging (see each class).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class VectorQuantizer(nn.Module):
    """One codebook: each ``dim``-vector becomes the index of its nearest code.

    Only ``forward`` in training mode learns (k-means on its first call, then one EMA update and
    dead-code check per call); ``encode``, ``decode`` and eval mode never change the codebook.

    Args:
        dim: length of the vectors.
        codebook_size: number of codes ``K``.
        ema: learn the codebook by exponential moving averages (a buffer); ``False`` makes it an
            ``nn.Parameter`` learnt by the optimiser through the codebook loss.
        decay: EMA decay ``gamma``; each step keeps ``decay`` of the old statistics.
        commitment_weight: ``beta`` of the commitment loss.
        kmeans_init: start the codebook at the k-means centroids of the first training batch.
        kmeans_iterations: Lloyd steps of that k-means.
        dead_code_steps: re-seed a code unused for this many consecutive training steps (0: never), next to
            the code of a random vector of the batch (module docstring, item 6).
        epsilon: Laplace smoothing of the EMA cluster sizes.
        seed: seeds the initial random codebook and, with the step, all later randomness.

    State (all in ``state_dict``, so checkpoints resume exactly):
        codebook: ``(K, dim)`` float32.
        cluster_size, embedding_sum: ``(K,)`` and ``(K, dim)`` float32, the EMA statistics ``N`` and ``m``
            (``ema=True`` only). Always ``codebook == embedding_sum / smoothed cluster_size``.
        steps_unused: ``(K,)`` int64, training steps since each code last won a vector.
        step: ``()`` int64, training steps taken.

    Metrics: ``commitment`` (mean ``||x - sg(q)||^2``), ``perplexity`` and ``usage`` of the batch's codes
    (:mod:`mlm_lessons.metrics`), ``replaced_codes`` (dead codes re-seeded by this call).
    """

    def __init__(self, dim: int, codebook_size: int, *, ema: bool = True, decay: float = 0.99,
                 commitment_weight: float = 1.0, kmeans_init: bool = True, kmeans_iterations: int = 10,
                 dead_code_steps: int = 0, epsilon: float = 1e-5, seed: int = 0):
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be >= 1, got {dim} and {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}; 0.99 is usual")
        if commitment_weight < 0 or kmeans_iterations < 0 or dead_code_steps < 0 or epsilon <= 0:
            raise ValueError("commitment_weight, kmeans_iterations and dead_code_steps must be >= 0 and epsilon "
                             f"> 0, got {commitment_weight}, {kmeans_iterations}, {dead_code_steps}, {epsilon}")
        self.dim, self.codebook_size, self.ema, self.decay = dim, codebook_size, ema, decay
        self.commitment_weight = commitment_weight
        self.kmeans_init, self.kmeans_iterations = kmeans_init, kmeans_iterations
        self.dead_code_steps, self.epsilon, self.seed = dead_code_steps, epsilon, seed
        initial = torch.randn(codebook_size, dim, generator=torch.Generator().manual_seed(seed))
        if ema:
            self.register_buffer("codebook", initial)
            self.register_buffer("cluster_size", torch.ones(codebook_size))  # as if each code had won once
            self.register_buffer("embedding_sum", initial * self._smoothed_cluster_size()[:, None])
        else:
            self.codebook = nn.Parameter(initial)
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.int64))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}, ema={self.ema}"

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """Quantise ``x`` (batch, frames, dim), any float dtype; in training mode also learn from it."""
        _check_vectors(x, self.dim, "VectorQuantizer")
        with torch.autocast(x.device.type, enabled=False):
            vectors = x.float()
            codes, quantized, replaced = self._assign(vectors)
            loss, commitment = self._loss(vectors, quantized)
            straight_through = quantized.detach().to(x.dtype) + (x - x.detach())
        metrics = {"commitment": commitment.detach(), "perplexity": codebook_perplexity(codes, self.codebook_size),
                   "usage": codebook_usage(codes, self.codebook_size), "replaced_codes": float(replaced)}
        return QuantizerOutput(straight_through, codes, loss, _scalar_tensors(metrics, x.device))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, dim)`` -> ``(batch, frames)`` int64 codes. Never learns."""
        _check_vectors(x, self.dim, "VectorQuantizer.encode")
        return self._lookup(x.float())[0]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``(batch, frames)`` integer codes -> ``(batch, frames, dim)`` float32: rows of the codebook."""
        _check_codes(codes, self.codebook_size, "(batch, frames)", 2, "VectorQuantizer.decode")
        return self.vectors(codes)

    def vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` without the input checks (for :class:`ResidualVQ`, which checks once)."""
        return F.embedding(codes.long(), self.codebook)

    # The three steps of a forward pass, shared with ResidualVQ (float32 inputs, autocast already off).

    def _lookup(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, frames, dim)`` float32 -> codes ``(batch, frames)`` and their vectors ``(batch, frames,
        dim)``; the vectors carry the codebook's gradient when it is a parameter."""
        codes = nearest_codes(vectors.detach().reshape(-1, self.dim), self.codebook.detach())
        codes = codes.reshape(vectors.shape[:-1])
        return codes, F.embedding(codes, self.codebook)

    def _assign(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """:meth:`_lookup`, and in training mode learn: returns ``(codes, quantized, replaced_codes)``.

        The codes and vectors returned are those of the codebook *before* this step's update.
        """
        if not self.training:
            return (*self._lookup(vectors), 0)
        flat, step = vectors.detach().reshape(-1, self.dim), int(self.step)
        generator = _step_generator(self.seed, step, flat.device)
        if self.kmeans_init and step == 0:
            self._initialise_by_kmeans(flat, generator)
        codes, quantized = self._lookup(vectors)
        replaced = self._learn(flat, codes.reshape(-1), generator)
        return codes, quantized, replaced

    def _loss(self, vectors: torch.Tensor, quantized: torch.Tensor,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, commitment)`` for float32 ``vectors`` and their codes' vectors ``quantized``.

        ``keep``: optional ``(batch,)`` 0/1, examples whose share of the mean is kept (quantiser dropout).
        """
        commitment = _mean_per_example((vectors - quantized.detach()).pow(2), keep)
        loss = self.commitment_weight * commitment
        if not self.ema:  # the EMA update replaces the codebook loss
            loss = loss + _mean_per_example((vectors.detach() - quantized).pow(2), keep)
        return loss, commitment

    # Learning, all without gradients.

    def _smoothed_cluster_size(self) -> torch.Tensor:
        """``(K,)`` Laplace-smoothed ``N~_k = (N_k + eps) / (N + K eps) N``: same total, never zero."""
        total = self.cluster_size.sum()
        return (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total

    @torch.no_grad()
    def _initialise_by_kmeans(self, flat: torch.Tensor, generator: torch.Generator) -> None:
        self._initialise_from(_rows_of_all_ranks(flat), generator)

    @torch.no_grad()
    def _initialise_from(self, rows: torch.Tensor, generator: torch.Generator) -> None:
        """Start the codebook at the k-means centroids of ``rows`` (n, dim), already those of every rank."""
        centroids, counts = kmeans(rows, self.codebook_size, self.kmeans_iterations, generator)
        self.codebook.copy_(centroids)
        if self.ema:  # statistics as if the first batch had been averaged already
            self.cluster_size.copy_(counts)
            self.embedding_sum.copy_(centroids * self._smoothed_cluster_size()[:, None])

    @torch.no_grad()
    def _learn(self, flat: torch.Tensor, codes: torch.Tensor, generator: torch.Generator) -> int:
        """One EMA update and dead-code check from ``flat`` (n, dim) and its ``codes`` (n,). Returns the
        number of codes re-seeded."""
        counts = torch.bincount(codes, minlength=self.codebook_size).float()
        if self.ema:
            sums = torch.zeros_like(self.embedding_sum).index_add_(0, codes, flat)
            statistics = _sum_over_ranks(torch.cat([counts[:, None], sums], dim=1))  # one all-reduce, not two
            counts, sums = statistics[:, 0], statistics[:, 1:]
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            self.codebook.copy_(self.embedding_sum / self._smoothed_cluster_size()[:, None])
        else:
            counts = _sum_over_ranks(counts)  # usage must be global, or ranks would re-seed different codes
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        self.step.add_(1)
        return self._replace_dead_codes(flat, generator) if self.dead_code_steps else 0

    @torch.no_grad()
    def _replace_dead_codes(self, flat: torch.Tensor, generator: torch.Generator) -> int:
        """Re-seed the codes unused for ``dead_code_steps`` steps next to codes in use (docstring, item 6)."""
        dead = self.steps_unused >= self.dead_code_steps
        num_dead = int(dead.sum())
        if num_dead == 0:
            return 0
        candidates = _rows_of_all_ranks(flat)
        if len(candidates) >= num_dead:  # distinct vectors where there are enough of them
            picks = torch.randperm(len(candidates), generator=generator, device=flat.device)[:num_dead]
        else:
            picks = torch.randint(len(candidates), (num_dead,), generator=generator, device=flat.device)
        chosen = candidates[picks]                                                      # (num_dead, dim)
        split = self.codebook[nearest_codes(chosen, self.codebook)]                     # their codes
        reseeded = torch.lerp(split, chosen, DEAD_CODE_SPLIT)
        self.codebook[dead] = reseeded
        if self.ema:  # keep codebook == embedding_sum / N~; N ~ 0, so the code's first winners will own it
            self.embedding_sum[dead] = reseeded * self._smoothed_cluster_size()[dead, None]
        self.steps_unused[dead] = 0
        return num_dead


# ----------------------------------------------------------------------------------------------------
# 6. Residual VQ


class ResidualVQ(nn.Module):
    """``num_levels`` quantisers, each coding what the previous ones left over.

    The loss is the **sum** over levels of each level's loss (commitment, plus codebook loss when
    ``ema=False``). With quantiser dropout, it is the mean over examples of the sum over the levels each
    example uses. The straight-through estimator is applied once, to the sum of the levels' codes.

    Quantiser dropout (``quantizer_dropout`` > 0, training mode only): an example draws its number of
    levels ``n`` uniformly from ``1..num_levels``; the levels ``>= n`` add nothing to its ``quantized`` and
    nothing to its loss. SoundStream makes every example draw (``quantizer_dropout=1.0`` or ``True``); DAC
    (Kumar et al., 2023) found that this costs quality at the full bitrate, since the last levels then
    train on a quarter of the examples, and lets only half of them draw (``0.5``): the others use all levels. Every level's codebook still learns from every example's residual (the residual
    after ``l`` levels exists either way), and ``codes`` holds the nearest codes of all levels: in
    ``quantized`` an example is ``decode(codes[:, :n])`` for its own ``n``. Under DDP the draws are made for
    the global batch and each rank takes its slice, as the data is split.

    Args:
        dim, codebook_size: of every level.
        num_levels: ``L``.
        quantizer_dropout: the share of training examples that draw their levels (see above): a number in
            [0, 1], or ``True`` (1) and ``False`` (0).
        seed: level ``l`` gets ``seed + l``; the dropout draws use ``seed + num_levels``.
        warmup_steps: training steps during which vectors pass through unquantised (the codec trains as a
            plain autoencoder, with no commitment loss) while the last ``warmup_vectors`` of them are kept;
            at the next training step every level starts at the k-means centroids of those vectors'
            residuals (item 5 of the module docstring), and quantising begins. 0: each level clusters its
            first training batch instead. The kept vectors are not saved with the model: a run resumed
            during the warm-up collects them again from its remaining steps.
        warmup_vectors: how many of the warm-up's latest vectors that k-means clusters.
        **vq_kwargs: passed to every :class:`VectorQuantizer` (``ema``, ``decay``, ``dead_code_steps``, ...).

    Metrics: ``commitment`` and ``replaced_codes`` summed over levels; ``perplexity/l`` and ``usage/l``
    for each level ``l`` used (during a warm-up, of the codes the vectors would get).
    """

    def __init__(self, dim: int, codebook_size: int, num_levels: int, *, quantizer_dropout: float = 0.0,
                 seed: int = 0, warmup_steps: int = 0, warmup_vectors: int = 16_384, **vq_kwargs):
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        if warmup_steps < 0 or warmup_vectors < 1:
            raise ValueError(f"warmup_steps must be >= 0 and warmup_vectors >= 1, got {warmup_steps} and "
                             f"{warmup_vectors}")
        self.dim, self.codebook_size, self.num_levels = dim, codebook_size, num_levels
        self.quantizer_dropout, self.seed = _dropout_share(quantizer_dropout), seed
        self.warmup_steps, self.warmup_vectors = warmup_steps, warmup_vectors
        # The levels then start from the warm-up's vectors, not each from its first batch (even if
        # warmup_steps is later lowered to 0: they start from that batch, through the same path).
        self.kmeans_after_warmup = warmup_steps > 0
        if self.kmeans_after_warmup:
            vq_kwargs["kmeans_init"] = False
        self.levels = nn.ModuleList(VectorQuantizer(dim, codebook_size, seed=seed + level, **vq_kwargs)
                                    for level in range(num_levels))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self._warmup_kept: list[torch.Tensor] = []   # (n, dim) float32 chunks, the warm-up's latest vectors

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> QuantizerOutput:
        """Quantise ``x`` (batch, frames, dim) with the first ``num_levels`` levels (default: all).

        Returns codes ``(batch, num_levels, frames)``; in training mode every level learns.
        """
        num_levels = self._checked_num_levels(num_levels)
        _check_vectors(x, self.dim, "ResidualVQ")
        if self.training and self.kmeans_after_warmup and not self.quantising:
            if int(self.step) < self.warmup_steps:
                return self._pass_through(x, num_levels)
            self._initialise_levels(x)
        with torch.autocast(x.device.type, enabled=False):
            residual = x.float()
            levels_per_example = self._levels_per_example(x.shape[0], num_levels, x.device)  # (batch,)
            total = torch.zeros_like(residual)
            loss = residual.new_zeros(())
            commitment = residual.new_zeros(())
            codes, metrics, replaced = [], {}, 0
            for index, level in enumerate(self.levels[:num_levels]):
                keep = (levels_per_example > index).float()                                  # (batch,)
                level_codes, quantized, level_replaced = level._assign(residual)
                level_loss, level_commitment = level._loss(residual, quantized, keep)
                quantized = quantized.detach()
                total = total + quantized * keep[:, None, None]
                residual = residual - quantized  # still carries x's gradient, for the next commitment loss
                loss, commitment = loss + level_loss, commitment + level_commitment
                replaced += level_replaced
                codes.append(level_codes)
                metrics.update(_level_use(level_codes, self.codebook_size, index))
            straight_through = total.to(x.dtype) + (x - x.detach())
        if self.training:
            self.step.add_(1)
        metrics = {"commitment": commitment.detach(), "replaced_codes": float(replaced), **metrics}
        return QuantizerOutput(straight_through, torch.stack(codes, dim=1), loss, _scalar_tensors(metrics, x.device))

    @property
    def quantising(self) -> bool:
        """Whether training has begun to quantise (its first level has learnt from a step): from then on a
        warm-up is over, even if ``warmup_steps`` is raised later (a resumed, longer run)."""
        return int(self.levels[0].step) > 0

    def _pass_through(self, x: torch.Tensor, num_levels: int) -> QuantizerOutput:
        """A warm-up step: ``x`` unchanged, no loss; keep its vectors for the k-means that ends the warm-up."""
        with torch.no_grad():   # every rank keeps the global batch, in its order, as one process would
            self._warmup_kept.append(_rows_of_all_ranks(x.detach().float().reshape(-1, self.dim)))
            kept = torch.cat(self._warmup_kept)[-self.warmup_vectors:]
            self._warmup_kept = [kept]
            codes = self.encode(x, num_levels)
        self.step.add_(1)
        metrics = {"commitment": 0.0, "replaced_codes": 0.0}
        for index in range(num_levels):
            metrics.update(_level_use(codes[:, index], self.codebook_size, index))
        return QuantizerOutput(x, codes, x.new_zeros((), dtype=torch.float32), _scalar_tensors(metrics, x.device))

    @torch.no_grad()
    def _initialise_levels(self, x: torch.Tensor) -> None:
        """End of the warm-up: level ``l`` starts at the k-means centroids of the residuals that levels
        ``< l`` leave of the kept vectors and this batch's (under DDP, every rank's: the same codebooks
        everywhere, and those of one process that saw the global batches)."""
        residual = torch.cat(self._warmup_kept + [_rows_of_all_ranks(x.detach().float().reshape(-1, self.dim))])
        self._warmup_kept = []
        for level in self.levels:
            level._initialise_from(residual, _step_generator(level.seed, 0, residual.device))
            residual = residual - level._lookup(residual)[1]

    @torch.no_grad()
    def encode(self, x: torch.Tensor, num_levels: int | None = None) -> torch.Tensor:
        """``(batch, frames, dim)`` -> ``(batch, num_levels, frames)`` int64 codes. Never learns."""
        num_levels = self._checked_num_levels(num_levels)
        _check_vectors(x, self.dim, f"{type(self).__name__}.encode")
        residual, codes = x.float(), []
        for level in self.levels[:num_levels]:
            level_codes, quantized = level._lookup(residual)
            residual = residual - quantized
            codes.append(level_codes)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``(batch, L, frames)`` integer codes, ``L <= num_levels`` -> ``(batch, frames, dim)`` float32:
        the sum of the first ``L`` levels' code vectors (fewer levels, coarser audio)."""
        name = type(self).__name__
        _check_codes(codes, self.codebook_size, f"(batch, levels <= {self.num_levels}, frames)", 3, f"{name}.decode")
        if not 1 <= codes.shape[1] <= self.num_levels:
            raise ValueError(f"{name}.decode got codes for {codes.shape[1]} levels, but this {name} has "
                             f"{self.num_levels}; codes are (batch, levels, frames), transpose them if levels "
                             "is last")
        return sum(level.vectors(codes[:, index]) for index, level in enumerate(self.levels[:codes.shape[1]]))

    @torch.no_grad()
    def residual_errors(self, x: torch.Tensor) -> torch.Tensor:
        """``(num_levels,)`` float32: the mean squared error of ``x``'s reconstruction after 1, 2, ... levels.

        On data like the training data it falls level after level: each level removes part of what is
        left (the curve lesson 05 plots). Never learns.
        """
        _check_vectors(x, self.dim, f"{type(self).__name__}.residual_errors")
        residual, errors = x.float(), []
        for level in self.levels:
            residual = residual - level._lookup(residual)[1]
            errors.append(residual.pow(2).mean())
        return torch.stack(errors)

    def _checked_num_levels(self, num_levels: int | None) -> int:
        if num_levels is None:
            return self.num_levels
        if not 1 <= num_levels <= self.num_levels:
            raise ValueError(f"num_levels must be between 1 and {self.num_levels} (the levels this ResidualVQ "
                             f"has), got {num_levels}")
        return num_levels

    def _levels_per_example(self, batch: int, num_levels: int, device: torch.device) -> torch.Tensor:
        """``(batch,)`` int64: how many levels each example uses (all of them, unless quantiser dropout)."""
        if not (self.training and self.quantizer_dropout):
            return torch.full((batch,), num_levels, device=device)
        generator = _step_generator(self.seed + self.num_levels, int(self.step), device)
        world_size = _world_size()
        rank = dist.get_rank() if world_size > 1 else 0
        draws = torch.randint(1, num_levels + 1, (batch * world_size,), generator=generator, device=device)
        if self.quantizer_dropout < 1:  # the examples that do not draw use every level
            draws[torch.rand(batch * world_size, generator=generator, device=device) >= self.quantizer_dropout] = \
                num_levels
        return draws[rank * batch:(rank + 1) * batch]  # this rank's slice of the global batch


def _dropout_share(quantizer_dropout: float | bool) -> float:
    """``quantizer_dropout`` as the share of examples that draw their levels, checked to lie in [0, 1]."""
    share = float(quantizer_dropout)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"quantizer_dropout is the share of training examples that use a random number of levels: "
                         f"a number in [0, 1] (or True/False), got {quantizer_dropout!r}")
    return share


# ----------------------------------------------------------------------------------------------------
# 7. Factorised, normalised codes (DAC)


class FactorisedVectorQuantizer(nn.Module):
    """One level of :class:`FactorisedResidualVQ`: the lookup happens in a small space, on the unit sphere.

    Kumar et al. (2023, the Descript Audio Codec) found two changes that keep every code of an RVQ in use
    and make each level's codes count. **Factorised codes**: a linear map takes the ``dim``-vector down to
    ``code_dim`` numbers (8, say) before the lookup, and another takes the chosen code back up; in 8
    dimensions 256 codes tile the space finely, where in 64 most of a codebook lies far from every vector.
    **Normalised codes**: both the projected vector and the codes are scaled to length 1, so the nearest
    code is the one at the smallest angle, and a vector's size, which varies with loudness, cannot leave it
    far from every code. The codebook is a parameter learnt by the optimiser (codebook loss), and the
    projections learn through the straight-through estimator (item 2 of the module docstring).

    Args:
        dim: length of the vectors this level quantises (the codec's latent).
        codebook_size: codes ``K``.
        code_dim: length of the codes.
        commitment_weight: ``beta`` of the commitment loss (0.25 in DAC).
        dead_code_steps: re-seed a code unused for this many training steps on a projected vector of the
            batch (0: never).
        seed: seeds the initial codebook and projections, and with the step the re-seeding draws.

    State: ``codebook`` ``(K, code_dim)``, the projections, ``steps_unused`` ``(K,)`` and ``step`` ``()``.
    """

    def __init__(self, dim: int, codebook_size: int, code_dim: int, *, commitment_weight: float = 0.25,
                 dead_code_steps: int = 0, seed: int = 0):
        super().__init__()
        if dim < 1 or codebook_size < 1 or code_dim < 1:
            raise ValueError(f"dim, codebook_size and code_dim must be >= 1, got {dim}, {codebook_size}, {code_dim}")
        if commitment_weight < 0 or dead_code_steps < 0:
            raise ValueError(f"commitment_weight and dead_code_steps must be >= 0, got {commitment_weight} and "
                             f"{dead_code_steps}")
        self.dim, self.codebook_size, self.code_dim = dim, codebook_size, code_dim
        self.commitment_weight, self.dead_code_steps, self.seed = commitment_weight, dead_code_steps, seed
        generator = torch.Generator().manual_seed(seed)
        self.project_in, self.project_out = nn.Linear(dim, code_dim), nn.Linear(code_dim, dim)
        for layer in (self.project_in, self.project_out):
            bound = layer.in_features ** -0.5
            nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
            nn.init.zeros_(layer.bias)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim, generator=generator))
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.int64))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}, code_dim={self.code_dim}"

    def unit_codes(self) -> torch.Tensor:
        """``(K, code_dim)``: the codebook's rows scaled to length 1."""
        return F.normalize(self.codebook, dim=-1)

    def _project(self, residual: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, dim)`` -> ``(batch, frames, code_dim)`` unit vectors."""
        return F.normalize(self.project_in(residual), dim=-1)

    def _nearest(self, projected: torch.Tensor) -> torch.Tensor:
        """Unit vectors ``(batch, frames, code_dim)`` -> codes ``(batch, frames)``: the largest cosine."""
        return (projected.detach() @ self.unit_codes().detach().T).argmax(-1)

    def _lookup(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, frames, dim)`` -> codes ``(batch, frames)`` and their vectors ``(batch, frames, dim)``."""
        codes = self._nearest(self._project(residual))
        return codes, self.vectors(codes)

    def vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """``(batch, frames)`` codes -> ``(batch, frames, dim)``: each unit code mapped back up."""
        return self.project_out(F.embedding(codes.long(), self.unit_codes()))

    @torch.no_grad()
    def _learn(self, projected: torch.Tensor, codes: torch.Tensor) -> int:
        """Count the step and re-seed dead codes on random projected vectors; returns how many."""
        flat = projected.detach().reshape(-1, self.code_dim)
        counts = _sum_over_ranks(torch.bincount(codes.reshape(-1), minlength=self.codebook_size).float())
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        generator = _step_generator(self.seed, int(self.step), flat.device)
        self.step.add_(1)
        dead = self.steps_unused >= self.dead_code_steps
        num_dead = int(dead.sum()) if self.dead_code_steps else 0
        if num_dead:
            candidates = _rows_of_all_ranks(flat)
            picks = torch.randint(len(candidates), (num_dead,), generator=generator, device=flat.device)
            # Through .data: this step's graph still holds the codebook, and autograd refuses a tensor it
            # needs that was changed in place; the re-seeded codes' gradient of this step is simply stale.
            self.codebook.data[dead] = candidates[picks]
            self.steps_unused[dead] = 0
        return num_dead


class FactorisedResidualVQ(ResidualVQ):
    """A :class:`ResidualVQ` whose levels are :class:`FactorisedVectorQuantizer`: same calls, same shapes.

    Each level projects the residual down, picks the unit code at the smallest angle and maps it back up;
    the next level quantises what is left, ``r_{l+1} = r_l - out_l(code_l)``. Unlike :class:`ResidualVQ`,
    the straight-through estimator is applied per level, in the code space (``u + sg(c - u)`` for the
    projected unit vector ``u`` and its code ``c``), so that both projections learn; the loss sums each
    level's codebook loss ``||sg(u) - c||^2`` and ``commitment_weight`` times its commitment loss
    ``||u - sg(c)||^2``. Quantiser dropout works as in :class:`ResidualVQ`.

    Args:
        dim, codebook_size, num_levels, quantizer_dropout, seed: as for :class:`ResidualVQ`.
        code_dim: length of each level's codes.
        **vq_kwargs: passed to every level (``commitment_weight``, ``dead_code_steps``).
    """

    def __init__(self, dim: int, codebook_size: int, num_levels: int, *, code_dim: int = 8,
                 quantizer_dropout: float = 0.0, seed: int = 0, **vq_kwargs):
        nn.Module.__init__(self)
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.dim, self.codebook_size, self.num_levels, self.code_dim = dim, codebook_size, num_levels, code_dim
        self.quantizer_dropout, self.seed = _dropout_share(quantizer_dropout), seed
        self.warmup_steps, self.kmeans_after_warmup = 0, False   # its codebooks learn by gradient from the start
        self.levels = nn.ModuleList(FactorisedVectorQuantizer(dim, codebook_size, code_dim, seed=seed + level,
                                                              **vq_kwargs)
                                    for level in range(num_levels))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor, num_levels: int | None = None) -> QuantizerOutput:
        """Quantise ``x`` (batch, frames, dim) with the first ``num_levels`` levels (default: all)."""
        num_levels = self._checked_num_levels(num_levels)
        _check_vectors(x, self.dim, "FactorisedResidualVQ")
        with torch.autocast(x.device.type, enabled=False):
            residual = x.float()
            levels_per_example = self._levels_per_example(x.shape[0], num_levels, x.device)
            total = torch.zeros_like(residual)
            loss, commitment = residual.new_zeros(()), residual.new_zeros(())
            codes, metrics, replaced = [], {}, 0
            for index, level in enumerate(self.levels[:num_levels]):
                keep = (levels_per_example > index).float()
                projected = level._project(residual)                       # (batch, frames, code_dim), unit
                level_codes = level._nearest(projected)
                chosen = F.embedding(level_codes, level.unit_codes())      # carries the codebook's gradient
                level_commitment = _mean_per_example((projected - chosen.detach()).pow(2), keep)
                codebook_loss = _mean_per_example((projected.detach() - chosen).pow(2), keep)
                decoded = level.project_out(projected + (chosen - projected).detach())   # straight-through
                total = total + decoded * keep[:, None, None]
                residual = residual - decoded
                loss = loss + codebook_loss + level.commitment_weight * level_commitment
                commitment = commitment + level_commitment.detach()
                if self.training:
                    replaced += level._learn(projected, level_codes)
                codes.append(level_codes)
                metrics.update(_level_use(level_codes, self.codebook_size, index))
        if self.training:
            self.step.add_(1)
        metrics = {"commitment": commitment, "replaced_codes": float(replaced), **metrics}
        return QuantizerOutput(total.to(x.dtype), torch.stack(codes, dim=1), loss, _scalar_tensors(metrics, x.device))
