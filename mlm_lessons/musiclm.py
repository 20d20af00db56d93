"""MusicLM's token layouts: how the stages of lesson 08 see MuLan, semantic and acoustic tokens.

MusicLM (Agostinelli et al., 2023) chains three decoder-only Transformers (lesson 02's ``TransformerLM``),
each predicting one kind of token from the kinds before it:

* **semantic**: ``p(S_t | S_<t, M)``: w2v-BERT k-means tokens (lesson 06), given the MuLan tokens ``M``
  (lesson 07);
* **coarse**: ``p(A_t | A_<t, S, M)``: the first RVQ levels of SoundStream's codes (lesson 05);
* **fine**: the remaining RVQ levels, given the coarse ones.

This file is read top to bottom like its lesson. It begins with the one thing every stage shares: how
tokens of several kinds become one sequence of integer ids.

1. **A kind of token** (:class:`TokenKind`) is ``levels`` codes per frame, each in ``[0, codebook_size)``:
   MuLan tokens are one frame of ``mulan_rvq_levels`` codes per clip; semantic tokens one code per frame
   at 25 Hz; acoustic tokens ``levels`` RVQ codes per frame at 50 Hz.
2. **Flattening.** A stage reads a sequence, so the ``(frames, levels)`` grid is read frame by frame,
   all levels of frame 0, then all of frame 1 (as AudioLM and MusicLM do): a model predicting level
   ``l`` of frame ``t`` has seen every coarser level of that frame.
3. **One id space per sequence** (:class:`TokenLayout`). Code ``c`` of level ``l`` of a kind becomes the id
   ``offset(kind, l) + c``: every (kind, level) owns its own block of ids, so the same code at two levels
   is two different tokens with two different embeddings. Special tokens come first: ``PAD_ID = 0``
   (filling, never predicted: music shorter than a stage's window is padded to a full window's layout,
   so every token keeps the position the stage learned it at) and, in a target layout, ``BOS_ID = 1``
   (the start of what a stage generates).
4. **Valid ids per position.** At a position where level ``l`` is due, only the ids of that level's block
   are valid. :meth:`TokenLayout.valid_ids` gives the mask, so generation samples only tokens that mean
   something where they are put, and :meth:`TokenLayout.unflatten` refuses a sequence that breaks the
   pattern.
5. **A stage** (:class:`StageLayout`) is a prefix layout (the kinds it is conditioned on, fed through
   ``TransformerLM``'s prefix hook) and a target layout (the kind it predicts). :func:`stage_layouts` builds
   the three from a :class:`~mlm_lessons.config.Config`; :func:`stage_layout` also builds ablations that
   drop some conditioning (a coarse stage without semantic tokens).
6. **The stage model** (:class:`Stage`): lesson 02's ``TransformerLM`` over a stage's target ids, its
   prefix the conditioning ids, its context one *window* of music (``config.stages``). Training is
   next-token cross-entropy (teacher forcing); generation samples one token at a time with the KV cache,
   masked to the ids valid at each position, and makes longer music window by window, each window
   continuing the one before on its own stretch of the time-aligned conditions.
7. **Training examples** (:class:`StageExamples`): aligned windows of a clip's token files (lesson 08's
   ``python -m mlm_lessons tokens``): the same stretch of music as semantic frames and as acoustic frames,
   cut into each stage's prefix and target; :func:`train_stage` runs the one ``Trainer`` on them.
8. **The cascade** (:func:`cascade`): generation runs the stages one after the other, each reading what
   the one before wrote: MuLan tokens -> semantic -> coarse -> fine, ready for SoundStream's decoder.

Shapes: codes ``(batch, frames, levels)`` int64; flat ids ``(batch, frames * levels)`` int64.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from mlm_lessons.config import Config, TransformerConfig
from mlm_lessons.token_files import check_token_spec
from mlm_lessons.train import Trainer, half_state_dict, load_half_state_dict, load_tagged_file, save_atomically
from mlm_lessons.transformer import TransformerLM, TransformerLMConfig, next_token_loss

PAD_ID = 0   # padding in every layout: never predicted, never a code
BOS_ID = 1   # start of a target sequence (target layouts only)

STAGES = ("semantic", "coarse", "fine")
STAGE_FORMAT = "mlm_lessons.musiclm.stage/1"


# ----------------------------------------------------------------------------------------------------
# 1. Kinds of tokens


@dataclass(frozen=True)
class TokenKind:
    """``levels`` codes per frame, each in ``[0, codebook_size)``; ``frame_rate`` frames per second (``None``
    for one frame per clip, as MuLan tokens)."""

    name: str
    levels: int
    codebook_size: int
    frame_rate: float | None = None

    def __post_init__(self) -> None:
        if self.levels < 1 or self.codebook_size < 1:
            raise ValueError(f"token kind {self.name!r} needs levels >= 1 and codebook_size >= 1, got "
                             f"{self.levels} and {self.codebook_size}")


def token_kinds(config: Config) -> dict[str, TokenKind]:
    """The four kinds of token of a configuration: ``mulan``, ``semantic``, ``coarse`` and ``fine``."""
    tokens = config.tokens
    if not 1 <= tokens.coarse_levels < tokens.rvq_levels:
        raise ValueError(f"tokens.coarse_levels must leave at least one fine level: 1 <= coarse_levels < "
                         f"rvq_levels, got {tokens.coarse_levels} of {tokens.rvq_levels}")
    return {"mulan": TokenKind("mulan", tokens.mulan_rvq_levels, tokens.mulan_codebook_size),
            "semantic": TokenKind("semantic", 1, tokens.semantic_clusters, tokens.semantic_frame_rate),
            "coarse": TokenKind("coarse", tokens.coarse_levels, tokens.codebook_size, tokens.soundstream_frame_rate),
            "fine": TokenKind("fine", tokens.rvq_levels - tokens.coarse_levels, tokens.codebook_size,
                              tokens.soundstream_frame_rate)}


# ----------------------------------------------------------------------------------------------------
# 2-4. One id space, flattening, valid ids


class TokenLayout:
    """The id space of one sequence made of ``kinds``: special tokens first, then for each kind, for each of
    its levels, a block of ``codebook_size`` ids.

    Args:
        kinds: the kinds that appear in the sequence, in order.
        specials: how many special ids come first (1: ``PAD``; 2: ``PAD`` and ``BOS``).
    """

    def __init__(self, kinds: Sequence[TokenKind], specials: int = 1):
        names = [kind.name for kind in kinds]
        if not kinds or len(set(names)) != len(names):
            raise ValueError(f"a layout needs at least one kind and distinct names, got {names}")
        if specials not in (1, 2):
            raise ValueError(f"specials must be 1 (PAD) or 2 (PAD, BOS), got {specials}")
        self.kinds = {kind.name: kind for kind in kinds}
        self.specials = specials
        self._offsets: dict[str, int] = {}
        next_id = specials
        for kind in kinds:
            self._offsets[kind.name] = next_id
            next_id += kind.levels * kind.codebook_size
        self.vocab_size = next_id

    def __repr__(self) -> str:
        blocks = ", ".join(f"{name}: {kind.levels} x {kind.codebook_size} from id {self._offsets[name]}"
                           for name, kind in self.kinds.items())
        return f"TokenLayout({blocks}; {self.vocab_size} ids)"

    def _kind(self, name: str) -> TokenKind:
        if name not in self.kinds:
            raise KeyError(f"this layout has no {name!r} tokens; it has {list(self.kinds)}")
        return self.kinds[name]

    def offset(self, name: str, level: int) -> int:
        """The id of code 0 of ``level`` of kind ``name``."""
        kind = self._kind(name)
        if not 0 <= level < kind.levels:
            raise ValueError(f"{name} tokens have levels 0..{kind.levels - 1}, not {level}")
        return self._offsets[name] + level * kind.codebook_size

    def flatten(self, name: str, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(batch, frames, levels)`` (or ``(batch, frames)`` for one level) -> ids ``(batch, frames *
        levels)``, frame by frame, each code moved into its level's block."""
        kind = self._kind(name)
        if codes.dim() == 2 and kind.levels == 1:
            codes = codes.unsqueeze(-1)
        if codes.dim() != 3 or codes.shape[-1] != kind.levels:
            raise ValueError(f"{name} codes must be (batch, frames, {kind.levels}), got {tuple(codes.shape)}")
        if codes.dtype != torch.long:
            raise ValueError(f"{name} codes must be int64, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= kind.codebook_size):
            raise ValueError(f"{name} codes must lie in [0, {kind.codebook_size}), got values from "
                             f"{int(codes.min())} to {int(codes.max())}: tokens from another codec or tokenizer?")
        offsets = self._offsets[name] + kind.codebook_size * torch.arange(kind.levels, device=codes.device)
        return (codes + offsets).flatten(1)

    def unflatten(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """Ids ``(batch, frames * levels)`` -> codes ``(batch, frames, levels)``; the inverse of :meth:`flatten`.

        Raises:
            ValueError: if the length is not a whole number of frames, or an id is not one of the block of
                the level due at its position (the error names the first such position).
        """
        kind = self._kind(name)
        if ids.dim() != 2 or ids.shape[1] % kind.levels:
            raise ValueError(f"{name} ids must be (batch, frames * {kind.levels}), got {tuple(ids.shape)}")
        valid = self.valid_ids(name, ids.shape[1], device=ids.device)                 # (length, vocab)
        in_range = (ids >= 0) & (ids < self.vocab_size)
        ok = in_range & valid.gather(1, ids.clamp(0, self.vocab_size - 1).T).T
        if not bool(ok.all()):
            row, position = (int(index) for index in (~ok).nonzero()[0])
            level = position % kind.levels
            low = self.offset(name, level)
            raise ValueError(f"id {int(ids[row, position])} at position {position} (row {row}) is not a {name} "
                             f"level-{level} token (ids {low}..{low + kind.codebook_size - 1})")
        codes = ids.view(ids.shape[0], -1, kind.levels)
        return codes - (self._offsets[name] + kind.codebook_size * torch.arange(kind.levels, device=ids.device))

    def valid_ids(self, name: str, length: int, start: int = 0,
                  device: torch.device | str | None = None) -> torch.Tensor:
        """``(length, vocab_size)`` bool: row ``p`` marks the ids allowed at position ``start + p`` of a flat
        ``name`` sequence (the block of level ``(start + p) % levels``)."""
        kind = self._kind(name)
        levels = (torch.arange(length, device=device) + start) % kind.levels                  # (length,)
        low = self._offsets[name] + levels * kind.codebook_size
        ids = torch.arange(self.vocab_size, device=device)
        return (ids >= low[:, None]) & (ids < low[:, None] + kind.codebook_size)


# ----------------------------------------------------------------------------------------------------
# 5. The three stages


@dataclass(frozen=True)
class StageLayout:
    """What a stage reads and writes: ``prefix`` (its conditioning, through ``TransformerLM``'s prefix hook;
    ids from ``prefix.vocab_size``) and ``target`` (``BOS`` then the flat tokens of ``target_kind``)."""

    name: str
    prefix: TokenLayout
    target: TokenLayout
    prefix_kinds: tuple[str, ...]
    target_kind: str

    def prefix_ids(self, codes: dict[str, torch.Tensor], seconds: float | None = None) -> torch.Tensor:
        """The conditioning ``{kind: codes}`` -> prefix ids ``(batch, prefix_len)``, kinds in layout order.

        With ``seconds`` (a stage's window), each kind is padded with ``PAD`` to its tokens for that much music,
        so that music shorter than the window (a short clip in training, a short request in generation) keeps
        the layout of a full window: every target at the position the stage learned it at.
        """
        missing = [name for name in self.prefix_kinds if name not in codes]
        if missing:
            raise ValueError(f"the {self.name} stage is conditioned on {list(self.prefix_kinds)}; missing {missing}")
        parts = [self.prefix.flatten(name, codes[name]) for name in self.prefix_kinds]
        if seconds is not None:
            parts = [_pad_to(ids, _frames(self.prefix.kinds[name], seconds) * self.prefix.kinds[name].levels, name)
                     for ids, name in zip(parts, self.prefix_kinds)]
        return torch.cat(parts, dim=1)

    def target_ids(self, codes: torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        """Codes of the target kind -> ``(batch, 1 + frames * levels)``: ``BOS`` then the flat ids (with ``seconds``,
        padded with ``PAD`` to a full window; the loss ignores ``PAD`` targets)."""
        flat = self.target.flatten(self.target_kind, codes)
        bos = torch.full((flat.shape[0], 1), BOS_ID, dtype=torch.long, device=flat.device)
        ids = torch.cat([bos, flat], dim=1)
        if seconds is not None:
            kind = self.target.kinds[self.target_kind]
            ids = _pad_to(ids, 1 + _frames(kind, seconds) * kind.levels, self.target_kind)
        return ids

    def target_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`target_ids`: ``(batch, 1 + n)`` ids starting with ``BOS`` -> codes."""
        if ids.dim() != 2 or ids.shape[1] < 1 or not bool((ids[:, 0] == BOS_ID).all()):
            raise ValueError(f"a {self.name} target sequence starts with BOS ({BOS_ID}), got shape "
                             f"{tuple(ids.shape)}")
        return self.target.unflatten(self.target_kind, ids[:, 1:])


CONDITIONS = {"semantic": ("mulan",), "coarse": ("mulan", "semantic"), "fine": ("coarse",)}


def stage_layout(config: Config, stage: str, condition_on: Sequence[str] | None = None) -> StageLayout:
    """The layout of one of MusicLM's three stages for ``config`` (module docstring): semantic given MuLan;
    coarse given MuLan and semantic; fine given coarse.

    Args:
        condition_on: a subset of the stage's usual conditioning, for ablations (lesson 08 trains a coarse
            stage on MuLan tokens alone to measure what the semantic tokens give it). Default: all of it.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    usual = CONDITIONS[stage]
    prefix = usual if condition_on is None else tuple(condition_on)
    if not prefix or any(name not in usual for name in prefix) or len(set(prefix)) != len(prefix):
        raise ValueError(f"the {stage} stage can be conditioned on a non-empty subset of {list(usual)}, got "
                         f"{list(prefix)}")
    prefix = tuple(name for name in usual if name in prefix)             # the usual order
    kinds = token_kinds(config)
    return StageLayout(stage, TokenLayout([kinds[name] for name in prefix]),
                       TokenLayout([kinds[stage]], specials=2), prefix, stage)


def stage_layouts(config: Config) -> dict[str, StageLayout]:
    """The three stages' layouts, each with its usual conditioning (:func:`stage_layout`)."""
    return {stage: stage_layout(config, stage) for stage in STAGES}


# ----------------------------------------------------------------------------------------------------
# 6. The stage model


class Stage(nn.Module):
    """One MusicLM stage: a decoder-only Transformer over ``layout``'s target ids, conditioned on its prefix.

    Args:
        layout: what the stage reads and writes (:func:`stage_layout`).
        transformer: width, depth, heads and dropout (a preset's ``transformer`` section).
        seconds: the stretch of music it sees at once, its *window*: the context holds the prefix of that
            stretch, ``BOS`` and its target tokens (:func:`sequence_length`).
    """

    def __init__(self, layout: StageLayout, transformer: TransformerConfig, seconds: float):
        super().__init__()
        self.layout, self.seconds = layout, float(seconds)
        self.window = _frames(layout.target.kinds[layout.target_kind], seconds)   # target frames per window
        self.built_from: dict | None = None            # the configuration, when made by from_config
        self.lm = TransformerLM(TransformerLMConfig(
            vocab_size=layout.target.vocab_size, max_len=sequence_length(layout, seconds),
            d_model=transformer.d_model, n_layers=transformer.n_layers, n_heads=transformer.n_heads,
            dropout=transformer.dropout, prefix_vocab_size=layout.prefix.vocab_size))

    @classmethod
    def from_config(cls, config: Config, stage: str, seconds: float | None = None,
                    condition_on: Sequence[str] | None = None) -> "Stage":
        """The ``stage`` of ``config``, with a window of ``seconds`` (default: the stage's, ``config.stages``)
        and its usual conditioning unless ``condition_on`` names a subset (:func:`stage_layout`)."""
        layout = stage_layout(config, stage, condition_on)
        model = cls(layout, config.transformer, config.stages.seconds(stage) if seconds is None else seconds)
        model.built_from = config.to_dict()
        return model

    def save(self, path: str | os.PathLike) -> Path:
        """Write the stage (float16 weights) with the configuration it was built from, atomically."""
        if self.built_from is None:
            raise ValueError("only a stage made by Stage.from_config can be saved (its configuration is needed to "
                             "rebuild it)")
        save_atomically({"format": STAGE_FORMAT, "stage": self.layout.name, "config": self.built_from,
                         "seconds": self.seconds, "condition_on": list(self.layout.prefix_kinds),
                         "model": half_state_dict(self)}, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Stage":
        """Read a file written by :meth:`save` (in eval mode)."""
        payload = load_tagged_file(path, STAGE_FORMAT, "stage checkpoint", "MusicLM stage")
        model = cls.from_config(Config.from_dict(payload["config"]), payload["stage"], payload["seconds"],
                                payload.get("condition_on"))
        load_half_state_dict(model, payload["model"], source=f"stage checkpoint {path}")
        return model.eval()

    def loss(self, prefix: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Next-token cross-entropy of ``target`` ids ``(batch, 1 + n)`` (starting with ``BOS``) given ``prefix``
        ids ``(batch, prefix_len)``: position ``t`` predicts token ``t + 1``. Returns ``(loss, {"accuracy"})``."""
        self._check_fits(prefix.shape[1], target.shape[1])
        logits = self.lm(target[:, :-1], prefix=prefix)                            # (batch, n, vocab)
        loss, accuracy = next_token_loss(logits, target[:, 1:], ignore_index=PAD_ID)
        return loss, {"accuracy": accuracy}

    @torch.no_grad()
    def generate(self, conditions: dict[str, torch.Tensor], frames: int, prompt: torch.Tensor | None = None,
                 temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True, overlap: float = 0.5) -> torch.Tensor:
        """Sample ``frames`` frames of the target kind, continuing ``prompt`` if given.

        Music longer than the stage's window is made window by window (a sliding window): each new
        window starts ``overlap`` of a window before the end of what exists, takes those frames as its
        prompt, and is conditioned on the same stretch of the time-aligned conditions (semantic or coarse
        frames; MuLan tokens hold for the whole clip). Every sampled id is valid for its position (the
        layout's mask), so the result always decodes.

        Args:
            conditions: ``{kind: codes}`` as :meth:`StageLayout.prefix_ids` takes them; time-aligned kinds
                must cover the whole result (prompt and new frames).
            frames: new frames to sample.
            prompt: ``(batch, prompt_frames, levels)`` codes of the target kind to continue (e.g. the
                semantic tokens of the first seconds of a clip).
            overlap: the fraction of a window carried into the next one, in ``(0, 1)``.

        Returns:
            ``(batch, prompt_frames + frames, levels)`` int64 codes.
        """
        layout, device = self.layout, self.lm.embedding.weight.device
        kind = layout.target.kinds[layout.target_kind]
        if frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        if not 0 < overlap < 1:
            raise ValueError(f"overlap is the fraction of a window carried into the next, in (0, 1); got {overlap}")
        sizes = {name: value.shape[0] for name, value in conditions.items()}
        if prompt is not None:
            sizes["prompt"] = prompt.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the conditions and the prompt must have one batch size, got {sizes}")
        batch = next(iter(sizes.values()), 1)
        if prompt is None:
            prompt = torch.zeros(batch, 0, kind.levels, dtype=torch.long)
        layout.target.flatten(layout.target_kind, prompt)                  # checks its shape and codes
        total = prompt.shape[1] + frames
        rates = self._condition_rates(conditions, total)
        grid = math.lcm(*(rate.denominator for rate in rates.values()), 1)   # window starts every condition shares
        keep = min(self.window - grid, max(grid, round(self.window * overlap) // grid * grid))
        if keep < grid:
            raise ValueError(f"the {layout.name} stage's window of {self.window} frames is too short to slide on its "
                             f"conditions' {grid}-frame grid; build it for more seconds")
        codes = prompt.to(device)
        while codes.shape[1] < total:
            done = codes.shape[1]
            start = max(0, min(done - keep, total - self.window))
            start = -(-start // grid) * grid                                   # up to the grid
            end = min(start + self.window, total)
            window_conditions = {name: value if name not in rates else
                                 value[:, int(start * rates[name]):math.ceil(end * rates[name])]
                                 for name, value in conditions.items()}
            new = self._sample_window(window_conditions, codes[:, start:done], end - done, temperature, top_k,
                                      generator, use_cache)
            codes = torch.cat([codes, new], dim=1)
        return codes

    def _condition_rates(self, conditions: dict[str, torch.Tensor], total: int) -> dict[str, Fraction]:
        """Condition frames per target frame of each time-aligned condition, checked to cover ``total``."""
        target_rate = self.layout.target.kinds[self.layout.target_kind].frame_rate
        rates = {}
        for name in self.layout.prefix_kinds:
            rate = self.layout.prefix.kinds[name].frame_rate
            if rate is None or name not in conditions:
                continue                                     # clip-level (MuLan), or missing: prefix_ids says so
            rates[name] = Fraction(rate).limit_denominator(1000) / Fraction(target_rate).limit_denominator(1000)
            needed = math.ceil(total * rates[name])
            if conditions[name].shape[1] < needed:
                raise ValueError(f"{total} {self.layout.target_kind} frames need {needed} {name} frames to "
                                 f"condition on, got {conditions[name].shape[1]}")
        return rates

    def _sample_window(self, conditions: dict[str, torch.Tensor], prompt: torch.Tensor, frames: int,
                       temperature: float, top_k: int | None, generator: torch.Generator | None,
                       use_cache: bool) -> torch.Tensor:
        """One window: ``frames`` new frames after ``prompt`` codes, given its stretch of ``conditions``."""
        layout = self.layout
        device = self.lm.embedding.weight.device
        prefix = layout.prefix_ids(conditions, seconds=self.seconds).to(device)
        levels = layout.target.kinds[layout.target_kind].levels
        start = layout.target_ids(prompt)                                       # BOS + the prompt's ids
        new = frames * levels
        self._check_fits(prefix.shape[1], start.shape[1] + new)
        allowed = layout.target.valid_ids(layout.target_kind, new, start=start.shape[1] - 1, device=device)
        ids = self.lm.generate(start, new, temperature=temperature, top_k=top_k, use_cache=use_cache,
                               generator=generator, prefix=prefix, allowed=allowed)
        return layout.target_codes(ids)[:, prompt.shape[1]:]

    def _check_fits(self, prefix_len: int, target_len: int) -> None:
        limit = self.lm.config.max_len
        if prefix_len + target_len > limit:
            raise ValueError(f"the {self.layout.name} stage's context is {limit} positions, but a prefix of "
                             f"{prefix_len} and {target_len} target positions need {prefix_len + target_len}: "
                             f"more than its window of {self.seconds:g} s")


def _frames(kind: TokenKind, seconds: float) -> int:
    """Frames of ``kind`` in ``seconds`` of music (one for a clip-level kind)."""
    return 1 if kind.frame_rate is None else round(seconds * kind.frame_rate)


def _pad_to(ids: torch.Tensor, length: int, name: str) -> torch.Tensor:
    """``(batch, n)`` ids padded at the end with ``PAD`` to ``length``."""
    if ids.shape[1] > length:
        raise ValueError(f"{ids.shape[1]} {name} ids do not fit the {length} of a window")
    return torch.nn.functional.pad(ids, (0, length - ids.shape[1]), value=PAD_ID)


def sequence_length(layout: StageLayout, seconds: float) -> int:
    """Positions a stage needs for ``seconds`` of music: its prefix, ``BOS`` and its target tokens."""
    prefix = sum(_frames(kind, seconds) * kind.levels for kind in layout.prefix.kinds.values())
    target = layout.target.kinds[layout.target_kind]
    return prefix + 1 + _frames(target, seconds) * target.levels


# ----------------------------------------------------------------------------------------------------
# 7. Training examples from token files


class StageExamples(Dataset):
    """``{"prefix", "target"}`` id pairs of one stage from clips' token files, each a random window of
    ``seconds`` (the whole clip if shorter, padded with ``PAD`` to a window's layout), drawn afresh every time
    from torch's global generator (which the trainer seeds and checkpoints, so runs repeat and resume exactly).

    A window starts on a semantic frame, and the acoustic frames of the same stretch of music are cut with
    it (two acoustic frames per semantic frame at 50 and 25 Hz), so a stage conditioned on semantic tokens
    sees the ones that belong to its acoustic tokens.

    Args:
        clips: as :func:`mlm_lessons.token_files.read_token_files` returns them (``mulan``, ``semantic``,
            ``acoustic``).
        spec: the token files' ``tokens.json``, checked against ``config``.
        windows_per_clip: windows drawn from each clip per epoch (more than one fills a batch from few clips).
        condition_on: the stage's conditioning kinds, if not the usual ones (:func:`stage_layout`).
    """

    def __init__(self, clips: Sequence[dict], spec: dict, config: Config, stage: str, seconds: float,
                 windows_per_clip: int = 1, condition_on: Sequence[str] | None = None):
        check_token_spec(spec, config)
        if not clips:
            raise ValueError("no clips to train on: extract token files first (python -m mlm_lessons tokens)")
        self.layout = stage_layout(config, stage, condition_on)
        self.clips, self.stage, self.windows_per_clip = list(clips), stage, windows_per_clip
        tokens = config.tokens
        self.ratio = tokens.soundstream_frame_rate // tokens.semantic_frame_rate
        if self.ratio * tokens.semantic_frame_rate != tokens.soundstream_frame_rate:
            raise ValueError("the acoustic frame rate must be a whole multiple of the semantic one, got "
                             f"{tokens.soundstream_frame_rate} and {tokens.semantic_frame_rate} Hz")
        self.coarse_levels = tokens.coarse_levels
        self.window = max(1, round(seconds * tokens.semantic_frame_rate))      # in semantic frames
        self.seconds = self.window / tokens.semantic_frame_rate

    def __len__(self) -> int:
        return len(self.clips) * self.windows_per_clip

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index % len(self.clips)]
        frames = min(len(clip["semantic"]), len(clip["acoustic"]) // self.ratio)
        window = min(self.window, frames)
        start = int(torch.randint(0, frames - window + 1, ()))
        semantic = clip["semantic"][start:start + window]
        acoustic = clip["acoustic"][self.ratio * start:self.ratio * (start + window)]
        codes = {"mulan": clip["mulan"][None], "semantic": semantic,
                 "coarse": acoustic[:, :self.coarse_levels], "fine": acoustic[:, self.coarse_levels:]}
        layout = self.layout
        prefix = layout.prefix_ids({name: codes[name][None] for name in layout.prefix_kinds}, self.seconds)[0]
        return {"prefix": prefix, "target": layout.target_ids(codes[self.stage][None], self.seconds)[0]}


def stage_objective(model: Stage, batch: dict):
    """The trainer's ``loss_fn``: next-token cross-entropy of a batch of :class:`StageExamples`."""
    return model.loss(batch["prefix"], batch["target"])


def train_stage(config: Config, stage: str, clips: Sequence[dict], spec: dict, seconds: float | None = None,
                out_dir: str | os.PathLike | None = None, *, steps: int | None = None, resume: bool = True,
                progress: bool = True, condition_on: Sequence[str] | None = None):
    """Train one stage on token files with the package's :class:`~mlm_lessons.train.Trainer` (``config.train``:
    batch size, learning rate, steps). ``seconds``: the window (default: the stage's, ``config.stages``);
    ``condition_on``: a subset of its usual conditioning, for ablations. Returns ``(model, history)``."""
    seconds = config.stages.seconds(stage) if seconds is None else seconds
    if steps is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_steps=steps))
    windows_per_clip = max(1, -(-config.train.batch_size // max(1, len(clips))))   # at least one batch per epoch
    data = StageExamples(clips, spec, config, stage, seconds, windows_per_clip, condition_on)
    torch.manual_seed(config.train.seed)
    model = Stage.from_config(config, stage, seconds, condition_on)
    trainer = Trainer(model, config, data, stage_objective, out_dir=out_dir, resume=resume and out_dir is not None,
                      progress=progress)
    history = trainer.fit()
    return model.eval(), history


# ----------------------------------------------------------------------------------------------------
# 8. The cascade


def cascade(stages: dict[str, Stage], mulan: torch.Tensor, seconds: float, temperatures: dict[str, float],
            top_k: int | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """MusicLM's generation path: from MuLan codes ``(batch, 1, levels)`` (of a clip, or of a caption) the
    semantic stage writes ``seconds`` of semantic tokens, the coarse stage renders them, the fine stage
    refines them; each stage makes music longer than its window window by window.

    Args:
        stages: ``{"semantic", "coarse", "fine"}`` stages built for the same token kinds.
        temperatures: per stage (e.g. ``config.stages.temperature(name)``: the paper's 1.0, 0.95, 0.4).

    Returns:
        ``{"semantic": (batch, frames, 1), "coarse": (batch, 2 * frames, coarse levels), "fine": (...),
        "acoustic": (batch, 2 * frames, all levels)}`` codes; ``SoundStream.decode(acoustic.transpose(1, 2))``
        plays them (at 25 and 50 frames per second).

    Raises:
        ValueError: if a stage is missing, or the stages disagree on a kind of token (made for different
            codecs, tokenizers or MuLan models), naming the kind.
    """
    missing = [name for name in STAGES if name not in stages]
    if missing:
        raise ValueError(f"the cascade needs the stages {list(STAGES)}; missing {missing}")
    written = {name: stages[name].layout.target.kinds[name] for name in STAGES}
    for reader in STAGES:
        for name, kind in stages[reader].layout.prefix.kinds.items():
            if name in written and written[name] != kind:
                raise ValueError(f"the {reader} stage reads {name} tokens as {kind}, but the {name} stage writes "
                                 f"{written[name]}: stages made for different token models")
    kinds = stages["coarse"].layout.prefix.kinds
    if "mulan" in kinds and mulan.shape[1:] != (1, kinds["mulan"].levels):
        raise ValueError(f"MuLan codes must be (batch, 1, {kinds['mulan'].levels}), got {tuple(mulan.shape)}")
    semantic = stages["semantic"].generate({"mulan": mulan}, _frames(written["semantic"], seconds),
                                           temperature=temperatures["semantic"], top_k=top_k, generator=generator)
    conditions = {"mulan": mulan, "semantic": semantic}
    coarse = stages["coarse"].generate({name: conditions[name] for name in stages["coarse"].layout.prefix_kinds},
                                       _frames(written["coarse"], seconds), temperature=temperatures["coarse"],
                                       top_k=top_k, generator=generator)
    fine = stages["fine"].generate({"coarse": coarse}, coarse.shape[1], temperature=temperatures["fine"],
                                   top_k=top_k, generator=generator)
    return {"semantic": semantic, "coarse": coarse, "fine": fine, "acoustic": torch.cat([coarse, fine], dim=2)}
