"""The course's residual VQ, trained on structured data: speed, reconstruction error and codebook usage.

    python bench/bench_rvq.py [--steps 200] [--levels 8] [--codebook-size 1024] [--dim 128] [--batch 4096]

Trains :class:`mlm_lessons.quantize.ResidualVQ` (EMA, k-means init, dead-code replacement) for ``--steps``
forward passes in training mode, each on a fresh batch of ``--batch`` vectors drawn from one fixed
distribution: a mixture of Gaussians on a low-rank subspace plus a little isotropic noise (clustered like
an encoder's output, unlike uniform noise). Then, on a held-out set, prints the mean squared
quantisation error and the fraction of codes each level uses.

When ``vector_quantize_pytorch`` is installed, its ``ResidualVQ`` (same levels, codes and dimension,
k-means init, decay 0.99, ``threshold_ema_dead_code``) trains beside ours on the same batches, step by
step in turn (so both see the same machine load), and the table gets its column and the ratios. It is
only a point of comparison, not a dependency. Nothing is asserted.
"""

import argparse
import os
import statistics
import time

import torch

from mlm_lessons import runtime
from mlm_lessons.metrics import codebook_usage
from mlm_lessons.quantize import ResidualVQ

try:
    from vector_quantize_pytorch import ResidualVQ as PeerResidualVQ
except ImportError:
    PeerResidualVQ = None


class StructuredVectors:
    """Batches of ``dim``-vectors: ``clusters`` Gaussians in a ``rank``-dimensional subspace, plus noise."""

    def __init__(self, dim: int, clusters: int = 512, rank: int = 32, spread: float = 0.3, noise: float = 0.05):
        generator = torch.Generator().manual_seed(1234)
        rank = min(rank, dim)
        self.centres = torch.randn(clusters, rank, generator=generator)                  # (clusters, rank)
        self.basis = torch.linalg.qr(torch.randn(dim, rank, generator=generator)).Q.T   # (rank, dim)
        self.spread, self.noise = spread, noise

    def batch(self, size: int, seed: int) -> torch.Tensor:
        """``(size, dim)`` float32, a pure function of ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        which = torch.randint(len(self.centres), (size,), generator=generator)
        latent = self.centres[which] + self.spread * torch.randn(size, self.basis.shape[0], generator=generator)
        return latent @ self.basis + self.noise * torch.randn(size, self.basis.shape[1], generator=generator)


def ours_forward(model):
    """``(batch, frames, dim) -> (quantized, codes (batch, frames, levels))``, the peer's layout."""
    def forward(x):
        output = model(x)
        return output.quantized, output.codes.transpose(1, 2)
    return forward


def peer_forward(model):
    def forward(x):
        quantized, codes, _ = model(x)
        return quantized, codes
    return forward


@torch.no_grad()
def held_out_figures(forward, vectors: torch.Tensor, codebook_size: int, frames: int = 1024):
    """Mean squared error and per-level code usage of ``forward`` (in eval mode) on ``vectors`` (n, dim)."""
    errors, codes = [], []
    for chunk in vectors.split(8 * frames):
        x = chunk.reshape(-1, frames, chunk.shape[-1])
        quantized, chunk_codes = forward(x)
        errors.append((quantized.float() - x).pow(2).sum())
        codes.append(chunk_codes.reshape(-1, chunk_codes.shape[-1]))
    codes = torch.cat(codes)                                                          # (n, levels)
    usage = [codebook_usage(codes[:, level], codebook_size) for level in range(codes.shape[1])]
    return (sum(errors) / vectors.numel()).item(), usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4096, help="vectors per training step")
    parser.add_argument("--held-out", type=int, default=65536, help="vectors for the final figures")
    parser.add_argument("--dead-code-steps", type=int, default=5, help="ours: re-seed after this many unused steps")
    parser.add_argument("--peer-dead-code-threshold", type=float, default=2.0,
                        help="peer: re-seed codes whose EMA count per batch falls below this")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    runtime.seed_and_threads(0, args.threads)  # seed 0: the peer draws from torch's global generator

    data = StructuredVectors(args.dim)
    held_out = data.batch(args.held_out, seed=-1)
    frames = 256 if args.batch % 256 == 0 else args.batch
    ours = ResidualVQ(args.dim, args.codebook_size, args.levels, decay=0.99, kmeans_init=True,
                      dead_code_steps=args.dead_code_steps)
    models = {"ours": ours_forward(ours)}
    modules = {"ours": ours}
    if PeerResidualVQ is not None:
        peer = PeerResidualVQ(dim=args.dim, num_quantizers=args.levels, codebook_size=args.codebook_size,
                              kmeans_init=True, kmeans_iters=10, decay=0.99,
                              threshold_ema_dead_code=args.peer_dead_code_threshold)
        models["peer"], modules["peer"] = peer_forward(peer), peer

    step_seconds = {name: [] for name in models}
    start = time.perf_counter()
    for step in range(args.steps):
        x = data.batch(args.batch, seed=step).reshape(-1, frames, args.dim)
        for name, forward in models.items():
            modules[name].train()
            began = time.perf_counter()
            forward(x)
            step_seconds[name].append(time.perf_counter() - began)
    total = time.perf_counter() - start
    figures = {}
    for name, forward in models.items():
        modules[name].eval()
        figures[name] = held_out_figures(forward, held_out, args.codebook_size)

    print(f"RVQ {args.levels} levels x {args.codebook_size} codes, dim {args.dim}; {args.steps} training steps of "
          f"{args.batch} vectors ({args.threads} thread(s), torch {torch.__version__}); data: mixture of "
          f"{len(data.centres)} Gaussians on a rank-{data.basis.shape[0]} subspace, variance per element "
          f"{held_out.var().item():.4f}; held out: {args.held_out} vectors")
    print(f"ours: dead_code_steps={args.dead_code_steps}" + (
        f"; peer: vector_quantize_pytorch ResidualVQ, threshold_ema_dead_code={args.peer_dead_code_threshold}"
        if "peer" in models else "; peer: vector_quantize_pytorch is not installed, ours only"))
    names = list(models)
    header = f"{'':24s}" + "".join(f"{name:>12s}" for name in names) + (f"{'ours/peer':>12s}" if len(names) > 1 else "")
    print(header)

    def row(label, values, fmt, ratio=True):
        text = f"{label:24s}" + "".join(f"{value:12{fmt}}" for value in values)
        if len(values) > 1 and ratio:
            text += f"{values[0] / values[1]:11.2f}x"
        print(text)

    row("first step, k-means (ms)", [1000 * step_seconds[name][0] for name in names], ".1f")
    row("median step (ms)", [1000 * statistics.median(step_seconds[name][1:]) for name in names], ".1f")
    row("best step (ms)", [1000 * min(step_seconds[name][1:]) for name in names], ".1f")
    row("held-out MSE", [figures[name][0] for name in names], ".5f")
    for level in range(args.levels):
        row(f"codes used, level {level}", [figures[name][1][level] for name in names], ".1%", ratio=False)
    print(f"wall time of the {args.steps} steps, all models: {total:.1f} s. Step times vary with machine load"
          + ("; the two models alternate step by step, so both see the same load." if len(names) > 1 else "."))


if __name__ == "__main__":
    main()
