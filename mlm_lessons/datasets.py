"""The course data: SynthCaps (generated) and MusicCaps (real captions).

**SynthCaps** is written by :func:`write_synthcaps` (``python -m mlm_lessons data``):
one wav per clip under ``audio/`` and a ``manifest.csv`` with MusicCaps' columns
plus the attributes each clip was rendered from, its ``group`` and its ``split``.
:class:`SynthCapsDataset` reads it back for training.

**MusicCaps** (Agostinelli et al., 2023; 5,521 captions by musicians for 10 s
AudioSet clips, CC BY-SA 4.0) is a CSV whose audio must be fetched from YouTube
separately. :func:`load_musiccaps` parses the CSV; :class:`MusicCapsDataset` pairs
captions with any local audio files a user has.

**Training clips** for the command line's ``train`` and ``tokens``: :func:`synthcaps_clips`
(a SynthCaps folder's clips, whole) or :func:`music_clips` (a CSV of captioned music in
MusicCaps' format, MusicCaps itself or your own, :func:`read_music_csv`: each row's audio file
cut into clips of one length, rows without a readable file skipped and counted).

Splits:

* SynthCaps is split by *group* (the composition a clip was cut from), never by
  clip, so near-duplicates cannot sit on both sides of a train/test boundary; the
  groups are stratified by lead instrument so every split hears every instrument.
* MusicCaps' only official split is ``is_audioset_eval``: clips from AudioSet's
  evaluation set. We call those ``"test"`` and the rest ``"train"``.
* A CSV of your own music without that column holds out about 10% of its rows, picked
  by a hash of the ytid (:func:`is_held_out`), so the same rows stay out on every run.
"""

from __future__ import annotations

import ast
import collections
import csv
import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mlm_lessons import audio, captions, synth
from mlm_lessons.atomic import atomic_path, remove_stale_temporaries
from mlm_lessons.config import get_preset

#: Columns of MusicCaps' ``musiccaps-public.csv``, in order.
MUSICCAPS_COLUMNS: tuple[str, ...] = (
    "ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
    "is_balanced_subset", "is_audioset_eval",
)
#: The attributes of :class:`~mlm_lessons.synth.SynthAttributes`, as manifest columns.
ATTRIBUTE_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(synth.SynthAttributes))
#: Columns of a SynthCaps ``manifest.csv``: MusicCaps' then ours.
SYNTHCAPS_COLUMNS: tuple[str, ...] = MUSICCAPS_COLUMNS + ("group", "split", "path") + ATTRIBUTE_COLUMNS + ("seed",)
SPLITS: tuple[str, ...] = ("train", "valid", "test")
MANIFEST_NAME = "manifest.csv"
_SETTINGS_NAME = "synthcaps.json"
_FORMAT_VERSION = 1
_DATA_COMMAND = "python -m mlm_lessons data --preset tiny --out data/synthcaps-tiny"


# ----------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------

def assign_splits(groups: Sequence[str], valid_fraction: float, test_fraction: float, seed: int = 0,
                  strata: Sequence[str] | None = None) -> list[str]:
    """Give every item a split, keeping each group whole.

    Groups are shuffled within each stratum, the strata are laid end to end, and test
    then validation groups are taken at evenly spaced positions along that order, so
    each stratum contributes in proportion to its size.

    Args:
        groups: ``(n_items,)`` group id of each item; items sharing a group (excerpts
            of one composition) always land in the same split.
        valid_fraction, test_fraction: fractions of *groups*; the counts are rounded.
        seed: the same inputs and seed give the same splits.
        strata: ``(n_items,)`` label to balance over (e.g. the lead instrument); the
            first item of a group decides the group's stratum.

    Returns:
        ``(n_items,)`` of ``"train"``, ``"valid"`` or ``"test"``.
    """
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= valid_fraction, test_fraction and their sum < 1, "
                         f"got valid={valid_fraction}, test={test_fraction}")
    strata = list(strata) if strata is not None else [""] * len(groups)
    if len(strata) != len(groups):
        raise ValueError(f"strata has {len(strata)} labels for {len(groups)} items")
    stratum_of: dict[str, str] = {}
    for group, stratum in zip(groups, strata):
        stratum_of.setdefault(group, stratum)
    rng = np.random.default_rng([seed, 2])
    ordered: list[str] = []
    for stratum in sorted(set(stratum_of.values())):
        members = [group for group, s in stratum_of.items() if s == stratum]
        ordered += [members[i] for i in rng.permutation(len(members))]

    def take_evenly(pool: list[str], count: int) -> set[str]:
        positions = {int((k + 0.5) * len(pool) / count) for k in range(count)} if count else set()
        return {pool[p] for p in positions}

    n_groups = len(ordered)
    test = take_evenly(ordered, round(n_groups * test_fraction))
    rest = [group for group in ordered if group not in test]
    valid = take_evenly(rest, round(n_groups * valid_fraction))
    split_of = {group: "test" if group in test else "valid" if group in valid else "train" for group in ordered}
    return [split_of[group] for group in groups]


# ----------------------------------------------------------------------------
# Writing SynthCaps
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedClip:
    """Everything about one clip except its audio, decided before any rendering."""

    index: int
    ytid: str
    group: str
    seed: int                       # the render seed: synth.render(..., seed=seed)
    attributes: synth.SynthAttributes
    caption: str
    aspects: list[str]


