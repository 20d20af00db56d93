"""MusicLM's token layouts: the flat id space of each stage, its round trip, and the valid ids per position."""

import dataclasses

import pytest
import torch

from mlm_lessons import config, musiclm
from mlm_lessons.musiclm import BOS_ID, PAD_ID, TokenKind, TokenLayout
from mlm_lessons.train import CheckpointMismatchError

TINY = config.get_preset("tiny")
COARSE = TokenKind("coarse", 2, 5)
SEMANTIC = TokenKind("semantic", 1, 3)


def test_ids_are_laid_out_specials_then_kind_by_kind_level_by_level():
    layout = TokenLayout([SEMANTIC, COARSE])
    assert layout.vocab_size == 1 + 3 + 2 * 5
    assert [layout.offset("semantic", 0), layout.offset("coarse", 0), layout.offset("coarse", 1)] == [1, 4, 9]
    codes = torch.tensor([[[0, 0], [4, 1]]])                          # (batch 1, frames 2, levels 2)
    assert layout.flatten("coarse", codes).tolist() == [[4, 9, 8, 10]]   # frame by frame, level by level
    with pytest.raises(KeyError, match="no 'fine' tokens"):
        layout.offset("fine", 0)
    with pytest.raises(ValueError, match="levels 0..1, not 2"):
        layout.offset("coarse", 2)


@pytest.mark.parametrize("stage", musiclm.STAGES)
def test_every_stage_round_trips_its_tokens(stage):
    layout = musiclm.stage_layouts(TINY)[stage]
    kind = layout.target.kinds[stage]
    codes = torch.randint(kind.codebook_size, (3, 7, kind.levels), generator=torch.Generator().manual_seed(0))
    ids = layout.target_ids(codes)
    assert ids.shape == (3, 1 + 7 * kind.levels) and (ids[:, 0] == BOS_ID).all()
    assert not (ids[:, 1:] == PAD_ID).any() and not (ids[:, 1:] == BOS_ID).any()
    assert torch.equal(layout.target_codes(ids), codes)


def test_the_stages_read_what_musiclm_conditions_them_on():
    layouts = musiclm.stage_layouts(TINY)
    tokens = TINY.tokens
    assert {name: layout.prefix_kinds for name, layout in layouts.items()} == {
        "semantic": ("mulan",), "coarse": ("mulan", "semantic"), "fine": ("coarse",)}
    assert layouts["semantic"].target.vocab_size == 2 + tokens.semantic_clusters
    assert layouts["coarse"].target.vocab_size == 2 + tokens.coarse_levels * tokens.codebook_size
    assert layouts["fine"].target.vocab_size == 2 + (tokens.rvq_levels - tokens.coarse_levels) * tokens.codebook_size
    mulan = torch.zeros(2, 1, tokens.mulan_rvq_levels, dtype=torch.long)
    semantic = torch.ones(2, 25, dtype=torch.long)
    prefix = layouts["coarse"].prefix_ids({"mulan": mulan, "semantic": semantic})
    assert prefix.shape == (2, tokens.mulan_rvq_levels + 25) and int(prefix.max()) < layouts["coarse"].prefix.vocab_size
    with pytest.raises(ValueError, match=r"conditioned on \['mulan', 'semantic'\]; missing \['semantic'\]"):
        layouts["coarse"].prefix_ids({"mulan": mulan})


def test_valid_ids_allow_exactly_the_block_of_the_level_due():
    layout = TokenLayout([SEMANTIC, COARSE], specials=2)
    valid = layout.valid_ids("coarse", 4, start=1)                    # positions 1..4: levels 1, 0, 1, 0
    assert valid.shape == (4, layout.vocab_size) and (valid.sum(dim=1) == 5).all()
    assert valid[0].nonzero().flatten().tolist() == list(range(10, 15))
    assert valid[1].nonzero().flatten().tolist() == list(range(5, 10))
    assert not valid[:, :5].any()                                     # never PAD, BOS or another kind


