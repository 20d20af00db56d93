"""One training loop for every model of the course.

SoundStream, w2v-BERT, MuLan, the three MusicLM stages, the VAE and the GAN of lesson 03 all train with
the same plain loop (in the spirit of nanoGPT's ``train.py``, no framework). What differs between models
is only *how a batch becomes a loss*, and that is the one thing a caller writes::

    def loss_fn(model, batch):                      # batch: whatever the data yields, already on device
        tokens = batch                              # (batch, time) int64
        logits = model(tokens[:, :-1])              # (batch, time - 1, vocab)
        loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])
        return loss                                 # or (loss, {"accuracy": acc}) to log more

    trainer = Trainer(model, get_preset("tiny"), train_dataset, loss_fn, out_dir="runs/semantic",
                      resume=True)
    history = trainer.fit()                         # list of dicts: step, loss, lr, grad_norm, metrics

What the loop does for you, every step:

* moves the model and each batch to ``resolve_device(train.device)``;
* runs ``loss_fn`` under ``torch.autocast(..., dtype=torch.bfloat16, enabled=train.bf16)`` (also on CPU);
* with ``train.compile``, runs ``loss_fn`` compiled by ``torch.compile`` (inductor by default: fused
  kernels, fewer trips to memory; the first steps wait for the compiler, tens of seconds). The function is
  compiled, traced through the model calls it makes, never the model object, so checkpoints hold the plain
  model's weights and a compiled run and an uncompiled one resume each other;
* backward (over ``train.grad_accum_steps`` micro-batches, see below), gradient clipping to
  ``train.grad_clip`` (the pre-clip norm is logged), AdamW (decoupled weight decay on matrices only, not on
  biases and norm gains), linear warm-up then cosine decay of the learning rate;
* appends a plain dict to ``history`` every ``log_every`` steps, at every checkpoint and at the end (means
  over the steps since the previous entry), ready for plotting;
* writes ``out_dir/last.pt`` atomically every ``checkpoint_every`` steps and at the end: weights,
  optimiser and scheduler states, step, RNG states, data position, history and config.
  ``resume=True`` continues from it **bit for bit** on CPU (same parameters and history as an
  uninterrupted run), because training is counted in steps and the data order is a pure function of
  ``(seed, step)``.

Data. ``train_data`` is either a map-style ``Dataset`` of single examples (recommended: the trainer
batches it, reshuffles it each epoch with a generator seeded by ``seed + epoch``, splits every *global*
batch of ``batch_size`` across DDP ranks, and resumes exactly) or any re-iterable of ready batches, such
as a ``DataLoader`` (cycled; on resume the consumed batches are skipped, which is exact only when every
pass yields the same batches; single process only). A ``Dataset`` may draw random numbers in
``__getitem__`` (crops, windows): in the main process they come from the global generators, which the
trainer seeds and checkpoints; with ``num_workers > 0`` each micro-batch reseeds its worker's generators
from ``(seed, rank, micro-batch number)`` before its first example, so what a batch draws does not depend
on which worker makes it or on where the run resumed.

Gradient accumulation. ``batch_size`` is always the global batch of one optimiser step. When it does not
fit in memory, ``train.grad_accum_steps = k`` cuts each process's share into ``k`` micro-batches of
``batch_size / (world_size * k)`` examples: each goes forward and backward on its own with its loss scaled
by ``1 / k``, the gradients add up, and then comes one clipping and one optimiser step. Since the loss is a
mean, the sum is the gradient of the whole batch: the run is the one ``k = 1`` would give, up to float
rounding and random draws such as dropout masks (a ``BatchNorm`` would see micro-batch statistics, though).
Logged losses and metrics are means over the micro-batches. The paper preset's batch of 256 on one GPU::

    paper = get_preset("paper")
    config = dataclasses.replace(paper, train=dataclasses.replace(paper.train, grad_accum_steps=8))
    Trainer(model, config, dataset, loss_fn).fit()  # 8 micro-batches of 32 per step (of 16 on 2 GPUs)

Because it changes only the memory used, ``grad_accum_steps`` may differ when a run is resumed. With a
re-iterable of ready batches, each yielded batch is one micro-batch (a step takes ``k`` of them), so there
``k`` sets the size of a step's batch and must stay as it was.

Several optimisers (GANs). A GAN alternates two objectives on the same batch. Pass ``loss_fn`` as a dict
of named objectives and ``optimizers`` as a dict with the same names; each step runs them in that order,
each with its own backward, clipping and optimiser step (gradients of the whole model are cleared before
each, so the generator's update does not leak into the discriminator's)::

    def discriminator_loss(gan, real):              # real: (batch, 1, samples)
        with torch.no_grad():                       # no generator gradients in this phase
            fake = gan.generator(real)
        return hinge_discriminator_loss(gan.discriminator(real), gan.discriminator(fake))

    def generator_loss(gan, real):
        fake = gan.generator(real)
        adversarial = hinge_generator_loss(gan.discriminator(fake))
        reconstruction = F.l1_loss(fake, real)
        return adversarial + reconstruction, {"reconstruction": reconstruction}

    Trainer(gan, config, data,
            loss_fn={"discriminator": discriminator_loss, "generator": generator_loss},
            optimizers={"discriminator": AdamW(gan.discriminator.parameters(), lr=1e-4),
                        "generator": AdamW(gan.generator.parameters(), lr=1e-4)}).fit()

History keys are then prefixed by the objective: ``generator/loss``, ``discriminator/grad_norm``,
``generator/reconstruction``, ...

Objectives that start later. SoundStream learns to reconstruct before its discriminators join in. With
``objective_start_steps={"discriminator": 5000}`` the discriminator's objective is skipped (no forward,
backward or optimiser step) for steps 0 to 4999; history entries before it starts have no
``discriminator/...`` keys. Its learning-rate schedule counts from its own start: its scheduler steps only
when it runs, so it warms up over its first ``warmup_steps`` steps and its cosine, stretched over its
``max_steps - 5000`` steps, reaches the floor at ``max_steps`` like everyone else's. The generator's loss
turns its adversarial terms on at the same step by taking the step as an argument: a ``loss_fn`` with a
parameter named ``step`` is called as ``loss_fn(model, batch, step=s)``, ``s`` counting optimiser steps
from 0::

    def generator_loss(codec, real, step):
        fake = codec(real)
        loss = reconstruction_loss(fake, real)
        if step >= adversarial_start_step:
            loss = loss + hinge_generator_loss(codec.discriminator(fake))
        return loss

Several GPUs. Started under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), ``fit`` joins the
process group (NCCL on CUDA, Gloo on CPU), gives each rank ``batch_size / world_size`` examples of every
global batch, averages gradients with ``DistributedDataParallel``, logs losses averaged over ranks, and
lets only rank 0 show progress and write checkpoints. The loss computation itself (``loss_fn`` applied to
the plain, unwrapped model) runs inside DDP's ``forward``, so a ``loss_fn`` may call any sub-module
(``model.encoder(...)``, ``gan.discriminator(...)``) and gradients are still synchronised. With gradient
accumulation, gradients are all-reduced once per step, after the last micro-batch (``no_sync`` before).
With ``train.compile``, the compiled ``loss_fn`` runs inside DDP's ``forward`` the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from tqdm.auto import tqdm

from mlm_lessons.atomic import atomic_path, remove_stale_temporaries
from mlm_lessons.config import Config, TrainConfig

# loss_fn(model, batch) or loss_fn(model, batch, step=...) -> loss or (loss, {"metric": value})
LossFn = Callable[..., "torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]"]

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "mlm_lessons.train/1"

# TrainConfig fields that may change between a run and its resumption: they do not change what the
# finished steps computed. ``max_steps`` may grow to extend a run (the cosine schedule then stretches to
# the new horizon); ``device``/``bf16`` let a GPU run continue on a laptop and vice versa;
# ``grad_accum_steps`` only trades memory for time (except over ready batches, see the module docstring)
# and ``compile`` only changes how fast the same computation runs (up to float rounding).
RESUMABLE_CHANGES = ("train.max_steps", "train.device", "train.bf16", "train.checkpoint_every",
                     "train.log_every", "train.grad_accum_steps", "train.compile")


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a different model architecture or a different config."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file cannot be read (truncated, overwritten, or not written by this trainer)."""


