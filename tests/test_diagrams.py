"""Diagrams show what their arguments say, highlight the right part, and stay readable."""

import collections
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from mlm_lessons import diagrams  # noqa: E402

PAPER_CODEC = dict(num_levels=12, codebook_size=1024, strides=(3, 4, 5, 8), sample_rate=24_000)
PAPER_W2V_BERT = dict(contrastive_layers=8, mlm_layers=16, token_layer=15, num_clusters=1024)
PAPER_MULAN = dict(audio_channels=(32, 64, 128, 256), text_layers=4, embed_dim=128, token_levels=12,
                   codebook_size=1024)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(ax):
    return [text.get_text() for text in ax.texts]


def box(ax, name):
    (patch,) = [patch for patch in ax.patches if patch.get_gid() == name]
    return patch


def quantisers(ax):
    return [patch for patch in ax.patches if (patch.get_gid() or "").startswith("quantiser ")]


def layers(ax):
    return [patch for patch in ax.patches if (patch.get_gid() or "").startswith("layer ")]


def count(ax, gid):
    return sum(patch.get_gid() == gid for patch in ax.patches)


def face(ax, name):
    return to_rgba(box(ax, name).get_facecolor())


def similarity_cells(ax):
    return {patch.get_gid(): patch for patch in ax.patches
            if (patch.get_gid() or "").startswith("similarity ")}


def test_soundstream_diagram_shows_the_codec_its_losses_and_its_bitrate():
    ax = diagrams.soundstream_diagram()
    labels = "\n".join(texts(ax))
    for label in ("Encoder", "strides 2·4·5·8 = 320", "dilations 1, 3, 9", "50 per second", "Residual VQ",
                  "4 levels × 256 codes", "codes\n(levels × frames)", "sum of\ncode vectors", "Decoder",
                  "multi-resolution\nwaveform discriminator", "STFT\ndiscriminator",
                  "multi-scale mel reconstruction loss", "hinge adversarial +\nfeature matching",
                  "= 50 × 4 × log2(256) = 1600 bit/s"):
        assert label in labels
    assert len(quantisers(ax)) == 4
    assert not ax.axison


def test_soundstream_diagram_takes_its_numbers_from_the_arguments():
    ax = diagrams.soundstream_diagram(**PAPER_CODEC)
    labels = "\n".join(texts(ax))
    for label in ("strides 3·4·5·8 = 480", "strides 8·5·4·3", "24 kHz", "12 levels × 1024 codes",
                  "6000 bit/s"):
        assert label in labels
    assert len(quantisers(ax)) == 12


def test_soundstream_diagram_rejects_strides_that_miss_the_frame_rate():
    with pytest.raises(ValueError, match="320 samples per frame"):
        diagrams.soundstream_diagram(sample_rate=24_000)


def test_w2v_bert_diagram_shows_both_tasks_and_the_token_layer():
    ax = diagrams.w2v_bert_diagram()
    labels = "\n".join(texts(ax))
    for label in ("audio in", "log-mel", "100 frames/s", "Feature encoder", "100 → 25 frames/s",
                  "masked spans", "(≈ half the frames)", "Contrastive module", "Masked-prediction\nmodule",
                  "2 Conformer blocks\nlayers 1–2", "2 Conformer blocks\nlayers 3–4", "logits over\ntarget codes",
                  "per-clip normalised\nlog-mel frames", "Quantiser", "VectorQuantizer", "target vectors $q_t$",
                  "target code ids", "contrastive loss", "among distractors\n(cosine / temperature)",
                  "masked-prediction loss", "ids of masked frames", "loss = contrastive + masked prediction",
                  "layer 3: block 1 of the\nmasked-prediction module", "k-means → semantic tokens",
                  "128 clusters, 25 per second", "no text, no labels: the audio supervises itself"):
        assert label in labels
    assert ax.get_title() == "w2v-BERT: self-supervised audio encoder (Chung et al., 2021)"
    # One bar per Conformer block; only the token layer's is filled, in the same strong colour as the
    # k-means box it feeds.
    faces = {patch.get_gid(): to_rgba(patch.get_facecolor()) for patch in layers(ax)}
    assert sorted(faces) == ["layer 1", "layer 2", "layer 3", "layer 4"]
    strong = to_rgba(box(ax, "k-means → semantic tokens").get_facecolor())
    assert faces["layer 3"] == strong
    assert all(face != strong for gid, face in faces.items() if gid != "layer 3")
    assert not ax.axison


