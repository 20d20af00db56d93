"""Writing and reading SynthCaps; loading MusicCaps captions and matching local audio."""

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from mlm_lessons import audio, captions, datasets, synth

FIXTURE_CSV = Path(__file__).parent / "fixtures" / "musiccaps-sample.csv"
SMALL = dict(num_clips=12, seed=3, clip_seconds=1.0, progress=False)


@pytest.fixture(scope="module")
def synthcaps(tmp_path_factory) -> Path:
    """A 12-clip, 1-second SynthCaps folder shared by the read-only tests."""
    root = tmp_path_factory.mktemp("synthcaps")
    datasets.write_synthcaps(root, **SMALL)
    return root


def read_rows(root: Path) -> list[dict]:
    with open(root / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- writing ---------------------------------------------------------------------

def test_manifest_has_musiccaps_columns_then_ours(synthcaps):
    with open(synthcaps / "manifest.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header[:9]) == datasets.MUSICCAPS_COLUMNS
    assert tuple(header) == datasets.SYNTHCAPS_COLUMNS
    rows = read_rows(synthcaps)
    assert len(rows) == 12
    assert [row["ytid"] for row in rows] == [f"synth-{i:06d}" for i in range(12)]
    for row in rows:
        info = sf.info(str(synthcaps / row["path"]))
        assert (info.frames, info.samplerate, info.channels) == (16_000, 16_000, 1)
        assert (row["start_s"], row["end_s"]) == ("0", "1")
        assert row["is_audioset_eval"] == str(row["split"] == "test")


def test_the_same_settings_give_byte_identical_files(synthcaps, tmp_path):
    datasets.write_synthcaps(tmp_path / "again", **SMALL)
    assert folder_bytes(tmp_path / "again") == folder_bytes(synthcaps)


def test_another_seed_gives_other_music(synthcaps, tmp_path):
    datasets.write_synthcaps(tmp_path / "other", **{**SMALL, "seed": 4})
    first = sf.read(str(synthcaps / "audio" / "synth-000000.wav"))[0]
    other = sf.read(str(tmp_path / "other" / "audio" / "synth-000000.wav"))[0]
    assert not np.allclose(first, other)


def test_leads_and_moods_are_balanced():
    clips = datasets.plan_synthcaps(num_clips=60, seed=0)
    leads = {lead: sum(c.attributes.lead == lead for c in clips) for lead in synth.INSTRUMENTS}
    moods = {mood: sum(c.attributes.mood == mood for c in clips) for mood in synth.MOODS}
    assert set(leads.values()) == {6} and set(moods.values()) == {10}


def test_manifest_attributes_and_seed_reproduce_the_audio(synthcaps):
    """The attributes are *known*: re-rendering a row gives its wav (to 16-bit precision)."""
    record = datasets.read_synthcaps_manifest(synthcaps)[5]
    wave = synth.render(record.attributes, seconds=1.0, sample_rate=16_000, seed=record.seed)
    stored = sf.read(str(record.path), dtype="float32")[0]
    np.testing.assert_allclose(stored, wave, atol=1.0 / 2 ** 15)


def test_an_interrupted_run_leaves_no_manifest_and_resumes(synthcaps, tmp_path, monkeypatch):
    root = tmp_path / "interrupted"
    real_render = synth.render
    calls = []

    def render_then_ctrl_c(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synth, "render", render_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        datasets.write_synthcaps(root, **SMALL)
    assert not (root / "manifest.csv").exists()
    assert len(list((root / "audio").glob("*.wav"))) == 5
    assert not [p for p in root.rglob("*") if p.name.startswith(".") and p.suffix != ".json"]

    monkeypatch.setattr(synth, "render", real_render)
    before = {p.name: p.stat().st_mtime_ns for p in (root / "audio").glob("*.wav")}
    datasets.write_synthcaps(root, **SMALL)
    assert folder_bytes(root) == folder_bytes(synthcaps)
    assert all((root / "audio" / name).stat().st_mtime_ns == mtime for name, mtime in before.items())


def test_a_truncated_wav_is_rendered_again(synthcaps, tmp_path):
    root = tmp_path / "damaged"
    datasets.write_synthcaps(root, **SMALL)
    damaged = root / "audio" / "synth-000002.wav"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    stale = root / "audio" / ".synth-000005.wav.99999999.tmp"   # a write whose process was killed
    stale.write_bytes(b"half a wav")
    datasets.write_synthcaps(root, **SMALL)
    assert folder_bytes(root) == folder_bytes(synthcaps) and not stale.exists()


def test_a_folder_made_with_other_settings_is_refused(synthcaps):
    with pytest.raises(ValueError, match="different settings.*seed"):
        datasets.write_synthcaps(synthcaps, **{**SMALL, "seed": 99})


@pytest.mark.parametrize("damage", [b'{"seed": 0, "clip_sec', b"\xff\xfe not text", b"[1, 2]"])
def test_a_damaged_settings_file_is_named_with_the_fix(tmp_path, damage):
    root = tmp_path / "damaged"
    root.mkdir()
    (root / "synthcaps.json").write_bytes(damage)
    with pytest.raises(ValueError, match=r"synthcaps.json .*delete the folder to render it again"):
        datasets.write_synthcaps(root, **SMALL)


def test_ensure_synthcaps_generates_only_when_missing(tmp_path, monkeypatch):
    calls = []

    def fake_write(folder, preset, num_clips, progress):
        calls.append((preset, num_clips))
        Path(folder).mkdir(parents=True)
        (Path(folder) / "manifest.csv").write_text("")

    monkeypatch.setattr(datasets, "write_synthcaps", fake_write)
    assert datasets.ensure_synthcaps("tiny", root=tmp_path) == tmp_path / "synthcaps-tiny"
    assert datasets.ensure_synthcaps("tiny", root=tmp_path) == tmp_path / "synthcaps-tiny"
    assert datasets.ensure_synthcaps("tiny", root=tmp_path, num_clips=240) == tmp_path / "synthcaps-tiny"
    assert datasets.ensure_synthcaps("tiny", root=tmp_path, num_clips=50) == tmp_path / "synthcaps-tiny-50"
    assert calls == [("tiny", None), ("tiny", 50)]


def test_render_planned_gives_the_audio_write_synthcaps_writes(synthcaps):
    planned = datasets.plan_synthcaps(SMALL["num_clips"], SMALL["seed"])[:2]
    rendered = datasets.render_planned(planned, SMALL["clip_seconds"], 16_000)
    assert rendered.shape == (2, round(SMALL["clip_seconds"] * 16_000)) and rendered.dtype == torch.float32
    on_disk, _ = audio.load_audio(synthcaps / "audio" / f"{planned[1].ytid}.wav")
    torch.testing.assert_close(rendered[1], on_disk, atol=1e-4, rtol=0)   # the file holds 16-bit samples


# --- splits ---------------------------------------------------------------------

def test_no_clip_group_or_seed_is_in_two_splits_and_fractions_hold(synthcaps):
    rows = read_rows(synthcaps)
    for key in ("ytid", "group", "seed", "path"):
        splits_of = {}
        for row in rows:
            splits_of.setdefault(row[key], set()).add(row["split"])
        assert all(len(s) == 1 for s in splits_of.values()), key
    counts = {split: sum(row["split"] == split for row in rows) for split in datasets.SPLITS}
    assert counts == {"train": 10, "valid": 1, "test": 1}     # round(12 * 0.1) each


def test_assign_splits_keeps_groups_whole_with_exact_fractions():
    rng = np.random.default_rng(0)
    groups = [f"song-{g}" for g in rng.integers(0, 400, 2000)]      # several excerpts per song
    strata = [f"lead-{int(g.split('-')[1]) % 8}" for g in groups]
    splits = datasets.assign_splits(groups, valid_fraction=0.1, test_fraction=0.2, seed=1, strata=strata)
    split_of = {}
    for group, split in zip(groups, splits):
        assert split_of.setdefault(group, split) == split
    n_groups = len(split_of)
    assert sum(s == "test" for s in split_of.values()) == round(0.2 * n_groups)
    assert sum(s == "valid" for s in split_of.values()) == round(0.1 * n_groups)
    # Every stratum is represented in test, roughly in proportion.
    test_strata = [stratum for stratum, split in zip(strata, splits) if split == "test"]
    assert len(set(test_strata)) == 8
    assert splits == datasets.assign_splits(groups, 0.1, 0.2, seed=1, strata=strata)
    assert splits != datasets.assign_splits(groups, 0.1, 0.2, seed=2, strata=strata)


def test_assign_splits_rejects_impossible_fractions():
    with pytest.raises(ValueError, match="sum < 1"):
        datasets.assign_splits(["a", "b"], valid_fraction=0.6, test_fraction=0.5)


# --- reading SynthCaps -------------------------------------------------------------

def test_dataset_items(synthcaps):
    train = datasets.SynthCapsDataset(synthcaps, split="train")
    assert len(train) == 10
    assert len(train) + len(datasets.SynthCapsDataset(synthcaps, "valid")) + len(
        datasets.SynthCapsDataset(synthcaps, "test")) == len(datasets.SynthCapsDataset(synthcaps, "all"))
    item = train[0]
    assert set(item) == {"audio", "caption", "aspects", "attributes", "ytid"}
    assert item["audio"].dtype == torch.float32 and item["audio"].shape == (16_000,)
    lead_names = captions.LEAD_NAMES[item["attributes"]["lead"]]
    assert any(name in item["caption"].lower() for name in lead_names)
    assert "instrumental" in item["aspects"]
    synth.SynthAttributes(**item["attributes"])          # a complete, valid set of attributes


def test_dataset_resamples_and_transforms(synthcaps):
    dataset = datasets.SynthCapsDataset(synthcaps, "all", sample_rate=8000, transform=lambda w: w[:100] * 2)
    assert dataset[0]["audio"].shape == (100,)
    assert datasets.SynthCapsDataset(synthcaps, "all", sample_rate=8000)[0]["audio"].shape == (8000,)


def test_dataloader_batches_with_collate_clips(synthcaps):
    loader = DataLoader(datasets.SynthCapsDataset(synthcaps), batch_size=4, collate_fn=datasets.collate_clips)
    batch = next(iter(loader))
    assert batch["audio"].shape == (4, 16_000)
    assert batch["lengths"].tolist() == [16_000] * 4
    assert len(batch["caption"]) == 4 and isinstance(batch["aspects"][0], list)


def test_collate_pads_clips_of_different_lengths():
    batch = datasets.collate_clips([{"audio": torch.ones(3), "ytid": "a"}, {"audio": torch.ones(5), "ytid": "b"}])
    assert batch["audio"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["lengths"].tolist() == [3, 5] and batch["ytid"] == ["a", "b"]


def test_missing_folder_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m mlm_lessons data --preset tiny"):
        datasets.SynthCapsDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="python -m mlm_lessons data"):
        datasets.SynthCapsDataset(tmp_path)            # a folder, but no manifest


def test_unknown_split_and_missing_columns_are_errors(synthcaps, tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        datasets.SynthCapsDataset(synthcaps, split="validation")
    (tmp_path / "manifest.csv").write_text("ytid,caption\nx,y\n")
    with pytest.raises(ValueError, match="missing column.*'lead'"):
        datasets.SynthCapsDataset(tmp_path)


# --- MusicCaps ---------------------------------------------------------------------

def test_load_musiccaps_parses_types():
    records = datasets.load_musiccaps(FIXTURE_CSV)
    assert len(records) == 7
    first = records[0]
    assert (first.ytid, first.start_s, first.end_s, first.author_id) == ("aB3-xY_9kLm", 30, 40, 3)
    assert first.aspect_list == ["violin", "slow tempo", "calming", "instrumental", "no voice"]
    assert first.audioset_positive_labels == ["/m/04rlf", "/m/07y_7"]
    assert first.is_audioset_eval is True and first.is_balanced_subset is False and first.split == "test"
    assert records[2].audioset_positive_labels == []
    assert "children's song" in records[3].aspect_list
    assert datasets.aspect_counts(records)["fast tempo"] == 2


def test_load_musiccaps_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="musiccaps-public.csv"):
        datasets.load_musiccaps(tmp_path / "missing.csv")
    (tmp_path / "cols.csv").write_text("ytid,caption\nabc,hello\n")
    with pytest.raises(ValueError, match="missing column.*aspect_list"):
        datasets.load_musiccaps(tmp_path / "cols.csv")
    lines = FIXTURE_CSV.read_text().splitlines()
    (tmp_path / "bad.csv").write_text("\n".join(lines[:3] + [lines[3].replace(",False,False", ",maybe,False")]))
    with pytest.raises(ValueError, match="line 4.*True or False"):
        datasets.load_musiccaps(tmp_path / "bad.csv")


def test_musiccaps_reader_also_reads_a_synthcaps_manifest(synthcaps):
    records = datasets.load_musiccaps(synthcaps / "manifest.csv")
    assert len(records) == 12
    assert sum(r.split == "test" for r in records) == 1


def test_musiccaps_dataset_splits_and_captions_only():
    everything = datasets.MusicCapsDataset(FIXTURE_CSV)
    test = datasets.MusicCapsDataset(FIXTURE_CSV, split="test")
    train = datasets.MusicCapsDataset(FIXTURE_CSV, split="train")
    assert (len(everything), len(test), len(train)) == (7, 3, 4)
    assert "audio" not in test[0] and test[0]["split"] == "test"
    with pytest.raises(ValueError, match="is_audioset_eval"):
        datasets.MusicCapsDataset(FIXTURE_CSV, split="valid")


def test_musiccaps_dataset_matches_local_audio_files(tmp_path):
    rate = 8000
    tone = np.sin(np.arange(10 * rate) / rate * 2 * np.pi * 440).astype(np.float32) * 0.5
    sf.write(tmp_path / "aB3-xY_9kLm.wav", tone, rate)
    (tmp_path / "nested").mkdir()
    sf.write(tmp_path / "nested" / "_zz0123abcd_12-22.flac", tone, rate)
    sf.write(tmp_path / "Q-7_hT2mZpw-[0-10].wav", tone, rate)
    # A whole 120 s video: the captioned clip is 100-110 s, marked by a louder tone.
    video = np.zeros(120 * rate, dtype=np.float32)
    video[100 * rate:110 * rate] = 0.8
    sf.write(tmp_path / "r4nd0mID-01.wav", video, rate)
    sf.write(tmp_path / "not-a-musiccaps-id.wav", tone, rate)

    dataset = datasets.MusicCapsDataset(FIXTURE_CSV, audio_dir=tmp_path, sample_rate=rate)
    assert (dataset.num_matched, dataset.num_missing) == (4, 3)
    assert "audio for 4 of 7" in repr(dataset)
    items = {item["ytid"]: item for item in dataset}
    assert set(items) == {"aB3-xY_9kLm", "_zz0123abcd", "Q-7_hT2mZpw", "r4nd0mID-01"}
    assert items["aB3-xY_9kLm"]["audio"].shape == (10 * rate,)
    cut = items["r4nd0mID-01"]["audio"]
    assert cut.shape == (10 * rate,) and float(cut.min()) > 0.7
    assert datasets.MusicCapsDataset(FIXTURE_CSV, audio_dir=tmp_path, split="test",
                                     sample_rate=rate).num_matched == 1


def test_musiccaps_dataset_without_any_match_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="<ytid>.wav"):
        datasets.MusicCapsDataset(FIXTURE_CSV, audio_dir=tmp_path)


# --- the real MusicCaps file (skipped where it is absent) -----------------------------

@pytest.fixture(scope="module")
def musiccaps_csv() -> Path:
    path = Path(os.environ["MUSICCAPS_CSV"]) if os.environ.get("MUSICCAPS_CSV") else (
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "musiccaps-public.csv")
    if not path.is_file():
        pytest.skip(f"MusicCaps CSV not found at {path}; set MUSICCAPS_CSV to its path to run these tests")
    return path


def test_real_musiccaps_loads_completely(musiccaps_csv):
    records = datasets.load_musiccaps(musiccaps_csv)
    assert len(records) == 5521
    assert len({r.ytid for r in records}) == 5521
    assert all(r.aspect_list and r.caption and r.end_s - r.start_s == 10 for r in records)
    assert sum(r.split == "test" for r in records) == 2858
    assert sum(r.is_balanced_subset for r in records) == 1000
    assert datasets.aspect_counts(records).most_common(1)[0][0] == "low quality"


def test_find_musiccaps_csv_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICCAPS_CSV", str(FIXTURE_CSV))
    assert datasets.find_musiccaps_csv() == FIXTURE_CSV
    monkeypatch.setenv("MUSICCAPS_CSV", str(tmp_path / "absent.csv"))
    assert datasets.find_musiccaps_csv() is None


def test_a_musiccaps_csv_saved_by_a_spreadsheet_program_reads_and_a_non_utf8_one_is_named(tmp_path):
    text = FIXTURE_CSV.read_text(encoding="utf-8")
    with_bom = tmp_path / "bom.csv"
    with_bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))         # what "CSV UTF-8" export writes
    assert datasets.load_musiccaps(with_bom) == datasets.load_musiccaps(FIXTURE_CSV)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(text.encode("utf-8") + "caf\xe9\n".encode("latin-1"))    # one byte no UTF-8 text has
    with pytest.raises(ValueError, match=r"latin.csv is not UTF-8 text .*save it as UTF-8"):
        datasets.load_musiccaps(latin)


