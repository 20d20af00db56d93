"""How fast does a decoder generate, and what does the KV cache buy? Tokens per second on the CPU.

    python bench/bench_generation.py [--tokens 1000] [--d-model 256] [--layers 4] [--threads 2]

Two figures, each against a baseline measured in the same run:

1. **KV cache vs none** at ``--tokens`` new tokens (default 1,000): without a cache every step re-runs
   the whole sequence (cost grows like t, so like t^2 overall); with it each step pushes one token
   through the network and attends over the stored keys and values. Target: the cache >= 5x faster.
2. **Throughput** of a ``d_model=256``, 4-layer, 4-head decoder generating for one sequence (batch 1)
   with the cache. Target: >= 300 tokens/s on a 2-core CPU.

Both paths sample the same tokens for the same seed (checked here and in ``tests/test_transformer.py``).
Timings on a shared machine are noisy: each figure is the best of ``--repeats`` runs after a warm-up
run, the same for both paths (``bench/timing.py``).
"""

import argparse
import os

import torch
from timing import best_time

from mlm_lessons import runtime
from mlm_lessons.transformer import TransformerLM, TransformerLMConfig

TARGET_CACHE_SPEEDUP = 5.0
TARGET_TOKENS_PER_SECOND = 300.0


def generation(model: TransformerLM, new_tokens: int, use_cache: bool) -> torch.Tensor:
    """One generation of ``new_tokens`` from a one-token prompt, always from the same seed."""
    return model.generate(torch.zeros(1, 1, dtype=torch.long), new_tokens, temperature=1.0, top_k=50,
                          use_cache=use_cache, generator=torch.Generator().manual_seed(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1000, help="new tokens per generation")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024, help="e.g. one SoundStream codebook")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs, after a warm-up run, for each path")
    args = parser.parse_args()

    runtime.seed_and_threads(0, args.threads)
    config = TransformerLMConfig(vocab_size=args.vocab, max_len=args.tokens + 1, d_model=args.d_model,
                                 n_layers=args.layers, n_heads=args.heads)
    model = TransformerLM(config).eval()
    print(f"decoder: d_model={args.d_model}, {args.layers} layers, {args.heads} heads, vocab {args.vocab}, "
          f"{model.num_parameters() / 1e6:.1f} M parameters; batch 1; {args.threads} thread(s); "
          f"torch {torch.__version__}")
    # Both paths timed alike: one untimed warm-up run, then the best of --repeats.
    cached_rate = args.tokens / best_time(lambda: generation(model, args.tokens, True), args.repeats)
    uncached_rate = args.tokens / best_time(lambda: generation(model, args.tokens, False), args.repeats)
    same = torch.equal(generation(model, args.tokens, True), generation(model, args.tokens, False))
    speedup = cached_rate / uncached_rate
    print(f"{args.tokens} new tokens without a KV cache: {uncached_rate:8.1f} tokens/s  (baseline)")
    print(f"{args.tokens} new tokens with the KV cache:  {cached_rate:8.1f} tokens/s  = {speedup:.1f}x the baseline "
          f"({'meets' if speedup >= TARGET_CACHE_SPEEDUP else 'MISSES'} the {TARGET_CACHE_SPEEDUP:.0f}x target); "
          f"same tokens: {same}")
    verdict = "meets" if cached_rate >= TARGET_TOKENS_PER_SECOND else "MISSES"
    print(f"throughput with the cache: {cached_rate:.0f} tokens/s ({verdict} the "
          f"{TARGET_TOKENS_PER_SECOND:.0f} tokens/s target; {1000 / cached_rate:.2f} ms per token)")


if __name__ == "__main__":
    main()
