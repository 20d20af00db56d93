"""A tiny run shared by tests/test_train.py and by its ``torchrun`` launch of two processes.

Run as ``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_ddp_worker.py OUT_DIR``:
every rank trains the same model on its half of each global batch; rank 0 writes ``OUT_DIR/last.pt``.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from mlm_lessons.config import TrainConfig
from mlm_lessons.train import Trainer

DDP_CONFIG = TrainConfig(batch_size=8, learning_rate=1e-2, weight_decay=0.1, max_steps=6, warmup_steps=2,
                         grad_clip=1.0, device="cpu", checkpoint_every=0, log_every=1, seed=3)


def regression_data(num_examples: int = 32, seed: int = 0) -> TensorDataset:
    """Inputs (num_examples, 4) and noisy linear targets (num_examples, 1)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_examples, 4, generator=generator)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(num_examples, 1,
                                                                                         generator=generator)
    return TensorDataset(inputs, targets)


def small_mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    """(batch, 4) -> (batch, 1), with a LayerNorm so that both AdamW groups (decay, no decay) are used."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 32), nn.LayerNorm(32), nn.Tanh(), nn.Dropout(dropout), nn.Linear(32, 1))


def mse_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, targets = batch
    return nn.functional.mse_loss(model(inputs), targets)


if __name__ == "__main__":
    Trainer(small_mlp(), DDP_CONFIG, regression_data(), mse_loss, out_dir=sys.argv[1], progress=False).fit()
