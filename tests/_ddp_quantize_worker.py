"""A few residual-VQ training steps, shared by tests/test_quantize.py and by its ``torchrun`` launch.

Run as ``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_ddp_quantize_worker.py
OUT_DIR [WARMUP_STEPS]``: each rank quantises its half of every global batch (gloo, CPU) and writes
``OUT_DIR/rank{r}.pt``.
The steps cover k-means initialisation (on the first batch, or after a warm-up), EMA updates, quantiser
dropout and dead-code replacement.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from mlm_lessons.quantize import ResidualVQ

DIM, CODEBOOK_SIZE, LEVELS, STEPS, BATCH, FRAMES = 4, 16, 2, 4, 8, 6


def small_rvq(warmup_steps: int = 0) -> ResidualVQ:
    """Every mechanism on, and dead codes after a single unused step so that some surely die; with
    ``warmup_steps``, the k-means start clusters the vectors of those first steps."""
    return ResidualVQ(DIM, CODEBOOK_SIZE, LEVELS, quantizer_dropout=True, decay=0.8, kmeans_iterations=3,
                      dead_code_steps=1, seed=5, warmup_steps=warmup_steps)


def global_batches() -> list[torch.Tensor]:
    """``STEPS`` batches of ``(BATCH, FRAMES, DIM)``: three clusters, which move after the first step."""
    generator = torch.Generator().manual_seed(11)
    centres = 3 * torch.randn(3, DIM, generator=generator)
    batches = []
    for step in range(STEPS):
        which = torch.randint(3, (BATCH, FRAMES), generator=generator)
        noise = 0.3 * torch.randn(BATCH, FRAMES, DIM, generator=generator)
        batches.append(centres[which] + noise + (2.0 if step > 0 else 0.0))
    return batches


def train(quantizer: ResidualVQ, rank: int = 0, world_size: int = 1) -> dict:
    """Feed this rank's slice of every global batch; return the final state and what each step reported."""
    quantizer.train()
    losses, replaced = [], []
    for batch in global_batches():
        local = batch.chunk(world_size)[rank]
        output = quantizer(local)
        losses.append(output.loss.item())
        replaced.append(output.metrics["replaced_codes"].item())
    return {"state": quantizer.state_dict(), "loss": losses, "replaced": replaced}


if __name__ == "__main__":
    dist.init_process_group("gloo")
    result = train(small_rvq(int(sys.argv[2]) if len(sys.argv) > 2 else 0), dist.get_rank(), dist.get_world_size())
    torch.save(result, Path(sys.argv[1]) / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
