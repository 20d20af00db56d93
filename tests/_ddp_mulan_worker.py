"""A few MuLan training steps, shared by tests/test_mulan.py and by its ``torchrun`` launch.

Run as ``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_ddp_mulan_worker.py OUT_DIR``:
each rank trains a DDP-wrapped MuLan on its half of every global batch (gloo, CPU), the InfoNCE loss gathering
the embeddings of both ranks, and writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mlm_lessons import config, mulan

CAPTIONS = ["a calming violin melody", "an energetic guitar riff", "a sad piano ballad", "a happy flute tune",
            "a mysterious organ drone", "an aggressive synth lead", "a gentle marimba loop", "a loud trumpet call"]
STEPS = 3


def small_model(tokenizer_json: str) -> mulan.MuLan:
    """A tiny MuLan around the tokenizer saved at ``tokenizer_json`` (trained once: WordPiece training breaks
    ties in hash order, so two processes that each trained one could disagree)."""
    tiny = config.get_preset("tiny")
    section = dataclasses.replace(tiny.mulan, audio_channels=(4, 8), text_d_model=16, text_layers=1, text_heads=2,
                                  max_text_len=32)
    tokenizer = mulan.CaptionTokenizer.from_str(Path(tokenizer_json).read_text())
    torch.manual_seed(0)
    return mulan.MuLan(tokenizer, 16_000, tiny.features, section, embed_dim=8)


def global_audio() -> torch.Tensor:
    """``(8, 4096)``: one tone per caption."""
    time = torch.arange(4096) / 16_000
    return torch.stack([0.5 * torch.sin(2 * math.pi * (200 + 120 * i) * time) for i in range(len(CAPTIONS))])


def train(model, rank: int = 0, world_size: int = 1) -> dict:
    """SGD on this rank's slice of the global batch; returns the final parameters and each step's loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    audio, share = global_audio(), len(CAPTIONS) // world_size
    mine = slice(rank * share, (rank + 1) * share)
    losses = []
    for _ in range(STEPS):
        loss, _ = model(audio[mine], CAPTIONS[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    module = model.module if isinstance(model, DistributedDataParallel) else model
    return {"state": {name: value.detach().clone() for name, value in module.state_dict().items()}, "loss": losses}


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    result = train(DistributedDataParallel(small_model(str(Path(sys.argv[1]) / "tokenizer.json"))), rank, world_size)
    torch.save(result, Path(sys.argv[1]) / f"rank{rank}.pt")
    dist.destroy_process_group()
