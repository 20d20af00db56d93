"""MuLan: the caption tokenizer, both towers, symmetric InfoNCE against a hand computation, retrieval and
zero-shot tagging on constructed cases, and clear errors for bad input."""

import dataclasses
import math

import pytest
import torch

from mlm_lessons import config, mulan
from mlm_lessons.audio import AudioError

CAPTIONS = [
    "a calming violin melody backed by a soft pad",
    "an energetic distorted electric guitar riff with drums",
    "a sad piano ballad in a minor key",
    "a happy flute tune over a bass line",
    "a mysterious organ drone with a slow marimba",
    "an aggressive synth lead over loud drums",
]


@pytest.fixture(scope="module")
def tokenizer():
    return mulan.CaptionTokenizer.train(CAPTIONS * 3, vocab_size=120)


def micro_model(tokenizer):
    tiny = config.get_preset("tiny")
    section = dataclasses.replace(tiny.mulan, audio_channels=(4, 8), text_d_model=16, text_layers=1, text_heads=2,
                                  max_text_len=24)
    torch.manual_seed(0)
    return mulan.MuLan(tokenizer, 16_000, tiny.features, section, embed_dim=8, token_levels=2,
                       token_codebook_size=4).eval()


def test_tokenizer_round_trips_and_splits_unknown_words(tokenizer):
    ids, real = tokenizer.encode(CAPTIONS[:2], max_len=32)
    assert ids.shape == real.shape and ids.dtype == torch.long and real.dtype == torch.bool
    assert tokenizer.decode(ids[0][real[0]].tolist()) == CAPTIONS[0]
    tokens = tokenizer.tokenize("A Calming VIOLIN harpsichord")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens[1] == "a"     # lower-cased
    assert "harpsichord" not in tokens and "[UNK]" not in tokens                  # an unseen word: known pieces
    ids, real = tokenizer.encode("A Calming VIOLIN harpsichord", 32)
    assert tokenizer.decode(ids[0].tolist()) == "a calming violin harpsichord"
    assert tokenizer.tokenize("a жж violin")[2] == "[UNK]"                        # only unseen characters are unknown
    again = mulan.CaptionTokenizer.from_str(tokenizer.to_str())
    torch.testing.assert_close(again.encode(CAPTIONS, 32)[0], tokenizer.encode(CAPTIONS, 32)[0])


def test_long_captions_are_truncated_and_said(tokenizer):
    long_caption = " ".join(CAPTIONS)
    with pytest.warns(UserWarning, match=r"1 caption\(s\) longer than 10 subword tokens were truncated"):
        ids, real = tokenizer.encode([long_caption, "a violin"], max_len=10)
    assert ids.shape == (2, 10) and ids[0, -1] == tokenizer.tokenizer.token_to_id("[SEP]")


def test_bad_captions_are_clear_errors(tokenizer):
    with pytest.raises(ValueError, match="empty caption"):
        tokenizer.encode(["a violin", "   "], 16)
    with pytest.raises(TypeError, match="a caption must be a str, got int"):
        tokenizer.encode([3], 16)
    with pytest.raises(ValueError, match="no captions"):
        tokenizer.encode([], 16)


def test_info_nce_matches_a_hand_computation():
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    scale = torch.tensor(math.log(2.0))                       # temperature 0.5
    loss, metrics = mulan.info_nce(audio, text, scale)
    logits = [[2 * 0.6, 0.0], [2 * 0.8, 2 * 1.0]]             # 2 * A @ T^T
    row = [-(logits[i][i] - math.log(sum(math.exp(v) for v in logits[i]))) for i in range(2)]
    column = [-(logits[i][i] - math.log(sum(math.exp(logits[j][i]) for j in range(2)))) for i in range(2)]
    assert loss.item() == pytest.approx((sum(row) / 2 + sum(column) / 2) / 2, rel=1e-5)
    assert metrics["temperature"].item() == pytest.approx(0.5)
    # Symmetric: swapping the roles of audio and text gives the same loss.
    assert mulan.info_nce(text, audio, scale)[0].item() == pytest.approx(loss.item(), rel=1e-6)
    # A colder temperature sharpens: perfectly matched pairs cost less.
    matched = torch.eye(3)
    assert mulan.info_nce(matched, matched, torch.tensor(math.log(20.0)))[0] < mulan.info_nce(
        matched, matched, torch.tensor(0.0))[0]
    with pytest.raises(ValueError, match="at least 2 pairs"):
        mulan.info_nce(audio[:1], text[:1], scale)


