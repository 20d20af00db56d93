"""w2v-BERT: Conformer shapes and causality, the masking and distractors, both losses against hand-computed
values, a model that learns, embeddings of any layer, files, and clear errors for bad input."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from mlm_lessons import config, w2v_bert
from mlm_lessons.audio import AudioError
from mlm_lessons.train import CheckpointMismatchError, save_atomically

SAMPLE_RATE = 16_000
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "w2v-bert-tiny.pt"


def micro_config(**changes) -> config.Config:
    """The tiny preset's rates with a w2v-BERT small enough to train in a second."""
    tiny = config.get_preset("tiny")
    section = dataclasses.replace(tiny.w2v_bert, n_mels=16, conv_channels=4, d_model=16, n_heads=2, conv_kernel=3,
                                  contrastive_layers=1, mlm_layers=1, target_codebook_size=16,
                                  num_distractors=5, token_layer=2, crop_seconds=0.4, batch_size=4,
                                  warmup_steps=0, **changes)
    return dataclasses.replace(tiny, w2v_bert=section)


def tones(count=4, seconds=0.4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    frequencies = 200 + 600 * torch.rand(count, 1, generator=generator)
    return 0.5 * torch.sin(2 * math.pi * frequencies * time)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return w2v_bert.W2VBert.from_config(micro_config()).eval()


# ----------------------------------------------------------------------------------------------------
# Conformer


@pytest.mark.parametrize("causal", [False, True])
def test_conformer_block_keeps_shape(causal):
    block = w2v_bert.ConformerBlock(d_model=16, n_heads=2, conv_kernel=5, causal=causal)
    x = torch.randn(3, 11, 16)
    assert block(x).shape == (3, 11, 16)


def test_causal_conformer_never_looks_ahead_and_the_bidirectional_one_does():
    torch.manual_seed(0)
    causal = w2v_bert.ConformerBlock(16, 2, conv_kernel=5, causal=True).eval()
    bidirectional = w2v_bert.ConformerBlock(16, 2, conv_kernel=5, causal=False).eval()
    x = torch.randn(1, 12, 16)
    changed = x.clone()
    changed[:, 8:] += torch.randn(1, 4, 16)
    torch.testing.assert_close(causal(changed)[:, :8], causal(x)[:, :8])
    assert not torch.allclose(bidirectional(changed)[:, :8], bidirectional(x)[:, :8])
    # ...while the bidirectional block's convolution sees exactly (kernel - 1) / 2 = 2 frames ahead.
    convolution = bidirectional.convolution
    y, y_changed = convolution(x), convolution(changed)
    torch.testing.assert_close(y_changed[:, :6], y[:, :6])
    assert not torch.allclose(y_changed[:, 6], y[:, 6])


def test_an_even_kernel_cannot_be_centred():
    with pytest.raises(ValueError, match="conv_kernel must be odd"):
        w2v_bert.ConvolutionModule(16, 4, dropout=0.0)
    w2v_bert.ConvolutionModule(16, 4, dropout=0.0, causal=True)   # causal padding does not need symmetry


# ----------------------------------------------------------------------------------------------------
# Masking and distractors


def runs_of_true(row):
    runs, length = [], 0
    for value in row.tolist() + [False]:
        if value:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def test_span_mask_hides_whole_spans_at_the_expected_rate():
    generator = torch.Generator().manual_seed(0)
    mask = w2v_bert.span_mask(2000, 100, mask_prob=0.065, span=10, generator=generator)
    assert mask.shape == (2000, 100) and mask.dtype == torch.bool
    assert all(mask.any(dim=1))                                             # something to predict everywhere
    assert min(min(runs_of_true(row)) for row in mask[:200]) >= 10         # spans are whole
    # Away from the edges a frame is hidden unless none of the 10 frames before it started a span.
    expected = 1 - (1 - 0.065) ** 10
    assert abs(mask[:, 20:80].float().mean().item() - expected) < 0.01
    again = w2v_bert.span_mask(2000, 100, 0.065, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_span_mask_edge_cases():
    assert w2v_bert.span_mask(3, 4, mask_prob=0.0, span=10).all()          # shorter than a span: all hidden
    once = w2v_bert.span_mask(50, 30, mask_prob=0.0, span=5)                # no starts: exactly one forced span
    assert (once.sum(dim=1) == 5).all()
    with pytest.raises(ValueError, match="mask_prob"):
        w2v_bert.span_mask(1, 10, mask_prob=1.5, span=2)


def test_distractors_come_from_other_masked_frames_of_the_same_example():
    generator = torch.Generator().manual_seed(0)
    mask = w2v_bert.span_mask(6, 40, 0.065, 4, generator=generator)
    picks = w2v_bert.sample_distractors(mask, 30, generator=generator)
    example = mask.nonzero()[:, 0]
    assert picks.shape == (int(mask.sum()), 30)
    rows = torch.arange(len(example))[:, None]
    assert not (picks == rows).any()                                         # never the target itself
    assert (example[picks] == example[:, None]).all()                       # never another clip's frame
    # Uniform over the others: in a 2-frame example each target's distractors are all the other frame.
    pair = torch.zeros(1, 10, dtype=torch.bool)
    pair[0, 3:5] = True
    torch.testing.assert_close(w2v_bert.sample_distractors(pair, 4), torch.tensor([[1] * 4, [0] * 4]))
    single = torch.zeros(1, 10, dtype=torch.bool)
    single[0, 2] = True
    with pytest.raises(ValueError, match="single masked frame"):
        w2v_bert.sample_distractors(single, 4)


# ----------------------------------------------------------------------------------------------------
# The two losses, by hand


def test_contrastive_loss_matches_a_hand_computation():
    context = torch.tensor([[2.0, 0.0]])                   # cosine ignores length
    positive = torch.tensor([[1.0, 0.0]])                  # cos = 1
    negatives = torch.tensor([[[0.0, 3.0], [-1.0, 0.0]]])   # cos = 0 and -1
    loss, accuracy = w2v_bert.contrastive_loss(context, positive, negatives, temperature=0.5)
    # logits 1/0.5, 0/0.5, -1/0.5 = 2, 0, -2
    expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    assert loss.item() == pytest.approx(expected, rel=1e-5) and accuracy.item() == 1.0
    # A distractor equal to the positive (another frame with the same code) stays in: it ties.
    tied, _ = w2v_bert.contrastive_loss(context, positive, torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]]), 0.5)
    assert tied.item() == pytest.approx(-math.log(math.exp(2) / (2 * math.exp(2) + math.exp(-2))), rel=1e-5)
    # A context pointing at a negative is wrong, and costs more.
    wrong, accuracy = w2v_bert.contrastive_loss(torch.tensor([[0.0, 1.0]]), positive, negatives, 0.5)
    assert accuracy.item() == 0.0 and wrong.item() == pytest.approx(-math.log(1 / (1 + math.exp(2) + 1)), rel=1e-5)


