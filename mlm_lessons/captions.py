"""MusicCaps-style captions and aspect lists for SynthCaps clips.

MusicCaps (Agostinelli et al., 2023) pairs each 10 s clip with two texts written
by musicians: a free-form *caption* ("A calming violin melody backed by ...") and
an *aspect list* of short tags ("slow tempo", "calming", "violin", "no voice").
We write both from a clip's :class:`~mlm_lessons.synth.SynthAttributes`:

* :func:`aspects` is deterministic -- one tag per fact, in MusicCaps' frequent
  vocabulary (tempo words, moods, instruments, "instrumental", "no voice").
* :func:`caption` varies: sentence templates, their order and synonyms are drawn
  from ``rng``, so the same music gets differently worded captions, as when
  different annotators describe it. Every caption names the lead instrument and
  says nothing the attributes contradict (no instrument that is not playing, the
  right tempo word, the right major/minor word).
"""

from __future__ import annotations

import numpy as np

from mlm_lessons.synth import SynthAttributes

#: Ways captions name each lead instrument (the first is also its aspect tag).
LEAD_NAMES: dict[str, tuple[str, ...]] = {
    "violin": ("violin",),
    "flute": ("flute",),
    "piano": ("piano",),
    "acoustic guitar": ("acoustic guitar",),
    "distorted electric guitar": ("distorted electric guitar", "distorted guitar", "overdriven electric guitar"),
    "organ": ("organ", "electric organ"),
    "trumpet": ("trumpet",),
    "marimba": ("marimba",),
    "synth lead": ("synth lead", "lead synthesizer"),
    "clarinet": ("clarinet",),
}
#: Aspect tag and caption phrases for the riff, per riff instrument.
RIFF_ASPECTS: dict[str, str] = {
    "distorted electric guitar": "distorted guitar riff", "acoustic guitar": "acoustic guitar strumming",
    "piano": "piano arpeggio", "organ": "organ riff", "marimba": "marimba arpeggio",
}
RIFF_PHRASES: dict[str, tuple[str, ...]] = {
    "distorted electric guitar": ("a distorted guitar riff", "a heavy distorted guitar riff",
                                  "a chugging distorted electric guitar riff"),
    "acoustic guitar": ("a strummed acoustic guitar", "an acoustic guitar strumming chords",
                        "a rhythmic acoustic guitar riff"),
    "piano": ("piano arpeggios", "an arpeggiated piano", "a piano riff"),
    "organ": ("an organ riff", "an organ playing off-beat chords", "rhythmic organ chords"),
    "marimba": ("marimba arpeggios", "a bouncy marimba riff", "an arpeggiated marimba"),
}
#: Aspect tag and caption phrases for the other backing parts.
PART_ASPECTS: dict[str, str] = {"pad": "synth pad", "bass": "bass", "drums": "drums"}
PART_PHRASES: dict[str, tuple[str, ...]] = {
    "pad": ("a warm synth pad", "a soft pad holding the chords", "sustained synth pad chords"),
    "bass": ("a bass line", "a deep bass line", "a bass playing the root notes"),
    "drums": ("drums", "a steady drum beat", "electronic drums", "a punchy kick and snare beat"),
}
#: Mood synonyms; the first is the aspect tag.
MOOD_WORDS: dict[str, tuple[str, ...]] = {
    "calming": ("calming", "soothing", "relaxing", "peaceful"),
    "energetic": ("energetic", "upbeat", "lively", "spirited"),
    "sad": ("sad", "melancholic", "sorrowful", "mournful"),
    "happy": ("happy", "cheerful", "joyful", "uplifting"),
    "mysterious": ("mysterious", "eerie", "suspenseful", "enigmatic"),
    "aggressive": ("aggressive", "intense", "fierce", "powerful"),
}
#: Tempo aspect tags, and the words that mark each tempo category in captions: no
#: category's words appear in another's phrases, so a caption's tempo can be checked.
TEMPO_ASPECTS: dict[str, str] = {"slow": "slow tempo", "medium": "medium tempo", "fast": "fast tempo"}
TEMPO_MARKERS: dict[str, tuple[str, ...]] = {
    "slow": ("slow",), "medium": ("medium", "moderate", "mid-tempo"), "fast": ("fast", "uptempo"),
}
_TEMPO_SENTENCES = {
    "slow": ("the song is at a slow tempo", "it has a slow pace", "the tempo is slow"),
    "medium": ("the song is at a medium tempo", "it has a moderate tempo", "it is a mid-tempo piece"),
    "fast": ("the song is at a fast tempo", "it is an uptempo piece", "it has a fast pace"),
}
_TEMPO_ADJECTIVES = {"slow": ("slow", "slow-paced"), "medium": ("mid-tempo", "medium tempo"),
                     "fast": ("fast", "uptempo")}
_MODE_PHRASES = {
    "major": ("a major key", "{key} major"),
    "minor": ("a minor key", "{key} minor"),
    "dorian": ("{key} dorian, a minor mode with a raised sixth", "the dorian mode"),
    "mixolydian": ("{key} mixolydian, a major mode with a flat seventh", "the mixolydian mode"),
}
_MODE_ASPECTS = {"major": "major key", "minor": "minor key", "dorian": "dorian mode",
                 "mixolydian": "mixolydian mode"}
