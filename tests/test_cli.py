"""The command line and `make demo`'s output."""

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


def test_unknown_preset_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "--preset", "huge", "--out", str(tmp_path / "d"), "--quiet"])
    assert exit_info.value.code == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_demo_writes_clips_captions_picture_and_page(tmp_path):
    cli.main(["demo", "--out", str(tmp_path), "--num-clips", "2", "--seconds", "1.5"])
    wavs = sorted(tmp_path.glob("clip-*.wav"))
    assert len(wavs) == 2
    info = sf.info(wavs[0])
    assert info.samplerate == 16_000 and info.frames == 24_000
    captions = (tmp_path / "captions.tsv").read_text().strip().splitlines()
    assert [line.split("\t")[0] for line in captions] == ["clip-00.wav", "clip-01.wav"]
    assert all(len(line.split("\t")[1].split()) >= 5 for line in captions)
    assert (tmp_path / "spectrograms.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "index.html").read_text()
    assert page.count("<audio") == 2
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
                ("demo", "--out", str(a_file), "--num-clips", "1"): f"{a_file} is a file where a folder",
                ("assignments", "build", "--out", str(a_file)): f"{a_file} is a file where a folder",
                ("notebooks", str(tmp_path)): f"{tmp_path} is a folder where a file is needed"}
    for command, expected in commands.items():
        with pytest.raises(SystemExit) as exit_info:
            cli.main(list(command))
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and error.startswith("error: ") and expected in error, command
        assert error.count("\n") == 1 and "Traceback" not in error, command


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