def test_bad_tokens_are_clear_errors():
    layout = TokenLayout([COARSE], specials=2)
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\).*another codec or tokenizer"):
        layout.flatten("coarse", torch.tensor([[[0, 5]]]))
    with pytest.raises(ValueError, match=r"must be \(batch, frames, 2\)"):
        layout.flatten("coarse", torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        layout.flatten("coarse", torch.zeros(1, 3, 2))
    flat = layout.flatten("coarse", torch.tensor([[[1, 2], [3, 4]]]))
    swapped = flat[:, [1, 0, 2, 3]]                                   # a level-1 id where level 0 is due
    with pytest.raises(ValueError, match="id 9 at position 0 .* not a coarse level-0 token"):
        layout.unflatten("coarse", swapped)
    with pytest.raises(ValueError, match=r"frames \* 2"):
        layout.unflatten("coarse", flat[:, :3])
    with pytest.raises(ValueError, match="starts with BOS"):
        musiclm.stage_layouts(TINY)["coarse"].target_codes(flat)
    with pytest.raises(ValueError, match="leave at least one fine level"):
        musiclm.token_kinds(dataclasses.replace(TINY, tokens=dataclasses.replace(TINY.tokens, coarse_levels=4)))


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("temperature", [0.0, 1.0, 3.0])
def test_generation_with_the_layouts_mask_samples_only_valid_tokens(use_cache, temperature):
    from mlm_lessons.transformer import TransformerLM, TransformerLMConfig

    layout = musiclm.stage_layouts(TINY)["coarse"]
    torch.manual_seed(0)
    model = TransformerLM(TransformerLMConfig(vocab_size=layout.target.vocab_size, max_len=64, d_model=32,
                                              n_layers=1, n_heads=2, prefix_vocab_size=layout.prefix.vocab_size))
    prefix = layout.prefix_ids({"mulan": torch.zeros(4, 1, TINY.tokens.mulan_rvq_levels, dtype=torch.long),
                                "semantic": torch.zeros(4, 5, dtype=torch.long)})
    prompt = torch.full((4, 1), BOS_ID)
    allowed = layout.target.valid_ids("coarse", 20)
    ids = model.generate(prompt, 20, temperature=temperature, prefix=prefix, allowed=allowed, use_cache=use_cache,
                         generator=torch.Generator().manual_seed(1))
    codes = layout.target_codes(ids)              # raises if any token is not valid for its position
    assert codes.shape == (4, 10, TINY.tokens.coarse_levels)
    unmasked = model.generate(prompt, 20, temperature=3.0, prefix=prefix, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="is not a coarse level"):   # without the mask, some are not
        layout.target_codes(unmasked)
    with pytest.raises(ValueError, match="bool mask of shape"):
        model.generate(prompt, 20, prefix=prefix, allowed=allowed[:5])


# -- the stage model ------------------------------------------------------------------------------------

SMALL_LM = dataclasses.replace(TINY.transformer, d_model=32, n_layers=1, n_heads=2)
FRAMES = {"mulan": 1, "semantic": 6, "coarse": 5}


def conditions_for(stage, batch=2, seed=0):
    layout = musiclm.stage_layouts(TINY)[stage]
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randint(layout.prefix.kinds[name].codebook_size,
                                (batch, FRAMES[name], layout.prefix.kinds[name].levels), generator=generator)
            for name in layout.prefix_kinds}


def small_stage(stage, seconds=0.2):
    torch.manual_seed(0)
    tiny = dataclasses.replace(TINY, transformer=SMALL_LM)
    return musiclm.Stage.from_config(tiny, stage, seconds=seconds).eval()


@pytest.mark.parametrize("stage", musiclm.STAGES)
def test_a_stage_generates_valid_codes_the_same_with_and_without_the_cache(stage):
    model = small_stage(stage)
    kwargs = dict(frames=4, temperature=1.0, top_k=50)
    cached = model.generate(conditions_for(stage), generator=torch.Generator().manual_seed(3), **kwargs)
    uncached = model.generate(conditions_for(stage), generator=torch.Generator().manual_seed(3), use_cache=False,
                              **kwargs)
    levels = model.layout.target.kinds[stage].levels
    assert cached.shape == (2, 4, levels) and torch.equal(cached, uncached)
    again = model.generate(conditions_for(stage), generator=torch.Generator().manual_seed(3), **kwargs)
    other = model.generate(conditions_for(stage), generator=torch.Generator().manual_seed(4), **kwargs)
    assert torch.equal(cached, again) and not torch.equal(cached, other)       # determined by the seed


