"""The generic training loop: it learns, clips, autocasts, compiles, checkpoints atomically, resumes bit for bit,
refuses mismatched checkpoints (but not older ones), trains GANs with two optimisers and objectives that
start later, accumulates gradients, and gives the same result under DDP, for the course's models too (the
MusicLM stages, the SoundStream GAN, w2v-BERT)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _torchrun import run_on_two_cpu_processes
from _ddp_models_worker import train as train_course_model
from _ddp_worker import (
    DDP_CONFIG,
    LATE_START,
    RUNS,
    loss_a,
    loss_b,
    mse_loss,
    regression_data,
    small_mlp,
    two_player_model,
    two_player_optimizers,
)
from mlm_lessons.config import CodecConfig, Config, TrainConfig, get_preset
from mlm_lessons.train import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    GlobalBatchSampler,
    Trainer,
    load_checkpoint,
    load_weights,
    resolve_device,
    warmup_cosine,
)


CPU_CONFIG = TrainConfig(batch_size=8, learning_rate=1e-2, weight_decay=0.01, max_steps=20, warmup_steps=4,
                         grad_clip=1.0, device="cpu", checkpoint_every=5, log_every=3, seed=7)


def parameters_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def assert_same_parameters(model: nn.Module, other: nn.Module, atol: float = 0.0) -> None:
    """Bit for bit with the default ``atol=0``; else within float rounding."""
    for name, value in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[name], value, rtol=0, atol=atol, msg=name)


def assert_same_history(history: list[dict], other: list[dict], rel: float = 1e-5) -> None:
    assert [sorted(entry) for entry in history] == [sorted(entry) for entry in other]
    for entry, other_entry in zip(history, other):
        assert other_entry == pytest.approx(entry, rel=rel, abs=1e-7)


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


def test_compiled_and_uncompiled_runs_match_and_resume_each_other(tmp_path):
    """10 compiled steps, 5 uncompiled, 5 compiled again, each resumed from the checkpoint before: the run of
    20 uncompiled steps. The tests compile with "aot_eager", which traces and compiles as inductor does but
    runs eager kernels: about a second per compilation instead of tens on a CPU."""
    traced = False

    def mse_noting_compilation(model, batch):
        nonlocal traced
        if torch.compiler.is_compiling():
            traced = True   # only when torch.compile traced it (written, never read: no recompilation)
        return mse_loss(model, batch)

    config = dataclasses.replace(CPU_CONFIG, checkpoint_every=5)   # 20 steps, logged at 3, 5, 6, 9, 10, 12, ...
    data = regression_data(24)
    straight = small_mlp()
    # A constant learning rate after warm-up, so that lengthening max_steps on resume changes nothing.
    straight_history = Trainer(straight, config, data, mse_loss, out_dir=tmp_path / "straight",
                               lr_schedule="constant", progress=False).fit()
    out_dir = tmp_path / "in_turns"

    def run(model, max_steps, compile):
        return Trainer(model, dataclasses.replace(config, max_steps=max_steps, compile=compile), data,
                       mse_noting_compilation, out_dir=out_dir, resume=True, lr_schedule="constant",
                       compile_backend="aot_eager", progress=False).fit()

    run(small_mlp(), 10, compile=True)
    assert traced
    assert list(load_checkpoint(out_dir / "last.pt")["model"]) == list(small_mlp().state_dict())  # plain names
    traced = False
    run(small_mlp(seed=99), 15, compile=False)
    assert not traced
    written_before_the_field_existed(out_dir / "last.pt", "train", "compile")   # resumes compiled all the same
    resumed = small_mlp(seed=99)
    resumed_history = run(resumed, 20, compile=True)
    assert traced

    assert_same_parameters(straight, resumed, atol=1e-5)
    assert_same_history(straight_history, resumed_history)


def test_compile_backend_is_checked_when_compiling():
    config = dataclasses.replace(CPU_CONFIG, compile=True)
    with pytest.raises(ValueError, match=r"compile_backend 'inductr' is not a torch.compile backend; use 'induc"):
        Trainer(small_mlp(), config, regression_data(24), mse_loss, compile_backend="inductr", progress=False)


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

    # Accumulation cuts each rank's share into micro-batches, and does not change what a step sees.
    thirds = [take(GlobalBatchSampler(20, 6, seed=1, rank=rank, world_size=2, grad_accum_steps=3), 21)
              for rank in (0, 1)]
    for step in range(7):
        micro_batches = thirds[0][3 * step:3 * step + 3] + thirds[1][3 * step:3 * step + 3]
        assert [len(micro_batch) for micro_batch in micro_batches] == [1] * 6
        assert sum(micro_batches, []) == single[step]
    with pytest.raises(ValueError, match=r"not divisible by 2 process\(es\) x grad_accum_steps 2 = 4"):
        GlobalBatchSampler(20, 6, seed=1, world_size=2, grad_accum_steps=2)


# -- gradient accumulation --------------------------------------------------------------------------------


def test_gradient_accumulation_matches_one_big_batch():
    """4 micro-batches of 2 per step train the same parameters as batches of 8, and log the same means."""
    config = dataclasses.replace(CPU_CONFIG, max_steps=12, checkpoint_every=0, log_every=2)
    whole, accumulated = small_mlp(), small_mlp()
    whole_history = Trainer(whole, config, regression_data(24), mse_loss, progress=False).fit()
    accumulated_history = Trainer(accumulated, dataclasses.replace(config, grad_accum_steps=4),
                                  regression_data(24), mse_loss, progress=False).fit()

    assert_same_parameters(whole, accumulated, atol=1e-6)
    assert_same_history(whole_history, accumulated_history)


def test_gradient_accumulation_matches_one_big_batch_with_two_objectives():
    config = dataclasses.replace(CPU_CONFIG, max_steps=8, checkpoint_every=0, log_every=1)
    whole, accumulated = two_player_model(), two_player_model()
    histories = [
        Trainer(model, dataclasses.replace(config, grad_accum_steps=grad_accum_steps), regression_data(24),
                {"a": loss_a, "b": loss_b}, optimizers=two_player_optimizers(model), progress=False).fit()
        for model, grad_accum_steps in ((whole, 1), (accumulated, 2))]

    assert_same_parameters(whole, accumulated, atol=1e-6)
    assert_same_history(*histories)
    assert "b/given_step" in histories[1][0]


def test_grad_accum_steps_may_change_on_resume(tmp_path):
    """It trades memory for time only: resumed with 4 micro-batches, a run ends where the straight one did."""
    data = regression_data(24)
    straight = small_mlp()
    straight_history = Trainer(straight, CPU_CONFIG, data, mse_loss, out_dir=tmp_path / "a",
                               progress=False).fit()
    with pytest.raises(Interrupt):
        Trainer(small_mlp(), CPU_CONFIG, data, interrupted_after(13), out_dir=tmp_path / "b",
                progress=False).fit()

    resumed = small_mlp(seed=99)
    resumed_history = Trainer(resumed, dataclasses.replace(CPU_CONFIG, grad_accum_steps=4), data, mse_loss,
                              out_dir=tmp_path / "b", resume=True, progress=False).fit()

    assert_same_parameters(straight, resumed, atol=1e-6)
    assert_same_history(straight_history, resumed_history)


def test_gradient_accumulation_over_ready_batches(tmp_path):
    """Over a re-iterable of batches, each yielded batch is one micro-batch: two batches of 4 per step
    train like one batch of 8; there, grad_accum_steps sets the batch size and cannot change on resume."""
    inputs, targets = regression_data(16).tensors
    halves = [(inputs[start:start + 4], targets[start:start + 4]) for start in range(0, 16, 4)]
    wholes = [(inputs[start:start + 8], targets[start:start + 8]) for start in range(0, 16, 8)]
    config = dataclasses.replace(CPU_CONFIG, max_steps=6, checkpoint_every=0)
    whole, accumulated = small_mlp(), small_mlp()
    Trainer(whole, config, wholes, mse_loss, progress=False).fit()
    accumulated_config = dataclasses.replace(config, grad_accum_steps=2)
    Trainer(accumulated, accumulated_config, halves, mse_loss, out_dir=tmp_path, progress=False).fit()

    assert_same_parameters(whole, accumulated, atol=1e-6)
    assert load_checkpoint(tmp_path / "last.pt")["data_position"] == {"batches_consumed": 12}
    with pytest.raises(CheckpointMismatchError, match=r"train.grad_accum_steps \(checkpoint 2, now 1\)"):
        Trainer(small_mlp(), dataclasses.replace(config, max_steps=8), halves, mse_loss, out_dir=tmp_path,
                resume=True)


def test_batch_size_must_split_into_micro_batches():
    def trainer(grad_accum_steps):
        config = dataclasses.replace(CPU_CONFIG, grad_accum_steps=grad_accum_steps)
        return Trainer(small_mlp(), config, regression_data(24), mse_loss)

    divisible = r"batch_size 8 .* not divisible by 1 process\(es\) x grad_accum_steps 3 = 3; choose a"
    with pytest.raises(ValueError, match=divisible):
        trainer(grad_accum_steps=3)
    with pytest.raises(ValueError, match=r"TrainConfig\.grad_accum_steps = 0, but it must be an integer >= 1"):
        trainer(grad_accum_steps=0)


# -- objectives that start later ---------------------------------------------------------------------------


def test_an_objective_can_start_later_and_a_loss_fn_can_take_the_step():
    """"b" starts at step 4: until then it is never called and its player does not move; its scheduler
    counts from its own start; it is given the step; history entries before its start have no "b/" keys."""
    calls = {"a": 0, "b": 0}

    def counted(name, loss_fn):
        @functools.wraps(loss_fn)  # the same signature: with a ``step`` parameter only if loss_fn has one
        def counting_loss_fn(model, batch, **step):
            calls[name] += 1
            return loss_fn(model, batch, **step)
        return counting_loss_fn

    config = dataclasses.replace(CPU_CONFIG, max_steps=10, warmup_steps=4, checkpoint_every=0, log_every=3)

    def train(max_steps):
        model = two_player_model()
        history = Trainer(model, dataclasses.replace(config, max_steps=max_steps), regression_data(24),
                          {"a": counted("a", loss_a), "b": counted("b", loss_b)},
                          optimizers=two_player_optimizers(model), objective_start_steps={"b": 4},
                          progress=False).fit()
        return model, history

    start = parameters_of(two_player_model())
    before_start, _ = train(max_steps=4)
    assert calls == {"a": 4, "b": 0}
    assert all(torch.equal(before_start.state_dict()[name], start[name]) for name in ("b.weight", "b.bias"))
    assert not torch.equal(before_start.state_dict()["a.weight"], start["a.weight"])

    after_start, history = train(max_steps=10)
    assert calls == {"a": 14, "b": 6}
    assert not torch.equal(after_start.state_dict()["b.weight"], start["b.weight"])
    assert [entry["step"] for entry in history] == [3, 6, 9, 10]
    assert "b/loss" not in history[0] and set(history[0]) == {"step", "a/loss", "a/lr", "a/grad_norm"}
    assert set(history[1]) == set(history[0]) | {"b/loss", "b/lr", "b/grad_norm", "b/given_step"}
    # Means over the steps "b" ran in each interval (4 and 5, then 6 to 8, then 9), of the step it was given.
    assert [entry.get("b/given_step") for entry in history] == [None, 4.5, 7.0, 9.0]
    # "a" follows the run's schedule; "b" warms up from its own start and ends at the floor with "a".
    multiplier_a = warmup_cosine(4, 10)
    multiplier_b = warmup_cosine(4, 10 - 4)
    assert [entry["a/lr"] for entry in history] == pytest.approx(
        [config.learning_rate * multiplier_a(step - 1) for step in (3, 6, 9, 10)])
    assert [entry.get("b/lr") for entry in history[1:]] == pytest.approx(
        [config.learning_rate * multiplier_b(step - 1 - 4) for step in (6, 9, 10)])


def test_objective_start_steps_are_checked():
    model = two_player_model()
    objectives = {"a": loss_a, "b": loss_b}
    with pytest.raises(ValueError, match=r"objective names \['a', 'b'\].*'discriminator': 5"):
        Trainer(model, CPU_CONFIG, regression_data(24), objectives, optimizers=two_player_optimizers(model),
                objective_start_steps={"discriminator": 5})
    with pytest.raises(ValueError, match="at least one objective start at step 0"):
        Trainer(model, CPU_CONFIG, regression_data(24), objectives, optimizers=two_player_optimizers(model),
                objective_start_steps={"a": 1, "b": 2})


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


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_resume_continues_bit_for_bit(tmp_path, grad_accum_steps):
    """20 steps straight == 13 steps, a crash, and a resume from the step-10 checkpoint in fresh objects.

    Dropout makes the RNG state matter; 24 examples in batches of 8 make the crash land mid-epoch."""
    config = dataclasses.replace(CPU_CONFIG, grad_accum_steps=grad_accum_steps)
    data = regression_data(24)
    straight = small_mlp(dropout=0.2)
    straight_history = Trainer(straight, config, data, mse_loss, out_dir=tmp_path / "a", progress=False).fit()

    with pytest.raises(Interrupt):
        Trainer(small_mlp(dropout=0.2), config, data, interrupted_after(13 * grad_accum_steps),
                out_dir=tmp_path / "b", progress=False).fit()
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 10

    torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # a new process would not share our RNG
    resumed = small_mlp(seed=99, dropout=0.2)
    trainer = Trainer(resumed, config, regression_data(24), mse_loss, out_dir=tmp_path / "b", resume=True,
                      progress=False)
    assert trainer.step == 10
    resumed_history = trainer.fit()

    assert resumed_history == straight_history
    assert_same_parameters(straight, resumed)


class NoisyExamples(torch.utils.data.Dataset):
    """Regression examples with fresh input noise on every read (an augmentation drawing random numbers)."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        x, y = self.data[index]
        return x + 0.1 * torch.randn_like(x), y


