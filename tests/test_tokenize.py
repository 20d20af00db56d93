"""Semantic tokens: our k-means agrees with scikit-learn's, the tokenizer maps audio to its nearest centroids,
saves and loads with its encoder, and refuses bad input clearly."""

import dataclasses
import math

import pytest
import torch
from sklearn.cluster import KMeans

from mlm_lessons import config, quantize, w2v_bert
from mlm_lessons.tokenize import SemanticTokenizer, embed_clips, seeding_trials

SAMPLE_RATE = 16_000


def blobs(n=4000, dim=16, clusters=40, seed=0):
    """Gaussian clusters of different sizes and spreads, like embeddings are."""
    generator = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(clusters, dim, generator=generator)
    weights = torch.rand(clusters, generator=generator) + 0.2
    which = torch.multinomial(weights, n, replacement=True, generator=generator)
    spread = 0.5 + torch.rand(clusters, 1, generator=generator)
    return centres[which] + spread[which] * torch.randn(n, dim, generator=generator)


def inertia(vectors, centroids):
    return float(quantize.assign_to_centroids(vectors, centroids)[1].sum())


@pytest.mark.parametrize("data_seed", [0, 1])
@pytest.mark.parametrize("clusters", [64, 128])
def test_kmeans_agrees_with_scikit_learn(data_seed, clusters):
    """More clusters than the data's 40 blobs, as semantic tokens are (1,024 clusters of continuous
    embeddings). Single runs of either vary by a few tenths of a percent with the seed: compare means."""
    vectors = blobs(seed=data_seed)
    ours = [inertia(vectors, quantize.kmeans(vectors, clusters, iterations=100, tolerance=1e-4,
                                             seeding_trials=seeding_trials(clusters),
                                             generator=torch.Generator().manual_seed(seed))[0])
            for seed in range(3)]
    theirs = [KMeans(n_clusters=clusters, n_init=1, random_state=seed).fit(vectors.numpy()).inertia_
              for seed in range(3)]
    assert sum(ours) == pytest.approx(sum(theirs), rel=0.01)


def test_lloyd_steps_never_raise_the_inertia_and_tolerance_stops_early():
    vectors = blobs(n=2000)
    values = [inertia(vectors, quantize.kmeans(vectors, 32, iterations=steps,
                                                generator=torch.Generator().manual_seed(0))[0])
              for steps in range(6)]
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(values, values[1:]))
    assert values[-1] < values[0]
    loose, _ = quantize.kmeans(vectors, 32, iterations=100, tolerance=0.5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loose, quantize.kmeans(vectors, 32, iterations=1,
                                                      generator=torch.Generator().manual_seed(0))[0])


def test_assignment_in_chunks_equals_one_matrix_product():
    vectors, centroids = blobs(n=1000), blobs(n=50, seed=3)
    whole = quantize.assign_to_centroids(vectors, centroids, chunk_size=10_000)
    chunked = quantize.assign_to_centroids(vectors, centroids, chunk_size=7)
    torch.testing.assert_close(chunked[0], whole[0])
    torch.testing.assert_close(chunked[1], whole[1])
    brute = torch.cdist(vectors, centroids).argmin(dim=1)
    assert (whole[0] == brute).float().mean() > 0.999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_kmeans_on_a_gpu_matches_the_cpu():
    vectors = blobs()
    cpu, _ = quantize.kmeans(vectors, 16, iterations=50, tolerance=1e-4, generator=torch.Generator().manual_seed(0))
    gpu, _ = quantize.kmeans(vectors.cuda(), 16, iterations=50, tolerance=1e-4,
                             generator=torch.Generator(device="cuda").manual_seed(0))
    assert inertia(vectors, gpu.cpu()) == pytest.approx(inertia(vectors, cpu), rel=0.02)


# ----------------------------------------------------------------------------------------------------
# The tokenizer


def micro_encoder():
    tiny = config.get_preset("tiny")
    section = dataclasses.replace(tiny.w2v_bert, n_mels=16, conv_channels=4, d_model=16, n_heads=2, conv_kernel=3,
                                  contrastive_layers=1, mlm_layers=1, target_codebook_size=16, token_layer=1)
    torch.manual_seed(0)
    return w2v_bert.W2VBert(SAMPLE_RATE, 25, section).eval()


