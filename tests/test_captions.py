"""Captions and aspect lists: MusicCaps vocabulary, variety, and never a false statement."""

import ast
import collections
import csv

import numpy as np
import pytest

from mlm_lessons import captions, datasets, synth

# Words that would mean an instrument is playing. A caption may only contain the
# words of instruments that are.
INSTRUMENT_WORDS = {
    "violin": ("violin",), "flute": ("flute",), "piano": ("piano",), "acoustic guitar": ("acoustic",),
    "distorted electric guitar": ("distorted", "overdriven", "electric guitar"), "organ": ("organ",),
    "trumpet": ("trumpet",), "marimba": ("marimba",), "synth lead": ("synth lead", "synthesizer"),
    "clarinet": ("clarinet",), "pad": ("pad",), "bass": ("bass",), "drums": ("drum", "kick", "snare"),
}
REQUIRED = "a calming violin melody backed by a distorted guitar riff"


def many_attributes(count: int = 300):
    rng = np.random.default_rng(0)
    return [synth.sample_attributes(rng) for _ in range(count)]


@pytest.fixture(scope="module")
def captioned():
    rng = np.random.default_rng(1)
    return [(attrs, captions.caption(attrs, rng).lower()) for attrs in many_attributes()]


def test_the_course_example_phrase_can_be_produced():
    attrs = synth.sample_attributes(np.random.default_rng(0), lead="violin", mood="calming", backing=("riff",),
                                    backing_instrument="distorted electric guitar")
    texts = [captions.caption(attrs, np.random.default_rng(seed)) for seed in range(200)]
    assert any(text.startswith(REQUIRED[0].upper() + REQUIRED[1:]) for text in texts)
    assert all("violin" in text for text in texts)


def test_every_caption_names_the_lead_instrument(captioned):
    for attrs, text in captioned:
        assert any(name in text for name in captions.LEAD_NAMES[attrs.lead]), (attrs.lead, text)


def test_captions_mention_no_instrument_that_is_not_playing(captioned):
    for attrs, text in captioned:
        playing = set(attrs.instruments())
        for instrument, words in INSTRUMENT_WORDS.items():
            if instrument not in playing:
                assert not any(word in text for word in words), (instrument, attrs, text)


def test_tempo_words_match_the_bpm(captioned):
    for attrs, text in captioned:
        for category, markers in captions.TEMPO_MARKERS.items():
            if category != attrs.tempo_category:
                assert not any(marker in text for marker in markers), (attrs.tempo_bpm, text)


def test_major_and_minor_words_match_the_mode(captioned):
    for attrs, text in captioned:
        wrong = "minor" if attrs.mode in ("major", "mixolydian") else "major"
        assert wrong not in text, (attrs.mode, text)


def test_mood_words_match_the_mood(captioned):
    for attrs, text in captioned:
        for mood, words in captions.MOOD_WORDS.items():
            if mood != attrs.mood:
                assert not any(f" {word} " in f" {text} " for word in words), (attrs.mood, text)


def test_captions_vary_with_the_seed_and_repeat_with_it():
    attrs = many_attributes(1)[0]
    texts = {captions.caption(attrs, np.random.default_rng(seed)) for seed in range(20)}
    assert len(texts) >= 10
    assert captions.caption(attrs, np.random.default_rng(5)) == captions.caption(attrs, np.random.default_rng(5))


def test_captions_are_sentences():
    rng = np.random.default_rng(2)
    for attrs in many_attributes(50):
        text = captions.caption(attrs, rng)
        assert text[0].isupper() and text.endswith(".")
        assert "  " not in text and " a a" not in text and "a an " not in text
        assert " a e" not in text and " a o" not in text     # "an energetic", "an organ"


def test_aspects_state_each_fact_once():
    attrs = synth.SynthAttributes("violin", ("riff",), "distorted electric guitar", 70, "D", "major", "mid",
                                  "soft", "calming")
    assert captions.aspects(attrs) == ["violin", "distorted guitar riff", "no percussion", "slow tempo",
                                       "calming", "major key", "soft", "instrumental", "no voice"]
    for attrs in many_attributes(100):
        tags = captions.aspects(attrs)
        assert len(tags) == len(set(tags))
        assert captions.TEMPO_ASPECTS[attrs.tempo_category] in tags
        assert ("drums" in tags) == ("drums" in attrs.backing)
        assert ("no percussion" in tags) == ("drums" not in attrs.backing)


def test_aspect_vocabulary_is_musiccaps_vocabulary():
    """Tempo, mood, lead-instrument and voice tags are ones MusicCaps' annotators used."""
    csv_path = datasets.find_musiccaps_csv()
    if csv_path is None:
        pytest.skip("MusicCaps CSV not found (set MUSICCAPS_CSV or put it at ../shared/data/)")
    vocabulary = collections.Counter()
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            vocabulary.update(ast.literal_eval(row["aspect_list"]))
    ours = (list(captions.TEMPO_ASPECTS.values()) + [words[0] for words in captions.MOOD_WORDS.values()]
            + [names[0] for names in captions.LEAD_NAMES.values()] + ["instrumental", "no voice", "no percussion"])
    missing = [tag for tag in ours if vocabulary[tag] == 0]
    assert not missing, f"not MusicCaps aspects: {missing}"
