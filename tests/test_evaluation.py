"""Judging generated music: the attribute classifier, the scores, memorisation and the whole table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlm_lessons import config, evaluation, pipeline, synth
from mlm_lessons.datasets import default_data_root

TINY = config.get_preset("tiny")
SHIPPED_CLASSIFIER = default_data_root() / "checkpoints" / "attributes-tiny.pt"


def render(attributes, seconds=1.0, seed=0):
    return torch.stack([torch.as_tensor(synth.render(a, seconds=seconds, sample_rate=16_000, seed=seed + index))
                        for index, a in enumerate(attributes)]).float()


def some_attributes(n, seed=0, **fixed):
    rng = np.random.default_rng(seed)
    return [synth.sample_attributes(rng, **fixed) for _ in range(n)]


def test_attribute_targets_index_the_named_classes():
    attributes = some_attributes(12)
    targets = evaluation.attribute_targets(attributes)
    for index, a in enumerate(attributes):
        assert evaluation.ATTRIBUTES["instrument"][targets["instrument"][index]] == a.lead
        assert evaluation.ATTRIBUTES["mood"][targets["mood"][index]] == a.mood
        assert evaluation.ATTRIBUTES["tempo"][targets["tempo"][index]] == synth.tempo_category(a.tempo_bpm)


def test_the_classifier_reads_any_length_and_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = evaluation.AttributeClassifier(16_000, TINY.features).eval()
    for samples in (16_000, 40_000):
        probabilities = model.probabilities(torch.randn(3, samples) * 0.1)
        assert {name: p.shape for name, p in probabilities.items()} == {
            name: (3, len(classes)) for name, classes in evaluation.ATTRIBUTES.items()}
        assert all(torch.allclose(p.sum(-1), torch.ones(3)) for p in probabilities.values())
    clips = torch.randn(2, 16_000) * 0.1
    loaded = evaluation.AttributeClassifier.load(model.save(tmp_path / "classifier.pt"))
    for name, p in model.probabilities(clips).items():                      # float16 storage: close, not equal
        torch.testing.assert_close(loaded.probabilities(clips)[name], p, atol=2e-3, rtol=0)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a attribute classifier file"):
        evaluation.AttributeClassifier.load(tmp_path / "other.pt")


def test_training_learns_instruments_it_is_shown():
    leads = ("violin", "organ", "marimba")
    attributes = [a for lead in leads for a in some_attributes(4, seed=len(lead), lead=lead, backing=())]
    clips = render(attributes, seconds=0.75)
    model, _ = evaluation.train_attribute_classifier(list(clips), attributes, 16_000, TINY.features, steps=40,
                                                  crop_seconds=0.5, progress=False)
    predicted = model.probabilities(clips)["instrument"].argmax(-1)
    truth = evaluation.attribute_targets(attributes)["instrument"]
    assert (predicted == truth).float().mean() >= 0.8, "it learns the instruments of its training clips"
    with pytest.raises(ValueError, match="one attribute set per clip"):
        evaluation.train_attribute_classifier(list(clips[:2]), attributes, 16_000, TINY.features, steps=1)


def test_longest_shared_runs_equal_brute_force():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randint(0, 3, (6, 12), generator=generator)
    corpus = torch.randint(0, 3, (4, 10), generator=generator)
    corpus[2, 1:8] = queries[4, 3:10]                                         # a planted run of 7

    def brute(query):
        strings = [tuple(row.tolist()) for row in corpus]
        best = 0
        for start in range(len(query)):
            for end in range(start + 1, len(query) + 1):
                piece = tuple(query[start:end].tolist())
                if any(piece == row[i:i + len(piece)] for row in strings for i in range(len(row))):
                    best = max(best, end - start)
        return best

    runs = evaluation.longest_shared_runs(queries, corpus)
    assert runs.tolist() == [brute(query) for query in queries]
    assert runs[4] >= 7
    with pytest.raises(ValueError, match="token grids"):
        evaluation.longest_shared_runs(queries[0], corpus)


def description(n, generator, dim=8):
    probabilities = {name: torch.softmax(torch.randn(n, len(classes), generator=generator), -1)
                     for name, classes in evaluation.ATTRIBUTES.items()}
    return evaluation.ClipDescription(torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=-1),
                                      torch.randn(n, dim, generator=generator),
                                      torch.randint(0, 50, (n, 20), generator=generator), probabilities)


def test_a_training_clip_is_its_own_nearest_neighbour_and_shares_its_whole_run():
    generator = torch.Generator().manual_seed(1)
    training = description(30, generator)
    found = evaluation.memorisation(training.select(torch.tensor([3, 17])), training)
    assert found["nearest"].tolist() == [3, 17]
    torch.testing.assert_close(found["nearest similarity"], torch.ones(2))
    assert found["shared run"].tolist() == [20, 20]


def test_scores_of_the_reference_itself_and_of_mismatched_inputs():
    generator = torch.Generator().manual_seed(2)
    reference, background = description(40, generator), description(40, generator)
    targets = {name: p.argmax(-1) for name, p in reference.probabilities.items()}
    row = evaluation.score(reference, reference.mulan, targets, reference, background)
    assert row["KLD"] == pytest.approx(0, abs=1e-6) and row["MCC"] == pytest.approx(1)
    assert all(row[f"{name} accuracy"] == 1 for name in evaluation.ATTRIBUTES)
    shuffled = evaluation._derangement(40, generator)
    assert (shuffled != torch.arange(40)).all() and sorted(shuffled.tolist()) == list(range(40))
    worse = evaluation.score(reference.select(shuffled), reference.mulan, targets, reference, background)
    assert worse["KLD"] > 0.1 and worse["MCC"] < 0.5
    assert worse["FAD MuLan"] == pytest.approx(row["FAD MuLan"]), "FAD never looks at the prompts"
    with pytest.raises(ValueError, match="one prompt, target and reference per clip"):
        evaluation.score(reference.select(torch.arange(5)), reference.mulan, targets, reference, background)


@pytest.mark.skipif(not SHIPPED_CLASSIFIER.exists(), reason=f"no shipped classifier at {SHIPPED_CLASSIFIER}")
def test_the_whole_table_for_the_shipped_pipeline():
    torch.set_num_threads(1)
    musiclm = pipeline.shipped_pipeline()
    judges = evaluation.Judges(musiclm.mulan, musiclm.semantic_tokenizer,
                               evaluation.AttributeClassifier.load(SHIPPED_CLASSIFIER))
    attributes = some_attributes(6, seed=5)
    prompts = [f"a {a.mood} {a.lead} melody" for a in attributes]
    reference, background = render(attributes, seed=100), render(some_attributes(6, seed=6), seed=200)
    training = render(some_attributes(8, seed=7), seed=300)
    result = evaluation.evaluate_pipeline(musiclm, judges, prompts, attributes, reference, background, training,
                                          progress=False)
    assert list(result.rows) == list(evaluation.ROWS)
    assert result.generated.shape == reference.shape
    assert result.rows["real clips"]["KLD"] == pytest.approx(0, abs=1e-6)
    shuffled = result.rows["generated, prompts shuffled"]
    assert result.rows["generated"]["FAD MuLan"] == pytest.approx(shuffled["FAD MuLan"]), "FAD is blind to prompts"
    assert result.memorisation["generated"]["shared run"].shape == (6,)
    assert "| generated |" in result.table() and "held-out real clips" in result.memorisation_summary(25)