def test_resume_is_exact_with_dataloader_workers_and_random_augmentation(tmp_path):
    """Two workers take turns making batches; after a resume the turns fall differently, yet every batch
    draws the same noise because each micro-batch seeds its own (module docstring)."""
    data = NoisyExamples(regression_data(24))
    straight = small_mlp()
    straight_history = Trainer(straight, CPU_CONFIG, data, mse_loss, out_dir=tmp_path / "a", progress=False,
                               num_workers=2).fit()
    with pytest.raises(Interrupt):
        Trainer(small_mlp(), CPU_CONFIG, data, interrupted_after(13), out_dir=tmp_path / "b", progress=False,
                num_workers=2).fit()
    resumed = small_mlp(seed=99)
    resumed_history = Trainer(resumed, CPU_CONFIG, data, mse_loss, out_dir=tmp_path / "b", resume=True,
                              progress=False, num_workers=2).fit()
    assert resumed_history == straight_history
    assert_same_parameters(straight, resumed)


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_resume_with_a_reiterable_of_batches(tmp_path, grad_accum_steps):
    """3 batches: with 2 per step, a step can start in the middle of a pass."""
    config = dataclasses.replace(CPU_CONFIG, grad_accum_steps=grad_accum_steps)
    batches = [(x[:8], y[:8]) for x, y in [regression_data(8, seed=seed).tensors for seed in range(3)]]
    straight = small_mlp()
    Trainer(straight, config, batches, mse_loss, out_dir=tmp_path / "a", progress=False).fit()
    with pytest.raises(Interrupt):
        Trainer(small_mlp(), config, batches, interrupted_after(7 * grad_accum_steps), out_dir=tmp_path / "b",
                progress=False).fit()
    resumed = small_mlp(seed=5)
    Trainer(resumed, config, batches, mse_loss, out_dir=tmp_path / "b", resume=True, progress=False).fit()
    assert_same_parameters(straight, resumed)


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


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    hidden: int = 32
    depth: int = 2


