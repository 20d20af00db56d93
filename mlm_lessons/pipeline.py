"""MusicLM from a prompt to a waveform: lesson 09 puts the six trained parts in one object.

Lessons 05-08 trained each part on its own. Generation chains them::

    "a calming violin melody"  --MuLan text tower + token quantiser-->  MuLan tokens (1 frame, levels)
        --semantic stage-->  semantic tokens (25 Hz)   --coarse stage-->  first RVQ levels (50 Hz)
        --fine stage-->  the other RVQ levels          --SoundStream decoder-->  audio

This file is read top to bottom like its lesson:

1. **The parts and their folder.** A pipeline is six files in one folder (:data:`PART_FILES`): the codec,
   the semantic tokenizer (w2v-BERT with its k-means centroids), MuLan (with its tokenizer and token
   quantiser) and the three stages, plus ``pipeline.json``, which records each file's SHA-256 so a part
   swapped for another is noticed. ``python -m mlm_lessons train --stage all`` writes such a folder.
2. **Consistency.** The parts must agree on every kind of token: the stages were trained on token files
   made by one codec, one tokenizer and one MuLan, so a stage for 4 RVQ levels of 256 codes cannot
   read a codec of 8 levels of 1,024. :func:`check_parts` compares what the three token models make
   (:func:`~mlm_lessons.token_files.token_spec`) with what each stage was built for, and names the first
   disagreement.
3. **Prompts.** A prompt becomes MuLan tokens through the text tower. A prompt MuLan cannot read
   (empty, or only words outside its vocabulary and punctuation) would condition the stages on noise,
   so it is refused; a prompt longer than the text tower reads is cut, with a warning.
4. **Generation.** :meth:`MusicLM.generate` runs :func:`~mlm_lessons.musiclm.cascade` in batches and
   decodes: ``(prompts, samples)`` audio. The stages slide their windows (lesson 08), so music may be
   longer than any stage's window; :data:`MAX_SECONDS` only guards against a typo that would run for hours.
"""

from __future__ import annotations

import json
import math
import os
import string
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mlm_lessons import musiclm
from mlm_lessons.atomic import atomic_path
from mlm_lessons.config import Config
from mlm_lessons.mulan import MuLan
from mlm_lessons.soundstream import SoundStream
from mlm_lessons.token_files import TokenFileMismatch, check_token_spec, file_digest, token_spec
from mlm_lessons.tokenize import SemanticTokenizer

PIPELINE_FORMAT = "mlm_lessons.pipeline/1"
MANIFEST_NAME = "pipeline.json"
#: The file of each part inside a pipeline folder.
PART_FILES: dict[str, str] = {"codec": "soundstream.pt", "semantic_tokenizer": "w2v-bert.pt", "mulan": "mulan.pt",
                              "semantic": "semantic.pt", "coarse": "coarse.pt", "fine": "fine.pt"}
#: The longest music :meth:`MusicLM.generate` makes in one call (ten minutes).
MAX_SECONDS = 600.0


class PipelineError(ValueError):
    """A pipeline folder with a missing, damaged or mismatched part."""


# ----------------------------------------------------------------------------------------------------
# 2. Consistency


def check_parts(codec: SoundStream, semantic_tokenizer: SemanticTokenizer, mulan: MuLan,
                stages: dict[str, musiclm.Stage]) -> None:
    """Refuse parts that do not make and read the same tokens.

    Raises:
        PipelineError: naming the part and the first disagreement (sample rates, levels, codebook sizes,
            frame rates), or a missing stage.
    """
    missing = [name for name in musiclm.STAGES if name not in stages]
    if missing:
        raise PipelineError(f"a pipeline needs the stages {list(musiclm.STAGES)}; missing {missing}")
    try:
        spec = token_spec(codec, semantic_tokenizer, mulan)
    except TokenFileMismatch as err:
        raise PipelineError(str(err)) from None
    for name in musiclm.STAGES:
        built_from = stages[name].built_from
        if built_from is None:
            raise PipelineError(f"the {name} stage does not record the configuration it was built from; build it "
                                "with Stage.from_config")
        try:
            check_token_spec(spec, Config.from_dict(built_from), sides=("in the token models", "in the stage"))
        except TokenFileMismatch as err:
            differences = str(err).split(": ", 1)[1].split(". Extract")[0]
            raise PipelineError(f"the {name} stage was built for other tokens than the codec, the semantic tokenizer "
                                f"and MuLan make: {differences}. Use parts trained together (train --stage all)"
                                ) from None