# ----------------------------------------------------------------------------------------------------
# Device


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a config's device string into a ``torch.device`` that exists on this machine.

    ``"auto"`` picks CUDA if available, else Apple's MPS, else the CPU. Anything else is checked:
    asking for a GPU that is not there is an error, not a silent fall-back to the CPU.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {name!r} was requested but PyTorch sees no CUDA GPU on this machine; "
                "set train.device='cpu' (or 'auto' to use a GPU only when there is one)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r} was requested but only {torch.cuda.device_count()} "
                               "CUDA GPU(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {name!r} was requested but MPS is not available; use 'cpu' or 'auto'")
    return device


@dataclasses.dataclass(frozen=True)
class DistributedEnv:
    """Where this process sits in a ``torchrun`` launch (``world_size == 1`` when not launched by it)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> "DistributedEnv":
        return cls(rank=int(os.environ.get("RANK", 0)), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                   world_size=int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def _process_group(env: DistributedEnv, device: torch.device) -> Iterator[None]:
    """Join the ``torchrun`` process group for the duration of ``fit`` (unless the caller already did)."""
    if not env.is_distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        dist.init_process_group("nccl", rank=env.rank, world_size=env.world_size, device_id=device)
    else:
        dist.init_process_group("gloo", rank=env.rank, world_size=env.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------
# Data


def micro_batch_size(global_batch_size: int, world_size: int = 1, grad_accum_steps: int = 1) -> int:
    """Examples in one forward pass: the global batch split across processes and accumulation steps."""
    pieces = world_size * grad_accum_steps
    if global_batch_size % pieces:
        raise ValueError(
            f"batch_size {global_batch_size} (the global batch of one optimiser step) is not divisible by "
            f"{world_size} process(es) x grad_accum_steps {grad_accum_steps} = {pieces}; choose a batch_size "
            f"that is a multiple of {pieces}, or another grad_accum_steps")
    return global_batch_size // pieces


class _NumberedBatches(Sampler):
    """``batch_sampler``'s micro-batches with their running number: ``[(number, index), ...]``, the numbers
    counting micro-batches from ``first`` (the start step's first one)."""

    def __init__(self, batch_sampler: Sampler, first: int):
        self.batch_sampler, self.first = batch_sampler, first

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for number, indices in enumerate(self.batch_sampler, start=self.first):
            yield [(number, index) for index in indices]


class _BatchSeededDataset(Dataset):
    """``dataset`` read with ``(micro-batch number, index)`` keys: the first example of each micro-batch
    reseeds this process's ``torch``, ``numpy`` and ``random`` generators from ``(seed, rank, number)``, so
    the randomness of ``__getitem__`` is a function of the batch, not of the DataLoader worker making it."""

    def __init__(self, dataset: Dataset, seed: int, rank: int):
        self.dataset, self.seed, self.rank = dataset, seed, rank
        self._number = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        number, index = key
        if number != self._number:
            self._number = number
            batch_seed = int(np.random.SeedSequence([self.seed, self.rank, number]).generate_state(1)[0])
            torch.manual_seed(batch_seed)
            np.random.seed(batch_seed)
            random.seed(batch_seed)
        return self.dataset[index]


class GlobalBatchSampler(Sampler):
    """This rank's share of every global batch, epoch after epoch, starting at a given step.

    Epoch ``e`` visits the dataset in the order ``randperm(len(dataset))`` drawn from a generator seeded
    with ``seed + e``; step ``s`` takes the global batch ``s mod steps_per_epoch`` of epoch
    ``s // steps_per_epoch`` (the incomplete last batch of each epoch is dropped so every step sees
    exactly ``global_batch_size`` examples); rank ``r`` of ``world_size`` takes the ``r``-th contiguous
    slice of it, and cuts that slice into ``grad_accum_steps`` contiguous micro-batches. The order is a
    pure function of ``(seed, step)``: resuming at ``start_step`` replays exactly what an uninterrupted run
    would have seen, whatever the number of ranks or of micro-batches.

    Yields lists of ``global_batch_size // (world_size * grad_accum_steps)`` dataset indices, without end:
    ``grad_accum_steps`` of them per step.
    """

    def __init__(self, dataset_size: int, global_batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1, grad_accum_steps: int = 1):
        self.micro_batch_size = micro_batch_size(global_batch_size, world_size, grad_accum_steps)
        if dataset_size < global_batch_size:
            raise ValueError(f"the dataset has {dataset_size} examples, fewer than one batch of "
                             f"{global_batch_size}; lower batch_size or use more data")
        self.dataset_size = dataset_size
        self.global_batch_size = global_batch_size
        self.per_rank_batch_size = global_batch_size // world_size
        self.grad_accum_steps = grad_accum_steps
        self.steps_per_epoch = dataset_size // global_batch_size
        self.seed = seed
        self.start_step = start_step
        self.rank = rank

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """(dataset_size,) int64: the order in which epoch ``epoch`` visits the examples."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, batch_in_epoch = divmod(self.start_step, self.steps_per_epoch)
        while True:
            order = self.epoch_order(epoch)
            for batch_index in range(batch_in_epoch, self.steps_per_epoch):
                rank_start = batch_index * self.global_batch_size + self.rank * self.per_rank_batch_size
                for micro_batch in range(self.grad_accum_steps):
                    start = rank_start + micro_batch * self.micro_batch_size
                    yield order[start:start + self.micro_batch_size].tolist()
            epoch, batch_in_epoch = epoch + 1, 0


def _is_map_dataset(data: Any) -> bool:
    return isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__")


def _cycle(batches: Iterable, skip: int) -> Iterator:
    """Yield from a re-iterable of batches forever, after skipping the first ``skip`` of them."""
    if hasattr(batches, "__len__") and len(batches) > 0:
        skip %= len(batches)  # a full pass is the same batches again: no need to load them to skip
    while True:
        yielded_any = False
        for batch in batches:
            yielded_any = True
            if skip:
                skip -= 1
                continue
            yield batch
        if not yielded_any:
            raise ValueError("train_data yielded no batches (empty, or a one-shot iterator such as a "
                             "generator that is used up); pass a Dataset or a DataLoader")


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested tuples, lists and dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


# ----------------------------------------------------------------------------------------------------
# Optimisation


def make_adamw(model: nn.Module, learning_rate: float, weight_decay: float,
               device: torch.device) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on weight matrices and embeddings only.

    Biases and normalisation gains (1-D parameters) are not decayed: shrinking them towards zero
    does not regularise anything, it only fights the normalisation.
    """
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, fused=device.type == "cuda")