_SETTINGS = {
    "calming": ("in a spa", "during a yoga session", "in a quiet cafe"),
    "energetic": ("at a sports event", "in a workout video", "in a car commercial"),
    "sad": ("in a sad movie scene", "at a farewell", "in a drama at a rainy window"),
    "happy": ("in a commercial", "at a picnic", "in a children's show"),
    "mysterious": ("in a detective movie", "while exploring a cave in a video game", "in a thriller"),
    "aggressive": ("in an action movie", "during a video game boss fight", "at an extreme sports event"),
}
_REGISTER_SENTENCES = {
    "low": ("the {lead} plays in a low register", "the melody is low pitched"),
    "high": ("the {lead} plays in a high register", "the melody is high pitched"),
}


def aspects(attrs: SynthAttributes) -> list[str]:
    """The aspect list of a clip: one MusicCaps-style tag per fact, deterministic.

    Example: ``["violin", "distorted guitar riff", "no percussion", "slow tempo",
    "calming", "major key", "soft", "instrumental", "no voice"]``.
    """
    tags = [LEAD_NAMES[attrs.lead][0]]
    if attrs.backing_instrument is not None:
        tags.append(RIFF_ASPECTS[attrs.backing_instrument])
    tags += [PART_ASPECTS[part] for part in attrs.backing if part != "riff"]
    if not attrs.backing:
        tags.append("no other instruments")
    if "drums" not in attrs.backing:
        tags.append("no percussion")
    tags.append(TEMPO_ASPECTS[attrs.tempo_category])
    tags.append(MOOD_WORDS[attrs.mood][0])
    tags.append(_MODE_ASPECTS[attrs.mode])
    if attrs.loudness != "medium":
        tags.append(attrs.loudness)
    if attrs.register != "mid":
        tags.append(f"{attrs.register} pitched melody")
    tags += ["instrumental", "no voice"]
    return tags


def _article(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def caption(attrs: SynthAttributes, rng: np.random.Generator) -> str:
    """A free-form caption: a main sentence naming the lead, its mood and the backing,
    then two to four detail sentences (tempo, key, dynamics, drums, voice, setting).

    ``"A calming violin melody backed by a distorted guitar riff."`` is one possible
    main sentence, for ``lead="violin", mood="calming", backing=("riff",),
    backing_instrument="distorted electric guitar"``.
    """
    def pick(options):
        # The plain word (listed first) is twice as likely as each synonym, as in MusicCaps
        # where "calming" is commoner than "soothing".
        weights = np.ones(len(options))
        weights[0] = 2.0
        return options[int(rng.choice(len(options), p=weights / weights.sum()))]

    lead = pick(LEAD_NAMES[attrs.lead])
    mood = pick(MOOD_WORDS[attrs.mood])
    tempo_word = attrs.tempo_category
    backing = []
    if attrs.backing_instrument is not None:
        backing.append(pick(RIFF_PHRASES[attrs.backing_instrument]))
    backing += [pick(PART_PHRASES[part]) for part in attrs.backing if part != "riff"]
    rng.shuffle(backing)

    if backing:
        main = pick((
            f"{_article(mood)} {lead} melody backed by {_join(backing)}",
            f"this is {_article(mood)} instrumental piece featuring {_article(lead)} playing the melody "
            f"over {_join(backing)}",
            f"{_article(lead)} plays {_article(mood)} melody, accompanied by {_join(backing)}",
            f"{_article(lead)} carries this {mood} {pick(_TEMPO_ADJECTIVES[tempo_word])} tune, "
            f"with {_join(backing)} in the background",
        ))
    else:
        main = pick((
            f"{_article(mood)} {lead} melody played solo, with no other instruments",
            f"this is a solo {lead} piece with {_article(mood)} feel",
            f"{_article(lead)} plays {_article(mood)} melody on its own",
        ))

    details = [pick(_TEMPO_SENTENCES[tempo_word])]
    mode_phrase = pick(_MODE_PHRASES[attrs.mode]).format(key=attrs.key)
    details.append(pick((f"the melody is in {mode_phrase}", f"it is written in {mode_phrase}")))
    if attrs.loudness == "soft":
        details.append(pick(("it is played softly", "the music is quiet and gentle")))
    elif attrs.loudness == "loud":
        details.append(pick(("it is played loudly", "the sound is loud and full")))
    if attrs.register != "mid":
        details.append(pick(_REGISTER_SENTENCES[attrs.register]).format(lead=lead))
    if "drums" in attrs.backing:
        details.append("the drums keep a simple beat with the snare on two and four")
    else:
        details.append(pick(("there is no percussion", "there are no percussion instruments")))
    details.append(pick(("there are no vocals", "this is an instrumental song with no singer",
                         "there is no voice")))
    details.append(f"this song may be playing {pick(_SETTINGS[attrs.mood])}")
    # Two to four details, in varied order, as different annotators would pick.
    chosen = [details[i] for i in rng.permutation(len(details))[: int(rng.integers(2, 5))]]
    return " ".join(_sentence(text) for text in [main] + chosen)