def test_w2v_bert_diagram_takes_its_numbers_from_the_arguments():
    ax = diagrams.w2v_bert_diagram(**PAPER_W2V_BERT)
    labels = "\n".join(texts(ax))
    for label in ("8 Conformer blocks\nlayers 1–8", "16 Conformer blocks\nlayers 9–24",
                  "layer 15: block 7 of the\nmasked-prediction module", "1024 clusters, 25 per second"):
        assert label in labels
    assert len(layers(ax)) == 24
    labels = "\n".join(texts(diagrams.w2v_bert_diagram(token_layer=0, frame_rate=50)))
    for label in ("layer 0: the feature encoder's output", "200 → 50 frames/s", "50 per second"):
        assert label in labels


@pytest.mark.parametrize("token_layer", [-1, 5])
def test_w2v_bert_diagram_rejects_a_token_layer_the_model_lacks(token_layer):
    with pytest.raises(ValueError, match=rf"token_layer={token_layer} is not a layer .* to 4"):
        diagrams.w2v_bert_diagram(token_layer=token_layer)


def test_w2v_bert_diagram_rejects_an_empty_module():
    with pytest.raises(ValueError, match="at least one Conformer block"):
        diagrams.w2v_bert_diagram(mlm_layers=0, token_layer=1)


def test_mulan_diagram_shows_both_towers_the_similarity_matrix_and_the_tokens():
    ax = diagrams.mulan_diagram()
    labels = "\n".join(texts(ax))
    for label in ("audio", "(batch, samples)", "log-mel", "(n_mels × frames)", "ResNet audio tower",
                  "4 stages, channels\n32, 64, 128, 128", "mean over time", "frequency bands\nkept side by side",
                  "linear →\nunit length", "channels × bands\nto 64 dims", "$A$  audio embeddings\n(batch × 64)",
                  "caption", "WordPiece\nsubwords", "##chord", "Transformer encoder", "text tower, 2 layers",
                  "mean over\nreal tokens", "to 64 dims", "$T$  text embeddings\n(batch × 64)",
                  "$S = A\\,T^{\\top} / \\tau$", "τ: learned temperature", "symmetric InfoNCE",
                  "each row and each\ncolumn picks its\ndiagonal", "residual VQ →\nMuLan tokens",
                  "4 levels × 256 codes", "$M_A$ from audio, $M_T$ from text", "matching pair"):
        assert label in labels
    assert ax.get_title() == "MuLan: music and text in one embedding space (Huang et al., 2022)"
    for name in ("WordPiece subwords", "symmetric InfoNCE", "residual VQ → MuLan tokens"):
        box(ax, name)
    assert not ax.axison


def test_mulan_diagram_highlights_the_diagonal_of_the_similarity_matrix():
    ax = diagrams.mulan_diagram()
    faces = {gid: to_rgba(patch.get_facecolor()) for gid, patch in similarity_cells(ax).items()}
    assert sorted(faces) == [f"similarity {row},{column}" for row in range(1, 5) for column in range(1, 5)]
    strong = to_rgba(diagrams._PALETTE["mulan"][1])
    diagonal = {f"similarity {i},{i}" for i in range(1, 5)}
    assert all(faces[gid] == strong for gid in diagonal)
    assert all(face != strong for gid, face in faces.items() if gid not in diagonal)


def test_mulan_diagram_takes_its_numbers_from_the_arguments():
    ax = diagrams.mulan_diagram(**PAPER_MULAN)
    labels = "\n".join(texts(ax))
    for label in ("4 stages, channels\n32, 64, 128, 256", "channels × bands\nto 128 dims", "text tower, 4 layers",
                  "(batch × 128)", "to 128 dims", "12 levels × 1024 codes"):
        assert label in labels
    labels = "\n".join(texts(diagrams.mulan_diagram(audio_channels=[8], text_layers=1)))
    for label in ("1 stage, channels\n8\n", "channels × bands\nto 64 dims", "text tower, 1 layer\n"):
        assert label in labels


