"""MusicLM's three stages: model FLOPs per trained token, training throughput, and what fits on one GPU.

    python bench/bench_flops.py [--steps 3] [--threads 1] [--gpu-batch 8] [--compile]

1. **FLOPs per trained token**, for every preset (tiny, small, paper) and stage: parameters, the context (the
   positions of one window: ``musiclm.sequence_length``, prefix + BOS + target tokens), the tokens trained on
   per window (its target tokens: the prefix is read but never predicted) and the analytic count below. For
   tiny, the count is checked against ``torch.utils.flop_counter.FlopCounterMode`` over one real training step
   (forward and backward of ``Stage.loss``); the ratio is measured / analytic.
2. **Training throughput** on this machine: trained tokens per second of whole optimiser steps (forward,
   next-token cross-entropy, backward, AdamW), and the model FLOP/s they imply. On the CPU: the tiny preset at
   its batch in float32, one thread (as ``bench_stages.py``), the ratio against tiny's semantic stage. On a GPU: every
   preset under bf16 autocast, tiny and small at their batch, paper at ``--gpu-batch`` windows, with the
   model-FLOPs utilisation (MFU: model FLOP/s over the GPU's dense bf16 peak, table ``BF16_PEAK_FLOPS``).
3. **Memory** of the small and paper stages: the parameters in float32, the AdamW training state (weights,
   gradients and both moments in float32: 16 bytes per parameter), and an estimate of the activations at the
   preset's batch; then whether one 80 GB GPU holds a training step, or how many micro-batches it needs. The
   activations are what autograd keeps for the backward pass, measured on the tiny stages (bf16 autocast, on
   the CPU, with ``torch.autograd.graph.saved_tensors_hooks``, per window: two windows minus one) as bytes per
   position, layer and unit of ``d_model`` plus bytes per logit, and scaled to the bigger stages. The ``T x T``
   attention scores are left out: a fused attention kernel (``F.scaled_dot_product_attention`` on a GPU) keeps
   none. It leaves out the allocator's slack and the temporaries of the backward pass: a floor, not a bound.

The analytic count, per window of ``P`` prefix and ``n`` target positions: the blocks read ``T = P + n`` positions
(``sequence_length - 1``: the last target is only predicted), the output layer produces logits at the ``n``
target positions only. One multiply-add is 2 FLOPs; the backward pass costs twice the forward (a gradient for
the input and one for the weight of every matrix product); attention is counted over the whole ``T x T`` score
matrix, as PaLM's MFU (Chowdhery et al., 2022, appendix B) and FlopCounterMode count it (a causal kernel skips
about half of it). Per trained token, forward and backward::

    FLOPs/token = (6 * N_blocks * T  +  12 * n_layers * T^2 * d_model  +  6 * d_model * V * n) / n

``N_blocks``: the weight matrices of the blocks (``12 * d_model^2`` per layer); ``V``: the target vocabulary
(the output layer, tied to the token embedding). Without a prefix (``T = n``) it is the usual ``6 N + 12 n_layers
T d_model``, ``N`` counting the output layer. Biases, norms, softmax and GELU are left out (FlopCounterMode counts
only matrix products too). The throughput uses random but valid tokens: speed does not depend on what a model
has learned. Nothing is asserted. Run time on 2 shared cores, one thread: about 15 s (minutes with --compile).
"""

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from mlm_lessons import config, musiclm, runtime  # noqa: E402
from mlm_lessons.train import make_adamw  # noqa: E402

PRESETS = ("tiny", "small", "paper")
# Dense (no sparsity) bf16 tensor-core peaks, in FLOP/s, by a piece of torch.cuda.get_device_name(); the first
# match wins. H100 SXM reports itself as "H100 80GB HBM3".
BF16_PEAK_FLOPS = (("H100 PCIe", 756e12), ("H100 80GB HBM3", 989e12), ("H100 SXM", 989e12), ("H200", 989e12),
                   ("A100", 312e12))
GPU_BYTES = 80e9                 # one 80 GB GPU


