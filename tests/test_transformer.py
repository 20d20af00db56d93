"""The decoder-only LM and the encoder-decoder: causality, conditioning, the KV cache, sampling, errors."""

import dataclasses

import pytest
import torch

from mlm_lessons import config
from mlm_lessons.train import Trainer
from mlm_lessons.transformer import (
    Seq2SeqConfig,
    Seq2SeqTransformer,
    TransformerEncoder,
    TransformerLM,
    TransformerLMConfig,
    filter_logits,
    next_token_loss,
    sample_next_token,
)

VOCAB = 23


def small_lm(**overrides) -> TransformerLM:
    torch.manual_seed(0)
    values = dict(vocab_size=VOCAB, max_len=40, d_model=32, n_layers=2, n_heads=4)
    values.update(overrides)
    return TransformerLM(TransformerLMConfig(**values)).eval()


def tokens(batch=2, time=9, seed=0):
    return torch.randint(0, VOCAB, (batch, time), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("positions", ["rope", "sinusoidal", "none"])
def test_logits_never_depend_on_the_future(positions):
    model = small_lm(positions=positions)
    x = tokens()
    changed = x.clone()
    changed[:, 5] = (changed[:, 5] + 1) % VOCAB
    before, after = model(x), model(changed)
    assert before.shape == (2, 9, VOCAB)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_the_fused_and_written_out_attention_give_the_same_model():
    written = small_lm()
    fused = TransformerLM(written.config, use_sdpa=True).eval()
    fused.load_state_dict(written.state_dict())
    x = tokens()
    logits, maps = written(x, return_attention=True)
    torch.testing.assert_close(logits, fused(x))
    assert len(maps["self"]) == 2 and maps["self"][0].shape == (2, 4, 9, 9) and maps["cross"] == [None, None]


def conditioned_inputs(kind):
    """(model, extra forward kwargs) for each way of conditioning the LM."""
    generator = torch.Generator().manual_seed(1)
    if kind == "plain":
        return small_lm(), {}
    if kind == "prefix tokens":
        return small_lm(prefix_vocab_size=7), {"prefix": torch.randint(0, 7, (2, 3), generator=generator)}
    if kind == "prefix embeddings":
        return small_lm(), {"prefix": torch.randn(2, 4, 32, generator=generator)}
    memory_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    model = small_lm(cross_attention=True, memory_dim=12, positions="sinusoidal")
    return model, {"memory": torch.randn(2, 6, 12, generator=generator), "memory_mask": memory_mask}


CONDITIONS = ["plain", "prefix tokens", "prefix embeddings", "cross-attention"]


@pytest.mark.parametrize("kind", CONDITIONS)
def test_cached_step_by_step_logits_equal_the_full_pass(kind):
    model, extra = conditioned_inputs(kind)
    x = tokens()
    full = model(x, **extra)
    cache = model.new_cache(2, extra.get("memory"))
    steps = [model(x[:, :4], cache=cache, **extra)]                   # the prompt, prefix and all
    later = {key: value for key, value in extra.items() if key != "prefix"}
    steps += [model(x[:, t:t + 1], cache=cache, **later) for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", CONDITIONS)
def test_generation_with_and_without_the_cache_gives_the_same_tokens(kind):
    model, extra = conditioned_inputs(kind)
    prompt = tokens(time=2)
    settings = dict(temperature=1.3, top_k=12, top_p=0.95)
    cached = model.generate(prompt, 25, use_cache=True, generator=torch.Generator().manual_seed(5), **settings, **extra)
    uncached = model.generate(prompt, 25, use_cache=False, generator=torch.Generator().manual_seed(5), **settings, **extra)
    assert cached.shape == (2, 27) and torch.equal(cached[:, :2], prompt)
    assert torch.equal(cached, uncached)
    again = model.generate(prompt, 25, generator=torch.Generator().manual_seed(5), **settings, **extra)
    assert torch.equal(cached, again)                                  # same seed, same music


def test_the_condition_changes_what_comes_out():
    model, extra = conditioned_inputs("prefix tokens")
    x = tokens()
    other = {"prefix": (extra["prefix"] + 1) % 7}
    assert not torch.allclose(model(x, **extra), model(x, **other))
    model, extra = conditioned_inputs("cross-attention")
    shuffled = {"memory": extra["memory"].flip(1), "memory_mask": extra["memory_mask"]}
    assert not torch.allclose(model(x, **extra), model(x, **shuffled))


def test_stop_token_ends_generation_and_repeats():
    model = small_lm()
    out = model.generate(tokens(time=1), 30, temperature=0.0, stop_token=int(model(tokens(time=1))[0, -1].argmax()))
    assert out.shape[1] <= 31
    stop = out[0, 1]
    assert torch.all(out[0, 1:] == stop)


def test_generation_errors_are_clear():
    model = small_lm()
    prompt = tokens(time=3)
    with pytest.raises(TypeError, match="int64"):
        model.generate(prompt.float(), 5)
    with pytest.raises(ValueError, match="exceeds max_len=40"):
        model.generate(prompt, 38)
    with pytest.raises(ValueError, match="top_p must be in"):
        model.generate(prompt, 5, top_p=1.5)
    with pytest.raises(ValueError, match="top_p must be in"):
        model.generate(prompt, 5, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 5, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 5, top_k=0)
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(prompt[:, :0], 5)
    with pytest.raises(ValueError, match=r"in \[0, 23\)"):
        model(prompt + VOCAB)
    with pytest.raises(ValueError, match="longer than max_len"):
        model(tokens(time=41))
    with pytest.raises(ValueError, match="no cross-attention"):
        model(prompt, memory=torch.randn(2, 3, 32))
    with pytest.raises(ValueError, match="prefix_vocab_size"):
        model(prompt, prefix=torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="pass memory"):
        small_lm(cross_attention=True)(prompt)
    with pytest.raises(ValueError, match="positions must be one of"):
        small_lm(positions="learned")


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.75)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.76)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.1)).tolist() == [[True, False, False, False]]
    shuffled = logits[:, [2, 0, 3, 1]]                                # order in the vocabulary is irrelevant
    assert torch.isfinite(filter_logits(shuffled, top_p=0.7)).tolist() == [[False, True, False, True]]