def test_towers_embed_to_unit_vectors_of_one_space(tokenizer):
    model = micro_model(tokenizer)
    audio = 0.1 * torch.randn(3, 16_000)
    audio_embeddings = model.embed_audio(audio)
    text_embeddings = model.embed_text(CAPTIONS[:3])
    assert audio_embeddings.shape == text_embeddings.shape == (3, 8)
    torch.testing.assert_close(audio_embeddings.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(model.embed_text(CAPTIONS[0]), text_embeddings[:1])
    # Padding does not change a caption's embedding: alone or batched with a longer one.
    torch.testing.assert_close(model.embed_text(["a violin", CAPTIONS[1]])[0], model.embed_text("a violin")[0])
    torch.testing.assert_close(model.embed_audio(audio[1])[0], audio_embeddings[1], atol=1e-5, rtol=1e-5)


def test_training_pulls_pairs_together(tokenizer):
    model = micro_model(tokenizer).train()
    generator = torch.Generator().manual_seed(0)
    time = torch.arange(8000) / 16_000
    audio = torch.stack([0.5 * torch.sin(2 * math.pi * (200 + 150 * i) * time) for i in range(6)])
    audio = audio + 0.01 * torch.randn(audio.shape, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, _ = model(audio, CAPTIONS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
    model.eval()
    similarity = model.embed_audio(audio) @ model.embed_text(CAPTIONS).T
    assert mulan.recall_at_k(similarity, 1) > 0.8


def test_recall_at_k_on_a_constructed_case():
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.1, 0.2, 0.3]])
    assert mulan.recall_at_k(similarity, 1) == pytest.approx(2 / 3)   # query 1 ranks its item second
    assert mulan.recall_at_k(similarity, 2) == 1.0
    assert mulan.recall_at_k(similarity, 1, targets=torch.tensor([0, 0, 2])) == 1.0
    with pytest.raises(ValueError, match="1 <= k <= gallery size"):
        mulan.recall_at_k(similarity, 4)


def test_zero_shot_picks_the_most_similar_prompt(tokenizer):
    model = micro_model(tokenizer)
    audio = 0.1 * torch.randn(2, 16_000)
    predictions, similarities = mulan.zero_shot_classify(model, audio, ["violin", "flute", "piano"])
    assert similarities.shape == (2, 3) and torch.equal(predictions, similarities.argmax(dim=1))
    prompts = model.embed_text(["a violin melody", "a flute melody", "a piano melody"])
    torch.testing.assert_close(similarities, model.embed_audio(audio) @ prompts.T)
    with pytest.raises(ValueError, match="template must contain"):
        mulan.zero_shot_classify(model, audio, ["violin"], template="violin")
    with pytest.raises(ValueError, match="no class names"):
        mulan.zero_shot_classify(model, audio, [])


def test_prompt_ensembling_averages_unit_prompts(tokenizer):
    model = micro_model(tokenizer)
    audio = 0.1 * torch.randn(3, 16_000)
    templates = ["a {} melody", "{}", "a song led by a {}"]
    _, similarities = mulan.zero_shot_classify(model, audio, ["violin", "flute"], templates)
    for column, name in enumerate(["violin", "flute"]):
        mean = torch.nn.functional.normalize(model.embed_text([t.format(name) for t in templates]).mean(dim=0), dim=0)
        torch.testing.assert_close(similarities[:, column], model.embed_audio(audio) @ mean)
    with pytest.raises(ValueError, match="template must contain"):
        mulan.zero_shot_classify(model, audio, ["violin"], template=["a {} tune", "no slot"])