def written_before_the_field_existed(path: Path, section: str, field: str | None = None) -> None:
    """Edit the checkpoint at ``path`` as if ``section.field`` (or the whole section) had not existed yet."""
    checkpoint = torch.load(path, weights_only=True)
    if field is None:
        del checkpoint["config"][section]
    else:
        del checkpoint["config"][section][field]
    torch.save(checkpoint, path)


@pytest.mark.parametrize("section, field", [("train", "weight_decay"), ("train", "compile"), ("codec", None),
                                            ("model", "depth")])
def test_checkpoints_written_before_a_field_existed_still_resume(tmp_path, section, field):
    """The old run behaved as the new field's default does: resuming with the default is the same run."""
    config = dataclasses.replace(get_preset("tiny"), codec=CodecConfig(),
                                 train=dataclasses.replace(CPU_CONFIG, max_steps=2))
    assert config.train.weight_decay == TrainConfig().weight_decay
    data = regression_data(24)
    Trainer(small_mlp(), config, data, mse_loss, out_dir=tmp_path, model_config=ModelSettings(),
            progress=False).fit()
    written_before_the_field_existed(tmp_path / "last.pt", section, field)

    longer = dataclasses.replace(config, train=dataclasses.replace(config.train, max_steps=4))
    trainer = Trainer(small_mlp(), longer, data, mse_loss, out_dir=tmp_path, resume=True,
                      model_config=ModelSettings(), progress=False)
    assert trainer.step == 2
    trainer.fit()