@pytest.mark.parametrize("arguments, message", [
    (dict(audio_channels=()), "at least one ResNet stage"),
    (dict(audio_channels=(16, 0)), "at least one ResNet stage"),
    (dict(text_layers=0), "text_layers must be at least 1, got 0"),
    (dict(embed_dim=0), "embed_dim must be at least 1"),
    (dict(token_levels=0), "token_levels must be at least 1"),
    (dict(codebook_size=0), "codebook_size must be at least 1"),
])
def test_mulan_diagram_rejects_an_empty_model(arguments, message):
    with pytest.raises(ValueError, match=message):
        diagrams.mulan_diagram(**arguments)


def test_diagrams_draw_on_the_axes_they_are_given():
    draws = [diagrams.soundstream_diagram, diagrams.musiclm_diagram, diagrams.w2v_bert_diagram,
             diagrams.mulan_diagram, diagrams.transformer_block_diagram, diagrams.encoder_decoder_diagram,
             diagrams.autoregressive_loop_diagram, diagrams.gan_training_diagram, diagrams.vae_diagram]
    _, axes = plt.subplots(1, len(draws))
    for draw, ax in zip(draws, axes):
        assert draw(ax=ax) is ax


@pytest.mark.parametrize("draw", [
    diagrams.soundstream_diagram,
    lambda: diagrams.soundstream_diagram(**PAPER_CODEC),
    diagrams.musiclm_diagram,
    lambda: diagrams.musiclm_diagram(highlight="attention"),
    diagrams.w2v_bert_diagram,
    lambda: diagrams.w2v_bert_diagram(**PAPER_W2V_BERT),
    lambda: diagrams.w2v_bert_diagram(token_layer=0),
    lambda: diagrams.w2v_bert_diagram(token_layer=1),
    diagrams.mulan_diagram,
    lambda: diagrams.mulan_diagram(**PAPER_MULAN),
    lambda: diagrams.mulan_diagram(audio_channels=(64, 128, 256, 512, 1024, 2048), text_layers=12,
                                   embed_dim=128, token_levels=12, codebook_size=1024),
    *[lambda highlight=highlight: diagrams.musiclm_diagram(highlight=highlight)
      for highlight in ("audio", "autoregressive", "gan", "vae")],
    diagrams.transformer_block_diagram,
    lambda: diagrams.transformer_block_diagram(causal=False, cross_attention=True, n_heads=16),
    diagrams.encoder_decoder_diagram,
    lambda: diagrams.encoder_decoder_diagram(n_layers=1),
    lambda: diagrams.encoder_decoder_diagram(n_layers=6),
    diagrams.autoregressive_loop_diagram,
    lambda: diagrams.autoregressive_loop_diagram(use_cache=False),
    diagrams.gan_training_diagram,
    diagrams.vae_diagram,
    lambda: diagrams.vae_diagram(latent_dim=128),
], ids=["soundstream", "soundstream-paper", "musiclm", "musiclm-attention", "w2v-bert", "w2v-bert-paper",
        "w2v-bert-layer-0", "w2v-bert-layer-1", "mulan", "mulan-paper", "mulan-resnet-50-like", "musiclm-audio",
        "musiclm-autoregressive", "musiclm-gan", "musiclm-vae", "block", "block-cross-16-heads", "encoder-decoder",
        "encoder-decoder-1", "encoder-decoder-6", "loop-cache", "loop-no-cache", "gan", "vae", "vae-128"])
def test_text_is_large_enough_inside_the_figure_and_never_overlaps(draw):
    ax = draw()
    figure = ax.figure
    figure.set_dpi(72)
    renderer = figure.canvas.get_renderer()
    artists = [text for text in [*ax.texts, ax.title] if text.get_text()]
    assert all(text.get_fontsize() >= 8 for text in artists)
    extents = [text.get_window_extent(renderer) for text in artists]
    assert all(figure.bbox.contains(e.x0, e.y0) and figure.bbox.contains(e.x1, e.y1) for e in extents)
    # One pixel of slack: touching is fine, covering is not.
    shrunk = [e.padded(-1) for e in extents]
    for (a, text_a), (b, text_b) in itertools.combinations(zip(shrunk, artists), 2):
        assert not a.overlaps(b), (text_a.get_text(), text_b.get_text())