@pytest.mark.parametrize("damage, message", [
    ("cut", r"line \d+: the row ends before column\(s\) .* cut short"),
    ("misspelled split", r"line 2: split 'tran' is not one of \['train', 'valid', 'test'\]"),
    ("duplicated row", r"line 14: clip '.*' is listed twice \(first on line 2\)"),
])
def test_a_damaged_manifest_is_refused_with_its_line(synthcaps, tmp_path, damage, message):
    root = tmp_path / "copy"
    root.mkdir()
    lines = (synthcaps / datasets.MANIFEST_NAME).read_text(encoding="utf-8").splitlines(keepends=True)
    if damage == "cut":
        text = "".join(lines[:5]) + lines[5][: len(lines[5]) // 2]
    elif damage == "misspelled split":
        text = lines[0] + re.sub(r",(train|valid|test),", ",tran,", lines[1], count=1) + "".join(lines[2:])
    else:
        text = "".join(lines) + lines[1]
    (root / datasets.MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        datasets.read_synthcaps_manifest(root)


def test_a_truncated_wav_is_an_error_when_loaded_not_a_short_clip(synthcaps, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synthcaps, root)
    dataset = datasets.SynthCapsDataset(root, split="all")
    record = dataset.records[0]
    wave, rate = sf.read(record.path)
    sf.write(record.path, wave[: len(wave) // 3], rate)                  # a third of the clip
    with pytest.raises(ValueError, match=r"holds 0.33 s of audio, but the manifest says 1 s: the file is truncated"):
        dataset[0]
    assert dataset[1]["audio"].shape[-1] == rate                         # the others load as before


@pytest.mark.parametrize("setting, value, message", [("seed", -1, "seed must be at least 0, got -1"),
                                                     ("num_clips", 0, "num_clips must be at least 1, got 0"),
                                                     ("clip_seconds", 0.0, "clip_seconds must be positive")])
def test_rejected_settings_create_nothing(tmp_path, setting, value, message):
    out = tmp_path / "X"
    with pytest.raises(ValueError, match=message):
        datasets.write_synthcaps(out, **{**SMALL, setting: value})
    assert not out.exists()
    datasets.write_synthcaps(out, **SMALL)                               # so the correct run that follows works


def test_each_preset_and_size_has_its_own_default_folder_and_a_folder_is_checked_on_use(tmp_path, monkeypatch):
    assert datasets.default_synthcaps_folder("small", root=tmp_path) == tmp_path / "synthcaps-small"
    assert datasets.default_synthcaps_folder("tiny", 2400, root=tmp_path) == tmp_path / "synthcaps-tiny-2400"
    assert datasets.default_synthcaps_folder("tiny", 240, root=tmp_path) == tmp_path / "synthcaps-tiny"  # the preset's
    datasets.write_synthcaps(tmp_path / "synthcaps-tiny", **SMALL)          # not what the tiny preset makes
    with pytest.raises(ValueError, match="already holds a SynthCaps dataset made with different settings"):
        datasets.ensure_synthcaps("tiny", root=tmp_path, progress=False)
    monkeypatch.setenv("MLM_DATA_DIR", str(tmp_path))
    from mlm_lessons import cli

    cli.main(["data", "--preset", "tiny", "--num-clips", "3", "--quiet"])
    assert len(datasets.read_synthcaps_manifest(tmp_path / "synthcaps-tiny-3")) == 3


# --- training clips from a CSV of captioned music (MusicCaps, or yours) ---------------------------

def test_cut_clips_lays_pieces_from_the_start_and_pads_a_short_recording():
    def cut(wave):
        return [clip.tolist() for clip in datasets.cut_clips(wave, 4)]

    wave = torch.arange(10.0)
    assert cut(wave) == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]     # 2 samples left: a last clip, ending at 10
    assert cut(wave[:9]) == [[0, 1, 2, 3], [4, 5, 6, 7]]               # 1 left, under half a clip: dropped
    assert cut(wave[:4]) == [[0, 1, 2, 3]]
    assert cut(wave[1:3]) == [[1, 2, 0, 0]]                             # shorter than a clip: padded
    assert datasets.clip_row(datasets.clip_id("aB3-xY_9kLm", 2)) == "aB3-xY_9kLm"


def test_a_csv_with_only_ytid_and_caption_holds_rows_out_by_a_hash_of_the_ytid(tmp_path):
    ytids = [f"track-{index:03d}" for index in range(200)]
    rows = [f"{ytid},A song called {ytid}.\n" for ytid in ytids]
    (tmp_path / "mine.csv").write_text("ytid,caption\n" + "".join(rows))
    (tmp_path / "reversed.csv").write_text("caption,ytid\n" + "".join(
        f"A song called {ytid}.,{ytid}\n" for ytid in reversed(ytids)))
    records = datasets.read_music_csv(tmp_path / "mine.csv")
    held = [record.ytid for record in records if record.split == "test"]
    assert held[:5] == ["track-006", "track-008", "track-013", "track-021", "track-028"]   # on every machine
    assert 10 <= len(held) <= 30                                                           # about 10%
    assert sorted(r.ytid for r in datasets.read_music_csv(tmp_path / "reversed.csv") if r.split == "test") == held
    first = records[0]
    assert (first.caption, first.aspects, first.start_s, first.end_s) == ("A song called track-000.", [], None, None)


def test_a_musiccaps_csv_reads_its_split_aspects_and_times_with_or_without_a_byte_order_mark(tmp_path):
    with_bom = tmp_path / "bom.csv"
    with_bom.write_bytes(b"\xef\xbb\xbf" + FIXTURE_CSV.read_bytes())
    records = datasets.read_music_csv(with_bom)
    assert records == datasets.read_music_csv(FIXTURE_CSV)
    musiccaps = datasets.load_musiccaps(FIXTURE_CSV)
    assert [(r.ytid, r.split, r.aspects, r.caption) for r in records] == [
        (r.ytid, r.split, r.aspect_list, r.caption) for r in musiccaps]
    assert (records[0].start_s, records[0].end_s) == (30, 40)


@pytest.mark.parametrize("rows, message", [
    ("a,one\nb,two\na,three\n", r"line 4: ytid 'a' is listed twice \(first on line 2\)"),
    ("a,one\nb,  \n", r"line 3: the caption of 'b' is empty"),
    ("a,one\n,two\n", r"line 3: the ytid is empty"),
])
def test_a_csv_of_music_with_a_bad_row_is_refused_with_its_line(tmp_path, rows, message):
    (tmp_path / "mine.csv").write_text("ytid,caption\n" + rows)
    with pytest.raises(ValueError, match=message):
        datasets.read_music_csv(tmp_path / "mine.csv")


def test_music_clips_cut_the_captioned_stretch_of_a_whole_video_and_read_plain_aspects(tmp_path):
    rate = 8000
    video = np.full(30 * rate, 0.1, dtype=np.float32)
    video[10 * rate:20 * rate] = 0.8                       # the captioned 10-20 s, louder
    sf.write(tmp_path / "video-1.wav", video, rate)
    sf.write(tmp_path / "clip-2.flac", np.full(4 * rate, 0.5, dtype=np.float32), rate)
    (tmp_path / "mine.csv").write_text("ytid,caption,aspect_list,start_s,end_s,is_audioset_eval\n"
                                       "video-1,Loud.,\"rock, guitar\",10,20,False\nclip-2,Even.,,0,4,True\n")
    clips = datasets.music_clips(tmp_path / "mine.csv", sample_rate=rate, clip_seconds=4.0)
    assert clips.ids == ["video-1-00", "video-1-01", "video-1-02", "clip-2-00"]
    assert all(float(clip.min()) > 0.7 for clip in clips.audio[:3])
    assert clips.records[0].aspects == ["rock", "guitar"] and clips.records[3].aspects == []
    assert clips.summary == (f"used 2 of 2 rows of {tmp_path / 'mine.csv'} (1 of them held out for evaluation, "
                             "never trained on): 4 clips of 4 s")
    assert clips.of_split("train").ids == clips.ids[:3]
    only_train = datasets.music_clips(tmp_path / "mine.csv", sample_rate=rate, clip_seconds=4.0, split="train")
    assert only_train.ids == clips.ids[:3] and "(1 more held out for evaluation)" in only_train.summary
    (tmp_path / "held.csv").write_text("ytid,caption,is_audioset_eval\nclip-2,Even.,True\n")
    with pytest.raises(ValueError, match=r"held.csv has no training rows \(all 1 rows are held out for evaluation\)"):
        datasets.music_clips(tmp_path / "held.csv", sample_rate=rate, split="train")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ValueError, match=r"none of the 2 rows of .* has a readable audio file in .*elsewhere \(2 "
                                         r"audio file\(s\) missing, e.g. video-1, clip-2\); files are found by ytid"):
        datasets.music_clips(tmp_path / "mine.csv", audio_dir=tmp_path / "elsewhere", sample_rate=rate)


def test_split_planned_gives_the_splits_write_synthcaps_writes(tmp_path):
    manifest = datasets.write_synthcaps(tmp_path / "set", preset="tiny", num_clips=40, seed=3, progress=False)
    written = [record.split for record in datasets.read_synthcaps_manifest(manifest.parent)]
    tiny = datasets.get_preset("tiny").data
    planned = datasets.split_planned(datasets.plan_synthcaps(40, seed=3), tiny.valid_fraction, tiny.test_fraction, 3)
    assert planned == written and set(written) == {"train", "valid", "test"}