def test_tag_texts_are_short_true_and_reproducible():
    from mlm_lessons import captions, synth
    import numpy as np

    attributes = synth.sample_attributes(np.random.default_rng(3))
    texts = mulan.tag_texts(attributes, 20, seed=5)
    assert texts == mulan.tag_texts(attributes, 20, seed=5) and len(set(texts)) > 5
    allowed = set(captions.aspects(attributes)) - {"instrumental", "no voice"}
    lead = captions.LEAD_NAMES[attributes.lead][0]
    for text in texts:
        tags = text.split(", ")
        assert 1 <= len(tags) <= 4 and len(set(tags)) == len(tags) and set(tags) <= allowed and lead in tags
    assert any(len(text.split(", ")) == 1 for text in texts) and any(not text.startswith(lead) for text in texts)


def test_the_frequency_axis_reaches_the_projection(tokenizer):
    tower = mulan.AudioTower((4, 8, 8), out_dim=5, n_mels=37)       # 37 -> 19 -> 10 -> 5 bands
    assert tower.projection.in_features == 8 * 5
    mel = torch.rand(2, 37, 40)
    assert tower(mel).shape == (2, 5)
    flipped = tower(mel.flip(1))            # the same energy, upside down in frequency: another embedding
    assert not torch.allclose(flipped, tower(mel), atol=1e-3)


def test_embedding_in_chunks_changes_nothing(tokenizer):
    model = micro_model(tokenizer)
    audio = 0.1 * torch.randn(5, 16_000, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model.embed_audio(audio, chunk=2), model.embed_audio(audio, chunk=64))


def test_bad_audio_is_a_clear_error(tokenizer):
    model = micro_model(tokenizer)
    with pytest.raises(AudioError, match=r"reads 16000 Hz.*resample"):
        model.embed_audio(torch.zeros(24_000), sample_rate=24_000)
    with pytest.raises(AudioError, match="too short for one spectrogram frame"):
        model.embed_audio(torch.zeros(100))
    with pytest.raises(AudioError, match="1 NaN or infinite"):
        model.embed_audio(torch.zeros(16_000).index_fill(0, torch.tensor([5]), float("nan")))
    with pytest.raises(AudioError, match="to_mono"):
        model.embed_audio(torch.zeros(1, 2, 16_000))
    with pytest.raises(ValueError, match="2 captions for 3 clips"):
        model(torch.zeros(3, 16_000), CAPTIONS[:2])


def test_two_ddp_processes_train_like_one_on_the_global_batch(tmp_path):
    """The loss gathers both ranks' embeddings (with gradients): each rank sees every negative of the global
    batch, so 2 processes with 4 pairs each follow 1 process with all 8."""
    from _ddp_mulan_worker import CAPTIONS as PAIRS, small_model, train
    from _torchrun import run_on_two_cpu_processes

    (tmp_path / "tokenizer.json").write_text(mulan.CaptionTokenizer.train(PAIRS, vocab_size=80).to_str())
    run_on_two_cpu_processes("_ddp_mulan_worker.py", str(tmp_path))
    single = train(small_model(str(tmp_path / "tokenizer.json")))
    # Two ranks add each gradient up in another order than one process does, and three SGD steps at lr 0.1 carry
    # that rounding into the weights: typically 5e-7 to 2e-6 (any kernel, 24 tokenizer seeds), and once, in a full
    # run with plain kernels and one thread, past 1e-5. A rank that missed the other's negatives would be off by
    # far more than this tolerance (its first loss alone differs in the first digit).
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(torch.tensor(result["loss"]), torch.tensor(single["loss"]), rtol=1e-4, atol=1e-5)
        for name, value in single["state"].items():
            torch.testing.assert_close(result["state"][name], value, rtol=1e-3, atol=1e-4,
                                       msg=lambda default, name=name: f"{name}: {default}")


