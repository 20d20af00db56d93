"""Tiny runs shared by tests/test_train.py and by its ``torchrun`` launch of two processes.

Run as ``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_ddp_worker.py OUT_DIR``:
every rank trains the same model on its half of each global batch, once per run of ``RUNS``; rank 0
writes ``OUT_DIR/<run>/last.pt``. One launch for all of them keeps the test fast.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from mlm_lessons.config import TrainConfig
from mlm_lessons.train import Trainer

DDP_CONFIG = TrainConfig(batch_size=8, learning_rate=1e-2, weight_decay=0.1, max_steps=6, warmup_steps=2,
                         grad_clip=1.0, device="cpu", checkpoint_every=0, log_every=1, seed=3)
LATE_START = {"b": 3}  # the objective "b" of two_player_model is skipped for steps 0, 1 and 2


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


def two_player_model(seed: int = 0) -> nn.ModuleDict:
    """Two "players": ``a`` maps (batch, 4) -> (batch, 1) and ``b`` maps ``a``'s output to (batch, 1)."""
    torch.manual_seed(seed)
    return nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(1, 1)})


def loss_a(model: nn.ModuleDict, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, targets = batch
    return nn.functional.mse_loss(model["a"](inputs), targets)


def loss_b(model: nn.ModuleDict, batch: tuple[torch.Tensor, torch.Tensor], step: int):
    """Back-propagates into ``a`` too (cleared before ``a``'s update); logs the step it was given."""
    inputs, targets = batch
    prediction = model["b"](model["a"](inputs))
    return nn.functional.mse_loss(prediction, targets), {"given_step": torch.tensor(float(step))}


def two_player_optimizers(model: nn.ModuleDict) -> dict[str, torch.optim.Optimizer]:
    return {name: torch.optim.AdamW(model[name].parameters(), lr=1e-2) for name in ("a", "b")}


def train_run(name: str, out_dir: str | None = None) -> Trainer:
    """The trainer of run ``name`` (one of ``RUNS``), before ``fit``."""
    if name == "plain":
        return Trainer(small_mlp(), DDP_CONFIG, regression_data(), mse_loss, out_dir=out_dir, progress=False)
    if name == "accumulated":
        config = dataclasses.replace(DDP_CONFIG, grad_accum_steps=2)
        return Trainer(small_mlp(), config, regression_data(), mse_loss, out_dir=out_dir, progress=False)
    if name == "late_start":  # two objectives, one starting at step 3 and taking the step, accumulated
        model = two_player_model()
        config = dataclasses.replace(DDP_CONFIG, grad_accum_steps=2)
        return Trainer(model, config, regression_data(), {"a": loss_a, "b": loss_b},
                       optimizers=two_player_optimizers(model), objective_start_steps=LATE_START,
                       out_dir=out_dir, progress=False)
    if name == "first_half":  # stops at step 3; the test resumes it in one process (another number of ranks).
        # A constant schedule after warm-up, so that stopping early does not change the learning rates.
        config = dataclasses.replace(DDP_CONFIG, max_steps=DDP_CONFIG.max_steps // 2)
        return Trainer(small_mlp(), config, regression_data(), mse_loss, out_dir=out_dir, progress=False,
                       lr_schedule="constant")
    raise ValueError(f"unknown run {name!r}; choose one of {RUNS}")


RUNS = ("plain", "accumulated", "late_start", "first_half")


if __name__ == "__main__":
    dist.init_process_group("gloo")  # once for all runs (the trainer leaves an existing group alone)
    for run in RUNS:
        train_run(run, out_dir=f"{sys.argv[1]}/{run}").fit()
    dist.destroy_process_group()