def test_musiclm_diagram_shows_training_and_inference():
    ax = diagrams.musiclm_diagram()
    labels = set(texts(ax))
    for label in ("MuLan audio tower", "w2v-BERT", "k-means", "SoundStream encoder",
                  "$M_A$  MuLan audio tokens", "$S$  semantic tokens", "$A$  acoustic tokens",
                  "MuLan\ntext tower", "$M_T$", "semantic\nstage", "coarse\nstage", "fine\nstage",
                  "SoundStream\ndecoder", "waveform", "training", "inference"):
        assert label in labels
    assert ax.get_title() == "MusicLM in one picture"


def test_highlight_puts_the_lesson_in_strong_colour_and_greys_the_rest():
    plain = diagrams.musiclm_diagram()
    lesson = diagrams.musiclm_diagram(highlight="soundstream")
    assert lesson.get_title() == "MusicLM in one picture — this lesson: SoundStream"

    assert face(lesson, "SoundStream encoder") != face(plain, "SoundStream encoder")
    assert face(lesson, "SoundStream decoder") == face(lesson, "SoundStream encoder")
    assert face(lesson, "MuLan audio tower") != face(plain, "MuLan audio tower")
    assert face(lesson, "MuLan audio tower") == face(lesson, "w2v-BERT")  # both greyed


@pytest.mark.parametrize("highlight", ["stages", "attention", "autoregressive"])
def test_stages_and_attention_highlight_the_three_stage_transformers(highlight):
    plain = diagrams.musiclm_diagram()
    lesson = diagrams.musiclm_diagram(highlight=highlight)
    strong = to_rgba(box(lesson, "semantic stage").get_facecolor())
    assert strong != to_rgba(box(plain, "semantic stage").get_facecolor())
    for stage in ("coarse stage", "fine stage", "semantic stage (training)", "fine stage (training)"):
        assert to_rgba(box(lesson, stage).get_facecolor()) == strong
    assert to_rgba(box(lesson, "SoundStream encoder").get_facecolor()) != strong


def test_unknown_highlight_lists_the_valid_names():
    with pytest.raises(ValueError) as error:
        diagrams.musiclm_diagram(highlight="vocoder")
    for name in ("audio", "attention", "autoregressive", "gan", "vae", "soundstream", "w2v_bert", "mulan",
                 "stages"):
        assert repr(name) in str(error.value)


def test_audio_highlight_puts_the_clips_in_and_the_waveform_out_in_strong_colour():
    lesson = diagrams.musiclm_diagram(highlight="audio")
    assert lesson.get_title() == ("MusicLM in one picture — this lesson: audio as data, the clips in and the "
                                  "waveform out")
    strong = to_rgba(diagrams._PALETTE["audio"][1])
    for name in ("audio", "text", "waveform"):
        assert face(lesson, name) == strong
    for name in ("SoundStream encoder", "MuLan audio tower", "semantic stage", "SoundStream decoder"):
        assert face(lesson, name) == to_rgba(diagrams._GREYED[0])


@pytest.mark.parametrize("highlight, title", [
    ("gan", "adversarial training, which made SoundStream's decoder"),
    ("vae", "the autoencoder inside SoundStream"),
])
def test_gan_and_vae_highlight_soundstream(highlight, title):
    lesson = diagrams.musiclm_diagram(highlight=highlight)
    assert lesson.get_title() == f"MusicLM in one picture — this lesson: {title}"
    strong = to_rgba(diagrams._PALETTE["soundstream"][1])
    for name in ("SoundStream encoder", "SoundStream decoder"):
        assert face(lesson, name) == strong
    for name in ("MuLan audio tower", "semantic stage", "waveform"):
        assert face(lesson, name) == to_rgba(diagrams._GREYED[0])