# ----------------------------------------------------------------------------------------------------
# 3. Prompts


def _words(prompt: str, mulan: MuLan) -> list[tuple[str, bool]]:
    """Each word of ``prompt`` (punctuation left out) and whether MuLan knows it: its first WordPiece subword
    covers at least half of it (``violins`` -> ``violin`` ``##s``), rather than spelling it out in scraps
    (``zxqv`` -> ``z`` ``##x`` ``##q`` ``##v``) or ``[UNK]``."""
    encoding = mulan.tokenizer.tokenizer.encode(prompt)
    pieces: dict[int, list[tuple[str, tuple[int, int]]]] = {}
    for token, word, span in zip(encoding.tokens, encoding.word_ids, encoding.offsets):
        if word is not None:
            pieces.setdefault(word, []).append((token, span))
    words = []
    for subwords in pieces.values():
        word = prompt[subwords[0][1][0]:subwords[-1][1][1]]
        if word.strip(string.punctuation):
            first = subwords[0][0]
            words.append((word, first != "[UNK]" and 2 * len(first) >= len(word)))
    return words


def check_prompts(prompts: str | Sequence[str], mulan: MuLan) -> list[str]:
    """``prompts`` as a list, each one MuLan can read.

    Raises:
        ValueError: for no prompts, a prompt that is not text, empty, or made only of punctuation and words
            outside MuLan's vocabulary (naming it and the words MuLan does not know).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts: pass at least one description of the music to make")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"prompt {index} is a {type(prompt).__name__}, not text")
        if not prompt.strip():
            raise ValueError(f"prompt {index} is empty: describe the music, e.g. 'a calming violin melody'")
        words = _words(prompt, mulan)
        unknown = [word for word, known in words if not known]
        if len(unknown) == len(words):
            raise ValueError(f"MuLan knows no word of prompt {index} ({prompt[:60]!r}; unknown: {unknown[:5]}): "
                             "describe the instruments, mood or tempo in English words")
    return prompts


# ----------------------------------------------------------------------------------------------------
# 4. The pipeline


class MusicLM:
    """Text in, music out: the six parts of lessons 05-08 (see the module docstring).

    Args:
        codec, semantic_tokenizer, mulan: the token models (lessons 05-07).
        stages: ``{"semantic", "coarse", "fine"}`` (lesson 08), trained on tokens of those models.

    Raises:
        PipelineError: if the parts disagree (:func:`check_parts`).
    """

    def __init__(self, codec: SoundStream, semantic_tokenizer: SemanticTokenizer, mulan: MuLan,
                 stages: dict[str, musiclm.Stage]):
        check_parts(codec, semantic_tokenizer, mulan, stages)
        self.codec, self.semantic_tokenizer, self.mulan = codec.eval(), semantic_tokenizer, mulan.eval()
        self.stages = {name: stages[name].eval() for name in musiclm.STAGES}
        self.config = Config.from_dict(self.stages["semantic"].built_from)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def to(self, device: str | torch.device) -> "MusicLM":
        """Move every part to ``device`` (e.g. ``"cuda"``); returns ``self``."""
        for part in (self.codec, self.semantic_tokenizer.encoder, self.mulan, *self.stages.values()):
            part.to(device)
        self.semantic_tokenizer.centroids = self.semantic_tokenizer.centroids.to(device)
        return self

    # -- files ---------------------------------------------------------------------------------------

    @classmethod
    def from_files(cls, files: dict[str, str | os.PathLike]) -> "MusicLM":
        """Load the parts from ``{part: file}`` (the keys of :data:`PART_FILES`)."""
        missing = [part for part in PART_FILES if part not in files]
        if missing:
            raise PipelineError(f"no file given for the part(s) {missing}")
        for part, path in files.items():
            if not Path(path).is_file():
                raise PipelineError(f"the {part} file {path} does not exist; train it (python -m mlm_lessons train "
                                    "--stage all) or copy it there")
        return cls(SoundStream.load(files["codec"]), SemanticTokenizer.load(files["semantic_tokenizer"]),
                   MuLan.load(files["mulan"]), {name: musiclm.Stage.load(files[name]) for name in musiclm.STAGES})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "MusicLM":
        """Read a folder written by :meth:`save` (or by ``train --stage all``), checking that every part is there,
        is the file ``pipeline.json`` names (SHA-256), and agrees with the others.

        Raises:
            PipelineError: a missing folder, part or manifest entry, a part changed since it was assembled, or
                parts that do not fit together; the message names the file.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise PipelineError(f"no pipeline folder at {folder}; make one with `python -m mlm_lessons train "
                                "--stage all --out DIR` (it writes DIR/pipeline) or MusicLM.save")
        manifest_path = folder / MANIFEST_NAME
        manifest = None
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise PipelineError(f"{manifest_path} is damaged ({err}); delete it to load the parts unchecked, "
                                    "then save the pipeline again") from None
            if manifest.get("format") != PIPELINE_FORMAT:
                raise PipelineError(f"{manifest_path} is format {manifest.get('format')!r}; this version reads "
                                    f"{PIPELINE_FORMAT!r}")
        files = {part: folder / name for part, name in PART_FILES.items()}
        missing = [path.name for path in files.values() if not path.is_file()]
        if missing:
            raise PipelineError(f"{folder} lacks {missing}: a pipeline folder holds {sorted(PART_FILES.values())}")
        if manifest is not None:
            for part, path in files.items():
                recorded = manifest.get("parts", {}).get(part, {}).get("sha256")
                if recorded != file_digest(path):
                    raise PipelineError(f"{path} is not the {part} this pipeline was assembled with (its SHA-256 "
                                        f"differs from {manifest_path}'s); put the original back, or save the "
                                        "pipeline again to accept the new part")
        return cls.from_files(files)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the six parts and ``pipeline.json`` into ``folder`` (each file atomically); returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.codec.save(folder / PART_FILES["codec"])
        self.semantic_tokenizer.save(folder / PART_FILES["semantic_tokenizer"])
        self.mulan.save(folder / PART_FILES["mulan"])
        for name in musiclm.STAGES:
            self.stages[name].save(folder / PART_FILES[name])
        write_manifest(folder)
        return folder

    # -- generation ----------------------------------------------------------------------------------

    def prompt_tokens(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """MuLan tokens of the prompts: ``(batch, 1, levels)`` int64, what the stages are conditioned on."""
        prompts = check_prompts(prompts, self.mulan)
        limit = self.mulan.config.max_text_len
        longest = max(len(self.mulan.tokenizer.tokenize(prompt)) for prompt in prompts)
        if longest > limit:
            warnings.warn(f"a prompt of {longest} subwords was cut to its first {limit}: MuLan's text tower reads no "
                          "more; put what matters most first", stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                  # the tokenizer's own warning says the same
            tokens = self.mulan.text_tokens(prompts)
        return tokens[:, None]

    def generate_tokens(self, mulan_tokens: torch.Tensor, seconds: float, temperatures: dict[str, float] | None = None,
                        top_k: int | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The cascade from MuLan tokens ``(batch, 1, levels)``: ``{"semantic", "coarse", "fine", "acoustic"}``
        codes (:func:`~mlm_lessons.musiclm.cascade`), ``seconds`` checked."""
        seconds = check_seconds(seconds, self.config)
        temperatures = {**{name: self.config.stages.temperature(name) for name in musiclm.STAGES},
                        **(temperatures or {})}
        unknown = sorted(set(temperatures) - set(musiclm.STAGES))
        if unknown or any(not (math.isfinite(value) and value >= 0) for value in temperatures.values()):
            raise ValueError(f"temperatures are per stage {list(musiclm.STAGES)}, each >= 0; got {temperatures}")
        return musiclm.cascade(self.stages, mulan_tokens, seconds, temperatures, top_k=top_k, generator=generator)

    @torch.no_grad()
    def decode(self, acoustic: torch.Tensor) -> torch.Tensor:
        """Acoustic codes ``(batch, frames, levels)`` -> audio ``(batch, frames * hop_length)`` on the CPU."""
        return self.codec.decode(acoustic.transpose(1, 2)).cpu()

    def generate(self, prompts: str | Sequence[str], seconds: float = 4.0, temperatures: dict[str, float] | None = None,
                 top_k: int | None = None, seed: int = 0, batch_size: int = 16, progress: bool = False
                 ) -> torch.Tensor:
        """Music for each prompt: ``(len(prompts), samples)`` float32 audio at :attr:`sample_rate`.

        Args:
            prompts: one description or a list of them.
            seconds: length of each clip; longer than a stage's window is fine (sliding windows).
            temperatures: per stage, overriding the configuration's (the paper's 1.0, 0.95, 0.4).
            top_k: sample only among the ``top_k`` most likely ids (default: all valid ones).
            seed: the same prompts, seconds, seed and ``batch_size`` give the same audio.
            batch_size: prompts generated together (memory against speed).
        """
        prompts = check_prompts(prompts, self.mulan)
        seconds = check_seconds(seconds, self.config)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = next(self.stages["semantic"].parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        tokens = self.prompt_tokens(prompts).to(device)
        clips = []
        for start in tqdm(range(0, len(prompts), batch_size), desc="generating", unit="batch", disable=not progress):
            codes = self.generate_tokens(tokens[start:start + batch_size], seconds, temperatures, top_k, generator)
            clips.append(self.decode(codes["acoustic"]))
        return torch.cat(clips)


def check_seconds(seconds: float, config: Config) -> float:
    """``seconds`` of music to generate, checked (at least one semantic frame, at most :data:`MAX_SECONDS`) and
    rounded to whole semantic frames (0.04 s at 25 Hz), so that every stage's frames line up."""
    rate = config.tokens.semantic_frame_rate
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds * rate < 0.5:
        raise ValueError(f"seconds must be at least one semantic frame ({1 / rate:g} s), got {seconds!r}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"seconds={seconds:g} is more than {MAX_SECONDS:g} s of music in one call; the stages would "
                         "slide their windows for a very long time. Generate it in parts (each continuing the last)")
    return math.floor(seconds * rate + 0.5) / rate            # half up: 0.5 s is 13 frames, not 12


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``pipeline.json``: the format and each part's file name and SHA-256 (what :meth:`MusicLM.load`
    checks)."""
    folder = Path(folder)
    manifest = {"format": PIPELINE_FORMAT,
                "parts": {part: {"file": name, "sha256": file_digest(folder / name)}
                          for part, name in PART_FILES.items()}}
    with atomic_path(folder / MANIFEST_NAME) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    return folder / MANIFEST_NAME


def shipped_pipeline(checkpoints: str | os.PathLike | None = None, preset: str = "tiny") -> MusicLM:
    """The pipeline made of the checkpoints shipped with the course (``data/checkpoints/*-<preset>.pt``)."""
    from mlm_lessons.datasets import default_data_root

    folder = Path(checkpoints) if checkpoints is not None else default_data_root() / "checkpoints"
    return MusicLM.from_files({"codec": folder / f"soundstream-{preset}.pt",
                               "semantic_tokenizer": folder / f"w2v-bert-{preset}.pt",
                               "mulan": folder / f"mulan-{preset}.pt",
                               **{name: folder / f"{name}-{preset}.pt" for name in musiclm.STAGES}})
