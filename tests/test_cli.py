"""The command line and `make demo`'s output."""

import dataclasses
import errno
import os
import subprocess
import sys

import pytest
import torch
import soundfile as sf

from mlm_lessons import cli, config


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "mlm_lessons", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("data", "demo", "notebooks", "assignments"):
        assert command in result.stdout


NOTEBOOK_TOOLING = ("nbgrader", "nbclient", "nbformat", "nbconvert")


def test_only_the_notebook_commands_load_the_notebook_tooling():
    """nbgrader and nbclient take seconds to import and may be missing on a training machine: `train`, `generate`
    and the rest must not need them; `assignments` must still find them."""
    program = ("import sys\nfrom mlm_lessons import cli\n"
               "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
               "print(sorted({m.split('.')[0] for m in sys.modules} & set(%r)))" % (NOTEBOOK_TOOLING,))
    loaded = {}
    for command in (["train", "--help"], ["generate", "--help"], ["assignments", "grade", "--help"]):
        result = subprocess.run([sys.executable, "-c", program, *command], capture_output=True, text=True)
        loaded[command[0]] = result.stdout.strip().splitlines()[-1]
    assert loaded["train"] == loaded["generate"] == "[]"
    assert "nbgrader" in loaded["assignments"] and "nbclient" in loaded["assignments"]