def test_masked_prediction_loss_counts_masked_frames_only():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 50.0, 0.0]]])
    targets = torch.tensor([[0, 2, 0]])
    mask = torch.tensor([[True, True, False]])              # frame 2 is wrong, but not masked
    loss, accuracy = w2v_bert.masked_prediction_loss(logits, targets, mask)
    frame0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    frame1 = -math.log(1 / 3)
    assert loss.item() == pytest.approx((frame0 + frame1) / 2, rel=1e-5)
    assert accuracy.item() == 0.5      # frame 0 right; frame 1 a three-way tie, argmax picks code 0


# ----------------------------------------------------------------------------------------------------
# The model


def test_forward_sums_both_losses_and_reaches_every_part(model):
    model.train()
    torch.manual_seed(1)
    output = model(tones(seconds=1.0))
    model.eval()
    torch.testing.assert_close(output.loss, output.contrastive_loss + output.mlm_loss)
    assert output.mask.shape == output.target_codes.shape == (4, 25)        # 1 s at 25 Hz
    output.loss.backward()
    for name, parameter in model.named_parameters():
        if name != "quantizer.codebook":
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.zero_grad()


def patterns(count=8, seconds=0.8, seed=0):
    """Each clip alternates two tones of its own, one 40 ms frame each (A B A B ...): a masked frame can be
    told from its neighbours, as a hidden note of a repeated motif can in music."""
    generator = torch.Generator().manual_seed(seed)
    frame, frames = 640, int(seconds * SAMPLE_RATE) // 640
    pair = 200 * 2 ** (torch.randint(0, 24, (count, 2), generator=generator) / 12)
    frequency = pair[:, torch.arange(frames) % 2].repeat_interleave(frame, dim=1)
    return 0.5 * torch.sin(2 * math.pi * torch.cumsum(frequency / SAMPLE_RATE, dim=1))