def window(preset: config.Config, stage: str) -> dict:
    """The shapes that set a stage's cost: prefix and target positions, layers, width, output vocabulary."""
    layout = musiclm.stage_layout(preset, stage)
    context = musiclm.sequence_length(layout, preset.stages.seconds(stage))
    target = layout.target.kinds[stage]
    n = round(preset.stages.seconds(stage) * target.frame_rate) * target.levels
    return {"context": context, "n": n, "T": context - 1, "layers": preset.transformer.n_layers,
            "d": preset.transformer.d_model, "V": layout.target.vocab_size}


def parameter_counts(preset: config.Config, stage: str) -> dict:
    """All parameters, those outside the embeddings, and the blocks' weight matrices (``N_blocks``); counted on
    the meta device, which allocates nothing (a paper stage is about 300M parameters)."""
    with torch.device("meta"):
        model = musiclm.Stage.from_config(preset, stage)
    embeddings = {id(p) for module in (model.lm.embedding, model.lm.prefix_embedding) for p in module.parameters()}
    return {"all": sum(p.numel() for p in model.parameters()),
            "non_embedding": sum(p.numel() for p in model.parameters() if id(p) not in embeddings),
            "blocks": sum(p.numel() for p in model.lm.blocks.parameters() if p.dim() == 2)}


def analytic_flops_per_token(shape: dict, blocks: int) -> dict:
    """Training FLOPs (forward and backward) per trained token, by term (module docstring)."""
    T, n = shape["T"], shape["n"]
    return {"matrices": 6 * blocks * T / n, "attention": 12 * shape["layers"] * T * T * shape["d"] / n,
            "output": 6 * shape["d"] * shape["V"]}