def test_unknown_preset_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "--preset", "huge", "--out", str(tmp_path / "d"), "--quiet"])
    assert exit_info.value.code == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_demo_generates_a_clip_per_prompt_with_references_picture_and_page(tmp_path, capsys):
    cli.main(["demo", "--out", str(tmp_path), "--prompt", "a calming violin melody", "--prompt",
              "an energetic trumpet tune", "--seconds", "1", "--quiet"])
    wavs = sorted(tmp_path.glob("generated-*.wav"))
    assert len(wavs) == 2 and len(list(tmp_path.glob("reference-*.wav"))) == 2
    info = sf.info(wavs[0])
    assert info.samplerate == 16_000 and info.frames == 16_000
    assert (tmp_path / "spectrograms.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "index.html").read_text().count("<audio") == 4
    assert str(tmp_path / "index.html") in capsys.readouterr().out
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_train_soundstream_resumes_and_exports_a_codec_that_loads(tmp_path, capsys):
    from mlm_lessons import datasets, soundstream

    data = tmp_path / "data"
    datasets.write_synthcaps(data, preset="tiny", num_clips=10, clip_seconds=1.0, progress=False)
    command = ["train", "--stage", "soundstream", "--data", str(data), "--out", str(tmp_path / "run"),
               "--steps", "1", "--quiet"]
    cli.main(command)
    cli.main(command[:-2] + ["2", "--export", str(tmp_path / "codec.pt"), "--quiet"])   # resumes at step 1
    printed = capsys.readouterr().out
    assert "trained 2 steps" in printed and "codec.pt" in printed
    codec = soundstream.SoundStream.load(tmp_path / "codec.pt")
    assert codec.encode(torch.zeros(16_000)).shape == (1, 4, 50)
    with pytest.raises(SystemExit):
        cli.main(["train", "--stage", "semantic", "--out", str(tmp_path / "x")])   # not a stage (yet)


def test_train_w2v_bert_resumes_and_exports_a_tokenizer(tmp_path, capsys):
    from mlm_lessons import datasets
    from mlm_lessons.tokenize import SemanticTokenizer

    data = tmp_path / "data"
    datasets.write_synthcaps(data, preset="tiny", num_clips=10, clip_seconds=2.0, progress=False)
    command = ["train", "--stage", "w2v_bert", "--data", str(data), "--out", str(tmp_path / "run"),
               "--steps", "1", "--quiet"]
    cli.main(command)
    cli.main(command[:-2] + ["2", "--export", str(tmp_path / "tokenizer.pt"), "--quiet"])   # resumes at step 1
    printed = capsys.readouterr().out
    assert "trained 2 steps" in printed and "tokenizer.pt" in printed
    tokenizer = SemanticTokenizer.load(tmp_path / "tokenizer.pt")
    assert tokenizer.num_clusters == config.get_preset("tiny").tokens.semantic_clusters
    assert tokenizer.semantic_tokens(torch.zeros(16_000)).shape == (1, 25)


def test_train_mulan_resumes_and_exports_a_model_with_its_tokens(tmp_path, capsys):
    from mlm_lessons import datasets, mulan

    data = tmp_path / "data"
    datasets.write_synthcaps(data, preset="tiny", num_clips=10, clip_seconds=3.0, progress=False)
    command = ["train", "--stage", "mulan", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1",
               "--quiet"]
    cli.main(command)
    cli.main(command[:-2] + ["2", "--export", str(tmp_path / "mulan.pt"), "--quiet"])   # resumes at step 1
    printed = capsys.readouterr().out
    assert "trained 2 steps" in printed and "mulan.pt" in printed
    model = mulan.MuLan.load(tmp_path / "mulan.pt")
    tiny = config.get_preset("tiny")
    assert model.text_tokens("a calming violin melody").shape == (1, tiny.tokens.mulan_rvq_levels)


def test_train_num_clips_renders_its_own_set_and_refuses_data_too(tmp_path, capsys, monkeypatch):
    from mlm_lessons import datasets

    monkeypatch.setenv("MLM_DATA_DIR", str(tmp_path))
    seen = []

    def record_and_stop(folder, **kwargs):   # rendering is tested elsewhere; here: where, and how many
        seen.append((folder, kwargs["num_clips"]))
        raise ValueError("stop here")

    monkeypatch.setattr(datasets, "write_synthcaps", record_and_stop)
    with pytest.raises(SystemExit):
        cli.main(["train", "--stage", "mulan", "--num-clips", "30", "--out", str(tmp_path / "run"), "--quiet"])
    assert seen == [(tmp_path / "synthcaps-tiny-30", 30)]
    with pytest.raises(SystemExit):
        cli.main(["train", "--stage", "mulan", "--num-clips", "30", "--data", str(tmp_path), "--out",
                  str(tmp_path / "run")])
    assert "pass one of them, not both" in capsys.readouterr().err


def test_path_errors_are_one_line_naming_the_path(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    commands = {("data", "--out", str(a_file), "--num-clips", "1", "--quiet"): f"{a_file} is a file where a folder",
                ("demo", "--out", str(a_file)): f"{a_file} is a file where a folder",
                ("assignments", "build", "--out", str(a_file)): f"{a_file} is a file where a folder",
                ("notebooks", str(tmp_path)): f"{tmp_path} is a folder where a file is needed"}
    for command, expected in commands.items():
        with pytest.raises(SystemExit) as exit_info:
            cli.main(list(command))
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and error.startswith("error: ") and expected in error, command
        assert error.count("\n") == 1 and "Traceback" not in error, command


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody running the tests can write into.

    Permissions do not stop root, and the sessions and CI of this project run as root: there the folder is a
    read-only tmpfs mounted for the test (root may mount). Elsewhere it is an ordinary folder made read-only.
    """
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root without the right to mount a read-only folder: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_out_is_one_line_naming_it(read_only_folder, capsys):
    commands = (("data", "--out", str(read_only_folder / "data"), "--num-clips", "1", "--quiet"),
                ("demo", "--out", str(read_only_folder / "demo")),
                ("assignments", "build", "--out", str(read_only_folder / "student")))
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(list(command))
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and error.count("\n") == 1 and "Traceback" not in error, command
        assert error.startswith(f"error: {command[-1] if command[0] != 'data' else command[2]}"), error
        assert "choose a place you can write to" in error, error


@pytest.mark.parametrize("error", [PermissionError(errno.EACCES, "Permission denied", "/srv/out"),
                                   OSError(errno.EROFS, "Read-only file system", "/srv/out")],
                         ids=["no-permission", "read-only-file-system"])
def test_an_unwritable_path_names_itself_and_the_fix(error):
    line = cli._os_error_line(error)
    assert "/srv/out" in line and "choose a place you can write to" in line


def test_tokens_writes_a_token_file_per_clip_with_the_shipped_models_and_resumes(tmp_path, capsys):
    from mlm_lessons import datasets, token_files

    data = tmp_path / "data"
    datasets.write_synthcaps(data, preset="tiny", num_clips=2, clip_seconds=1.0, progress=False)
    cli.main(["tokens", "--data", str(data), "--out", str(tmp_path / "tokens"), "--quiet"])
    spec, clips = token_files.read_token_files(tmp_path / "tokens")
    assert len(clips) == 2 and spec["sources"]["codec"]["file"] == "soundstream-tiny.pt"
    cli.main(["tokens", "--data", str(data), "--out", str(tmp_path / "tokens"), "--quiet"])   # nothing to do
    assert "token files of 2 clips" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["tokens", "--data", str(data), "--out", str(tmp_path / "t2"), "--mulan", str(tmp_path / "no.pt")])
    assert "no mulan model at" in capsys.readouterr().err


def test_train_a_musiclm_stage_on_token_files_resumes_and_exports(tmp_path, capsys):
    from mlm_lessons import datasets, musiclm

    data = tmp_path / "data"
    datasets.write_synthcaps(data, preset="tiny", num_clips=10, clip_seconds=1.0, progress=False)
    with pytest.raises(SystemExit):
        cli.main(["train", "--stage", "semantic", "--data", str(data), "--out", str(tmp_path / "run")])
    assert "learns from token files" in capsys.readouterr().err
    cli.main(["tokens", "--data", str(data), "--out", str(tmp_path / "tokens"), "--quiet"])
    command = ["train", "--stage", "fine", "--data", str(data), "--tokens", str(tmp_path / "tokens"),
               "--out", str(tmp_path / "run"), "--steps", "1", "--quiet"]
    cli.main(command)
    cli.main(command[:-2] + ["2", "--export", str(tmp_path / "fine.pt"), "--quiet"])    # resumes at step 1
    assert "trained 2 steps" in capsys.readouterr().out
    stage = musiclm.Stage.load(tmp_path / "fine.pt")
    coarse = torch.zeros(1, 5, config.get_preset("tiny").tokens.coarse_levels, dtype=torch.long)
    assert stage.generate({"coarse": coarse}, frames=5).shape == (1, 5, stage.layout.target.kinds["fine"].levels)
    cli.main(["train", "--stage", "coarse", "--condition-on", "mulan", "--data", str(data), "--tokens",
              str(tmp_path / "tokens"), "--out", str(tmp_path / "ablation"), "--steps", "1", "--quiet",
              "--export", str(tmp_path / "coarse-mulan.pt")])
    assert musiclm.Stage.load(tmp_path / "coarse-mulan.pt").layout.prefix_kinds == ("mulan",)
    with pytest.raises(SystemExit):
        cli.main(["train", "--stage", "fine", "--condition-on", "semantic", "--data", str(data), "--tokens",
                  str(tmp_path / "tokens"), "--out", str(tmp_path / "bad"), "--quiet"])
    assert "non-empty subset of ['coarse']" in capsys.readouterr().err


def test_a_failing_lesson_cell_is_reported_in_a_few_lines_and_the_file_is_left_alone(tmp_path, capsys):
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("x = 1"),
                      nbformat.v4.new_code_cell("# the second cell\nfrom math import sqrt\nsqrt(-x)")]
    path = tmp_path / "lesson.ipynb"
    nbformat.write(notebook, path)
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["notebooks", str(path)])
    message = capsys.readouterr().err
    assert exit_code.value.code == 1 and len(message.strip().splitlines()) <= 3
    assert 'code cell 2 ("# the second cell") failed with ValueError: math domain error' in message
    assert path.read_bytes() == before


PIPELINE_FILES = ("soundstream.pt", "w2v-bert.pt", "mulan.pt", "semantic.pt", "coarse.pt", "fine.pt", "pipeline.json")


@pytest.fixture
def quick_tiny(monkeypatch):
    """The tiny preset's models, trained in batches of 2 to 4: the same code, a few times quicker on a busy CPU.
    Also no MusicCaps captions for MuLan's vocabulary: quicker, and the same wherever the tests run."""
    tiny = config.get_preset("tiny")
    quick = dataclasses.replace(tiny, codec=dataclasses.replace(tiny.codec, batch_size=2),
                                w2v_bert=dataclasses.replace(tiny.w2v_bert, batch_size=4),
                                mulan=dataclasses.replace(tiny.mulan, batch_size=4),
                                train=dataclasses.replace(tiny.train, batch_size=4))
    monkeypatch.setattr(config, "get_preset", lambda name: quick)
    monkeypatch.setenv("MUSICCAPS_CSV", "/no/musiccaps.csv")
    return quick


def test_train_all_makes_the_six_pipeline_files_then_skips_what_is_finished(tmp_path, capsys, monkeypatch,
                                                                            quick_tiny):
    from mlm_lessons import mulan, musiclm, soundstream, token_files
    from mlm_lessons.tokenize import SemanticTokenizer

    monkeypatch.setenv("MLM_DATA_DIR", str(tmp_path))            # --num-clips renders its clips here
    out, pipeline = tmp_path / "run", tmp_path / "run" / "pipeline"
    command = ["train", "--stage", "all", "--preset", "tiny", "--num-clips", "6", "--steps", "1", "--out", str(out),
               "--quiet"]
    cli.main(command)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "soundstream", "w2v_bert", "mulan", "tokens", "semantic", "coarse", "fine"]
    assert all("trained 1 steps" in line for line in lines[:3] + lines[4:-1]), lines
    assert "made 6 token files" in lines[3] and lines[-1] == f"pipeline in {pipeline}"
    assert sorted(path.name for path in pipeline.iterdir()) == sorted(PIPELINE_FILES)
    codec = soundstream.SoundStream.load(pipeline / "soundstream.pt")
    semantic = SemanticTokenizer.load(pipeline / "w2v-bert.pt")
    model = mulan.MuLan.load(pipeline / "mulan.pt")
    stages = {name: musiclm.Stage.load(pipeline / f"{name}.pt") for name in ("semantic", "coarse", "fine")}
    assert model.text_tokens("a calm violin").shape == (1, quick_tiny.tokens.mulan_rvq_levels)
    assert {name: stage.layout.name for name, stage in stages.items()} == {name: name for name in stages}
    from mlm_lessons.pipeline import MusicLM
    assert MusicLM.load(pipeline).generate("a calm violin", seconds=0.2).shape[0] == 1    # one folder, text to audio
    spec, _ = token_files.read_token_files(out / "tokens")   # made by the models just trained, not the shipped ones
    assert spec["sources"] == token_files.token_spec(codec, semantic, model, {
        "codec": pipeline / "soundstream.pt", "semantic": pipeline / "w2v-bert.pt",
        "mulan": pipeline / "mulan.pt"})["sources"]

    written = {path.name: path.stat().st_mtime_ns for path in pipeline.iterdir()}
    cli.main(command)                                          # finished: every stage is skipped, nothing rewritten
    lines = capsys.readouterr().out.strip().splitlines()
    assert all("skipped" in line for line in lines[:-1]) and len(lines) == 8, lines
    assert {path.name: path.stat().st_mtime_ns for path in pipeline.iterdir()} == written

    (pipeline / "fine.pt").unlink()                              # as if killed before fine was exported
    cli.main(command)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines if "skipped" not in line] == ["fine", "pipeline in " + str(pipeline)]
    assert musiclm.Stage.load(pipeline / "fine.pt").layout.name == "fine"

    with pytest.raises(SystemExit) as exit_info:                # more steps would outdate the token files: refused
        cli.main(command[:-4] + ["2", "--out", str(out), "--quiet"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1
    assert f"delete {out / 'tokens'}" in error and "soundstream, w2v_bert, mulan must be trained" in error


def write_music_folder(folder, rows: dict[str, float | None], held_out: set[str] = frozenset()):
    """A CSV of captioned music in MusicCaps' format (saved with a byte-order mark, as spreadsheet programs do)
    and, for each row with a length, a wav of that many seconds at 22.05 kHz (stereo, so it is mixed down and
    resampled). ``None``: no file."""
    from mlm_lessons import audio

    folder.mkdir(parents=True, exist_ok=True)
    header = "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset," \
             "is_audioset_eval\n"
    lines = [f'{ytid},0,10,/m/04rlf,"[\'{ytid} aspect\', \'calm\']","The caption of {ytid}.",1,False,'
             f'{ytid in held_out}\n' for ytid in rows]
    (folder / "music.csv").write_bytes(b"\xef\xbb\xbf" + (header + "".join(lines)).encode("utf-8"))
    for index, (ytid, seconds) in enumerate(rows.items()):
        if seconds is not None:
            tone = torch.sin(torch.arange(int(seconds * 22_050)) / 22_050 * 2 * torch.pi * (220 + 55 * index))
            audio.save_audio(folder / "audio" / f"{ytid}.wav", 0.3 * torch.stack([tone, tone]), 22_050)
    return folder / "music.csv"


def test_train_and_tokens_on_a_csv_of_your_music_skip_missing_and_unreadable_files(tmp_path, capsys, monkeypatch,
                                                                                  quick_tiny):
    from mlm_lessons import mulan, token_files

    csv_path = write_music_folder(tmp_path, {"song-a": 10.0, "song-b": 2.0, "song-c": None, "song-d": 4.0,
                                             "song-e": 4.0}, held_out={"song-e"})
    (tmp_path / "audio" / "song-d.wav").write_bytes(b"RIFF, but no audio")    # a damaged file
    seen = {}

    def spy(module, name):   # record the positional arguments the command passes, and do the real work
        function = getattr(module, name)

        def recording(*args, **kwargs):
            seen[name] = args
            return function(*args, **kwargs)
        monkeypatch.setattr(module, name, recording)

    spy(mulan, "train_mulan")
    cli.main(["train", "--stage", "mulan", "--data", str(csv_path), "--out", str(tmp_path / "mulan"), "--steps", "1",
              "--quiet"])                                       # audio: the CSV's folder and its subfolders
    printed = capsys.readouterr().out
    # 10 s at 4 s a clip: 0-4, 4-8 and 6-10 (half a clip or more was left); 2 s: one clip, padded.
    assert (f"used 2 of 4 training rows of {csv_path} (1 more held out for evaluation): 4 clips of 4 s; "
            "1 audio file(s) missing, e.g. song-c: skipped; 1 unreadable, e.g. cannot read") in printed
    assert "trained 1 steps" in printed
    clips, captions = seen["train_mulan"][1:3]
    assert [clip.shape for clip in clips] == [(64_000,)] * 4                 # at 16 kHz, mono
    assert torch.equal(clips[2][:32_000], clips[1][32_000:]) and not clips[3][32_000:].any()
    assert captions[0] == ["The caption of song-a.", "song-a aspect, calm"]
    assert captions[3][0] == "The caption of song-b."
    assert not any("song-e" in text for texts in captions for text in texts)            # held out: never seen

    cli.main(["tokens", "--data", str(csv_path), "--audio", str(tmp_path / "audio"), "--out", str(tmp_path / "tokens"),
              "--quiet"])
    assert "token files of 5 clips" in capsys.readouterr().out
    assert sorted(path.stem for path in (tmp_path / "tokens").glob("*.pt")) == [
        "song-a-00", "song-a-01", "song-a-02", "song-b-00", "song-e-00"]   # held-out clips too, for evaluation
    spy(token_files, "read_token_files")
    cli.main(["train", "--stage", "semantic", "--data", str(csv_path), "--tokens", str(tmp_path / "tokens"),
              "--out", str(tmp_path / "semantic"), "--steps", "1", "--quiet"])
    assert "trained 1 steps" in capsys.readouterr().out
    assert seen["read_token_files"][1] == ["song-a-00", "song-a-01", "song-a-02", "song-b-00"]   # never song-e


def test_a_csv_without_audio_files_and_options_that_do_not_go_together_are_one_line_errors(tmp_path, capsys):
    csv_path = write_music_folder(tmp_path, {"song-a": None, "song-b": None})
    for command in (["train", "--stage", "soundstream"], ["tokens"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(command + ["--data", str(csv_path), "--out", str(tmp_path / "run"), "--quiet"])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and error.count("\n") == 1, error
        assert "has a readable audio file in" in error and "2 audio file(s) missing, e.g. song-a, song-b" in error
        assert "<ytid>.wav" in error
    wrong = {("--stage", "mulan", "--audio", str(tmp_path)): "pass it with --data FILE.csv",
             ("--stage", "all", "--export", str(tmp_path / "x.pt")): "drop --tokens, --export and --condition-on"}
    for options, expected in wrong.items():     # refused before any data is rendered or read
        with pytest.raises(SystemExit):
            cli.main(["train", *options, "--out", str(tmp_path / "run")])
        assert expected in capsys.readouterr().err


def test_generate_writes_a_clip_per_prompt_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    cli.main(["generate", "a calming violin melody", "--seconds", "0.5", "--out", str(tmp_path / "one.wav"), "--quiet"])
    assert sf.info(tmp_path / "one.wav").frames == round(0.52 * 50) * 320          # whole semantic frames
    cli.main(["generate", "a sad piano", "an energetic trumpet tune", "--seconds", "0.5", "--seed", "3",
              "--temperatures", "1.0,0.9,0.4", "--top-k", "20", "--out", str(tmp_path / "many.flac"), "--quiet"])
    assert sorted(path.name for path in tmp_path.glob("many-*.flac")) == ["many-00.flac", "many-01.flac"]
    assert "s per second of music" in capsys.readouterr().out
    for arguments, message in [
        (["???"], "MuLan knows no word of prompt 0"),
        (["  "], "prompt 0 is empty"),
        (["a sad piano", "--seconds", "0"], "seconds must be at least one semantic frame"),
        (["a sad piano", "--seconds", "100000"], "more than 600 s"),
        (["a sad piano", "--out", str(tmp_path / "x.mp3")], "must name an audio file"),
        (["a sad piano", "--temperatures", "1,2"], "one value per stage"),
        (["a sad piano", "--pipeline", str(tmp_path / "nowhere")], "no pipeline folder"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            out = [] if "--out" in arguments else ["--out", str(tmp_path / "bad.wav")]
            cli.main(["generate", *arguments, *out, "--quiet"])
        error = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and message in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "bad.wav").exists()


def test_evaluate_prints_the_table_with_every_baseline(tmp_path, capsys, monkeypatch):
    from mlm_lessons import datasets, evaluation

    data = datasets.write_synthcaps(tmp_path / "data", preset="tiny", num_clips=30, progress=False)
    report = tmp_path / "report.md"
    cli.main(["evaluate", "--data", str(data.parent), "--num-prompts", "3", "--out", str(report), "--quiet"])
    out = capsys.readouterr().out
    assert all(f"| {row} |" in out for row in evaluation.ROWS) and "held-out real clips" in out
    assert report.read_text().startswith("3 held-out prompts")
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--data", str(data.parent), "--classifier", str(tmp_path / "none.pt"), "--quiet"])
    assert "no attribute classifier at" in capsys.readouterr().err


def test_train_attributes_exports_a_classifier_and_refuses_a_csv(tmp_path, capsys, monkeypatch):
    from mlm_lessons import evaluation

    monkeypatch.setenv("MLM_DATA_DIR", str(tmp_path))
    cli.main(["train", "--stage", "attributes", "--num-clips", "12", "--steps", "2", "--out", str(tmp_path / "run"),
              "--export", str(tmp_path / "attributes.pt"), "--quiet"])
    assert set(evaluation.AttributeClassifier.load(tmp_path / "attributes.pt").heads) == set(evaluation.ATTRIBUTES)
    (tmp_path / "mine.csv").write_text("ytid,caption\nsong,a calm violin\n")
    with pytest.raises(SystemExit):
        cli.main(["train", "--stage", "attributes", "--data", str(tmp_path / "mine.csv"), "--out", str(tmp_path / "r")])
    assert "--stage attributes learns the attributes SynthCaps records" in capsys.readouterr().err
