"""The generic training loop: it learns, clips, autocasts, checkpoints atomically, resumes bit for bit,
refuses mismatched checkpoints, trains GANs with two optimisers, and gives the same result under DDP."""

from __future__ import annotations

import dataclasses
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _ddp_worker import DDP_CONFIG, mse_loss, regression_data, small_mlp
from mlm_lessons.config import Config, TrainConfig, get_preset
from mlm_lessons.train import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    GlobalBatchSampler,
    Trainer,
    load_checkpoint,
    load_weights,
    resolve_device,
)

REPO = Path(__file__).resolve().parents[1]

CPU_CONFIG = TrainConfig(batch_size=8, learning_rate=1e-2, weight_decay=0.01, max_steps=20, warmup_steps=4,
                         grad_clip=1.0, device="cpu", checkpoint_every=5, log_every=3, seed=7)


def parameters_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


# -- device -------------------------------------------------------------------------------------------


def test_resolve_device_auto_and_explicit_cpu():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_resolve_device_refuses_missing_gpu():
    with pytest.raises(RuntimeError, match="no CUDA GPU.*device='cpu'"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu please")


# -- learning ------------------------------------------------------------------------------------------


def test_loss_decreases_on_a_regression_problem():
    model = small_mlp()
    config = dataclasses.replace(CPU_CONFIG, max_steps=150, log_every=10, checkpoint_every=0)
    history = Trainer(model, config, regression_data(64), mse_loss, progress=False).fit()

    assert [entry["step"] for entry in history] == list(range(10, 151, 10))
    assert set(history[0]) == {"step", "loss", "lr", "grad_norm"}
    assert history[-1]["loss"] < 0.05 * history[0]["loss"]
    # after warm-up, a cosine decay that ends at a tenth of the peak learning rate
    learning_rates = [entry["lr"] for entry in history]
    assert learning_rates == sorted(learning_rates, reverse=True)
    assert learning_rates[0] == pytest.approx(config.learning_rate, rel=0.02)
    assert learning_rates[-1] == pytest.approx(0.1 * config.learning_rate, rel=0.01)


def test_grad_clip_bounds_the_update():
    """With plain SGD at lr 1, the update *is* the clipped gradient: its norm must equal grad_clip."""
    data = regression_data(16)
    data.tensors = (data.tensors[0], 100.0 * data.tensors[1])  # huge targets -> huge gradients
    max_norm = 0.5
    config = dataclasses.replace(CPU_CONFIG, batch_size=16, max_steps=1, warmup_steps=0, grad_clip=max_norm,
                                 log_every=1, checkpoint_every=0)
    model = small_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    history = Trainer(model, config, data, mse_loss, optimizers=torch.optim.SGD(model.parameters(), lr=1.0),
                      lr_schedule="constant", progress=False).fit()

    update_norm = torch.linalg.vector_norm(
        torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]))
    assert history[0]["grad_norm"] > 10 * max_norm          # the log shows the norm *before* clipping
    assert update_norm == pytest.approx(max_norm, rel=1e-4)  # ... and the step used the clipped one


def test_bf16_autocast_runs_on_cpu():
    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_mlp()
            self.activation_dtypes: set[torch.dtype] = set()

        def forward(self, inputs):
            hidden = self.net[0](inputs)                  # (batch, 32): a Linear, autocast to bf16
            self.activation_dtypes.add(hidden.dtype)
            return self.net[1:](hidden)

    model = Probe()
    config = dataclasses.replace(CPU_CONFIG, bf16=True, max_steps=60, log_every=10, checkpoint_every=0)
    history = Trainer(model, config, regression_data(64), mse_loss, progress=False).fit()

    assert model.activation_dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def start_values(state: dict[str, torch.Tensor], prefix: str) -> list[torch.Tensor]:
    return [state[f"{prefix}.weight"], state[f"{prefix}.bias"]]