def test_checkpoints_written_before_a_field_existed_refuse_other_values(tmp_path):
    """A value other than the default of a field the checkpoint lacks would change the run: refused."""
    data = regression_data(24)

    def write_then_resume(field, model_config=None, resumed_model_config=None):
        config = dataclasses.replace(CPU_CONFIG, max_steps=2)
        out_dir = tmp_path / str(len(list(tmp_path.iterdir())))
        Trainer(small_mlp(), config, data, mse_loss, out_dir=out_dir, model_config=model_config,
                progress=False).fit()
        written_before_the_field_existed(out_dir / "last.pt", *field.split("."))
        Trainer(small_mlp(), config, data, mse_loss, out_dir=out_dir, resume=True,
                model_config=resumed_model_config, progress=False)

    assert CPU_CONFIG.seed != TrainConfig().seed
    with pytest.raises(CheckpointMismatchError, match=r"train.seed \(not in the checkpoint, which predates "
                                                      r"it and so ran with the default 0; now 7\)"):
        write_then_resume("train.seed")
    with pytest.raises(CheckpointMismatchError, match=r"model.depth \(not in the checkpoint, .* now 3\)"):
        write_then_resume("model.depth", ModelSettings(depth=3), ModelSettings(depth=3))
    # A plain dict has no defaults: a key the checkpoint lacks is a difference.
    with pytest.raises(CheckpointMismatchError, match=r"model.depth \(checkpoint '<absent>', now 2\)"):
        write_then_resume("model.depth", {"hidden": 32, "depth": 2}, {"hidden": 32, "depth": 2})
    # ... and so is a field the checkpoint has but this version of the config lacks.
    with pytest.raises(CheckpointMismatchError, match=r"model.hidden \(checkpoint 32, now '<absent>'\)"):
        write_then_resume("model.depth", ModelSettings(), {"depth": 2})


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
    """One launch trains the runs of _ddp_worker: plain, with 2 micro-batches per step (all-reduced once per
    step), with two objectives (one of which starts at step 3 and takes the step), and a run stopped halfway
    that one process then resumes."""
    run_on_two_cpu_processes("_ddp_worker.py", str(tmp_path / "ddp"))

    # One process on the whole global batch, without accumulation: what all three runs must match.
    single = small_mlp()
    single_history = Trainer(single, DDP_CONFIG, regression_data(), mse_loss, progress=False).fit()
    late = two_player_model()
    late_history = Trainer(late, DDP_CONFIG, regression_data(), {"a": loss_a, "b": loss_b},
                           optimizers=two_player_optimizers(late), objective_start_steps=LATE_START,
                           progress=False).fit()

    for run in ("plain", "accumulated", "late_start"):
        reference, history = (late, late_history) if run == "late_start" else (single, single_history)
        distributed = two_player_model(seed=1) if run == "late_start" else small_mlp(seed=1)
        checkpoint = load_weights(distributed, tmp_path / "ddp" / run / "last.pt")
        assert len(checkpoint["rng"]) == 2  # one RNG state per rank
        assert_same_parameters(reference, distributed, atol=1e-6)
        # the logged losses are means over ranks, i.e. the losses of the global batch
        assert_same_history(history, checkpoint["history"])
    assert [entry.get("b/given_step") for entry in late_history] == [None, None, None, 3.0, 4.0, 5.0]

    # Three steps on two ranks, then the other three resumed in one process: the run of one process.
    assert load_checkpoint(tmp_path / "ddp" / "first_half" / "last.pt")["step"] == DDP_CONFIG.max_steps // 2
    constant = small_mlp()
    constant_history = Trainer(constant, DDP_CONFIG, regression_data(), mse_loss, progress=False,
                               lr_schedule="constant").fit()
    resumed = small_mlp(seed=1)
    resumed_history = Trainer(resumed, DDP_CONFIG, regression_data(), mse_loss, out_dir=tmp_path / "ddp" / "first_half",
                              resume=True, progress=False, lr_schedule="constant").fit()
    assert_same_parameters(constant, resumed, atol=1e-6)
    assert_same_history(constant_history, resumed_history)


