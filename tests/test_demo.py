"""`make demo`: generated clips beside their references, spectrograms, prompts and a page, every bad input a
clear error before a minute of generating."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf

from mlm_lessons import demo, pipeline, synth

TWO = demo.DEMO_PROMPTS[:2]




def test_the_demo_writes_every_promised_file_from_the_pipeline_folder_it_is_given(shipped_folder, tmp_path,
                                                                                   monkeypatch):
    loaded = []
    real_load = pipeline.MusicLM.load
    monkeypatch.setattr(pipeline.MusicLM, "load", classmethod(lambda cls, path: loaded.append(path) or real_load(path)))
    monkeypatch.setattr(pipeline, "shipped_pipeline", lambda *args: pytest.fail("the shipped pipeline was loaded"))
    out = tmp_path / "demo"
    page = demo.write_demo(out, prompts=TWO, seconds=1.0, seed=0, pipeline=shipped_folder, progress=False)
    assert page == out / "index.html" and loaded == [shipped_folder]

    names = [f"{kind}-{index:02d}.wav" for kind in ("generated", "reference") for index in range(2)]
    assert sorted(path.name for path in out.glob("*.wav")) == sorted(names)
    for name in names:
        wave, rate = sf.read(out / name, dtype="float32")
        assert rate == 16_000 and wave.shape == (16_000,), name                  # the asked second, mono
        assert np.sqrt(np.mean(wave ** 2)) > 1e-3, f"{name} is silent"
    assert (out / "spectrograms.png").read_bytes()[:4] == b"\x89PNG"
    rows = [line.split("\t") for line in (out / "prompts.tsv").read_text().splitlines()]
    assert rows[0] == ["generated", "reference", "reference attributes", "prompt"]
    assert [row[:2] for row in rows[1:]] == [["generated-00.wav", "reference-00.wav"],
                                             ["generated-01.wav", "reference-01.wav"]]
    assert [row[3] for row in rows[1:]] == [text for text, _ in TWO]
    assert rows[1][2].startswith("violin lead") and "calming" in rows[1][2]

    text = page.read_text()
    assert sorted(re.findall(r'<audio[^>]* src="([^"]+)"', text)) == sorted(names)
    assert 'src="spectrograms.png"' in text and f"the pipeline in {shipped_folder}" in text
    assert all(prompt in text for prompt, _ in TWO)
    assert "python -m mlm_lessons generate" in text and "train --stage all" in text
    assert not list(out.glob(".*")), "temporary files left behind"


def test_a_prompt_naming_no_known_instrument_gets_no_reference_and_a_musiclm_object_is_used(shipped, tmp_path):
    out = tmp_path / "demo"
    demo.write_demo(out, prompts=["a slow jazz tune", "a soothing violin melody"], seconds=0.5, seed=1,
                    pipeline=shipped, progress=False)
    assert sorted(path.name for path in out.glob("*.wav")) == ["generated-00.wav", "generated-01.wav",
                                                               "reference-01.wav"]
    assert sf.info(out / "generated-00.wav").frames == 8_320                 # 0.5 s rounds to 13 frames of 0.04 s
    text = (out / "index.html").read_text()
    assert "no reference" in text and text.count("<audio") == 3
    assert (out / "prompts.tsv").read_text().splitlines()[1].split("\t")[:3] == ["generated-00.wav", "", ""]


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[]), "no prompts"),
    (dict(prompts=["a calming violin melody", "  "]), "prompt 1 must be a description"),
    (dict(prompts=[("a banjo melody", {"lead": "banjo"})]), "prompt 0's attribute choices: lead must be one of"),
    (dict(seconds=0), "seconds must be a length of music above 0"),
    (dict(seconds=-1.0), "seconds must be a length of music above 0"),
    (dict(seconds=float("nan")), "seconds must be a length of music above 0"),
    (dict(seed=-1), "seed must be a whole number >= 0"),
])
def test_bad_input_is_a_clear_error_before_anything_is_loaded_or_written(kwargs, message, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "shipped_pipeline", lambda *args: pytest.fail("loaded before checking"))
    with pytest.raises(ValueError, match=re.escape(message)):
        demo.write_demo(tmp_path / "demo", **{"prompts": TWO, **kwargs}, progress=False)
    assert not (tmp_path / "demo").exists()


def test_a_pipeline_that_is_neither_a_musiclm_nor_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pipeline must be a MusicLM, a pipeline folder"):
        demo.write_demo(tmp_path, prompts=TWO, pipeline=42, progress=False)
    with pytest.raises(pipeline.PipelineError, match="no pipeline folder"):
        demo.write_demo(tmp_path, prompts=TWO, pipeline=tmp_path / "missing", progress=False)


def test_every_demo_prompt_says_what_its_reference_plays(shipped):
    assert 6 <= len(demo.DEMO_PROMPTS) <= 8
    assert len({choices["lead"] for _, choices in demo.DEMO_PROMPTS}) >= 6
    assert {choices["mood"] for _, choices in demo.DEMO_PROMPTS} == set(synth.MOODS)
    pipeline.check_prompts([text for text, _ in demo.DEMO_PROMPTS], shipped.mulan)        # MuLan reads them all
    for text, choices in demo.DEMO_PROMPTS:
        attrs = synth.sample_attributes(np.random.default_rng(0), **choices)
        read = demo.choices_from_text(text)
        assert (read["lead"], read["mood"]) == (attrs.lead, attrs.mood), text
        if "tempo_bpm" in read:
            assert synth.tempo_category(read["tempo_bpm"]) == attrs.tempo_category, text
        if "mode" in read:
            assert read["mode"] == attrs.mode, text


def test_choices_are_read_from_the_words_of_a_free_prompt():
    assert demo.choices_from_text("A soothing VIOLIN tune, fast, in a minor key") == dict(
        lead="violin", mood="calming", tempo_bpm=sum(synth.TEMPO_RANGES["fast"]) // 2, mode="minor")
    assert demo.choices_from_text("a distorted guitar riff under a flute")["lead"] == "distorted electric guitar"
    assert demo.choices_from_text("a marimba for breakfast") == {"lead": "marimba"}   # 'fast' is not a word here
    assert demo.choices_from_text("a jazz saxophone solo") is None