def test_sampling_follows_the_distribution_and_temperature_zero_is_greedy():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1, 0.0]))[None].expand(20_000, 4)
    samples = sample_next_token(logits, generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(samples, minlength=4) / 20_000
    torch.testing.assert_close(frequencies, torch.tensor([0.6, 0.3, 0.1, 0.0]), atol=0.015, rtol=0)
    assert torch.equal(sample_next_token(torch.tensor([[0.0, 3.0, 1.0]]), temperature=0.0), torch.tensor([1]))
    cold = sample_next_token(logits, temperature=0.2, generator=torch.Generator().manual_seed(0))
    assert (cold == 0).float().mean() > 0.95


def test_encoder_decoder_shapes_padding_and_cached_generation():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(Seq2SeqConfig(VOCAB, VOCAB, 16, 16, d_model=32, n_heads=4)).eval()
    source = torch.randint(1, VOCAB, (2, 6))
    source[1, 4:] = 0                                                  # padding
    target = torch.randint(1, VOCAB, (2, 5))
    logits, maps = model(source, target, return_attention=True)
    assert logits.shape == (2, 5, VOCAB)
    assert maps["encoder"][0].shape == (2, 4, 6, 6) and maps["cross"][1].shape == (2, 4, 5, 6)
    assert torch.all(maps["cross"][0][1, :, :, 4:] == 0)              # nothing attends to padding
    more_padding = torch.cat([source, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(more_padding, target), logits)
    cached = model.generate(source, start_token=1, max_new_tokens=10, temperature=1.0,
                            generator=torch.Generator().manual_seed(3))
    uncached = model.generate(source, start_token=1, max_new_tokens=10, temperature=1.0, use_cache=False,
                              generator=torch.Generator().manual_seed(3))
    assert cached.shape == (2, 11) and torch.equal(cached, uncached)


def test_next_token_loss_ignores_padding():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 10.0
    loss, accuracy = next_token_loss(logits, torch.tensor([[2, 0, 0]]), ignore_index=0)
    assert loss < 0.01 and accuracy == 1.0


def test_the_course_trainer_teaches_it_a_pattern():
    model = small_lm(max_len=16)
    pattern = torch.arange(16) % 5 + 3                                  # 3 4 5 6 7 3 4 5 ...
    data = [{"tokens": pattern.roll(-shift)} for shift in range(5)] * 8

    def loss_fn(model, batch):
        loss, accuracy = next_token_loss(model(batch["tokens"][:, :-1]), batch["tokens"][:, 1:])
        return loss, {"accuracy": accuracy}

    train = dataclasses.replace(config.get_preset("tiny").train, max_steps=40, batch_size=8, learning_rate=3e-3,
                                log_every=10)
    history = Trainer(model, train, torch.utils.data.Subset(data, range(len(data))), loss_fn, progress=False).fit()
    assert history[-1]["loss"] < 0.2 * history[0]["loss"] and history[-1]["accuracy"] > 0.95


def test_encoder_of_continuous_inputs():
    """vocab_size=None: the encoder reads (batch, time, d_model) vectors, e.g. audio frames."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(None, max_len=16, d_model=32, n_layers=2, n_heads=4).eval()
    frames = torch.randn(2, 10, 32)
    out = encoder(frames)
    assert out.shape == (2, 10, 32) and encoder.embedding is None
    # Bidirectional: changing the last frame changes the first output. The change must be one a pre-norm
    # encoder can see: every LayerNorm subtracts each position's mean over dimensions, so adding the same
    # constant to every dimension of a frame changes nothing but rounding.
    changed = frames.clone()
    changed[:, -1] += torch.randn(32)
    assert (encoder(changed)[:, 0] - out[:, 0]).abs().max() > 1e-2
    shifted = frames.clone()
    shifted[:, -1] += 1.0
    torch.testing.assert_close(encoder(shifted)[:, 0], out[:, 0], atol=1e-5, rtol=1e-5)
    # Padding is masked as for tokens: outputs at real positions ignore what padding holds.
    key_is_real = torch.tensor([[True] * 10, [True] * 6 + [False] * 4])
    noisy = frames.clone()
    noisy[1, 6:] = torch.randn(4, 32)
    torch.testing.assert_close(encoder(noisy, key_is_real)[1, :6], encoder(frames, key_is_real)[1, :6])
    with pytest.raises(TypeError, match="vocab_size=None: it takes float vectors"):
        encoder(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"inputs must be \(batch, time, 32\)"):
        encoder(torch.zeros(2, 10, 16))
    with pytest.raises(ValueError, match="longer than max_len=16"):
        encoder(torch.zeros(1, 17, 32))