def test_transformer_block_diagram_draws_the_pre_norm_block_of_the_package():
    ax = diagrams.transformer_block_diagram()
    labels = "\n".join(texts(ax))
    for label in ("input x", "(batch, time, d_model)", "causal multi-head\nself-attention", "4 heads: ", "MLP",
                  "Linear d_model → d_ff, GELU", "Linear d_ff → d_model, dropout", "(d_ff = 4 × d_model by default)",
                  "out projection → dropout", "residual add", "causal mask:\nposition t sees\npositions ≤ t",
                  "to the next block"):
        assert label in labels
    # Pre-norm: a LayerNorm in front of each sub-layer, none after the adds.
    assert sorted(patch.get_gid() for patch in ax.patches if (patch.get_gid() or "").startswith("LayerNorm")) == [
        "LayerNorm (MLP)", "LayerNorm (self-attention)"]
    assert count(ax, "causal mask") == 1
    assert [count(ax, f"self-attention head {head}") for head in range(1, 6)] == [1, 1, 1, 1, 0]
    assert not [patch for patch in ax.patches if patch.get_gid() == "cross-attention"]
    assert ax.get_title() == "One Transformer block, pre-norm (transformer.Block)"
    assert not ax.axison


def test_transformer_block_diagram_takes_its_options_from_the_arguments():
    ax = diagrams.transformer_block_diagram(causal=False, cross_attention=True, n_heads=8)
    labels = "\n".join(texts(ax))
    for label in ("multi-head\nself-attention", "multi-head\ncross-attention", "8 heads: ",
                  "encoder output\n(keys, values)", "no mask: every\nposition sees\nevery other"):
        assert label in labels
    assert "causal" not in labels
    assert count(ax, "causal mask") == 0 and count(ax, "no mask") == 1
    for kind in ("self-attention", "cross-attention"):
        assert sum((patch.get_gid() or "").startswith(f"{kind} head ") for patch in ax.patches) == 8
        box(ax, f"LayerNorm ({kind})")
    assert "1 head: " in "\n".join(texts(diagrams.transformer_block_diagram(n_heads=1)))


def test_transformer_block_diagram_rejects_a_block_without_heads():
    with pytest.raises(ValueError, match="n_heads must be at least 1, got 0"):
        diagrams.transformer_block_diagram(n_heads=0)


@pytest.mark.parametrize("n_layers", [1, 2, 5])
def test_encoder_decoder_diagram_draws_n_layers_blocks_on_each_side(n_layers):
    ax = diagrams.encoder_decoder_diagram(n_layers=n_layers)
    gids = collections.Counter(patch.get_gid() for patch in ax.patches)
    for side in ("encoder", "decoder"):
        assert sum(gid.startswith(f"{side} block ") for gid in gids if gid) == n_layers
        assert all(gids[f"{side} block {index}"] == 1 for index in range(1, n_layers + 1))
    labels = "\n".join(texts(ax))
    for label in ("source tokens", "<up 3>", "target, shifted right", "<bos>", "+ sinusoidal positions",
                  "padding mask", "causal self-attention →\ncross-attention → MLP", "final LayerNorm",
                  "encoder output", "linear head", "tied\nto the token embedding", "next-token logits",
                  "keys and values\nfor the cross-attention\nof every decoder block", "teacher forcing",
                  f"{n_layers} block{'s' * (n_layers > 1)}"):
        assert label in labels


def test_encoder_decoder_diagram_rejects_an_empty_stack():
    with pytest.raises(ValueError, match="n_layers must be at least 1, got 0"):
        diagrams.encoder_decoder_diagram(n_layers=0)


def test_autoregressive_loop_diagram_with_a_cache_feeds_only_the_new_token():
    ax = diagrams.autoregressive_loop_diagram()
    labels = "\n".join(texts(ax))
    for label in ("sequence so far", "decoder-only\nTransformer", "logits for the\nlast position",
                  "temperature τ,\ntop-k, top-p", "sample", "append the sampled token, and repeat", "KV cache",
                  "only the new token", "step 1:\nthe prompt", "write the new\nposition's k, v",
                  "read the k, v of\nall t positions", "1 new position through every layer",
                  "attending to the t cached ones"):
        assert label in labels
    assert ax.get_title() == "Generating one token at a time, with a KV cache"
    box(ax, "KV cache")
    assert count(ax, "prompt token") == 3 and count(ax, "generated token") == 2


