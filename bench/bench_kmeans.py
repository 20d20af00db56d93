"""The course's k-means against scikit-learn's ``KMeans``, on the same data in the same run: time and inertia.

    python bench/bench_kmeans.py [--sizes 20000x96x128 50000x256x512] [--seeds 3] [--threads 1]

For each size ``n x d x K`` (vectors, dimension, clusters), draws ``n`` structured vectors (a mixture of
Gaussians on a low-rank subspace plus a little isotropic noise: clustered like an encoder's output, unlike
uniform noise) and clusters them, for each of ``--seeds`` seeds, with

* ours: :func:`mlm_lessons.quantize.kmeans` (k-means++ seeding from a pool of at most 4,096 vectors, then
  Lloyd steps with chunked assignment) at ``iterations=100, tolerance=1e-4``, twice: with plain k-means++
  seeding (``seeding_trials=1``, the function's default) and with greedy seeding (``seeding_trials = 2 + ln
  K``, what :meth:`mlm_lessons.tokenize.SemanticTokenizer.fit` uses; this row is left out when ``kmeans``
  has no ``seeding_trials`` argument);
* the baseline: ``sklearn.cluster.KMeans(n_clusters=K, n_init=1, random_state=seed)`` at its defaults
  ``max_iter=300, tol=1e-4`` (greedy k-means++ over all vectors, then Lloyd steps).

It prints, per size and variant of ours, the wall time of each (mean over seeds) and their ratio, and the
final inertia (sum of squared distances to the nearest centroid, both computed by the same function,
:func:`mlm_lessons.quantize.assign_to_centroids`) with the ratio ours / sklearn: its mean over the seeds and
its worst (largest) value. A ratio above 1 means our centroids fit worse. The number of passes over the data
is shown too: ours counts its calls of ``assign_to_centroids`` (Lloyd steps, plus the pass that detects
convergence, plus the final count), sklearn's is ``n_iter_``.

The two stopping rules differ: ours stops when a step lowers the inertia by less than ``tolerance`` of it;
sklearn stops when the centroids move (sum of squared shifts) by less than ``tol`` times the data's mean
variance per dimension, or when no label changes. Both libraries run on ``--threads`` threads (torch's
``set_num_threads`` and threadpoolctl's limit on BLAS and OpenMP, which scikit-learn uses), so the comparison
is like for like. Nothing is asserted.
"""

import os

# Pin the math libraries before numpy / torch / scikit-learn load them; --threads sets the same limit again below.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import inspect  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

from mlm_lessons import quantize, runtime  # noqa: E402

try:
    from mlm_lessons.tokenize import seeding_trials as tokenizer_seeding_trials
except ImportError:
    def tokenizer_seeding_trials(num_clusters: int) -> int:
        return 2 + int(math.log(num_clusters))  # scikit-learn's count of candidates per centroid

GREEDY_SEEDING = "seeding_trials" in inspect.signature(quantize.kmeans).parameters

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # it ships with scikit-learn, but do without it if it is missing
    threadpool_limits = None