def melodies(count=6, seconds=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    notes = int(seconds * 10)
    frequency = 200 * 2 ** (torch.randint(0, 24, (count, notes), generator=generator) / 12)
    frequency = frequency.repeat_interleave(SAMPLE_RATE // 10, dim=1)
    return list(0.5 * torch.sin(2 * math.pi * torch.cumsum(frequency / SAMPLE_RATE, dim=1)))


@pytest.fixture(scope="module")
def tokenizer():
    return SemanticTokenizer.fit(micro_encoder(), melodies(), num_clusters=8, seed=0)


def test_tokens_are_the_nearest_centroids_of_the_chosen_layer(tokenizer):
    audio = torch.stack(melodies(2, seed=5))
    tokens = tokenizer.semantic_tokens(audio)
    assert tokens.shape == (2, 25) and tokens.dtype == torch.long
    assert 0 <= int(tokens.min()) and int(tokens.max()) < tokenizer.num_clusters == 8
    embeddings = tokenizer.encoder.embeddings(audio, layer=1)
    brute = torch.cdist(embeddings.reshape(-1, 16), tokenizer.centroids).argmin(dim=1).reshape(2, 25)
    assert (tokens == brute).float().mean() > 0.99
    assert tokenizer.frame_rate == 25 and tokenizer.layer == 1


def test_fitting_uses_every_cluster_and_beats_random_centroids(tokenizer):
    clips = melodies()
    vectors = torch.cat(embed_clips(tokenizer.encoder, clips, layer=1))
    tokens = tokenizer.tokens_of(vectors)
    assert len(tokens.unique()) == 8
    random_centroids = vectors[torch.randperm(len(vectors), generator=torch.Generator().manual_seed(1))[:8]]
    assert inertia(vectors, tokenizer.centroids) < inertia(vectors, random_centroids)
    assert tokenizer.inertia(clips) == pytest.approx(inertia(vectors, tokenizer.centroids) / len(vectors), rel=1e-4)


def test_embedding_clips_one_by_one_or_in_batches_agrees():
    encoder = micro_encoder()
    clips = melodies(3) + [melodies(1, seconds=0.6)[0]]        # mixed lengths
    batched = embed_clips(encoder, clips, layer=2, batch_size=8)
    alone = embed_clips(encoder, clips, layer=2, batch_size=1)
    assert [tuple(e.shape) for e in batched] == [(25, 16)] * 3 + [(15, 16)]
    for a, b in zip(batched, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_save_and_load_keep_centroids_with_their_encoder(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path / "tokenizer.pt")
    loaded = SemanticTokenizer.load(path)
    torch.testing.assert_close(loaded.centroids, tokenizer.centroids)
    assert loaded.layer == tokenizer.layer and loaded.encoder.config == tokenizer.encoder.config
    audio = torch.stack(melodies(3, seed=9))
    # The encoder is stored in float16: a frame on a cluster border may change side, few do.
    assert (loaded.semantic_tokens(audio) == tokenizer.semantic_tokens(audio)).float().mean() > 0.9
    again = SemanticTokenizer.load(loaded.save(tmp_path / "again.pt"))
    torch.testing.assert_close(again.semantic_tokens(audio), loaded.semantic_tokens(audio))


def test_bad_input_is_a_clear_error(tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"cannot fit 100 clusters to 50 frames"):
        SemanticTokenizer.fit(micro_encoder(), melodies(2), num_clusters=100)
    with pytest.raises(ValueError, match=r"centroids must be \(num_clusters, 16\)"):
        SemanticTokenizer(micro_encoder(), torch.zeros(8, 12), layer=1)
    with pytest.raises(ValueError, match="layer must be an int from 0"):
        SemanticTokenizer(micro_encoder(), torch.zeros(8, 16), layer=7)
    with pytest.raises(ValueError, match="embeddings have 12 dimensions"):
        tokenizer.tokens_of(torch.zeros(3, 12))
    micro_encoder().save(tmp_path / "encoder.pt")
    with pytest.raises(ValueError, match="not a semantic tokenizer file.*W2VBert.load"):
        SemanticTokenizer.load(tmp_path / "encoder.pt")
    with pytest.raises(FileNotFoundError, match="no semantic tokenizer"):
        SemanticTokenizer.load(tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match="no clips"):
        embed_clips(micro_encoder(), [])


def test_seeding_beyond_the_precomputed_pool_draws_from_every_vector():
    """Past KMEANS_SEEDING_POOL vectors, seeding computes distances as it draws: still every centroid distinct."""
    vectors = torch.randn(quantize.KMEANS_SEEDING_POOL + 500, 4, generator=torch.Generator().manual_seed(0))
    clusters = quantize.KMEANS_SEEDING_POOL + 100
    centroids, counts = quantize.kmeans(vectors, clusters, iterations=0, generator=torch.Generator().manual_seed(0))
    assert len(torch.unique(centroids, dim=0)) == clusters and (counts > 0).all()