def warmup_cosine(warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.1,
                  decay: bool = True) -> Callable[[int], float]:
    """Learning-rate multiplier for optimiser step ``step`` (0-based), for ``LambdaLR``.

    Rises linearly to 1 over ``warmup_steps`` (the first step already moves: ``1 / warmup_steps``), then
    follows half a cosine down to ``min_lr_ratio`` at ``max_steps`` (or stays at 1 if ``decay`` is
    False). Past ``max_steps`` it stays at ``min_lr_ratio``.
    """
    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not decay:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return multiplier


class _LossComputation(nn.Module):
    """``loss_fn(model, batch)`` as a module's forward, so that DDP wraps the whole loss computation.

    DDP only synchronises gradients for work done inside its own ``forward``; running the caller's loss
    function there lets it use the plain model and any of its sub-modules.

    With a ``compile_backend`` each loss function is compiled by ``torch.compile``: it is traced with the
    model it is given, whatever sub-modules or methods it calls (``model.loss(...)``, a discriminator),
    while ``model`` itself stays the plain module (no ``_orig_mod.`` in its parameter names).
    """

    def __init__(self, model: nn.Module, loss_fns: dict[str, LossFn], device: torch.device, bf16: bool,
                 compile_backend: str | None = None):
        super().__init__()
        self.model = model
        self.takes_step = {name: "step" in inspect.signature(loss_fn).parameters
                           for name, loss_fn in loss_fns.items()}
        self.loss_fns = loss_fns if compile_backend is None else {
            name: torch.compile(loss_fn, backend=compile_backend) for name, loss_fn in loss_fns.items()}
        self.device_type = device.type
        self.bf16 = bf16

    def forward(self, batch: Any, objective: str, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the scalar loss and a dict of scalar metric tensors (detached)."""
        step_argument = {"step": step} if self.takes_step[objective] else {}
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            output = self.loss_fns[objective](self.model, batch, **step_argument)
        loss, metrics = output if isinstance(output, tuple) else (output, {})
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError(f"loss_fn {objective!r} must return a scalar tensor or (scalar tensor, dict of "
                            f"metrics); got {type(loss).__name__} of shape {getattr(loss, 'shape', None)}")
        reserved = {"loss", "grad_norm", "lr", "step"} & set(metrics)
        if reserved:
            raise ValueError(f"loss_fn {objective!r} returned metric(s) named {sorted(reserved)}, which the "
                             "trainer logs itself; rename them")
        metrics = {name: torch.as_tensor(value, device=loss.device).detach().float()
                   for name, value in metrics.items()}
        return loss, metrics


class _RunningMeans:
    """Per-step scalars summed on the device, so logging waits for the GPU once per entry, not per step.

    Each name is averaged over the steps that reported it: an objective that starts (or a metric that
    appears) in the middle of a logging interval is not diluted by the steps before.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, value in values.items():
            if value.numel() != 1:
                raise ValueError(f"metric {name!r} must be a scalar; got shape {tuple(value.shape)}")
            value = value.detach().float().reshape(())
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop_means(self, env: DistributedEnv) -> dict[str, float]:
        """Means since the last call, averaged over ranks (a collective: every rank must call it)."""
        names = sorted(self.sums)  # the same order on every rank, for the all-reduce
        means = torch.stack([self.sums[name] / self.counts[name] for name in names])
        if env.is_distributed:
            dist.all_reduce(means)
            means /= env.world_size
        self.sums, self.counts = {}, {}
        return dict(zip(names, means.tolist()))


# ----------------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every random generator the loop touches, in a form ``torch.load(weights_only=True)`` accepts."""
    algorithm, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"algorithm": algorithm, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "position": position, "has_gauss": has_gauss, "cached_gaussian": cached_gaussian},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["algorithm"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def save_atomically(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written file at ``path`` (see :mod:`mlm_lessons.atomic`):
    a crash at any moment leaves either the old checkpoint or the new one."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        torch.save(payload, file)


def _check_writable_folder(folder: Path) -> None:
    """Make ``folder`` (and its parents) if needed and prove that a file can be written there."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"out_dir {folder} is a file, not a folder; choose a folder for the checkpoints")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
        remove_stale_temporaries(folder)         # left by a run that was killed while saving
    except OSError as error:
        raise PermissionError(f"cannot write checkpoints to out_dir {folder} ({error.strerror}); choose a folder "
                              "you can write to") from None


def load_tagged_file(path: str | os.PathLike, file_format: str, missing: str, kind: str, hint: str = "") -> dict:
    """Read a file a model's ``save`` wrote (a dict tagged ``{"format": file_format, ...}``) onto the CPU.

    Raises:
        FileNotFoundError: ``"no {missing} at {path}"``.
        ValueError: ``"{path} is not a {kind} file (no {file_format!r} format tag)"``, then ``hint``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {missing} at {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise ValueError(f"{path} is not a {kind} file (no {file_format!r} format tag){hint}")
    return payload


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :class:`Trainer` onto the CPU.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        CorruptCheckpointError: if the file is truncated, damaged, or not a trainer checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CorruptCheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {type(error).__name__}: {error}. "
            "The file is truncated or damaged; delete it to start over, or restore a copy"
        ) from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CorruptCheckpointError(f"{path} is not a checkpoint written by mlm_lessons.train "
                                     f"(expected format {CHECKPOINT_FORMAT!r})")
    return checkpoint


def check_state_dict_matches(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
                             max_listed: int = 5) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` fits ``model`` exactly.

    The message lists the first ``max_listed`` missing keys, unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    reshaped = [f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {tuple(value.shape)}"
                for key, value in expected.items()
                if key in state_dict and state_dict[key].shape != value.shape]
    problems = []
    for label, items in (("missing from the checkpoint", missing), ("not in the model", unexpected),
                         ("with a different shape", reshaped)):
        if items:
            more = f"; ... ({len(items)} in all)" if len(items) > max_listed else ""
            listed = "; ".join(items[:max_listed]) + more
            problems.append(f"{len(items)} key(s) {label}: {listed}")
    if problems:
        raise CheckpointMismatchError(
            f"{source} was written by a different model architecture:\n  " + "\n  ".join(problems)
            + "\nBuild the model with the config the checkpoint was trained with, or use a fresh out_dir"
        )


def saved_config_section(section_class: type, values: Mapping[str, Any], what: str):
    """Rebuild one config section (e.g. a ``CodecConfig``) saved with a model's weights.

    Fields missing from ``values`` take their defaults (an older file); unknown fields raise
    :class:`CheckpointMismatchError` naming them (a file from a newer version of the course).
    """
    known = {field.name for field in dataclasses.fields(section_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CheckpointMismatchError(f"the checkpoint's {what} config has field(s) {unknown} that this version "
                                      "does not know; update mlm_lessons")
    return section_class(**values)


def half_state_dict(model: nn.Module, keep_float32: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """``model``'s weights with floats stored as float16, halving a shipped file; keys starting with one of
    ``keep_float32`` (codebooks, whose codes must not move) stay float32. :func:`load_half_state_dict` reads
    them back."""
    return {key: value.half() if value.is_floating_point() and not key.startswith(tuple(keep_float32)) else value
            for key, value in model.state_dict().items()}


def load_half_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Check ``state`` against ``model`` (:func:`check_state_dict_matches`) and load it, floats as float32."""
    check_state_dict_matches(model, state, source=source)
    model.load_state_dict({key: value.float() if value.is_floating_point() else value
                           for key, value in state.items()})


def load_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load a trainer checkpoint's weights into ``model`` (e.g. for generation); returns the checkpoint.

    Raises:
        CheckpointMismatchError: if the checkpoint's architecture differs from ``model``'s.
        CorruptCheckpointError: if the file cannot be read.
    """
    checkpoint = load_checkpoint(path)
    check_state_dict_matches(model, checkpoint["model"], source=f"checkpoint {path}")
    model.load_state_dict(checkpoint["model"])
    return checkpoint


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _field_defaults(config_class: type, prefix: str = "") -> dict[str, Any]:
    """Dotted field name -> default, for every field of a config dataclass that has one (nested too).

    These are the values ``Config.from_dict`` gives the fields a saved dict lacks; a field without a
    default is left out.
    """
    defaults: dict[str, Any] = {}
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(default):
            default = dataclasses.asdict(default)
        defaults.update(_flatten({field.name: default}, prefix))
    return defaults


def _config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any],
                        resumable: Iterable[str]) -> list[str]:
    """Dotted field names whose values differ, ignoring the ``resumable`` ones.

    A field the checkpoint lacks was added to the config after it was written: its run behaved as the
    field's default does (the rule for adding a field), so only a value other than that default, or a
    field without a known default (a model config given as a plain dict), is a difference.
    """
    saved, current = _flatten(saved), _flatten(current)
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key in resumable:
            continue
        now = current.get(key, "<absent>")
        if key not in saved and key in defaults:
            if now != defaults[key]:
                differences.append(f"{key} (not in the checkpoint, which predates it and so ran with the "
                                   f"default {defaults[key]!r}; now {now!r})")
            continue
        before = saved.get(key, "<absent>")
        if before != now:
            differences.append(f"{key} (checkpoint {before!r}, now {now!r})")
    return differences


# ----------------------------------------------------------------------------------------------------
# The loop


class Trainer:
    """Train ``model`` by minimising ``loss_fn`` over ``train_data`` for ``train.max_steps`` steps.

    Args:
        model: any ``nn.Module``; moved to the configured device and trained in place.
        config: a :class:`~mlm_lessons.config.Config` (its ``train`` part drives the loop; all of it is
            stored in checkpoints and checked on resume) or just a ``TrainConfig``.
        train_data: a map-style ``Dataset`` of examples (batched, shuffled, sharded by the trainer) or a
            re-iterable of ready batches such as a ``DataLoader``. See the module docstring.
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``-> (loss, {"name": scalar, ...})`` with a scalar
            ``loss``; ``batch`` is on the device. A dict ``{name: loss_fn}`` gives several objectives,
            each with its own optimiser (GANs; see the module docstring). A loss function with a
            parameter named ``step`` is called as ``loss_fn(model, batch, step=s)``, ``s`` being the
            number of optimiser steps done before this one.
        optimizers: ``None`` for AdamW over all trainable parameters (``learning_rate``,
            ``weight_decay`` from the config), one optimiser, or a dict with ``loss_fn``'s names.
        out_dir: where ``last.pt`` goes; ``None`` writes no checkpoints.
        resume: continue from ``out_dir/last.pt`` if it exists (else start fresh). Without it an
            existing checkpoint is an error rather than silently overwritten.
        model_config: the model's own hyper-parameters (a dataclass or dict) if ``config`` does not
            hold them; stored and checked on resume like ``config``.
        progress: show a tqdm bar (only ever on rank 0).
        lr_schedule: ``"cosine"`` (warm-up, then cosine decay to ``min_lr_ratio`` x the learning rate
            at ``max_steps``) or ``"constant"`` (warm-up, then constant).
        min_lr_ratio: the floor of the cosine schedule, as a fraction of the peak learning rate.
        collate_fn, num_workers: passed to the ``DataLoader`` built over a ``Dataset`` (with workers, each
            micro-batch seeds its own random draws: resuming stays exact; module docstring).
        find_unused_parameters: passed to DDP; ``None`` means "only with several objectives", where a
            phase leaves the other player's parameters without gradients.
        objective_start_steps: ``{name: step}`` for objectives that are skipped before ``step`` (no
            forward, backward or update; their scheduler counts from their start). Unnamed objectives
            start at step 0, and at least one must. See the module docstring.
        compile_backend: the ``torch.compile`` backend used when ``train.compile`` is on: ``"inductor"``
            (generated kernels), or e.g. ``"aot_eager"`` (the same traced graphs run by eager kernels: no C++
            or Triton compiler needed, what the tests use to stay quick).

    Attributes:
        step: optimiser steps done so far (restored on resume).
        history: list of dicts, one every ``log_every`` steps, at each checkpoint and at the end:
            ``{"step", "loss", "lr", "grad_norm", <metric>: ...}`` (means since the previous entry,
            ``lr`` of the last step, ``grad_norm`` before clipping); with several objectives the keys
            are ``"<objective>/loss"`` etc., absent from the entries before that objective starts.
    """

    def __init__(
        self,
        model: nn.Module,
        config: Config | TrainConfig,
        train_data: Dataset | Iterable,
        loss_fn: LossFn | Mapping[str, LossFn],
        *,
        optimizers: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer] | None = None,
        out_dir: str | os.PathLike | None = None,
        resume: bool = False,
        model_config: Any = None,
        progress: bool = True,
        lr_schedule: str = "cosine",
        min_lr_ratio: float = 0.1,
        collate_fn: Callable | None = None,
        num_workers: int = 0,
        find_unused_parameters: bool | None = None,
        objective_start_steps: Mapping[str, int] | None = None,
        compile_backend: str = "inductor",
    ):
        # What is stored in checkpoints and compared on resume, with the defaults of its fields (the
        # values of fields that a checkpoint written before they existed lacks).
        if isinstance(config, Config):
            self.train_config, self.config_dict = config.train, config.to_dict()
            self.config_defaults = _field_defaults(Config)
        elif isinstance(config, TrainConfig):
            self.train_config, self.config_dict = config, {"train": dataclasses.asdict(config)}
            self.config_defaults = _field_defaults(TrainConfig, "train.")
        else:
            raise TypeError(f"config must be a Config or a TrainConfig, not {type(config).__name__}")
        if dataclasses.is_dataclass(model_config):
            self.config_dict["model"] = dataclasses.asdict(model_config)
            self.config_defaults.update(_field_defaults(type(model_config), "model."))
        elif model_config is not None:
            self.config_dict["model"] = dict(model_config)  # a plain dict: no defaults to fall back on
        cfg = self.train_config   # its fields were checked when it was made (TrainConfig.__post_init__)
        if lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', not {lr_schedule!r}")
        if cfg.compile:  # checked only then: listing the backends imports the compiler (seconds)
            if compile_backend not in torch.compiler.list_backends(exclude_tags=()):
                raise ValueError(f"compile_backend {compile_backend!r} is not a torch.compile backend; use "
                                 "'inductor' (the default), 'aot_eager' or 'eager' (torch.compiler.list_backends())")
        self.compile_backend = compile_backend if cfg.compile else None

        self.env = DistributedEnv.from_environment()
        self.device = resolve_device(cfg.device)
        if self.env.is_distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.env.local_rank)  # one GPU per process
            torch.cuda.set_device(self.device)
        self.model = model.to(self.device)

        self.loss_fns = dict(loss_fn) if isinstance(loss_fn, Mapping) else {"": loss_fn}
        if optimizers is None:
            if len(self.loss_fns) > 1:
                raise ValueError("several objectives need an optimizer each: pass optimizers={name: ...} "
                                 f"with the names {list(self.loss_fns)}")
            optimizers = make_adamw(self.model, cfg.learning_rate, cfg.weight_decay, self.device)
        self.optimizers = dict(optimizers) if isinstance(optimizers, Mapping) else {"": optimizers}
        if list(self.optimizers) != list(self.loss_fns):
            raise ValueError(f"loss_fn and optimizers must name the same objectives in the same order; got "
                             f"{list(self.loss_fns)} and {list(self.optimizers)}")
        starts = {name: 0 for name in self.loss_fns}
        for name, start in (objective_start_steps or {}).items():
            if name not in starts or not isinstance(start, int) or start < 0:
                raise ValueError(f"objective_start_steps must map objective names {list(self.loss_fns)} to "
                                 f"steps >= 0; got {name!r}: {start!r}")
            starts[name] = start
        if min(starts.values()) > 0:
            raise ValueError(f"objective_start_steps {starts} leaves the first steps with nothing to train; "
                             "let at least one objective start at step 0")
        self.objective_start_steps = starts
        # A scheduler steps only when its objective runs, so an objective that starts late warms up from
        # its own start, and its cosine, spread over the steps it has left, still ends at max_steps.
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
                cfg.warmup_steps, cfg.max_steps - starts[name], min_lr_ratio, decay=lr_schedule == "cosine"))
            for name, optimizer in self.optimizers.items()}

        self.train_data = train_data
        if _is_map_dataset(train_data):
            micro_batch_size(cfg.batch_size, self.env.world_size, cfg.grad_accum_steps)  # fail early
        elif self.env.is_distributed:
            raise ValueError("under torchrun, pass train_data as a map-style Dataset so that the trainer can "
                             "split every global batch across the processes")
        self.collate_fn = collate_fn
        self.num_workers = num_workers
        self.find_unused_parameters = (len(self.loss_fns) > 1 if find_unused_parameters is None
                                       else find_unused_parameters)
        self.progress = progress and self.env.is_main

        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            _check_writable_folder(self.out_dir)    # now, not after the last step
        self.step = 0
        self.history: list[dict[str, float]] = []
        # A fresh run seeds every generator with seed + rank (distinct dropout masks on each rank); a
        # resumed run restores the generators' saved states instead (see _restore).
        self._start_rng: int | dict[str, Any] = cfg.seed + self.env.rank
        if resume and self.out_dir is None:
            raise ValueError("resume=True needs an out_dir to resume from")
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            if not resume:
                raise FileExistsError(f"{self.checkpoint_path} already exists; pass resume=True to continue "
                                      "that run, or choose a fresh out_dir")
            self._restore(load_checkpoint(self.checkpoint_path))

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    # -- the loop ------------------------------------------------------------------------------------

    def fit(self) -> list[dict[str, float]]:
        """Train from ``self.step`` to ``max_steps``; returns (and keeps) ``self.history``."""
        cfg = self.train_config
        if self.step >= cfg.max_steps:
            return self.history
        with _process_group(self.env, self.device):
            computation = _LossComputation(self.model, self.loss_fns, self.device, cfg.bf16, self.compile_backend)
            if self.env.is_distributed:
                computation = DistributedDataParallel(
                    computation, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    find_unused_parameters=self.find_unused_parameters)
            batches = self._batches(start_step=self.step)
            # Set the random generators last, right before the loop: nothing done since the constructor
            # (by the caller, or by the DataLoader drawing seeds) can then shift dropout masks etc.
            if isinstance(self._start_rng, int):
                _seed_everything(self._start_rng)
            else:
                _set_rng_state(self._start_rng, self.device)
            self.model.train()
            running = _RunningMeans()
            last_lrs: dict[str, float] = {}
            with tqdm(total=cfg.max_steps, initial=self.step, disable=not self.progress,
                      desc="train", dynamic_ncols=True) as bar:
                while self.step < cfg.max_steps:
                    # Every objective uses all of the step's micro-batches, so they all move at once (the
                    # inputs are small next to the activations that accumulation saves).
                    micro_batches = [_to_device(next(batches), self.device)
                                     for _ in range(cfg.grad_accum_steps)]
                    for name, optimizer in self.optimizers.items():
                        if self.step < self.objective_start_steps[name]:
                            continue  # not started yet: no forward, no backward, no update, no scheduler step
                        values, last_lrs[name] = self._optimise(computation, micro_batches, name, optimizer)
                        running.add({self._key(name, key): value for key, value in values.items()})
                    self.step += 1
                    bar.update(1)
                    at_checkpoint = (self.out_dir is not None and cfg.checkpoint_every > 0
                                     and self.step % cfg.checkpoint_every == 0)
                    if self.step % cfg.log_every == 0 or at_checkpoint or self.step == cfg.max_steps:
                        entry = self._log(running, last_lrs)
                        bar.set_postfix({key: f"{value:.4g}" for key, value in entry.items()
                                         if key.endswith("loss")})
                    if at_checkpoint or (self.out_dir is not None and self.step == cfg.max_steps):
                        self.save_checkpoint()
        return self.history

    def _optimise(self, computation: nn.Module, micro_batches: list[Any], name: str,
                  optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], float]:
        """One objective's update: forward and backward on each micro-batch, then one clip and one step.

        Returns its scalars (loss and metrics averaged over the micro-batches, the gradient norm) and the
        learning rate used.
        """
        # Clear the whole model, not just this optimiser's parameters: the previous objective may have left
        # gradients on the other player's parameters, which must not be kept, clipped or all-reduced.
        self.model.zero_grad(set_to_none=True)
        count = len(micro_batches)
        totals: dict[str, torch.Tensor] = {}
        for index, micro_batch in enumerate(micro_batches):
            # Under DDP, all-reduce the summed gradients once, after the last micro-batch.
            skip_sync = isinstance(computation, DistributedDataParallel) and index < count - 1
            with computation.no_sync() if skip_sync else contextlib.nullcontext():
                loss, metrics = computation(micro_batch, name, self.step)
                # The mean of equal micro-batches' mean losses is the batch's mean loss: summing these
                # gradients gives the gradient of the whole batch.
                (loss / count).backward()
            for key, value in {"loss": loss.detach(), **metrics}.items():
                totals[key] = totals[key] + value if key in totals else value
        parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])  # before clipping: logged
        # A finite loss can have a NaN gradient (e.g. sqrt at 0): check what the step would apply, every step,
        # so the error names the step where it began and no bad update reaches the weights or a checkpoint.
        if not torch.isfinite(grad_norm):
            self._refuse_step(f"the {name or 'training'} gradient norm is {grad_norm.item()} (the loss was "
                              f"{(totals['loss'] / count).item():.4g})")
        if self.train_config.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(parameters, self.train_config.grad_clip, grad_norm)
        learning_rate = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if not torch.isfinite(torch.nn.utils.get_total_norm(parameters)):
            self._refuse_step(f"the {name or 'training'} update made some weights NaN or infinite")
        self.schedulers[name].step()
        means = {key: total / count for key, total in totals.items()}
        return {"grad_norm": grad_norm, **means}, learning_rate

    def _refuse_step(self, what: str) -> None:
        """Stop training at a non-finite step, saying which step and what is on disk."""
        kept = (f"the checkpoint in {self.checkpoint_path} is kept as it was" if self.checkpoint_path is not None
                and self.checkpoint_path.exists() else "nothing was saved")
        raise FloatingPointError(
            f"step {self.step + 1}: {what}; training stopped before saving anything from this step ({kept}). "
            "Lower the learning rate, set grad_clip, add warm-up steps, or check the data and the loss for NaNs")

    @staticmethod
    def _key(objective: str, name: str) -> str:
        return f"{objective}/{name}" if objective else name

    def _log(self, running: _RunningMeans, last_lrs: Mapping[str, float]) -> dict[str, float]:
        means = running.pop_means(self.env)
        # Objectives that have not started yet have nothing logged, and no keys in the entry.
        started = [name for name in self.loss_fns if self._key(name, "loss") in means]
        for name in started:
            loss = means[self._key(name, "loss")]
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the {name or 'training'} loss is {loss} around step {self.step}; lower the learning "
                    "rate, set grad_clip, add warm-up steps, or check the data for NaNs")
        entry: dict[str, float] = {"step": self.step}
        for name in started:  # loss, lr, grad_norm, then the metrics, objective by objective
            entry[self._key(name, "loss")] = means.pop(self._key(name, "loss"))
            entry[self._key(name, "lr")] = last_lrs[name]
            entry[self._key(name, "grad_norm")] = means.pop(self._key(name, "grad_norm"))
            metric_keys = [key for key in means if not name or key.startswith(f"{name}/")]
            entry.update((key, means.pop(key)) for key in metric_keys)
        self.history.append(entry)
        return entry

    def _batches(self, start_step: int) -> Iterator:
        """The stream of micro-batches for steps ``start_step, start_step + 1, ...`` (this rank's share,
        ``grad_accum_steps`` per step)."""
        cfg = self.train_config
        if not _is_map_dataset(self.train_data):  # each yielded batch is one micro-batch
            return _cycle(self.train_data, skip=start_step * cfg.grad_accum_steps)
        sampler = GlobalBatchSampler(len(self.train_data), cfg.batch_size, cfg.seed, start_step,
                                     self.env.rank, self.env.world_size, cfg.grad_accum_steps)
        data, batches = self.train_data, sampler
        if self.num_workers > 0:   # workers: each micro-batch seeds its own randomness (module docstring)
            data = _BatchSeededDataset(self.train_data, cfg.seed, self.env.rank)
            batches = _NumberedBatches(sampler, first=start_step * cfg.grad_accum_steps)
        # A private generator for the DataLoader's own draw of a base seed, which would otherwise advance the
        # global generator that the main process's examples draw from.
        loader = DataLoader(data, batch_sampler=batches, collate_fn=self.collate_fn, num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(cfg.seed + start_step))
        return iter(loader)

    # -- checkpoints ---------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Write ``out_dir/last.pt`` atomically (rank 0 only; a collective under DDP)."""
        rng_states = [_rng_state(self.device)]
        if self.env.is_distributed:
            rng_states = [None] * self.env.world_size
            dist.all_gather_object(rng_states, _rng_state(self.device))
        if self.env.is_main:
            cfg = self.train_config
            if _is_map_dataset(self.train_data):  # counted in global batches
                steps_per_epoch = len(self.train_data) // cfg.batch_size
                data_position = {"batches_consumed": self.step, "epoch": self.step // steps_per_epoch,
                                 "batch_in_epoch": self.step % steps_per_epoch}
            else:  # counted in batches yielded by train_data
                data_position = {"batches_consumed": self.step * cfg.grad_accum_steps}
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_atomically({
                "format": CHECKPOINT_FORMAT,
                "step": self.step,
                "model": self.model.state_dict(),
                "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
                "schedulers": {name: scheduler.state_dict() for name, scheduler in self.schedulers.items()},
                "rng": rng_states,
                "data_position": data_position,
                "history": self.history,
                "config": self.config_dict,
            }, self.checkpoint_path)
        if self.env.is_distributed:
            dist.barrier()  # nobody runs ahead (or exits) before the checkpoint is on disk

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        source = f"checkpoint {self.checkpoint_path}"
        resumable = RESUMABLE_CHANGES
        if not _is_map_dataset(self.train_data):  # over ready batches, grad_accum_steps sets the batch size
            resumable = tuple(key for key in RESUMABLE_CHANGES if key != "train.grad_accum_steps")
        differences = _config_differences(checkpoint["config"], self.config_dict, self.config_defaults,
                                          resumable)
        if differences:
            raise CheckpointMismatchError(
                f"{source} was written with a different config: " + "; ".join(differences)
                + ". Resume with the config it was trained with, or use a fresh out_dir")
        check_state_dict_matches(self.model, checkpoint["model"], source)
        if list(checkpoint["optimizers"]) != list(self.optimizers):
            raise CheckpointMismatchError(f"{source} has objectives {list(checkpoint['optimizers'])}, this "
                                          f"run {list(self.optimizers)}; use a fresh out_dir")
        self.model.load_state_dict(checkpoint["model"])
        for name, optimizer in self.optimizers.items():
            try:
                optimizer.load_state_dict(checkpoint["optimizers"][name])
            except ValueError as error:
                raise CheckpointMismatchError(f"{source}: the optimizer state does not fit this optimizer "
                                              f"({error}); use a fresh out_dir") from error
            self.schedulers[name].load_state_dict(checkpoint["schedulers"][name])
        self.step = checkpoint["step"]
        self.history = list(checkpoint["history"])
        rng_states = checkpoint["rng"]
        if len(rng_states) == self.env.world_size:
            self._start_rng = rng_states[self.env.rank]
        else:  # a different number of processes: no saved state per rank, so derive fresh, distinct seeds
            self._start_rng = self.train_config.seed + self.env.rank + self.step * self.env.world_size