def structured_vectors(n: int, dim: int, clusters: int, rank: int = 32, spread: float = 0.3,
                       noise: float = 0.05, seed: int = 1234) -> torch.Tensor:
    """``(n, dim)`` float32: ``clusters`` Gaussians in a random ``rank``-dimensional subspace, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    rank = min(rank, dim)
    centres = torch.randn(clusters, rank, generator=generator)                        # (clusters, rank)
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=generator)).Q.T         # (rank, dim), orthonormal rows
    which = torch.randint(clusters, (n,), generator=generator)
    latent = centres[which] + spread * torch.randn(n, rank, generator=generator)
    return latent @ basis + noise * torch.randn(n, dim, generator=generator)


class CountingAssignments:
    """Stand-in for ``quantize.assign_to_centroids`` that counts its calls (passes over the data)."""

    def __init__(self):
        self.original = quantize.assign_to_centroids
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.original(*args, **kwargs)

    def __enter__(self):
        quantize.assign_to_centroids = self
        return self

    def __exit__(self, *exc):
        quantize.assign_to_centroids = self.original


def inertia(vectors: torch.Tensor, centroids) -> float:
    centroids = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
    return float(quantize.assign_to_centroids(vectors, centroids)[1].double().sum())


def run_ours(vectors: torch.Tensor, clusters: int, seed: int, iterations: int, tolerance: float, trials: int):
    generator = torch.Generator().manual_seed(seed)
    options = {"seeding_trials": trials} if GREEDY_SEEDING else {}
    with CountingAssignments() as counter:
        start = time.perf_counter()
        centroids, _ = quantize.kmeans(vectors, clusters, iterations=iterations, generator=generator,
                                       tolerance=tolerance, **options)
        seconds = time.perf_counter() - start
    return seconds, inertia(vectors, centroids), counter.calls


def run_sklearn(vectors: torch.Tensor, clusters: int, seed: int, max_iter: int, tol: float):
    data = vectors.numpy()                                   # float32: scikit-learn keeps that dtype
    model = KMeans(n_clusters=clusters, n_init=1, max_iter=max_iter, tol=tol, random_state=seed)
    start = time.perf_counter()
    model.fit(data)
    seconds = time.perf_counter() - start
    return seconds, inertia(vectors, model.cluster_centers_), model.n_iter_


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        n, dim, clusters = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is NxDxK, e.g. 20000x96x128; got {text!r}") from None
    return n, dim, clusters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(20_000, 96, 128), (50_000, 256, 512)],
                        help="NxDxK: vectors x dimension x clusters (default: the tiny semantic tokens' "
                             "20000x96x128, and 50000x256x512)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--mixture", type=int, default=1024, help="Gaussians in the data's mixture")
    parser.add_argument("--iterations", type=int, default=100, help="ours: at most this many Lloyd steps")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="ours: relative inertia decrease to stop")
    parser.add_argument("--max-iter", type=int, default=300, help="sklearn's max_iter")
    parser.add_argument("--tol", type=float, default=1e-4, help="sklearn's tol")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    runtime.seed_and_threads(0, args.threads)
    limits = threadpool_limits(args.threads) if threadpool_limits is not None else None
    started = time.perf_counter()

    print(f"machine: {os.cpu_count()} core(s), {platform.machine()}; torch {torch.__version__} on "
          f"{torch.get_num_threads()} thread(s); scikit-learn {sklearn.__version__} on "
          + (f"{args.threads} thread(s) (threadpoolctl limit on BLAS and OpenMP)" if limits is not None
             else "its default threads (threadpoolctl is not installed: OMP_NUM_THREADS="
                  f"{os.environ.get('OMP_NUM_THREADS')})"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > (os.cpu_count() or 1) - args.threads + 0.5:
        print(f"load average {load:.1f} before starting: other processes compete for the cores, so times are "
              "inflated (both columns alike, since they alternate seed by seed)")
    print(f"ours: kmeans(iterations={args.iterations}, tolerance={args.tolerance:g}); sklearn: KMeans(n_init=1, "
          f"max_iter={args.max_iter}, tol={args.tol:g}); data: mixture of {args.mixture} Gaussians on a rank-32 "
          f"subspace plus noise; {args.seeds} seed(s) per size\n")

    header = (f"{'n x d x K':>18s} {'ours: seeding':>17s} | {'ours s':>7s} {'sklearn s':>9s} {'time ratio':>10s} | "
              f"{'ours inertia':>12s} {'sklearn inertia':>15s} {'ratio mean':>10s} {'worst':>7s} | "
              f"{'passes ours':>11s} {'sklearn':>7s}")
    print(header)
    print("-" * len(header))
    for n, dim, clusters in args.sizes:
        vectors = structured_vectors(n, dim, args.mixture)
        variants = {"k-means++": 1}
        if GREEDY_SEEDING:
            variants[f"greedy, {tokenizer_seeding_trials(clusters)} trials"] = tokenizer_seeding_trials(clusters)
        ours = {name: [] for name in variants}
        theirs = []
        for seed in range(args.seeds):  # alternate seed by seed, so all see the same machine load
            for name, trials in variants.items():
                ours[name].append(run_ours(vectors, clusters, seed, args.iterations, args.tolerance, trials))
            theirs.append(run_sklearn(vectors, clusters, seed, args.max_iter, args.tol))
        theirs_s, theirs_i, theirs_passes = (statistics.mean(result[k] for result in theirs) for k in range(3))
        for row, (name, results) in enumerate(ours.items()):
            ours_s, ours_i, ours_passes = (statistics.mean(result[k] for result in results) for k in range(3))
            ratios = [mine[1] / other[1] for mine, other in zip(results, theirs)]
            size = f"{n} x {dim} x {clusters}" if row == 0 else ""
            print(f"{size:>18s} {name:>17s} | {ours_s:7.2f} {theirs_s:9.2f} {ours_s / theirs_s:9.2f}x | "
                  f"{ours_i:12.5g} {theirs_i:15.5g} {statistics.mean(ratios):10.4f} {max(ratios):7.4f} | "
                  f"{ours_passes:11.1f} {theirs_passes:7.1f}")
    if not GREEDY_SEEDING:
        print("(this version of quantize.kmeans has no seeding_trials argument: plain k-means++ only)")
    print("\nours s, sklearn s: mean wall time of one fit over the seeds; time ratio = ours / sklearn (< 1: ours is "
          "faster). inertia: mean over the seeds; ratio = ours / sklearn per seed, mean and worst (largest); "
          "1.0100 would be 1% worse. passes: mean passes over the data (ours: assign_to_centroids calls; sklearn: "
          "n_iter_).")
    print(f"\nbench wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
