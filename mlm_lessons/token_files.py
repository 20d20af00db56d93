"""Token files: a dataset turned, once, into the tokens MusicLM's stages learn from (lesson 08).

The three stages never see audio. They learn from tokens: the clip's MuLan audio tokens (lesson 07), its
semantic tokens (lesson 06) and its acoustic tokens (lesson 05's SoundStream codes, coarse and fine levels
together). Computing them takes the three frozen models a while, so it is done once and kept on disk:

* one file per clip, ``<ytid>.pt``: ``{"mulan": (mulan_levels,), "semantic": (semantic_frames,),
  "acoustic": (acoustic_frames, rvq_levels)}``, int16 (every codebook is far below 32,768 codes);
* ``tokens.json`` beside them: what made them (the three models' files and their SHA-256, the sample
  rate, and for each kind of token its levels, codebook size and frame rate).

Each file is written atomically, so an interrupted run leaves whole files only; running again skips the
clips that are done. Files made by other models (another codec, other k-means centroids) are refused
rather than mixed in, and :func:`check_token_spec` refuses token files that disagree with the
configuration a stage is built from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mlm_lessons.atomic import atomic_path
from mlm_lessons.audio import load_audio
from mlm_lessons.config import Config

TOKEN_FORMAT = "mlm_lessons.token_files/1"
SPEC_NAME = "tokens.json"


class TokenFileMismatch(ValueError):
    """Token files that were made by other models, or that do not fit a configuration."""


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file (which model made a token file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def token_spec(codec, semantic, mulan, sources: dict[str, str | os.PathLike] | None = None) -> dict:
    """What the three models make: ``{"format", "sample_rate", "acoustic": {...}, "semantic": {...}, "mulan":
    {...}, "sources": {...}}``, each kind with ``levels``, ``codebook_size`` and ``frame_rate`` (``None``: one
    frame per clip). ``sources`` maps each model to the file it was loaded from (name and SHA-256 recorded)."""
    rates = {codec.sample_rate, semantic.encoder.sample_rate, mulan.sample_rate}
    if len(rates) != 1:
        raise TokenFileMismatch(f"the codec, the semantic tokenizer and MuLan read audio at different rates "
                                f"({codec.sample_rate}, {semantic.encoder.sample_rate}, {mulan.sample_rate} Hz): "
                                "they were trained for different presets")
    return {
        "format": TOKEN_FORMAT,
        "sample_rate": codec.sample_rate,
        "acoustic": {"levels": codec.num_levels, "codebook_size": codec.codebook_size, "frame_rate": codec.frame_rate},
        "semantic": {"levels": 1, "codebook_size": semantic.num_clusters, "frame_rate": semantic.frame_rate},
        "mulan": {"levels": mulan.token_levels, "codebook_size": mulan.token_codebook_size, "frame_rate": None},
        "sources": {name: {"file": Path(path).name, "sha256": file_digest(path)}
                    for name, path in sorted((sources or {}).items())},
    }


def _differences(saved: dict, wanted: dict, prefix: str = "", sides: tuple[str, str] = ("there", "here")) -> list[str]:
    found = []
    for key in sorted(set(saved) | set(wanted)):
        left, right = saved.get(key), wanted.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += _differences(left, right, f"{prefix}{key}.", sides)
        elif left != right:
            found.append(f"{prefix}{key} is {left!r} {sides[0]} but {right!r} {sides[1]}")
    return found


@torch.no_grad()
def clip_tokens(audio: torch.Tensor, codec, semantic, mulan) -> dict[str, torch.Tensor]:
    """The tokens of a batch of clips ``(batch, samples)`` at the models' sample rate, as the stages read them:
    ``{"mulan": (batch, mulan levels), "semantic": (batch, frames), "acoustic": (batch, frames, levels)}``,
    int64. The acoustic frames are twice the semantic ones at 50 and 25 Hz."""
    with torch.no_grad():
        return {"mulan": mulan.audio_tokens(audio),
                "semantic": semantic.semantic_tokens(audio),
                "acoustic": codec.encode(audio, pad=True).transpose(1, 2)}


def extract_tokens(records: Sequence, out_dir: str | os.PathLike, codec, semantic, mulan,
                   sources: dict[str, str | os.PathLike] | None = None, progress: bool = True) -> Path:
    """Write the token file of every clip in ``records`` (items with ``.ytid`` and ``.path``) into ``out_dir``.

    Resumable: a clip whose file is already there is skipped, so a second run does nothing. Returns the path
    of ``tokens.json``.

    Raises:
        TokenFileMismatch: if ``out_dir`` holds token files made by other models (levels, codebook sizes,
            frame rates or model files differ); use another folder or delete it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = token_spec(codec, semantic, mulan, sources)
    spec_path = out_dir / SPEC_NAME
    if spec_path.exists():
        differences = _differences(json.loads(spec_path.read_text()), spec)
        if differences:
            raise TokenFileMismatch(f"{out_dir} holds token files made by other models: " + "; ".join(differences)
                                    + ". Use another folder, or delete this one to start again")
    else:
        with atomic_path(spec_path) as temporary:
            temporary.write_text(json.dumps(spec, indent=2) + "\n")
    for model in (codec, semantic.encoder, mulan):
        model.eval()
    todo = [record for record in records if not (out_dir / f"{record.ytid}.pt").exists()]
    for record in tqdm(todo, desc=f"tokens -> {out_dir}", unit="clip", disable=not progress):
        audio, _ = load_audio(record.path, sample_rate=spec["sample_rate"])
        tokens = clip_tokens(audio[None], codec, semantic, mulan)
        with atomic_path(out_dir / f"{record.ytid}.pt") as temporary:
            torch.save({name: value[0].to(torch.int16) for name, value in tokens.items()}, temporary)
    return spec_path