def plan_synthcaps(num_clips: int, seed: int) -> list[PlannedClip]:
    """Decide attributes, captions and render seeds for ``num_clips`` clips.

    Lead instruments and moods are balanced (each appears ``num_clips / 10`` resp.
    ``/ 6`` times, +-1, in shuffled order) so classifiers see every class; the other
    attributes are sampled given the mood. Clip ``i`` draws from its own generator
    ``default_rng([seed, i])``, so a clip does not change when ``num_clips`` does,
    apart from which lead and mood the balancing hands it.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips}")
    rng = np.random.default_rng([seed, 1])
    leads = rng.permutation(np.resize(np.array(synth.INSTRUMENTS), num_clips))
    moods = rng.permutation(np.resize(np.array(synth.MOODS), num_clips))
    clips = []
    for index in range(num_clips):
        clip_rng = np.random.default_rng([seed, 0, index])
        attrs = synth.sample_attributes(clip_rng, lead=str(leads[index]), mood=str(moods[index]))
        ytid = f"synth-{index:06d}"
        clips.append(PlannedClip(
            index=index, ytid=ytid, group=ytid,   # one clip per composition: the clip is its own group
            seed=seed * 1_000_000 + index, attributes=attrs,
            caption=captions.caption(attrs, clip_rng), aspects=captions.aspects(attrs),
        ))
    return clips


def split_planned(clips: Sequence[PlannedClip], valid_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """The split of each planned clip as :func:`write_synthcaps` assigns it (stratified by lead instrument), so
    a set's training clips can be rendered again without its folder."""
    return assign_splits([clip.group for clip in clips], valid_fraction, test_fraction, seed=seed,
                         strata=[clip.attributes.lead for clip in clips])


def _settings(preset: str, num_clips: int | None, seed: int | None, clip_seconds: float | None,
              sample_rate: int | None) -> dict:
    """What a SynthCaps folder is made with (recorded in its ``synthcaps.json``): the preset's data
    settings, overridden by the arguments that are not ``None``."""
    data_config = get_preset(preset).data
    return {
        "format_version": _FORMAT_VERSION,
        "num_clips": int(num_clips if num_clips is not None else data_config.num_clips),
        "seed": int(seed if seed is not None else data_config.seed),
        "clip_seconds": float(clip_seconds if clip_seconds is not None else data_config.clip_seconds),
        "sample_rate": int(sample_rate if sample_rate is not None else data_config.sample_rate),
        "valid_fraction": data_config.valid_fraction,
        "test_fraction": data_config.test_fraction,
    }