def test_autoregressive_loop_diagram_without_a_cache_reruns_the_whole_sequence():
    ax = diagrams.autoregressive_loop_diagram(use_cache=False)
    labels = "\n".join(texts(ax))
    for label in ("every step:\nall t tokens", "the whole prefix of t positions\nthrough every layer, again"):
        assert label in labels
    for label in ("KV cache", "only the new token", "cached"):
        assert label not in labels
    assert count(ax, "KV cache") == 0
    assert ax.get_title() == "Generating one token at a time, without a cache"


def test_gan_training_diagram_updates_one_player_per_step():
    ax = diagrams.gan_training_diagram()
    labels = "\n".join(texts(ax))
    for label in ("1. discriminator step", "2. generator step", "noise z", "under no_grad:\nnot updated",
                  "no graph: a constant", "real x", "from the data", "keeps its graph", "frozen: not updated",
                  "D's loss", "max(0, 1 − D(x))", "G's loss", "hinge: $-D(G(z))$",
                  "only D's weights are updated", "flows back through D and the fake into G",
                  "only G's weights are updated"):
        assert label in labels
    box(ax, "1. discriminator step")
    box(ax, "2. generator step")
    greyed = to_rgba(diagrams._GREYED[0])
    # In each step the player that learns is strong; the other is grey.
    assert face(ax, "discriminator D (step 1)") == to_rgba(diagrams._PALETTE["discriminator"][1])
    assert face(ax, "generator G (step 1)") == greyed
    assert face(ax, "generator G (step 2)") == to_rgba(diagrams._PALETTE["model"][1])
    assert face(ax, "discriminator D (step 2)") == greyed
    assert count(ax, "real x") == 1  # the generator step needs no real data


@pytest.mark.parametrize("latent_dim", [3, 8, 64])
def test_vae_diagram_draws_latent_dim_numbers_for_each_vector(latent_dim):
    ax = diagrams.vae_diagram(latent_dim=latent_dim)
    for name in ("μ", "log σ²", "z", "ε"):
        assert count(ax, name) == latent_dim
    labels = "\n".join(texts(ax))
    for label in ("x: a patch", "encoder", f"linear to 2 × {latent_dim}", f"μ: {latent_dim} numbers",
                  f"log σ²: {latent_dim} numbers", "σ = exp(½ log σ²)", r"$z = \mu + \sigma \odot \varepsilon$",
                  "reparameterisation", "gradient flows\nback through μ and σ", r"$\varepsilon \sim \mathcal{N}(0, I)$",
                  "no gradient flows through the draw", "decoder", r"$\hat{x}$", r"$\|x - \hat{x}\|^2 / (2\sigma_x^2)$",
                  "β · KL(q(z|x) ‖ N(0, I))", f"over the {latent_dim} dimensions", "loss = reconstruction + β · KL",
                  "the negative ELBO"):
        assert label in labels


def test_vae_diagram_rejects_an_empty_latent():
    with pytest.raises(ValueError, match="latent_dim must be at least 1, got 0"):
        diagrams.vae_diagram(latent_dim=0)


def test_stage_layouts_diagram_draws_as_many_cells_as_each_stage_reads_and_predicts():
    from mlm_lessons import config, musiclm

    frames = {"mulan": 1, "semantic": 2, "coarse": 4, "fine": 4}      # 2 semantic frames = 4 acoustic ones
    for preset in ("tiny", "paper"):
        layouts = musiclm.stage_layouts(config.get_preset(preset))
        ax = diagrams.stage_layouts_diagram(layouts, semantic_frames=2)
        cells = collections.Counter(patch.get_gid() for patch in ax.patches)
        for name, layout in layouts.items():
            for kind in layout.prefix_kinds:
                assert cells[f"{name}/prefix/{kind}"] == frames[kind] * layout.prefix.kinds[kind].levels
            assert cells[f"{name}/target/{name}"] == frames[name] * layout.target.kinds[name].levels
            assert cells[f"{name}/bos"] == 1
        assert cells["tokens/fine"] == frames["fine"] * layouts["fine"].target.kinds["fine"].levels