def read_token_files(out_dir: str | os.PathLike, ytids: Sequence[str] | None = None) -> tuple[dict, list[dict]]:
    """``(spec, clips)``: the ``tokens.json`` of ``out_dir`` and, for each clip (all, or ``ytids`` in that
    order), ``{"ytid", "mulan", "semantic", "acoustic"}`` as int64 tensors."""
    out_dir = Path(out_dir)
    spec_path = out_dir / SPEC_NAME
    if not spec_path.exists():
        raise FileNotFoundError(f"no {SPEC_NAME} in {out_dir}: not a token folder (make one with extract_tokens)")
    spec = json.loads(spec_path.read_text())
    if spec.get("format") != TOKEN_FORMAT:
        raise TokenFileMismatch(f"{spec_path} is format {spec.get('format')!r}, this version reads {TOKEN_FORMAT!r}")
    names = list(ytids) if ytids is not None else sorted(path.stem for path in out_dir.glob("*.pt"))
    clips = []
    for name in names:
        path = out_dir / f"{name}.pt"
        if not path.exists():
            raise FileNotFoundError(f"no token file for clip {name!r} in {out_dir}; run the extraction again")
        stored = torch.load(path, weights_only=True)
        clips.append({"ytid": name, **{key: value.long() for key, value in stored.items()}})
    return spec, clips


def config_token_spec(config: Config) -> dict:
    """The kinds of token ``config`` describes, in :func:`token_spec`'s shape (without ``format`` and ``sources``):
    what the token models of that configuration make."""
    tokens = config.tokens
    return {"sample_rate": config.data.sample_rate,
            "acoustic": {"levels": tokens.rvq_levels, "codebook_size": tokens.codebook_size,
                         "frame_rate": tokens.soundstream_frame_rate},
            "semantic": {"levels": 1, "codebook_size": tokens.semantic_clusters,
                         "frame_rate": tokens.semantic_frame_rate},
            "mulan": {"levels": tokens.mulan_rvq_levels, "codebook_size": tokens.mulan_codebook_size,
                      "frame_rate": None}}


def check_token_spec(spec: dict, config: Config, sides: tuple[str, str] = ("there", "here")) -> None:
    """Refuse token files whose kinds disagree with ``config.tokens`` (what the stages are built for); ``sides``
    name the two in the message (the spec's, the configuration's)."""
    wanted = config_token_spec(config)
    saved = {key: spec.get(key) for key in wanted}
    differences = _differences(saved, wanted, sides=sides)
    if differences:
        raise TokenFileMismatch(f"these token files do not fit the {config.name!r} configuration: "
                                + "; ".join(differences) + ". Extract tokens with the models of this preset")