def test_two_objectives_each_update_only_their_own_parameters():
    """GAN-style alternation: the "b" objective back-propagates into "a" too, yet "a"'s step sees only its own
    loss's gradient (grads are cleared between objectives) and each optimiser moves only its player."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(1, 1)})
    data = regression_data(8)
    inputs, targets = data.tensors

    def loss_a(model, batch):
        return nn.functional.mse_loss(model["a"](batch[0]), batch[1])

    def loss_b(model, batch):
        prediction = model["b"](model["a"](batch[0]))
        return nn.functional.mse_loss(prediction, batch[1]), {"prediction_std": prediction.std()}

    start = parameters_of(model)
    reference = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(1, 1)})
    reference.load_state_dict(start)
    grads_a = torch.autograd.grad(loss_a(reference, (inputs, targets)), list(reference["a"].parameters()))
    grads_b = torch.autograd.grad(loss_b(reference, (inputs, targets))[0], list(reference["b"].parameters()))

    config = dataclasses.replace(CPU_CONFIG, max_steps=1, warmup_steps=0, grad_clip=None, checkpoint_every=0)
    history = Trainer(model, config, data, {"b": loss_b, "a": loss_a},
                      optimizers={"b": torch.optim.SGD(model["b"].parameters(), lr=0.1),
                                  "a": torch.optim.SGD(model["a"].parameters(), lr=0.1)},
                      lr_schedule="constant", progress=False).fit()

    for parameter, initial, grad in zip(model["a"].parameters(), start_values(start, "a"), grads_a):
        torch.testing.assert_close(parameter.detach(), initial - 0.1 * grad)
    for parameter, initial, grad in zip(model["b"].parameters(), start_values(start, "b"), grads_b):
        torch.testing.assert_close(parameter.detach(), initial - 0.1 * grad)
    assert set(history[0]) == {"step", "a/loss", "a/lr", "a/grad_norm", "b/loss", "b/lr", "b/grad_norm",
                               "b/prediction_std"}


# -- data order ------------------------------------------------------------------------------------------


def test_global_batch_sampler_splits_each_global_batch_and_resumes_mid_epoch():
    def take(sampler, count):
        iterator = iter(sampler)
        return [next(iterator) for _ in range(count)]

    single = take(GlobalBatchSampler(20, global_batch_size=6, seed=1), 7)   # 3 steps per epoch, 2 left over
    halves = [take(GlobalBatchSampler(20, 6, seed=1, rank=rank, world_size=2), 7) for rank in (0, 1)]
    for step in range(7):
        assert halves[0][step] + halves[1][step] == single[step]
    assert sorted(sum(single[:3], [])) == sorted(set(sum(single[:3], [])))  # no repeats within an epoch
    assert single[3:6] != single[0:3]                                        # reshuffled each epoch
    assert take(GlobalBatchSampler(20, 6, seed=1, start_step=4), 3) == single[4:7]
    with pytest.raises(ValueError, match="not divisible"):
        GlobalBatchSampler(20, 6, seed=1, world_size=4)


# -- checkpoints and resume ---------------------------------------------------------------------------


class Interrupt(Exception):
    """Stands in for a crash, a pre-empted job, or a closed laptop."""


def interrupted_after(calls: int):
    count = 0

    def loss_fn(model, batch):
        nonlocal count
        count += 1
        if count > calls:
            raise Interrupt
        return mse_loss(model, batch)
    return loss_fn


def test_resume_continues_bit_for_bit(tmp_path):
    """20 steps straight == 13 steps, a crash, and a resume from the step-10 checkpoint in fresh objects.

    Dropout makes the RNG state matter; 24 examples in batches of 8 make the crash land mid-epoch."""
    data = regression_data(24)
    straight = small_mlp(dropout=0.2)
    straight_history = Trainer(straight, CPU_CONFIG, data, mse_loss, out_dir=tmp_path / "a",
                               progress=False).fit()

    with pytest.raises(Interrupt):
        Trainer(small_mlp(dropout=0.2), CPU_CONFIG, data, interrupted_after(13), out_dir=tmp_path / "b",
                progress=False).fit()
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 10

    torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # a new process would not share our RNG
    resumed = small_mlp(seed=99, dropout=0.2)
    trainer = Trainer(resumed, CPU_CONFIG, regression_data(24), mse_loss, out_dir=tmp_path / "b", resume=True,
                      progress=False)
    assert trainer.step == 10
    resumed_history = trainer.fit()

    assert resumed_history == straight_history
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_resume_with_a_reiterable_of_batches(tmp_path):
    batches = [(x[:8], y[:8]) for x, y in [regression_data(8, seed=seed).tensors for seed in range(3)]]
    straight = small_mlp()
    Trainer(straight, CPU_CONFIG, batches, mse_loss, out_dir=tmp_path / "a", progress=False).fit()
    with pytest.raises(Interrupt):
        Trainer(small_mlp(), CPU_CONFIG, batches, interrupted_after(7), out_dir=tmp_path / "b",
                progress=False).fit()
    resumed = small_mlp(seed=5)
    Trainer(resumed, CPU_CONFIG, batches, mse_loss, out_dir=tmp_path / "b", resume=True, progress=False).fit()
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_checkpoint_holds_everything_needed(tmp_path):
    model = small_mlp()
    config = dataclasses.replace(get_preset("tiny"), train=CPU_CONFIG)
    Trainer(model, config, regression_data(24), mse_loss, out_dir=tmp_path, progress=False).fit()

    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["step"] == 20
    assert checkpoint["data_position"] == {"batches_consumed": 20, "epoch": 6, "batch_in_epoch": 2}
    assert set(checkpoint["rng"][0]) == {"python", "numpy", "torch"}
    assert Config.from_dict(checkpoint["config"]) == config
    assert checkpoint["history"][-1]["step"] == 20
    assert set(checkpoint["optimizers"]) == set(checkpoint["schedulers"]) == {""}

    restored = small_mlp(seed=42)
    load_weights(restored, tmp_path / "last.pt")
    for name, value in model.state_dict().items():
        assert torch.equal(value, restored.state_dict()[name])

    # A finished run resumed again trains no further: "load if present, else train".
    again = Trainer(small_mlp(), config, regression_data(24), mse_loss, out_dir=tmp_path, resume=True,
                    progress=False)
    assert again.fit() == checkpoint["history"]


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    data = regression_data(24)
    config = dataclasses.replace(CPU_CONFIG, max_steps=5)
    Trainer(small_mlp(), config, data, mse_loss, out_dir=tmp_path, progress=False).fit()
    good_bytes = (tmp_path / "last.pt").read_bytes()

    def save_then_die(payload, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    longer = dataclasses.replace(CPU_CONFIG, max_steps=10)
    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(OSError, match="No space left"):
        Trainer(small_mlp(), longer, data, mse_loss, out_dir=tmp_path, resume=True, progress=False).fit()
    monkeypatch.undo()

    assert (tmp_path / "last.pt").read_bytes() == good_bytes
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.pt"]
    trainer = Trainer(small_mlp(), longer, data, mse_loss, out_dir=tmp_path, resume=True, progress=False)
    assert trainer.step == 5
    trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 10


def test_existing_checkpoint_needs_resume(tmp_path):
    config = dataclasses.replace(CPU_CONFIG, max_steps=2)
    Trainer(small_mlp(), config, regression_data(24), mse_loss, out_dir=tmp_path, progress=False).fit()
    with pytest.raises(FileExistsError, match="resume=True"):
        Trainer(small_mlp(), config, regression_data(24), mse_loss, out_dir=tmp_path, progress=False)


def test_mismatched_checkpoints_are_refused_clearly(tmp_path):
    config = dataclasses.replace(CPU_CONFIG, max_steps=2)
    data = regression_data(24)
    Trainer(small_mlp(), config, data, mse_loss, out_dir=tmp_path, model_config={"hidden": 32},
            progress=False).fit()

    def resume(model, config=config, model_config={"hidden": 32}):
        return Trainer(model, config, data, mse_loss, out_dir=tmp_path, resume=True,
                       model_config=model_config, progress=False)

    wider = nn.Sequential(nn.Linear(4, 64), nn.LayerNorm(64), nn.Tanh(), nn.Dropout(0.0), nn.Linear(64, 1))
    with pytest.raises(CheckpointMismatchError, match=r"0.weight: checkpoint \(32, 4\), model \(64, 4\)"):
        resume(wider)
    deeper = nn.Sequential(*small_mlp(), nn.Linear(1, 1))
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint: 5.weight; 5.bias"):
        resume(deeper)
    with pytest.raises(CheckpointMismatchError,
                       match=r"train.learning_rate \(checkpoint 0.01, now 0.1\).*fresh out_dir"):
        resume(small_mlp(), config=dataclasses.replace(config, learning_rate=0.1))
    with pytest.raises(CheckpointMismatchError, match=r"model.hidden \(checkpoint 32, now 64\)"):
        resume(small_mlp(), model_config={"hidden": 64})
    # Changing only where or how long it runs is allowed.
    resume(small_mlp(), config=dataclasses.replace(config, max_steps=4, log_every=1, bf16=True)).fit()


def test_corrupt_checkpoint_is_reported(tmp_path):
    config = dataclasses.replace(CPU_CONFIG, max_steps=2)
    Trainer(small_mlp(), config, regression_data(24), mse_loss, out_dir=tmp_path, progress=False).fit()
    path = tmp_path / "last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError,
                       match=re.escape(f"cannot read checkpoint {path}") + ".*truncated or damaged"):
        Trainer(small_mlp(), config, regression_data(24), mse_loss, out_dir=tmp_path, resume=True)


# -- several processes ---------------------------------------------------------------------------------


def test_ddp_on_two_cpu_processes_matches_one_process_on_the_global_batch(tmp_path):
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={port}", str(REPO / "tests" / "_ddp_worker.py"),
         str(tmp_path / "ddp")],
        env=environment, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]

    single = small_mlp()
    single_history = Trainer(single, DDP_CONFIG, regression_data(), mse_loss, progress=False).fit()

    distributed = small_mlp(seed=1)
    checkpoint = load_weights(distributed, tmp_path / "ddp" / "last.pt")
    assert len(checkpoint["rng"]) == 2  # one RNG state per rank
    for name, value in single.state_dict().items():
        torch.testing.assert_close(distributed.state_dict()[name], value, rtol=0, atol=1e-6)
    # the logged loss is the mean over ranks, i.e. the loss of the global batch
    for ours, theirs in zip(single_history, checkpoint["history"]):
        assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-6)