def test_a_stage_learns_its_tokens_by_teacher_forcing():
    model = small_stage("coarse").train()
    layout = model.layout
    codes = torch.randint(TINY.tokens.codebook_size, (1, 4, TINY.tokens.coarse_levels),
                          generator=torch.Generator().manual_seed(5)).repeat(8, 1, 1)
    prefix, target = layout.prefix_ids(conditions_for("coarse", batch=8)), layout.target_ids(codes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss, metrics = model.loss(prefix, target)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first and metrics["accuracy"] > 0.9
    model.eval()
    assert torch.equal(model.generate(conditions_for("coarse", batch=8), frames=4, temperature=0.0), codes)
    continued = model.generate(conditions_for("coarse", batch=8), frames=2, prompt=codes[:, :2], temperature=0.0)
    assert torch.equal(continued, codes)                                # a prompt is continued, not restarted


def test_music_longer_than_a_window_is_made_window_by_window_on_aligned_conditions(monkeypatch):
    model = small_stage("coarse", seconds=0.2)                 # a window of 10 coarse frames, 5 semantic ones
    assert model.window == 10
    conditions = conditions_for("coarse", batch=1)
    conditions["semantic"] = torch.randint(TINY.tokens.semantic_clusters, (1, 12, 1))   # enough for 24 frames
    prompt = torch.randint(TINY.tokens.codebook_size, (1, 3, TINY.tokens.coarse_levels))
    windows = []
    sample_window = model._sample_window

    def record(window_conditions, window_prompt, frames, *args):
        windows.append((window_conditions, window_prompt, frames))
        return sample_window(window_conditions, window_prompt, frames, *args)

    monkeypatch.setattr(model, "_sample_window", record)
    codes = model.generate(conditions, frames=20, prompt=prompt, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (1, 23, TINY.tokens.coarse_levels) and torch.equal(codes[:, :3], prompt)
    done = prompt.shape[1]
    for window_conditions, window_prompt, frames in windows:
        start, end = done - window_prompt.shape[1], done + frames
        assert start % 2 == 0 and end - start <= 10              # starts on a semantic frame, fits the window
        assert torch.equal(window_prompt, codes[:, start:done])                  # continues what exists
        assert torch.equal(window_conditions["semantic"], conditions["semantic"][:, start // 2:-(-end // 2)])
        assert torch.equal(window_conditions["mulan"], conditions["mulan"])
        done = end
    assert all(w[1].shape[1] + w[2] >= 9 for w in windows[1:])    # later windows are full, to the semantic grid
    assert sum(frames for _, _, frames in windows) == 20 and all(w[1].shape[1] >= 4 for w in windows[1:])
    with pytest.raises(ValueError, match="24 coarse frames need 12 semantic frames to condition on, got 11"):
        model.generate({**conditions, "semantic": conditions["semantic"][:, :11]}, frames=21, prompt=prompt)
    with pytest.raises(ValueError, match="overlap"):
        model.generate(conditions, frames=4, overlap=1.0)
    with pytest.raises(ValueError, match=r"one batch size, got \{'mulan': 1, 'semantic': 1, 'prompt': 2\}"):
        model.generate(conditions, frames=4, prompt=prompt.repeat(2, 1, 1))


def test_a_stage_refuses_examples_longer_than_its_window_and_unknown_stages():
    model = small_stage("semantic", seconds=0.2)                     # 1 x 4 MuLan + BOS + 5 semantic frames
    assert model.lm.config.max_len == TINY.tokens.mulan_rvq_levels + 1 + 5
    prefix = model.layout.prefix_ids(conditions_for("semantic", batch=1))
    target = model.layout.target_ids(torch.zeros(1, 6, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="context is 10 positions, but a prefix of 4 and 7 target positions"):
        model.loss(prefix, target)
    with pytest.raises(ValueError, match="unknown stage 'loud'"):
        musiclm.Stage.from_config(TINY, "loud")


def test_an_ablated_stage_reads_only_the_conditions_it_is_given(tmp_path):
    layout = musiclm.stage_layout(TINY, "coarse", ["semantic", "mulan"])
    assert layout.prefix_kinds == ("mulan", "semantic")                    # the usual order
    alone = musiclm.stage_layout(TINY, "coarse", ["mulan"])
    assert alone.prefix_kinds == ("mulan",) and alone.prefix.vocab_size < layout.prefix.vocab_size
    for wrong in (["fine"], [], ["mulan", "mulan"]):
        with pytest.raises(ValueError, match=r"non-empty subset of \['mulan', 'semantic'\]"):
            musiclm.stage_layout(TINY, "coarse", wrong)
    torch.manual_seed(0)
    model = musiclm.Stage.from_config(dataclasses.replace(TINY, transformer=SMALL_LM), "coarse", 0.2, ["mulan"])
    loaded = musiclm.Stage.load(model.save(tmp_path / "coarse-mulan.pt"))
    assert loaded.layout.prefix_kinds == ("mulan",)
    mulan_only = {"mulan": conditions_for("coarse")["mulan"]}
    assert torch.equal(loaded.generate(mulan_only, 12, temperature=0.0),
                       model.generate(mulan_only, 12, temperature=0.0))


# -- training on token files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_folder(tmp_path_factory):
    from pathlib import Path

    from mlm_lessons import datasets, mulan, soundstream, token_files, tokenize

    root = tmp_path_factory.mktemp("stages")
    datasets.write_synthcaps(root / "data", num_clips=4, clip_seconds=1.0, progress=False)
    checkpoints = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
    token_files.extract_tokens(datasets.read_synthcaps_manifest(root / "data"), root / "tokens",
                               soundstream.SoundStream.load(checkpoints / "soundstream-tiny.pt"),
                               tokenize.SemanticTokenizer.load(checkpoints / "w2v-bert-tiny.pt"),
                               mulan.MuLan.load(checkpoints / "mulan-tiny.pt"), progress=False)
    return token_files.read_token_files(root / "tokens")


def test_examples_cut_the_same_stretch_of_music_for_every_kind(token_folder):
    spec, clips = token_folder
    torch.manual_seed(0)
    fine = musiclm.StageExamples(clips, spec, TINY, "fine", seconds=0.4)
    example = fine[0]
    layout = musiclm.stage_layouts(TINY)["fine"]
    coarse = layout.prefix.unflatten("coarse", example["prefix"][None])[0]             # (0.4 s x 50 Hz, 2)
    fine_codes = layout.target_codes(example["target"][None])[0]
    assert coarse.shape == fine_codes.shape == (20, 2)
    acoustic = clips[0]["acoustic"]
    aligned = [s for s in range(0, len(acoustic) - 19, 2) if torch.equal(acoustic[s:s + 20, :2], coarse)
               and torch.equal(acoustic[s:s + 20, 2:], fine_codes)]
    assert aligned, "the coarse prefix and the fine target are the same frames of the clip"
    coarse_examples = musiclm.StageExamples(clips, spec, TINY, "coarse", seconds=0.4)
    example, layout = coarse_examples[1], musiclm.stage_layouts(TINY)["coarse"]
    assert example["prefix"].shape == (TINY.tokens.mulan_rvq_levels + 10,)
    semantic = layout.prefix.unflatten("semantic", example["prefix"][None, TINY.tokens.mulan_rvq_levels:])[0, :, 0]
    target = layout.target_codes(example["target"][None])[0]
    aligned = [s for s in range(len(clips[1]["semantic"]) - 9) if torch.equal(clips[1]["semantic"][s:s + 10], semantic)
               and torch.equal(clips[1]["acoustic"][2 * s:2 * s + 20, :2], target)]   # semantic frame s = acoustic 2s
    assert aligned, "the semantic prefix and the coarse target come from the same stretch of the clip"
    deeper = dataclasses.replace(TINY, tokens=dataclasses.replace(TINY.tokens, semantic_clusters=512))
    with pytest.raises(ValueError, match="semantic.codebook_size is 128 there but 512 here"):
        musiclm.StageExamples(clips, spec, deeper, "semantic", seconds=1.0)


def test_a_stage_trains_on_token_files_and_resumes(token_folder, tmp_path):
    spec, clips = token_folder
    config = dataclasses.replace(TINY, transformer=SMALL_LM, train=dataclasses.replace(
        TINY.train, batch_size=4, learning_rate=3e-3, log_every=5, checkpoint_every=10))
    model, history = musiclm.train_stage(config, "semantic", clips, spec, out_dir=tmp_path, steps=30, progress=False)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    resumed, again = musiclm.train_stage(config, "semantic", clips, spec, out_dir=tmp_path, steps=40, progress=False)
    assert again[-1]["step"] == 40 and [entry["step"] for entry in again[:6]] == [5, 10, 15, 20, 25, 30]


def test_a_stage_saves_and_loads(tmp_path):
    model = small_stage("coarse")
    loaded = musiclm.Stage.load(model.save(tmp_path / "coarse.pt"))
    conditions = conditions_for("coarse")
    assert torch.equal(loaded.generate(conditions, 3, temperature=0.0), model.generate(conditions, 3, temperature=0.0))
    with pytest.raises(FileNotFoundError, match="no stage checkpoint"):
        musiclm.Stage.load(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a MusicLM stage file"):
        musiclm.Stage.load(tmp_path / "other.pt")
    payload = torch.load(tmp_path / "coarse.pt", weights_only=True)
    payload["config"]["tokens"]["semantic_clusters"] = 64                # weights made for 128 semantic clusters
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointMismatchError, match="stage checkpoint .*edited.pt"):
        musiclm.Stage.load(tmp_path / "edited.pt")


def test_the_cascade_writes_every_kind_in_turn_for_music_longer_than_any_window():
    stages = {name: small_stage(name, seconds=0.2) for name in musiclm.STAGES}     # 0.2-s windows
    mulan_codes = conditions_for("semantic", batch=2)["mulan"]
    temperatures = {"semantic": 1.0, "coarse": 0.95, "fine": 0.4}
    tokens = musiclm.cascade(stages, mulan_codes, seconds=0.6, temperatures=temperatures,
                             generator=torch.Generator().manual_seed(0))
    tiny = TINY.tokens
    assert tokens["semantic"].shape == (2, 15, 1) and tokens["coarse"].shape == (2, 30, tiny.coarse_levels)
    assert tokens["acoustic"].shape == (2, 30, tiny.rvq_levels)
    assert torch.equal(tokens["acoustic"][..., :tiny.coarse_levels], tokens["coarse"])
    assert int(tokens["acoustic"].max()) < tiny.codebook_size and int(tokens["semantic"].max()) < tiny.semantic_clusters
    again = musiclm.cascade(stages, mulan_codes, 0.6, temperatures, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(tokens[name], again[name]) for name in tokens)            # determined by the seed
    other = dataclasses.replace(TINY, transformer=SMALL_LM,
                                tokens=dataclasses.replace(TINY.tokens, semantic_clusters=64))
    with pytest.raises(ValueError, match="the coarse stage reads semantic tokens as .* stages made for different"):
        musiclm.cascade({**stages, "semantic": musiclm.Stage.from_config(other, "semantic", 0.2)}, mulan_codes, 0.6,
                        temperatures)
    with pytest.raises(ValueError, match=r"missing \['fine'\]"):
        musiclm.cascade({name: stages[name] for name in ("semantic", "coarse")}, mulan_codes, 0.6, temperatures)


def test_music_shorter_than_a_window_is_padded_to_the_layout_of_a_full_window(token_folder, monkeypatch):
    spec, clips = token_folder
    short = {"mulan": clips[0]["mulan"], "semantic": clips[0]["semantic"][:10], "acoustic": clips[0]["acoustic"][:20]}
    examples = musiclm.StageExamples([short, clips[1]], spec, TINY, "coarse", seconds=0.8)   # 20 semantic frames
    batch = torch.utils.data.default_collate([examples[0], examples[1]])                     # same lengths
    mulan_levels = TINY.tokens.mulan_rvq_levels
    assert batch["prefix"].shape == (2, mulan_levels + 20) and batch["target"].shape == (2, 1 + 40 * 2)
    assert (batch["prefix"][0, mulan_levels + 10:] == PAD_ID).all()
    assert (batch["target"][0, 1 + 20 * 2:] == PAD_ID).all()
    assert not (batch["prefix"][1] == PAD_ID).any() and not (batch["target"][1] == PAD_ID).any()
    model = small_stage("coarse", seconds=0.8)
    loss, _ = model.loss(batch["prefix"], batch["target"])            # PAD targets are not scored
    assert torch.isfinite(loss)
    prefixes = []
    generate = model.lm.generate
    monkeypatch.setattr(model.lm, "generate", lambda *args, **kwargs: prefixes.append(kwargs["prefix"]) or
                        generate(*args, **kwargs))
    codes = model.generate(conditions_for("coarse"), frames=4)
    assert codes.shape == (2, 4, TINY.tokens.coarse_levels)
    assert prefixes[0].shape == (2, mulan_levels + 20) and (prefixes[0][:, mulan_levels + 2:] == PAD_ID).all()