def test_mulan_tokens_come_from_one_codebook_for_audio_and_text(tokenizer):
    model = micro_model(tokenizer)
    audio = 0.1 * torch.randn(6, 16_000, generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError, match="not fitted yet"):
        model.audio_tokens(audio)
    model.fit_token_quantizer(model.embed_audio(audio))
    audio_tokens, text_tokens = model.audio_tokens(audio), model.text_tokens(CAPTIONS)
    levels, codes = model.token_levels, model.token_codebook_size
    assert audio_tokens.shape == text_tokens.shape == (6, levels) and audio_tokens.dtype == torch.long
    assert 0 <= int(torch.cat([audio_tokens, text_tokens]).min()) and int(torch.cat([audio_tokens, text_tokens]).max()) < codes
    # Decoding the tokens comes closer to the embedding than the first level alone (residual levels refine).
    quantizer = model.token_quantizer
    full = quantizer.decode(text_tokens[:, :, None])[:, 0]
    first = quantizer.decode(text_tokens[:, :1, None])[:, 0]
    target = model.embed_text(CAPTIONS)
    assert (full - target).pow(2).sum() <= (first - target).pow(2).sum()
    # Every code a caption gets is one that the fitted clips use at that level (the stages have seen it).
    fitted_codes = set(audio_tokens[:, 0].tolist())
    assert set(text_tokens[:, 0].tolist()) <= fitted_codes
    with pytest.raises(ValueError, match=r"need \(n, 8\) audio embeddings"):
        model.fit_token_quantizer(torch.zeros(4, 5))


def test_save_and_load_keep_the_tokenizer_and_the_tokens(tokenizer, tmp_path):
    model = micro_model(tokenizer)
    audio = 0.1 * torch.randn(6, 16_000, generator=torch.Generator().manual_seed(2))
    model.fit_token_quantizer(model.embed_audio(audio))
    loaded = mulan.MuLan.load(model.save(tmp_path / "mulan.pt"))
    assert loaded.tokenizer.to_str() == tokenizer.to_str() and loaded.config == model.config
    torch.testing.assert_close(loaded.embed_text(CAPTIONS), model.embed_text(CAPTIONS), atol=5e-3, rtol=0)
    assert (loaded.text_tokens(CAPTIONS)[:, 0] == model.text_tokens(CAPTIONS)[:, 0]).float().mean() >= 0.8
    with pytest.raises(FileNotFoundError, match="no MuLan checkpoint"):
        mulan.MuLan.load(tmp_path / "missing.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a MuLan file"):
        mulan.MuLan.load(tmp_path / "other.pt")


def test_train_mulan_on_synthcaps_pairs_resumes_with_its_tokenizer(tmp_path):
    from mlm_lessons import datasets

    data = tmp_path / "data"
    datasets.write_synthcaps(data, preset="tiny", num_clips=6, clip_seconds=1.0, progress=False)
    records = datasets.read_synthcaps_manifest(data)
    clips = [datasets.audio.load_audio(record.path)[0] for record in records]
    options = [mulan.paraphrases(record.attributes, 3, seed=index) for index, record in enumerate(records)]
    assert all(len(set(texts)) > 1 for texts in options)                      # different wordings...
    again = mulan.paraphrases(records[0].attributes, 3, seed=0)
    assert again == options[0]                                                 # ...by seed
    tiny = config.get_preset("tiny")
    small = dataclasses.replace(tiny, mulan=dataclasses.replace(tiny.mulan, audio_channels=(4, 8), text_d_model=16,
                                                                text_layers=1, crop_seconds=0.5, batch_size=4,
                                                                vocab_size=150, max_text_len=160, warmup_steps=0))
    model, history = mulan.train_mulan(small, clips, options, tmp_path / "run", steps=2, progress=False)
    assert history[-1]["step"] == 2 and math.isfinite(history[-1]["loss"])
    assert (tmp_path / "run" / "tokenizer.json").exists()
    resumed, history = mulan.train_mulan(small, clips, options, tmp_path / "run", steps=3, progress=False)
    assert history[-1]["step"] == 3 and resumed.tokenizer.to_str() == model.tokenizer.to_str()
    with pytest.raises(ValueError, match="one list of captions per clip"):
        mulan.CaptionedCrops(clips, options[:2], 8000)