def write_synthcaps(out_dir: str | os.PathLike, preset: str = "tiny", num_clips: int | None = None,
                    seed: int | None = None, progress: bool = True, clip_seconds: float | None = None,
                    sample_rate: int | None = None) -> Path:
    """Render the SynthCaps dataset into ``out_dir``; returns the manifest's path.

    Writes ``audio/synth-000000.wav`` ... and ``manifest.csv`` (columns
    :data:`SYNTHCAPS_COLUMNS`). The preset's :class:`~mlm_lessons.config.DataConfig`
    gives the defaults; the keyword arguments override them.

    Safe to interrupt and re-run: each wav is written atomically and skipped next
    time if it is already complete; the manifest is written to a temporary name and
    renamed last, so it exists only once every clip does. The same settings always
    give byte-identical files.

    Raises:
        ValueError: if ``out_dir`` holds a dataset made with different settings
            (delete it or choose another folder), or for an unknown preset.
    """
    settings = _settings(preset, num_clips, seed, clip_seconds, sample_rate)
    # Every setting is checked, and the clips planned, before anything is created: a rejected run must
    # not leave a folder claimed with settings it never used.
    for name, low in (("num_clips", 1), ("seed", 0), ("sample_rate", 1)):
        if settings[name] < low:
            raise ValueError(f"{name} must be at least {low}, got {settings[name]}")
    if not settings["clip_seconds"] > 0:
        raise ValueError(f"clip_seconds must be positive, got {settings['clip_seconds']}")
    clips = plan_synthcaps(settings["num_clips"], settings["seed"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _claim_folder(out_dir, settings)

    splits = split_planned(clips, settings["valid_fraction"], settings["test_fraction"], seed=settings["seed"])
    n_samples = int(round(settings["clip_seconds"] * settings["sample_rate"]))
    remove_stale_temporaries(out_dir / "audio")        # left by a run that was killed mid-write
    for clip in tqdm(clips, desc=f"SynthCaps -> {out_dir}", unit="clip", disable=not progress):
        wav_path = out_dir / _wav_name(clip)
        if _is_complete_wav(wav_path, n_samples, settings["sample_rate"]):
            continue   # left by an earlier, interrupted run
        wave = synth.render(clip.attributes, settings["clip_seconds"], settings["sample_rate"], clip.seed)
        audio.save_audio(wav_path, wave, settings["sample_rate"])

    rows = [_manifest_row(clip, split, settings["clip_seconds"]) for clip, split in zip(clips, splits)]
    manifest = out_dir / MANIFEST_NAME
    _write_csv_atomically(manifest, SYNTHCAPS_COLUMNS, rows)
    return manifest


def _claim_folder(out_dir: Path, settings: dict) -> None:
    """Record the settings in ``synthcaps.json``, refusing a folder made with other ones
    (resuming would otherwise mix clips from two different datasets)."""
    settings_path = out_dir / _SETTINGS_NAME
    if settings_path.exists():
        try:
            existing = json.loads(settings_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{settings_path} is not valid JSON ({error}): the record of the settings this SynthCaps "
                             "folder was made with is damaged; delete the folder to render it again") from None
        if not isinstance(existing, dict):
            raise ValueError(f"{settings_path} does not hold the settings of a SynthCaps folder; delete the folder "
                             "to render it again")
        if existing != settings:
            differing = sorted(k for k in set(existing) | set(settings) if existing.get(k) != settings.get(k))
            raise ValueError(
                f"{out_dir} already holds a SynthCaps dataset made with different settings "
                f"({', '.join(f'{k}: {existing.get(k)} there, {settings.get(k)} now' for k in differing)}); "
                "delete that folder or write to another one"
            )
        return
    with atomic_path(settings_path) as tmp:
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _wav_name(clip: PlannedClip) -> str:
    return f"audio/{clip.ytid}.wav"


def _is_complete_wav(path: Path, n_samples: int, sample_rate: int) -> bool:
    if not path.exists():
        return False
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return False
    return info.frames == n_samples and info.samplerate == sample_rate and info.channels == 1


def _number(value: float) -> str:
    """``4.0`` -> ``"4"`` (MusicCaps writes whole seconds), ``2.5`` -> ``"2.5"``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _manifest_row(clip: PlannedClip, split: str, clip_seconds: float) -> dict[str, str]:
    attrs = clip.attributes
    return {
        "ytid": clip.ytid, "start_s": "0", "end_s": _number(clip_seconds), "audioset_positive_labels": "",
        "aspect_list": repr(clip.aspects), "caption": clip.caption,
        "author_id": "0",                    # one (procedural) author wrote every SynthCaps caption
        "is_balanced_subset": "False",
        "is_audioset_eval": str(split == "test"),   # so MusicCaps' split rule reads SynthCaps too
        "group": clip.group, "split": split, "path": _wav_name(clip),
        "lead": attrs.lead, "backing": "+".join(attrs.backing) or "none",
        "backing_instrument": attrs.backing_instrument or "", "tempo_bpm": str(attrs.tempo_bpm),
        "key": attrs.key, "mode": attrs.mode, "register": attrs.register, "loudness": attrs.loudness,
        "mood": attrs.mood, "seed": str(clip.seed),
    }


def _write_csv_atomically(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def default_data_root() -> Path:
    """Where course data lives: ``$MLM_DATA_DIR`` if set, else the repository's ``data/``
    (beside this package), whatever the current directory (notebooks run in ``notebooks/``)."""
    return Path(os.environ.get("MLM_DATA_DIR", Path(__file__).resolve().parents[1] / "data"))


def default_synthcaps_folder(preset: str = "tiny", num_clips: int | None = None,
                             root: str | os.PathLike | None = None) -> Path:
    """``<root>/synthcaps-<preset>``, or ``<root>/synthcaps-<preset>-<num_clips>`` for a clip count other than
    the preset's: each preset and size has its own folder. ``root`` defaults to :func:`default_data_root`."""
    suffix = "" if num_clips is None or num_clips == get_preset(preset).data.num_clips else f"-{num_clips}"
    return Path(root if root is not None else default_data_root()) / f"synthcaps-{preset}{suffix}"


def ensure_synthcaps(preset: str = "tiny", root: str | os.PathLike | None = None,
                     progress: bool = True, num_clips: int | None = None) -> Path:
    """Return :func:`default_synthcaps_folder`, generating the dataset first if it has no manifest yet
    (about 10 s for ``tiny``). ``num_clips`` other than the preset's asks for a bigger (or smaller) set with
    the preset's other settings (MuLan, lesson 07, trains on 2,400 tiny clips: about 100 s to render,
    300 MB).

    Raises:
        ValueError: if the folder holds a dataset made with other settings (another preset's clips, say).
    """
    folder = default_synthcaps_folder(preset, num_clips, root)
    if num_clips == get_preset(preset).data.num_clips:
        num_clips = None
    if (folder / MANIFEST_NAME).exists():
        _claim_folder(folder, _settings(preset, num_clips, None, None, None))   # made for this preset?
    else:
        write_synthcaps(folder, preset=preset, num_clips=num_clips, progress=progress)
    return folder


def render_planned(clips: Sequence[PlannedClip], seconds: float, sample_rate: int) -> torch.Tensor:
    """The audio of planned clips, rendered in memory: ``(len(clips), samples)`` float32.

    With :func:`plan_synthcaps` and a seed no training set used, this makes clips no model has
    heard, e.g. a held-out retrieval gallery (about 40 ms per 4 s clip)."""
    return torch.stack([torch.from_numpy(synth.render(clip.attributes, seconds, sample_rate, clip.seed))
                        for clip in clips])


# ----------------------------------------------------------------------------
# Reading SynthCaps
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthCapsRecord:
    """One row of a SynthCaps manifest, parsed."""

    ytid: str
    path: Path              # absolute path of the wav
    caption: str
    aspects: list[str]
    split: str
    group: str
    seed: int
    attributes: synth.SynthAttributes
    seconds: float | None = None    # the clip's length, as the manifest records it


def _read_csv(path: Path, required: Sequence[str], what: str, optional: Sequence[str] = ()) -> list[dict[str, str]]:
    """The rows of a CSV as dicts, refusing a file that lacks a ``required`` column or has a row cut short
    (before a required column, or an ``optional`` one that the header has; absent optional columns are
    absent from the rows' dicts).

    ``utf-8-sig`` reads the byte-order mark that spreadsheet programs write at the start of a UTF-8 CSV
    (without it the first column would be called "\ufeffytid").
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [column for column in required if column not in header]
            if missing:
                raise ValueError(f"{path} is not a {what}: missing column(s) {missing}; "
                                 f"expected columns {list(required)}")
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start} cannot be read): save it as UTF-8 "
                         "(\"CSV UTF-8\" in a spreadsheet program)") from None
    checked = [*required, *(column for column in optional if column in header)]
    for line, row in enumerate(rows, start=2):
        short = [column for column in checked if row.get(column) is None]
        if short:
            raise ValueError(f"{path}, line {line}: the row ends before column(s) {short}; the file looks cut "
                             "short (an interrupted copy?)")
    return rows


def _attributes_from_row(row: dict[str, str]) -> synth.SynthAttributes:
    tempo = float(row["tempo_bpm"])
    return synth.SynthAttributes(
        lead=row["lead"], backing=() if row["backing"] in ("", "none") else tuple(row["backing"].split("+")),
        backing_instrument=row["backing_instrument"] or None,
        tempo_bpm=int(tempo) if tempo.is_integer() else tempo, key=row["key"], mode=row["mode"],
        register=row["register"], loudness=row["loudness"], mood=row["mood"],
    )


def read_synthcaps_manifest(root: str | os.PathLike) -> list[SynthCapsRecord]:
    """Parse ``<root>/manifest.csv`` (every split).

    Raises:
        FileNotFoundError: no dataset there, with the command that makes one.
        ValueError: a manifest lacking columns (named) or with an unparsable row.
    """
    root = Path(root)
    manifest = root / MANIFEST_NAME
    if not manifest.exists():
        raise FileNotFoundError(
            f"no SynthCaps dataset at {root} ({MANIFEST_NAME} not found); create it with "
            f"`{_DATA_COMMAND}` (or mlm_lessons.datasets.ensure_synthcaps() from Python)"
        )
    records, lines = [], {}
    for line, row in enumerate(_read_csv(manifest, SYNTHCAPS_COLUMNS, "SynthCaps manifest"), start=2):
        try:
            if row["split"] not in SPLITS:
                raise ValueError(f"split {row['split']!r} is not one of {list(SPLITS)}")
            if row["ytid"] in lines:
                raise ValueError(f"clip {row['ytid']!r} is listed twice (first on line {lines[row['ytid']]})")
            lines[row["ytid"]] = line
            records.append(SynthCapsRecord(
                ytid=row["ytid"], path=root / row["path"], caption=row["caption"],
                aspects=_parse_aspect_list(row["aspect_list"]), split=row["split"], group=row["group"],
                seed=int(row["seed"]), attributes=_attributes_from_row(row),
                seconds=_parse_seconds(row["end_s"]) - _parse_seconds(row["start_s"]),
            ))
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{manifest}, line {line}: {err}") from None
    return records


class SynthCapsDataset(Dataset):
    """SynthCaps clips of one split, for a ``torch.utils.data.DataLoader``.

    Each item is a dict::

        {"audio": float32 Tensor (time,), "caption": str, "aspects": list[str],
         "attributes": dict (SynthAttributes' fields), "ytid": str}

    Batch items with :func:`collate_clips` (the default collate cannot batch lists
    of different lengths).

    Args:
        root: the folder ``write_synthcaps`` wrote (holding ``manifest.csv``).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.
        sample_rate: resample to this rate (Hz) when loading; ``None`` keeps the file's.
        transform: applied to each ``(time,)`` audio tensor, e.g. a log-mel function.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", sample_rate: int | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if split not in SPLITS + ("all",):
            raise ValueError(f"split must be one of {list(SPLITS + ('all',))}, got {split!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"no SynthCaps folder at {self.root}; create it with `{_DATA_COMMAND}` "
                "(or mlm_lessons.datasets.ensure_synthcaps() from Python)"
            )
        self.split = split
        self.sample_rate = sample_rate
        self.transform = transform
        self.records = [r for r in read_synthcaps_manifest(self.root) if split == "all" or r.split == split]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        wave, rate = audio.load_audio(record.path, sample_rate=self.sample_rate)
        if record.seconds and wave.shape[-1] < 0.99 * record.seconds * rate:
            raise ValueError(f"{record.path} holds {wave.shape[-1] / rate:.2f} s of audio, but the manifest says "
                             f"{record.seconds:g} s: the file is truncated; run the data command again "
                             f"(`{_DATA_COMMAND}`), which renders damaged clips again")
        if self.transform is not None:
            wave = self.transform(wave)
        return {"audio": wave, "caption": record.caption, "aspects": list(record.aspects),
                "attributes": dataclasses.asdict(record.attributes), "ytid": record.ytid}

    def __repr__(self) -> str:
        return f"SynthCapsDataset(root={str(self.root)!r}, split={self.split!r}, {len(self)} clips)"


def collate_clips(batch: list[dict]) -> dict:
    """Batch dataset items: audio zero-padded to the longest clip and stacked.

    Returns:
        ``{"audio": (batch, time), "lengths": (batch,) int64 samples before padding}``
        plus every other key as a list of the items' values.
    """
    lengths = torch.tensor([item["audio"].shape[-1] for item in batch], dtype=torch.long)
    audio_batch = torch.zeros(len(batch), int(lengths.max()), dtype=batch[0]["audio"].dtype)
    for row, item in enumerate(batch):
        audio_batch[row, : item["audio"].shape[-1]] = item["audio"]
    out = {"audio": audio_batch, "lengths": lengths}
    for key in batch[0]:
        if key != "audio":
            out[key] = [item[key] for item in batch]
    return out


# ----------------------------------------------------------------------------
# MusicCaps
# ----------------------------------------------------------------------------

@dataclass
class MusicCapsRecord:
    """One row of ``musiccaps-public.csv``, parsed."""

    ytid: str                            # YouTube video id
    start_s: int | float                 # the clip is [start_s, end_s) of the video, seconds
    end_s: int | float
    audioset_positive_labels: list[str]  # AudioSet label ids, e.g. "/m/04rlf" (music)
    aspect_list: list[str]
    caption: str
    author_id: int                       # which of the annotating musicians wrote it
    is_balanced_subset: bool             # in the genre-balanced 1k subset
    is_audioset_eval: bool               # from AudioSet's eval set: our "test" split

    @property
    def split(self) -> str:
        """``"test"`` for AudioSet-eval clips (MusicCaps' official evaluation split), else ``"train"``."""
        return "test" if self.is_audioset_eval else "train"


def find_musiccaps_csv() -> Path | None:
    """The MusicCaps CSV: ``$MUSICCAPS_CSV`` if set, else ``shared/data/musiccaps-public.csv``
    beside the repository; ``None`` if there is no file there."""
    candidate = Path(os.environ.get("MUSICCAPS_CSV") or
                     Path(__file__).resolve().parents[2] / "shared" / "data" / "musiccaps-public.csv")
    return candidate if candidate.is_file() else None


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError(f"expected True or False, got {text!r}")


def _parse_aspect_list(text: str) -> list[str]:
    """``"['slow tempo', 'calming']"`` -> ``["slow tempo", "calming"]`` (a Python literal,
    read with ``ast.literal_eval``, which evaluates no code)."""
    value = ast.literal_eval(text)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"aspect_list must be a list of strings, got {text[:80]!r}")
    return value


def _parse_seconds(text: str) -> int | float:
    """MusicCaps times are whole seconds (``int``); other CSVs may have fractions (``float``)."""
    value = float(text)
    return int(value) if value.is_integer() else value


def load_musiccaps(csv_path: str | os.PathLike) -> list[MusicCapsRecord]:
    """Parse a CSV in MusicCaps' format (``musiccaps-public.csv`` or a SynthCaps manifest).

    Raises:
        FileNotFoundError: no file at ``csv_path``, saying where the real one comes from.
        ValueError: missing columns (named), or a row that does not parse (line number).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"no MusicCaps CSV at {csv_path}; download musiccaps-public.csv from "
            "https://www.kaggle.com/datasets/googleai/musiccaps (CC BY-SA 4.0) and pass its path, "
            "or set MUSICCAPS_CSV"
        )
    records = []
    for line, row in enumerate(_read_csv(csv_path, MUSICCAPS_COLUMNS, "MusicCaps CSV"), start=2):
        try:
            labels = row["audioset_positive_labels"].strip()
            records.append(MusicCapsRecord(
                ytid=row["ytid"], start_s=_parse_seconds(row["start_s"]), end_s=_parse_seconds(row["end_s"]),
                audioset_positive_labels=[label for label in labels.split(",") if label] if labels else [],
                aspect_list=_parse_aspect_list(row["aspect_list"]), caption=row["caption"],
                author_id=int(row["author_id"]), is_balanced_subset=_parse_bool(row["is_balanced_subset"]),
                is_audioset_eval=_parse_bool(row["is_audioset_eval"]),
            ))
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{csv_path}, line {line}: {err}") from None
    return records


def aspect_counts(records: Iterable[MusicCapsRecord | SynthCapsRecord]) -> collections.Counter:
    """How often each aspect tag occurs, e.g. ``aspect_counts(recs).most_common(20)``."""
    counts: collections.Counter = collections.Counter()
    for record in records:
        counts.update(record.aspect_list if isinstance(record, MusicCapsRecord) else record.aspects)
    return counts


_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# What may follow an 11-character YouTube id in a file name: "_30-40", "-[30-40]", " 30.0-40.0" ...
_TIME_RANGE_SUFFIX = re.compile(r"^[_\-\s]*\[?\s*\d+(\.\d+)?\s*-\s*\d+(\.\d+)?\s*\]?$")


def _captioned_stretch(wave: torch.Tensor, rate: int, start_s: float | None, end_s: float | None) -> torch.Tensor:
    """The captioned ``[start_s, end_s)`` of a ``(time,)`` recording, if the file is longer than that by more
    than a second (then it is taken to be the whole video); otherwise, or without times, the file is the clip."""
    if start_s is None or end_s is None:
        return wave
    start, stop = round(start_s * rate), round(end_s * rate)
    return wave[start:stop] if wave.shape[-1] > (stop - start) + rate else wave


def _match_audio_files(audio_dir: Path, ytids: set[str]) -> dict[str, Path]:
    """Map ytid -> file for files named ``{ytid}.wav`` or ``{ytid}_{start}-{end}.flac`` (etc.)
    anywhere under ``audio_dir``."""
    found: dict[str, Path] = {}
    for path in sorted(audio_dir.rglob("*")):
        if path.suffix.lower() not in _AUDIO_SUFFIXES or not path.is_file():
            continue
        stem = path.stem
        if stem in ytids:
            found.setdefault(stem, path)
        elif stem[:11] in ytids and _TIME_RANGE_SUFFIX.match(stem[11:]):
            found.setdefault(stem[:11], path)
    return found


class MusicCapsDataset(Dataset):
    """MusicCaps captions, with audio where the user has the files.

    Without ``audio_dir`` every record of the split is an item (caption and aspects
    only). With ``audio_dir`` only records whose audio file is found there are items;
    ``num_matched`` and ``num_missing`` say how many, and ``repr()`` reports them.
    Files named ``{ytid}.wav`` (or .flac/.ogg/.mp3) and ``{ytid}_{start}-{end}.wav``
    match; a file longer than the clip is taken to be the whole video and cut to
    ``[start_s, end_s)``.

    Items::

        {"caption": str, "aspects": list[str], "ytid": str, "start_s": int, "end_s": int,  # seconds
         "split": str, "audio": float32 Tensor (time,)  # only with audio_dir}

    Args:
        csv_path: ``musiccaps-public.csv`` (see :func:`find_musiccaps_csv`).
        audio_dir: folder searched (recursively) for audio files.
        sample_rate: audio is resampled to this rate, Hz.
        split: ``None`` (all), ``"train"`` or ``"test"`` (``is_audioset_eval``).
    """

    def __init__(self, csv_path: str | os.PathLike, audio_dir: str | os.PathLike | None = None,
                 sample_rate: int = 16_000, split: str | None = None):
        if split not in (None, "train", "test"):
            raise ValueError(f"MusicCaps split must be None, 'train' or 'test' "
                             f"(test = is_audioset_eval, the official eval split), got {split!r}")
        self.split = split
        self.sample_rate = sample_rate
        records = [r for r in load_musiccaps(csv_path) if split is None or r.split == split]
        self.num_captions = len(records)
        self.audio_files: dict[str, Path] = {}
        if audio_dir is not None:
            audio_dir = Path(audio_dir)
            if not audio_dir.is_dir():
                raise FileNotFoundError(f"no audio folder at {audio_dir}")
            self.audio_files = _match_audio_files(audio_dir, {r.ytid for r in records})
            records = [r for r in records if r.ytid in self.audio_files]
            if not records:
                raise ValueError(
                    f"none of the {self.num_captions} MusicCaps clips (split={split!r}) has an audio file "
                    f"in {audio_dir}; expected names like '<ytid>.wav' or '<ytid>_<start>-<end>.flac'"
                )
        self.has_audio = audio_dir is not None
        self.records = records

    @property
    def num_matched(self) -> int:
        """Records with audio (all records when no ``audio_dir`` was given)."""
        return len(self.records)

    @property
    def num_missing(self) -> int:
        return self.num_captions - len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        item = {"caption": record.caption, "aspects": list(record.aspect_list), "ytid": record.ytid,
                "start_s": record.start_s, "end_s": record.end_s, "split": record.split}
        if self.has_audio:
            wave, rate = audio.load_audio(self.audio_files[record.ytid], sample_rate=self.sample_rate)
            item["audio"] = _captioned_stretch(wave, rate, record.start_s, record.end_s)
        return item

    def __repr__(self) -> str:
        audio_note = (f", audio for {self.num_matched} of {self.num_captions} captions"
                      if self.has_audio else ", captions only")
        return f"MusicCapsDataset(split={self.split!r}, {len(self)} items{audio_note})"


# ----------------------------------------------------------------------------
# Training clips: SynthCaps, or a CSV of captioned music (MusicCaps, or yours)
# ----------------------------------------------------------------------------

#: The columns a CSV of music to train on must have. Of MusicCaps' other columns, ``aspect_list``,
#: ``start_s``, ``end_s`` and ``is_audioset_eval`` are read where the CSV has them; the rest are not needed.
MUSIC_CSV_COLUMNS: tuple[str, ...] = ("ytid", "caption")
_MUSIC_CSV_OPTIONAL: tuple[str, ...] = ("aspect_list", "start_s", "end_s", "is_audioset_eval")
#: The share of rows held out of training in a CSV without ``is_audioset_eval`` (:func:`is_held_out`).
HELD_OUT_FRACTION = 0.1


@dataclass(frozen=True)
class MusicRecord:
    """One row of a CSV of captioned music, as training reads it (:func:`read_music_csv`)."""

    ytid: str                   # names the row's audio file: <ytid>.wav, <ytid>_<start>-<end>.flac, ...
    caption: str
    aspects: list[str]          # its aspect_list; [] where the CSV has none
    start_s: float | None       # the captioned stretch of a longer file (MusicCaps: of the video); None: all of it
    end_s: float | None
    split: str                  # "train", or "test": held out, never trained on


def is_held_out(ytid: str) -> bool:
    """The held-out rule of a CSV without ``is_audioset_eval``: true for about :data:`HELD_OUT_FRACTION` of
    ytids, decided by a SHA-256 of the ytid alone, so that a row keeps its side whatever the order of the CSV,
    whatever rows are added to it, and on every machine (Python's ``hash`` of a string changes between runs)."""
    digest = hashlib.sha256(ytid.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < HELD_OUT_FRACTION * 2 ** 64


def _parse_aspects(text: str) -> list[str]:
    """An aspect_list cell: ``"['rock', 'guitar']"`` as MusicCaps writes it, or plain ``"rock, guitar"`` as
    a person types it; an empty cell is no aspects."""
    text = text.strip()
    if text.startswith("["):
        return _parse_aspect_list(text)
    return [aspect.strip() for aspect in text.split(",") if aspect.strip()]


def read_music_csv(csv_path: str | os.PathLike) -> list[MusicRecord]:
    """Parse a CSV of captioned music to train on: MusicCaps' ``musiccaps-public.csv``, or your own music in
    its format.

    Only ``ytid`` and ``caption`` are needed (:data:`MUSIC_CSV_COLUMNS`). ``aspect_list`` (as MusicCaps writes
    it, or comma-separated), ``start_s`` and ``end_s`` (the captioned stretch of a longer file, seconds) and
    ``is_audioset_eval`` are read where present. Held out (``split == "test"``, never trained on): the rows
    whose ``is_audioset_eval`` is True (MusicCaps' evaluation split) or, without that column, the rows that
    :func:`is_held_out` picks.

    Raises:
        FileNotFoundError: no file at ``csv_path``.
        ValueError: no ``ytid`` or ``caption`` column, an empty or repeated ytid, an empty caption, or a cell
            that does not parse (with its line).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"no CSV at {csv_path}; pass a CSV of captioned music (columns ytid and caption, "
                                "as in MusicCaps) or a SynthCaps folder")
    records, lines = [], {}
    for line, row in enumerate(_read_csv(csv_path, MUSIC_CSV_COLUMNS, "CSV of captioned music",
                                         _MUSIC_CSV_OPTIONAL), start=2):
        try:
            ytid, caption = row["ytid"].strip(), row["caption"].strip()
            if not ytid:
                raise ValueError("the ytid is empty; it names the row's audio file")
            if ytid in lines:
                raise ValueError(f"ytid {ytid!r} is listed twice (first on line {lines[ytid]})")
            if not caption:
                raise ValueError(f"the caption of {ytid!r} is empty")
            lines[ytid] = line
            timed = bool(row.get("start_s", "").strip() and row.get("end_s", "").strip())
            held_out = _parse_bool(row["is_audioset_eval"]) if "is_audioset_eval" in row else is_held_out(ytid)
            records.append(MusicRecord(
                ytid=ytid, caption=caption, aspects=_parse_aspects(row.get("aspect_list", "")),
                start_s=_parse_seconds(row["start_s"]) if timed else None,
                end_s=_parse_seconds(row["end_s"]) if timed else None, split="test" if held_out else "train",
            ))
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{csv_path}, line {line}: {err}") from None
    return records


@dataclass(frozen=True)
class TrainingClips:
    """Clips to train on (or to make token files of), each with its name and the record it comes from.

    ``audio[i]`` is a ``(samples,)`` float32 clip; ``ids[i]`` names it (and its token file); ``records[i]`` is
    the :class:`SynthCapsRecord` or :class:`MusicRecord` it was cut from (its caption, its split); ``summary``
    says in one line what was used and what was skipped (empty for SynthCaps, which has no gaps).
    """

    ids: list[str]
    audio: list[torch.Tensor]
    records: list
    summary: str = ""

    def of_split(self, split: str) -> "TrainingClips":
        """The clips whose record is in ``split`` (``"train"``: those that models may learn from)."""
        keep = [index for index, record in enumerate(self.records) if record.split == split]
        return TrainingClips([self.ids[index] for index in keep], [self.audio[index] for index in keep],
                             [self.records[index] for index in keep], self.summary)


def synthcaps_clips(root: str | os.PathLike, sample_rate: int | None = None, split: str = "all") -> TrainingClips:
    """The clips of a SynthCaps folder (one ``split``, or ``"all"``), whole as rendered, named by their ytid."""
    dataset = SynthCapsDataset(root, split, sample_rate=sample_rate)
    return TrainingClips([record.ytid for record in dataset.records], [item["audio"] for item in dataset],
                         list(dataset.records))


def cut_clips(wave: torch.Tensor, clip_samples: int) -> list[torch.Tensor]:
    """Cut a ``(time,)`` recording into ``(clip_samples,)`` clips: consecutive pieces from its start; a
    remainder of at least half a clip gives one more, ending where the recording ends (so it overlaps the one
    before); a shorter remainder is dropped. A recording no longer than a clip is one clip, padded with silence.
    """
    length = wave.shape[-1]
    if length <= clip_samples:
        return [torch.nn.functional.pad(wave, (0, clip_samples - length))]
    starts = list(range(0, length - clip_samples + 1, clip_samples))
    if length - (starts[-1] + clip_samples) >= clip_samples / 2:
        starts.append(length - clip_samples)
    # Copies, not views: a view would keep the whole recording in memory for the sake of one clip.
    return [wave[start:start + clip_samples].clone() for start in starts]


def clip_id(ytid: str, index: int) -> str:
    """The name of the ``index``-th clip cut from row ``ytid``, and of its token file: ``"aB3-xY_9kLm-00"``."""
    return f"{ytid}-{index:02d}"


def clip_row(name: str) -> str:
    """The ytid of the row a clip was cut from (the inverse of :func:`clip_id`): ``"aB3-xY_9kLm"``."""
    return name.rsplit("-", 1)[0]


def _examples(items: Sequence[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (", ..." if len(items) > shown else "")


def music_clips(csv_path: str | os.PathLike, audio_dir: str | os.PathLike | None = None, sample_rate: int = 16_000,
                clip_seconds: float = 4.0, split: str | None = None, progress: bool = False) -> TrainingClips:
    """The clips of a CSV of captioned music (:func:`read_music_csv`).

    Each row's audio file is found in ``audio_dir`` by its ytid, as :class:`MusicCapsDataset` finds it, read at
    ``sample_rate``, cut to its captioned stretch, then into clips of ``clip_seconds`` (:func:`cut_clips`) named
    by :func:`clip_id`. A row whose file is missing or unreadable is skipped and counted in ``summary``
    ("used 120 of 130 rows ...; 10 audio files missing, e.g. ...: skipped"): every file is read here, before
    any training, so a bad file can never stop a run half-way.

    Args:
        audio_dir: searched with its subfolders; default: the CSV's folder.
        split: only the rows of this split (``"train"``: the rows models may learn from); ``None``: all.

    Raises:
        ValueError: if no row (of ``split``) has a readable audio file.
    """
    csv_path = Path(csv_path)
    records = read_music_csv(csv_path)
    audio_dir = Path(audio_dir) if audio_dir is not None else csv_path.parent
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"no audio folder at {audio_dir}; pass the folder that holds the CSV's audio files")
    rows = [record for record in records if split is None or record.split == split]
    label = {None: "rows", "train": "training rows"}.get(split, f"{split} rows")
    if not rows:
        raise ValueError(f"{csv_path} has no {label}" + (f" (all {len(records)} rows are held out for evaluation)"
                                                         if records else ""))
    files = _match_audio_files(audio_dir, {record.ytid for record in rows})
    clip_samples = round(clip_seconds * sample_rate)
    ids, clips, owners, missing, unreadable = [], [], [], [], []
    for record in tqdm(rows, desc=f"reading the audio of {csv_path.name}", unit="file", disable=not progress):
        if record.ytid not in files:
            missing.append(record.ytid)
            continue
        try:
            wave, _ = audio.load_audio(files[record.ytid], sample_rate=sample_rate)
        except audio.AudioError as err:     # damaged, empty, or a format libsndfile cannot read: as if missing
            unreadable.append(str(err).rstrip("."))
            continue
        stretch = _captioned_stretch(wave, sample_rate, record.start_s, record.end_s)
        for index, clip in enumerate(cut_clips(stretch, clip_samples)):
            ids.append(clip_id(record.ytid, index))
            clips.append(clip)
            owners.append(record)
    problems = [f"{len(missing)} audio file(s) missing, e.g. {_examples(missing)}"] if missing else []
    problems += [f"{len(unreadable)} unreadable, e.g. {unreadable[0]}"] if unreadable else []
    if not ids:
        raise ValueError(f"none of the {len(rows)} {label} of {csv_path} has a readable audio file in {audio_dir} "
                         f"({'; '.join(problems)}); files are found by ytid: name them <ytid>.wav (or .flac, .ogg, "
                         ".mp3, or <ytid>_<start>-<end>.wav), in that folder or below it")
    used = {record.ytid: record.split for record in owners}
    if split == "train":
        held = len(records) - len(rows)
        held_note = f" ({held} more held out for evaluation)" if held else ""
    else:
        held = sum(row_split != "train" for row_split in used.values())
        held_note = f" ({held} of them held out for evaluation, never trained on)" if held else ""
    summary = (f"used {len(used)} of {len(rows)} {label} of {csv_path}{held_note}: {len(ids)} clips of "
               f"{clip_seconds:g} s" + "".join(f"; {problem}: skipped" for problem in problems))
    return TrainingClips(ids, clips, owners, summary)


# ----------------------------------------------------------------------------
# Training crops
# ----------------------------------------------------------------------------

class AudioCrops(Dataset):
    """Random crops of ``crop_samples`` from a list of clips, ``crops_per_clip`` per clip and epoch.

    Items are ``(crop_samples,)`` float32 tensors. The crop position is drawn from torch's global
    generator, which the trainer seeds and checkpoints, so runs are reproducible and resume exactly.
    """

    def __init__(self, clips: Sequence[torch.Tensor], crop_samples: int, crops_per_clip: int = 1):
        self.clips = [audio.as_tensor(clip) for clip in clips]
        short = [index for index, clip in enumerate(self.clips) if clip.shape[-1] < crop_samples]
        if not self.clips or short:
            raise ValueError(f"every clip must have at least {crop_samples} samples; clips {short[:5]} are "
                             "shorter (or there are none)")
        self.crop_samples, self.crops_per_clip = crop_samples, crops_per_clip

    def __len__(self) -> int:
        return len(self.clips) * self.crops_per_clip

    def __getitem__(self, index: int) -> torch.Tensor:
        clip = self.clips[index % len(self.clips)]
        start = int(torch.randint(0, clip.shape[-1] - self.crop_samples + 1, ()))
        return clip[start:start + self.crop_samples]