def test_training_lowers_both_losses_on_a_fixed_batch():
    torch.manual_seed(0)
    model = w2v_bert.W2VBert.from_config(micro_config(mask_span=2, mask_prob=0.2))
    audio = patterns()
    mask = w2v_bert.span_mask(8, 20, 0.2, 2, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(100):
        output = model(audio, mask=mask)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        history.append((output.contrastive_loss.item(), output.mlm_loss.item()))
    first, last = history[0], [sum(values) / 5 for values in zip(*history[-5:])]
    assert last[0] < 0.9 * first[0] and last[1] < 0.5 * first[1]


def test_embeddings_of_every_layer(model):
    audio = tones(2, seconds=1.0)
    states = model.hidden_states(audio)
    assert len(states) == model.num_layers + 1 == 3
    assert all(state.shape == (2, 25, 16) for state in states)
    torch.testing.assert_close(model.embeddings(audio, 0), model.features(audio))
    torch.testing.assert_close(model.embeddings(audio, -1), states[-1])
    torch.testing.assert_close(model.embeddings(audio), states[model.config.token_layer])
    # A clip's embeddings do not depend on its batch mates (no batch statistics anywhere).
    torch.testing.assert_close(model.embeddings(audio[1:], 1), states[1][1:])
    # Samples after the last whole frame are ignored; one frame is 4 mel hops of 160 samples.
    assert model.samples_per_frame == 640
    assert model.embeddings(torch.zeros(640 * 3 + 639)).shape == (1, 3, 16)


def test_bad_input_is_a_clear_error(model):
    with pytest.raises(AudioError, match=r"reads 16000 Hz.*resample\(audio, 24000, 16000\)"):
        model.embeddings(torch.zeros(24_000), sample_rate=24_000)
    with pytest.raises(AudioError, match=r"shorter than one frame \(640 samples, 40 ms"):
        model.embeddings(torch.zeros(639))
    with pytest.raises(AudioError, match="at least 2 frames"):
        model(torch.zeros(2, 640))
    with pytest.raises(AudioError, match=r"shaped \(samples,\) or \(batch, samples\)"):
        model.embeddings(torch.zeros(1, 2, 16_000))
    with pytest.raises(AudioError, match="NaN"):
        model.embeddings(torch.full((16_000,), float("nan")))
    with pytest.raises(ValueError, match=r"layer must be an int from 0 .* to 2"):
        model.embeddings(torch.zeros(16_000), layer=3)
    with pytest.raises(ValueError, match="mask must be bool"):
        model(torch.zeros(2, 6400), mask=torch.ones(2, 9, dtype=torch.bool))


def test_inconsistent_settings_are_refused():
    with pytest.raises(ValueError, match="whole number of mel hops"):
        w2v_bert.W2VBert(16_000, 30, micro_config().w2v_bert)
    with pytest.raises(ValueError, match="token_layer=5 is not a layer"):
        w2v_bert.W2VBert(16_000, 25, dataclasses.replace(micro_config().w2v_bert, token_layer=5))
    with pytest.raises(ValueError, match="heads of even size"):
        w2v_bert.W2VBert(16_000, 25, dataclasses.replace(micro_config().w2v_bert, n_heads=16))


def test_a_bf16_training_step_on_cpu_keeps_float32_codebooks():
    torch.manual_seed(0)
    model = w2v_bert.W2VBert.from_config(micro_config())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(tones())
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.quantizer.codebook.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ----------------------------------------------------------------------------------------------------
# Files and training


def test_save_and_load_round_trip(model, tmp_path):
    path = model.save(tmp_path / "encoder.pt")
    loaded = w2v_bert.W2VBert.load(path)
    audio = tones(2, seconds=1.0)
    torch.testing.assert_close(loaded.embeddings(audio, 2), model.embeddings(audio, 2), atol=2e-2, rtol=0)
    assert loaded.config == model.config and not loaded.training
    payload = torch.load(path, weights_only=True)
    payload["config"]["w2v_bert"]["wings"] = 2
    save_atomically(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointMismatchError, match=r"field\(s\) \['wings'\]"):
        w2v_bert.W2VBert.load(tmp_path / "future.pt")
    with pytest.raises(FileNotFoundError, match="no w2v-BERT checkpoint"):
        w2v_bert.W2VBert.load(tmp_path / "missing.pt")


def test_train_resumes_and_its_checkpoint_loads(tmp_path):
    clips = list(tones(4, seconds=1.0))
    model, history = w2v_bert.train_w2v_bert(micro_config(), clips, tmp_path, steps=2, progress=False)
    assert history[-1]["step"] == 2 and math.isfinite(history[-1]["loss"])
    assert {"contrastive", "masked_prediction", "mlm_accuracy"} <= set(history[-1])
    resumed, history = w2v_bert.train_w2v_bert(micro_config(), clips, tmp_path, steps=3, progress=False)
    assert history[-1]["step"] == 3
    loaded = w2v_bert.W2VBert.load(tmp_path / "last.pt")
    torch.testing.assert_close(loaded.embeddings(clips[0]), resumed.embeddings(clips[0]))


def test_the_shipped_encoder_matches_the_tiny_preset():
    from mlm_lessons.tokenize import SemanticTokenizer

    tiny = config.get_preset("tiny")
    tokenizer = SemanticTokenizer.load(SHIPPED)
    assert tokenizer.encoder.config == tiny.w2v_bert
    assert tokenizer.num_clusters == tiny.tokens.semantic_clusters and tokenizer.frame_rate == 25
    assert tokenizer.layer == tiny.w2v_bert.token_layer
    assert SHIPPED.stat().st_size < 5e6
