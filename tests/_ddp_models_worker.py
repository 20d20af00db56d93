"""The course's own training functions under ``torchrun``, shared by tests/test_train.py and by its launches.

Run as ``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_ddp_models_worker.py OUT_DIR
RUN...`` with runs from ``RUNS``: each rank calls the run's training function (``musiclm.train_stage`` for a
stage, ``soundstream.train_codec`` for the codec and its discriminators, ``w2v_bert.train_w2v_bert``; for
``compiled``, a ``Trainer`` with ``train.compile`` on _ddp_worker's regression problem), which trains on that
rank's half of every global batch; rank 0 writes ``OUT_DIR/<run>/last.pt`` (weights and history) and every rank
writes its final weights and buffers to ``OUT_DIR/<run>/rank{r}.pt``.

The models are the tiny preset's, shrunk further, for 3 steps. Every clip is exactly one window (or crop) long,
so the data draws no random positions: the two ranks see the examples one process sees.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from _ddp_worker import DDP_CONFIG, mse_loss, regression_data, small_mlp
from mlm_lessons import config, musiclm, soundstream, w2v_bert
from mlm_lessons.token_files import config_token_spec
from mlm_lessons.train import Trainer

TINY = config.get_preset("tiny")
TRAIN = dataclasses.replace(TINY.train, batch_size=4, learning_rate=1e-2, max_steps=3, warmup_steps=0, log_every=1,
                            checkpoint_every=0, seed=3)
# The MusicLM stages: one narrow layer, no dropout (each rank would draw its own masks), a 0.4-s window.
STAGE_CONFIG = dataclasses.replace(TINY, train=TRAIN, transformer=config.TransformerConfig(d_model=16, n_layers=1,
                                                                                          n_heads=2, dropout=0.0))
STAGE_SECONDS = 0.4
# SoundStream: the discriminators join at step 1, so a run has a step with one objective and steps with two.
CODEC_CONFIG = dataclasses.replace(
    TINY, train=TRAIN, tokens=dataclasses.replace(TINY.tokens, codebook_size=32),
    codec=dataclasses.replace(TINY.codec, channels=4, latent_dim=16, discriminator_channels=4, crop_seconds=0.16,
                              batch_size=4, adversarial_start_step=1))
# w2v-BERT: its masks, the noise on masked frames and the distractors come from each rank's own generator, so
# only what draws nothing (the targets' quantiser) can match one process exactly.
W2V_BERT_CONFIG = dataclasses.replace(
    TINY, train=TRAIN,
    w2v_bert=dataclasses.replace(TINY.w2v_bert, n_mels=16, conv_channels=4, d_model=16, n_heads=2, conv_kernel=3,
                                 contrastive_layers=1, mlm_layers=1, target_codebook_size=16, num_distractors=5,
                                 token_layer=2, crop_seconds=0.4, batch_size=4, warmup_steps=0))
# The compiled run: "aot_eager" traces and compiles as inductor does, in a second instead of tens; two micro-batches
# per step, so that the compiled loss also runs under DDP's no_sync.
COMPILED_CONFIG = dataclasses.replace(DDP_CONFIG, compile=True, grad_accum_steps=2)
RUNS = (*musiclm.STAGES, "codec", "w2v_bert", "compiled")


def token_files(count: int = 8) -> tuple[dict, list[dict]]:
    """``(spec, clips)`` as ``token_files.read_token_files`` returns them: random codes of the tiny preset's kinds,
    each clip exactly one stage window long."""
    tokens = TINY.tokens
    spec = config_token_spec(TINY)
    generator = torch.Generator().manual_seed(0)
    frames = round(STAGE_SECONDS * tokens.semantic_frame_rate)
    ratio = tokens.soundstream_frame_rate // tokens.semantic_frame_rate
    clips = [{"ytid": f"clip{index}",
              "mulan": torch.randint(tokens.mulan_codebook_size, (tokens.mulan_rvq_levels,), generator=generator),
              "semantic": torch.randint(tokens.semantic_clusters, (frames,), generator=generator),
              "acoustic": torch.randint(tokens.codebook_size, (ratio * frames, tokens.rvq_levels), generator=generator)}
             for index in range(count)]
    return spec, clips


def tones(count: int, seconds: float) -> list[torch.Tensor]:
    """``count`` decaying sine tones of ``seconds`` at the tiny preset's rate, at distinct pitches."""
    rate = TINY.data.sample_rate
    time = torch.arange(round(seconds * rate)) / rate
    return [0.5 * torch.sin(2 * math.pi * (200 + 90 * index) * time) * torch.exp(-2 * time) for index in range(count)]


def train(run: str, out_dir: str | Path) -> tuple[nn.Module, list[dict]]:
    """Train run ``run`` (one of ``RUNS``) from scratch with the course's function; ``(model, history)``."""
    if run in musiclm.STAGES:
        spec, clips = token_files()
        return musiclm.train_stage(STAGE_CONFIG, run, clips, spec, STAGE_SECONDS, out_dir, resume=False,
                                   progress=False)
    if run == "codec":
        return soundstream.train_codec(CODEC_CONFIG, tones(8, CODEC_CONFIG.codec.crop_seconds), out_dir,
                                       resume=False, progress=False)
    if run == "w2v_bert":
        return w2v_bert.train_w2v_bert(W2V_BERT_CONFIG, tones(8, W2V_BERT_CONFIG.w2v_bert.crop_seconds), out_dir,
                                       resume=False, progress=False)
    if run == "compiled":
        model = small_mlp()
        trainer = Trainer(model, COMPILED_CONFIG, regression_data(), mse_loss, out_dir=out_dir, progress=False,
                          compile_backend="aot_eager")
        return model, trainer.fit()
    raise ValueError(f"unknown run {run!r}; choose from {RUNS}")


if __name__ == "__main__":
    dist.init_process_group("gloo")  # once for all runs (the trainer leaves an existing group alone)
    for run in sys.argv[2:]:
        model, _ = train(run, Path(sys.argv[1]) / run)
        torch.save(model.state_dict(), Path(sys.argv[1]) / run / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