@pytest.fixture(scope="module")
def course_models_under_ddp(tmp_path_factory) -> Path:
    """One torchrun launch of two processes for every run of _ddp_models_worker (the three MusicLM stages, the
    codec and its discriminators, w2v-BERT, each trained by the course's own function, and a compiled run); their
    folder."""
    out_dir = tmp_path_factory.mktemp("course_models") / "ddp"
    run_on_two_cpu_processes("_ddp_models_worker.py", str(out_dir), "semantic", "coarse", "fine", "codec",
                             "w2v_bert", "compiled")
    return out_dir


@contextlib.contextmanager
def one_thread():
    """Run as each torchrun rank does (OMP_NUM_THREADS=1): on a loaded machine with few cores, two threads of
    these tiny convolutions can wait on each other for twenty times as long as one thread takes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def single_and_distributed(run: str, ddp_dir: Path, tmp_path: Path) -> tuple[nn.Module, list[dict], dict, list]:
    """``run`` of _ddp_models_worker trained by one process on the whole global batch, ``(model, history)``,
    then the two ranks' ``(checkpoint, [rank 0's state, rank 1's state])``."""
    with one_thread():
        model, history = train_course_model(run, tmp_path / run)
    states = [torch.load(ddp_dir / run / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    return model, history, load_checkpoint(ddp_dir / run / "last.pt"), states


@pytest.mark.parametrize("stage", ["semantic", "coarse", "fine"])
def test_ddp_trains_a_musiclm_stage_like_one_process_on_the_global_batch(course_models_under_ddp, tmp_path, stage):
    """musiclm.train_stage on 2 ranks x 2 windows per step == on 1 process x 4 windows: the same losses and
    accuracies (no padding: each rank's mean is over as many tokens) and the same weights on both ranks."""
    model, history, checkpoint, states = single_and_distributed(stage, course_models_under_ddp, tmp_path)
    assert len(history) == len(checkpoint["history"]) == 3
    assert_same_history(history, checkpoint["history"])
    for state in states:
        for name, value in model.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=1e-5, msg=name)


def test_ddp_trains_the_codec_and_its_discriminators_like_one_process(course_models_under_ddp, tmp_path):
    """soundstream.train_codec, two objectives (the discriminators from step 1) and Adam, on 2 ranks x 2 crops: the
    losses and weights of 1 process x 4 crops. The codebooks' k-means, EMA and dead codes gather every rank's
    vectors, which adds sums in another order: hence a tolerance, a tenth of what 3 Adam steps at the codec's
    learning rate (1e-3) can move a weight. Perplexity and usage are means of each rank's own, not the batch's."""
    model, history, checkpoint, states = single_and_distributed("codec", course_models_under_ddp, tmp_path)
    distributed = checkpoint["history"]
    assert [sorted(entry) for entry in history] == [sorted(entry) for entry in distributed]
    assert len(history) == 3 and "discriminator/loss" not in history[0] and "discriminator/loss" in history[1]
    for entry, other in zip(history, distributed):
        batch_wide = {key: value for key, value in entry.items() if "/perplexity/" not in key and "/usage/" not in key}
        assert {key: other[key] for key in batch_wide} == pytest.approx(batch_wide, rel=1e-4)
    torch.testing.assert_close(states[1], states[0], rtol=0, atol=0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(states[0][name], value, rtol=0, atol=3e-4, msg=name)


def test_ddp_trains_w2v_bert_on_every_rank_alike(course_models_under_ddp, tmp_path):
    """w2v_bert.train_w2v_bert on 2 ranks: both end with the same weights; its masks, masked-frame noise and
    distractors come from each rank's own generator, so its losses differ from one process's, but its targets'
    quantiser, which draws nothing and gathers the vectors of every rank, ends as one process's does."""
    model, history, checkpoint, states = single_and_distributed("w2v_bert", course_models_under_ddp, tmp_path)
    assert [sorted(entry) for entry in history] == [sorted(entry) for entry in checkpoint["history"]]
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in checkpoint["history"])
    torch.testing.assert_close(states[1], states[0], rtol=0, atol=0)
    quantizer = {name: value for name, value in model.state_dict().items() if name.startswith("quantizer.")}
    torch.testing.assert_close({name: states[0][name] for name in quantizer}, quantizer, rtol=0, atol=1e-6)


def test_ddp_runs_a_compiled_loss_like_one_uncompiled_process(course_models_under_ddp):
    """train.compile under DDP, with 2 micro-batches per rank and step (no_sync, then one all-reduce)."""
    checkpoint = load_checkpoint(course_models_under_ddp / "compiled" / "last.pt")
    states = [torch.load(course_models_under_ddp / "compiled" / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    eager = small_mlp()
    history = Trainer(eager, DDP_CONFIG, regression_data(), mse_loss, progress=False).fit()
    assert_same_history(history, checkpoint["history"])
    for state in states:
        assert list(state) == list(eager.state_dict())          # the plain model's names
        for name, value in eager.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=1e-6, msg=name)


# -- never lose a good checkpoint ---------------------------------------------------------------------


def nan_gradient_from(step_number: int):
    """An MSE whose value stays finite but whose gradient is NaN from optimiser step ``step_number`` (1-based):
    ``where`` passes the gradient of the branch it did not take as 0 * NaN = NaN."""
    def loss_fn(model, batch, step):
        loss = mse_loss(model, batch)
        if step + 1 >= step_number:
            poisoned = torch.sqrt(-loss.detach() - 1 + 0 * loss)       # NaN, with a gradient path to the model
            loss = torch.where(torch.tensor(True), loss, poisoned)
        return loss
    return loss_fn


def test_a_nan_gradient_behind_a_finite_loss_stops_at_its_step_and_keeps_the_checkpoint(tmp_path):
    config = dataclasses.replace(CPU_CONFIG, max_steps=10, checkpoint_every=2, log_every=5)
    with pytest.raises(FloatingPointError, match=r"^step 5: the training gradient norm is nan .*kept as it was"):
        Trainer(small_mlp(), config, regression_data(64), nan_gradient_from(5), out_dir=tmp_path,
                progress=False).fit()
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["step"] == 4
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())
    # ... and the run resumes from it (here with a loss that behaves).
    resumed = Trainer(small_mlp(), config, regression_data(64), mse_loss, out_dir=tmp_path, resume=True,
                      progress=False)
    assert resumed.step == 4 and resumed.fit()[-1]["step"] == 10


def test_an_update_that_makes_weights_non_finite_is_refused():
    model = small_mlp()
    config = dataclasses.replace(CPU_CONFIG, max_steps=3, checkpoint_every=0, grad_clip=None)
    exploding = torch.optim.SGD(model.parameters(), lr=1e39)       # finite gradients, infinite weights
    with pytest.raises(FloatingPointError, match=r"^step 1: the training update made some weights NaN"):
        Trainer(model, config, regression_data(64), mse_loss, optimizers=exploding, lr_schedule="constant",
                progress=False).fit()


@pytest.mark.parametrize("field, value, allowed", [
    ("batch_size", -1, "an integer >= 1"), ("batch_size", 0, "an integer >= 1"), ("batch_size", 2.5, "an integer"),
    ("grad_clip", -1.0, "None .* or a finite number > 0"), ("grad_clip", 0, "None .* > 0"),
    ("learning_rate", 0.0, "a finite number > 0"), ("learning_rate", float("nan"), "a finite"),
    ("weight_decay", -0.1, "a finite number >= 0"), ("max_steps", -5, "an integer >= 0"),
    ("warmup_steps", -1, "an integer >= 0"), ("log_every", 0, "an integer >= 1"),
    ("checkpoint_every", -1, "an integer >= 0"), ("grad_accum_steps", 0, "an integer >= 1"),
    ("seed", -3, "an integer >= 0"), ("bf16", "yes", "True or False"), ("compile", 1, "True or False"),
    ("device", "", "\"auto\""),
])
def test_every_train_config_field_is_checked_when_made(field, value, allowed):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} = .*must be {allowed}"):
        dataclasses.replace(CPU_CONFIG, **{field: value})
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        Config.from_dict({"train": {field: value}})


def test_an_out_dir_that_cannot_hold_checkpoints_is_refused_before_training(tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        Trainer(small_mlp(), CPU_CONFIG, regression_data(64), mse_loss, out_dir=a_file, progress=False)
    with pytest.raises(PermissionError, match="cannot write checkpoints"):
        Trainer(small_mlp(), CPU_CONFIG, regression_data(64), mse_loss, out_dir=a_file / "below", progress=False)
    Trainer(small_mlp(), CPU_CONFIG, regression_data(64), mse_loss, out_dir=tmp_path / "new" / "run", progress=False)
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())


def test_a_run_killed_while_saving_leaves_nothing_behind_on_the_next_run(tmp_path):
    stale = tmp_path / ".last.pt.99999999.tmp"                 # no process has that id
    stale.write_bytes(b"half a checkpoint")
    Trainer(small_mlp(), CPU_CONFIG, regression_data(64), mse_loss, out_dir=tmp_path, progress=False)
    assert not stale.exists()