def random_batch(stage: musiclm.Stage, batch: int, device: torch.device,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prefix, target)`` ids of ``batch`` full windows of random but valid codes."""
    layout, seconds = stage.layout, stage.seconds

    def codes(kind: musiclm.TokenKind) -> torch.Tensor:
        frames = 1 if kind.frame_rate is None else round(seconds * kind.frame_rate)
        return torch.randint(kind.codebook_size, (batch, frames, kind.levels), generator=generator)

    prefix = layout.prefix_ids({name: codes(layout.prefix.kinds[name]) for name in layout.prefix_kinds})
    target = layout.target_ids(codes(layout.target.kinds[layout.target_kind]))
    return prefix.to(device), target.to(device)


def measured_flops_per_token(preset: config.Config, stage_name: str, batch: int = 2) -> float:
    """FlopCounterMode's count of one training step's forward and backward, per trained token (on the CPU)."""
    torch.manual_seed(0)
    stage = musiclm.Stage.from_config(preset, stage_name).train()
    prefix, target = random_batch(stage, batch, torch.device("cpu"), torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        loss, _ = stage.loss(prefix, target)
        loss.backward()
    return counter.get_total_flops() / (batch * (target.shape[1] - 1))


def tokens_per_second(preset: config.Config, stage_name: str, batch: int, steps: int, device: torch.device,
                      compile: bool) -> float:
    """Trained tokens per second of whole optimiser steps (bf16 autocast on a GPU), after two warm-up steps."""
    torch.manual_seed(0)
    stage = musiclm.Stage.from_config(preset, stage_name).to(device).train()
    prefix, target = random_batch(stage, batch, device, torch.Generator().manual_seed(0))
    optimizer = make_adamw(stage, 1e-4, 0.01, device)
    loss_of = torch.compile(stage.loss) if compile else stage.loss

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = loss_of(prefix, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):              # allocator, kernel choice (and compilation) out of the timing
        step()
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return steps * batch * (target.shape[1] - 1) / (time.perf_counter() - started)


def bf16_peak(device_name: str) -> float | None:
    return next((peak for piece, peak in BF16_PEAK_FLOPS if piece in device_name), None)


def kept_bytes(preset: config.Config, stage_name: str) -> tuple[float, float]:
    """What autograd keeps for the backward pass of one more window of ``Stage.loss`` under bf16 autocast (on
    the CPU), leaving out ``T x T`` attention scores: ``(bytes per position, layer and unit of d_model, bytes per
    logit)``. Two windows minus one: what every step keeps whatever its batch (weights, their bf16 copies) cancels.
    """
    torch.manual_seed(0)
    stage = musiclm.Stage.from_config(preset, stage_name).train()
    shape = window(preset, stage_name)

    def kept(batch: int) -> tuple[int, int]:
        prefix, target = random_batch(stage, batch, torch.device("cpu"), torch.Generator().manual_seed(0))
        storages: dict[int, int] = {}
        logits: dict[int, int] = {}

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.shape[-2:] != (shape["T"], shape["T"]):              # scores: a fused kernel keeps none
                where = logits if shape["V"] in tensor.shape[1:] else storages
                where[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            stage.loss(prefix, target)
        return sum(storages.values()), sum(logits.values())

    (activations_1, logits_1), (activations_2, logits_2) = kept(1), kept(2)
    return ((activations_2 - activations_1) / (shape["T"] * shape["layers"] * shape["d"]),
            (logits_2 - logits_1) / (shape["n"] * shape["V"]))


def training_bytes(counts: dict, shape: dict, micro_batch: int, per_width: float, per_logit: float
                   ) -> tuple[float, float]:
    """(AdamW state, activations of ``micro_batch`` windows) in bytes, with the measured rates of ``kept_bytes``."""
    state = 16 * counts["all"]
    per_window = per_width * shape["d"] * shape["T"] * shape["layers"] + per_logit * shape["n"] * shape["V"]
    return state, per_window * micro_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per stage")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpu-batch", type=int, default=8, help="windows per step of the paper stages on a GPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the loss (inductor) when timing")
    args = parser.parse_args()
    runtime.seed_and_threads(0, args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    where = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} core(s), {args.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}; load average {os.getloadavg()[0]:.1f}")

    presets = {name: config.get_preset(name) for name in PRESETS}
    counts = {(p, s): parameter_counts(presets[p], s) for p in PRESETS for s in musiclm.STAGES}
    shapes = {(p, s): window(presets[p], s) for p in PRESETS for s in musiclm.STAGES}
    flops = {key: analytic_flops_per_token(shapes[key], counts[key]["blocks"]) for key in counts}

    print("\n1. Model FLOPs per trained token (forward + backward; a multiply-add is 2 FLOPs; full T x T attention)")
    print(f"{'preset':<6} {'stage':<9} {'params':>8} {'non-emb':>8} {'window':>7} {'context':>8} {'trained':>8} "
          f"{'MFLOPs/token':>13} {'matrices':>9} {'attention':>10} {'output':>7}")
    for (preset_name, stage_name), terms in flops.items():
        shape, count, total = shapes[preset_name, stage_name], counts[preset_name, stage_name], sum(terms.values())
        shares = "".join(f" {terms[term] / total:>{width}.0%}" for term, width in (("matrices", 9),
                                                                                  ("attention", 10), ("output", 7)))
        print(f"{preset_name:<6} {stage_name:<9} {count['all'] / 1e6:>7.2f}M {count['non_embedding'] / 1e6:>7.2f}M "
              f"{presets[preset_name].stages.seconds(stage_name):>6g}s {shape['context']:>8} {shape['n']:>8} "
              f"{total / 1e6:>13.1f}{shares}")
    print("(params: all, the output layer tied to the embedding; non-emb: without the embeddings; context: positions"
          "\n of a window, prefix + BOS + target; trained: its target tokens; the last 3 columns: shares of the FLOPs)")
    print("\nThe tiny count against torch.utils.flop_counter.FlopCounterMode on one training step (batch 2):")
    print(f"{'stage':<9} {'analytic':>14} {'FlopCounterMode':>16} {'measured / analytic':>20}")
    for stage_name in musiclm.STAGES:
        analytic = sum(flops["tiny", stage_name].values())
        measured = measured_flops_per_token(presets["tiny"], stage_name)
        print(f"{stage_name:<9} {analytic:>14,.0f} {measured:>16,.0f} {measured / analytic:>19.4f}x")

    print(f"\n2. Training throughput on {where}, {'bf16 autocast' if cuda else 'float32'}"
          f"{', torch.compile' if args.compile else ''}: trained tokens per second of whole optimiser steps")
    peak = bf16_peak(where) if cuda else None
    if cuda:
        print("MFU against a dense bf16 peak of "
              + (f"{peak / 1e12:.0f} TFLOP/s" if peak else "(peak unknown for this GPU: no MFU)"))
    runs = [("tiny", presets["tiny"].train.batch_size)]
    if cuda:
        runs += [("small", presets["small"].train.batch_size), ("paper", args.gpu_batch)]
    unit, unit_name = (1e12, "TFLOP/s") if cuda else (1e9, "GFLOP/s")
    print(f"{'preset':<6} {'stage':<9} {'batch':>6} {'tokens/s':>10} {'model ' + unit_name:>14} "
          f"{'MFU' if cuda else '/ tiny semantic':>15}")
    baseline = None
    for preset_name, batch in runs:
        for stage_name in musiclm.STAGES:
            try:
                rate = tokens_per_second(presets[preset_name], stage_name, batch, args.steps, device, args.compile)
            except torch.cuda.OutOfMemoryError:
                rate = None
            if rate is None:             # out of the except block: the failed step's tensors are free again
                torch.cuda.empty_cache()
                print(f"{preset_name:<6} {stage_name:<9} {batch:>6} out of memory: lower --gpu-batch")
                continue
            achieved = rate * sum(flops[preset_name, stage_name].values())
            baseline = baseline or rate
            last = (f"{achieved / peak:>15.1%}" if peak else f"{'peak unknown':>15}") if cuda else \
                f"{rate / baseline:>14.2f}x"
            print(f"{preset_name:<6} {stage_name:<9} {batch:>6} {rate:>10.0f} {achieved / unit:>14.2f} {last}")

    print("\n3. Memory of a training step: AdamW state (fp32 weights, gradients, 2 moments: 16 bytes/parameter) and "
          "activations")
    rates = [kept_bytes(presets["tiny"], stage_name) for stage_name in musiclm.STAGES]
    per_width, per_logit = (sum(values) / len(values) for values in zip(*rates))
    print("Kept for the backward pass, measured on tiny (bf16 autocast, no T x T scores), in bytes per position, layer "
          "and\nunit of d_model: " + ", ".join(f"{name} {width:.1f}" for name, (width, _) in zip(musiclm.STAGES, rates))
          + f" (mean {per_width:.1f}; Korthikanti et al. 2022 count 34, all in 16 bits),\nand {per_logit:.1f} bytes "
          "per logit")
    print(f"{'preset':<6} {'stage':<9} {'weights':>8} {'AdamW':>8} {'batch':>6} {'activations':>12} {'total':>8}  "
          "on one 80 GB GPU")
    for preset_name in ("small", "paper"):
        batch = presets[preset_name].train.batch_size
        for stage_name in musiclm.STAGES:
            count, shape = counts[preset_name, stage_name], shapes[preset_name, stage_name]

            def total(micro_batch: int) -> float:
                return sum(training_bytes(count, shape, micro_batch, per_width, per_logit))

            state, activations = training_bytes(count, shape, batch, per_width, per_logit)
            steps = 1                    # micro-batches per step (train.grad_accum_steps) until one fits
            while total(batch // steps) > GPU_BYTES and batch % (2 * steps) == 0:
                steps *= 2
            verdict = ("does not fit" if total(batch // steps) > GPU_BYTES else
                       "fits" if steps == 1 else f"fits with grad_accum_steps={steps} (micro-batch {batch // steps})")
            print(f"{preset_name:<6} {stage_name:<9} {4 * count['all'] / 1e9:>6.2f}GB {state / 1e9:>6.2f}GB {batch:>6} "
                  f"{activations / 1e9:>10.1f}GB {(state + activations) / 1e9:>6.1f}GB  {verdict}")
    largest = max(sum(training_bytes(counts["small", name], shapes["small", name], presets["small"].train.batch_size,
                                     per_width, per_logit)) for name in musiclm.STAGES)
    print(f"small: every stage's step at its batch of {presets['small'].train.batch_size} needs about "
          f"{largest / 1e9:.0f} GB at most: it {'fits' if largest <= GPU_BYTES else 'does not fit'} one 80 GB GPU "
          "without accumulation")


if __name__ == "__main__":
    main()
