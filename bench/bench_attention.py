"""Written-out attention vs PyTorch's fused ``F.scaled_dot_product_attention``: speed and agreement.

    python bench/bench_attention.py [--batch 8] [--heads 4] [--head-dim 32] [--threads 2]

For several sequence lengths and three masks (none, causal, causal + key padding), times the
course's :func:`mlm_lessons.attention.scaled_dot_product_attention` (which materialises the full
``(time, time)`` weight matrix so that lessons can plot it) against the fused kernel (the baseline,
measured in the same run), and prints the speed ratio and the largest absolute difference between
their outputs. Nothing is asserted: the tests prove equality, this shows what the readable version costs.
"""

import argparse
import os

import torch
import torch.nn.functional as F

from timing import best_time

from mlm_lessons import runtime
from mlm_lessons.attention import causal_mask, key_padding_to_attention_mask, padding_mask, scaled_dot_product_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runtime.seed_and_threads(0, args.threads)
    generator = torch.Generator().manual_seed(0)

    print(f"batch {args.batch}, {args.heads} heads, head_dim {args.head_dim}, float32, {args.threads} thread(s), "
          f"torch {torch.__version__}; time = best of {args.repeats}")
    print(f"{'length':>6s} {'mask':>16s} {'fused (ms)':>11s} {'written-out (ms)':>17s} {'ratio':>6s} {'max |diff|':>11s}")
    for length in args.lengths:
        shape = (args.batch, args.heads, length, args.head_dim)
        q, k, v = (torch.randn(shape, generator=generator) for _ in range(3))
        lengths = torch.randint(length // 2, length + 1, (args.batch,), generator=generator)
        padded = key_padding_to_attention_mask(padding_mask(lengths, length))
        cases = {
            "none": dict(mask=None, is_causal=False),
            "causal": dict(mask=None, is_causal=True),
            "causal + padding": dict(mask=padded & causal_mask(length), is_causal=False),
        }
        for name, case in cases.items():
            fused = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=case["mask"], is_causal=case["is_causal"])  # noqa: E731
            ours = lambda: scaled_dot_product_attention(q, k, v, mask=case["mask"], is_causal=case["is_causal"])  # noqa: E731
            fused_s, ours_s = best_time(fused, args.repeats), best_time(ours, args.repeats)
            error = (fused() - ours()).abs().max().item()
            print(f"{length:6d} {name:>16s} {1000 * fused_s:11.2f} {1000 * ours_s:17.2f} "
                  f"{ours_s / fused_s:5.1f}x {error:11.1e}")
    print("ratio = written-out time / fused time (the fused kernel is the baseline; > 1 means slower)")


if __name__ == "__main__":
    main()
