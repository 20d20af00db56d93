"""Vector quantisation: nearest codes, straight-through gradients, the losses, EMA updates by the book,
k-means initialisation, dead-code replacement, residual VQ with quantiser dropout, bfloat16 autocast,
checkpoints that resume exactly, DDP that matches one process, and errors that say what to fix."""

from __future__ import annotations


import pytest
import torch

from _torchrun import run_on_two_cpu_processes
from _ddp_quantize_worker import small_rvq, train
from mlm_lessons.quantize import FactorisedResidualVQ, ResidualVQ, VectorQuantizer, kmeans, squared_distances



def clustered(num_clusters: int = 16, dim: int = 8, count: int = 512, spread: float = 0.1, seed: int = 0):
    """``(count, dim)`` vectors around ``num_clusters`` well-separated centres, and the centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = 10 * torch.randn(num_clusters, dim, generator=generator)
    which = torch.randint(num_clusters, (count,), generator=generator)
    return centres[which] + spread * torch.randn(count, dim, generator=generator), centres


def low_rank_batch(seed: int, batch: int = 16, frames: int = 32, dim: int = 8) -> torch.Tensor:
    """``(batch, frames, dim)``: a mixture of Gaussians on a 3-dimensional subspace, plus a little noise."""
    generator = torch.Generator().manual_seed(100)
    centres, basis = 2 * torch.randn(6, 3, generator=generator), torch.randn(3, dim, generator=generator)
    generator.manual_seed(seed)
    latent = centres[torch.randint(6, (batch, frames), generator=generator)]
    latent = latent + 0.5 * torch.randn(batch, frames, 3, generator=generator)
    return latent @ basis + 0.05 * torch.randn(batch, frames, dim, generator=generator)


def mean_squared_error(quantizer: VectorQuantizer, vectors: torch.Tensor) -> float:
    x = vectors[None]
    return (quantizer.decode(quantizer.encode(x)) - x).pow(2).mean().item()


# ----------------------------------------------------------------------------------------------------
# One quantiser


def test_nearest_code_is_the_brute_force_argmin_and_decode_gives_codebook_rows():
    quantizer = VectorQuantizer(8, 32, kmeans_init=False).eval()
    x = torch.randn(3, 20, 8)
    brute_force = (x[:, :, None, :] - quantizer.codebook).pow(2).sum(-1).argmin(-1)         # (3, 20)
    codes = quantizer.encode(x)
    assert codes.dtype == torch.int64 and torch.equal(codes, brute_force)
    torch.testing.assert_close(squared_distances(x.reshape(-1, 8), quantizer.codebook),
                               torch.cdist(x.reshape(-1, 8), quantizer.codebook).pow(2), rtol=1e-4, atol=1e-4)
    assert torch.equal(quantizer.decode(codes), quantizer.codebook[codes])
    output = quantizer(x)
    assert torch.equal(output.codes, codes) and torch.equal(output.quantized, quantizer.codebook[codes])


def test_straight_through_gradient_is_exactly_the_identity():
    quantizer = VectorQuantizer(8, 16, kmeans_init=False).eval()
    x = torch.randn(2, 10, 8, requires_grad=True)
    weights = torch.randn(2, 10, 8)
    (weights * quantizer(x).quantized).sum().backward()
    assert torch.equal(x.grad, weights)


def test_commitment_loss_pulls_x_towards_its_code_and_ema_codebook_gets_no_gradient():
    beta = 0.25
    quantizer = VectorQuantizer(8, 16, commitment_weight=beta, kmeans_init=False).eval()
    x = torch.randn(2, 10, 8, requires_grad=True)
    output = quantizer(x)
    output.loss.backward()
    q = quantizer.codebook[output.codes]
    torch.testing.assert_close(x.grad, 2 * beta * (x.detach() - q) / x.numel())
    torch.testing.assert_close(output.loss, beta * (x.detach() - q).pow(2).mean())
    assert quantizer.codebook.grad is None and not quantizer.codebook.requires_grad
    assert list(quantizer.parameters()) == []


def test_without_ema_the_codebook_learns_from_the_codebook_loss():
    beta = 0.25
    quantizer = VectorQuantizer(8, 16, ema=False, commitment_weight=beta, kmeans_init=False)
    assert isinstance(quantizer.codebook, torch.nn.Parameter)
    x = torch.randn(2, 10, 8, requires_grad=True)
    output = quantizer(x)
    output.loss.backward()
    q = quantizer.codebook.detach()[output.codes]
    per_vector = (-2 * (x.detach() - q) / x.numel()).reshape(-1, 8)            # d loss / d q, one row per x
    expected = torch.zeros(16, 8).index_add_(0, output.codes.reshape(-1), per_vector)
    torch.testing.assert_close(quantizer.codebook.grad, expected)
    torch.testing.assert_close(x.grad, 2 * beta * (x.detach() - q) / x.numel())  # codebook loss: no x gradient


def test_ema_update_follows_the_vq_vae_formula_with_laplace_smoothing():
    decay, epsilon = 0.9, 1e-5
    quantizer = VectorQuantizer(4, 8, decay=decay, epsilon=epsilon, kmeans_init=False)
    old_size, old_sum = quantizer.cluster_size.clone(), quantizer.embedding_sum.clone()
    old_codebook = quantizer.codebook.clone()
    x = torch.randn(4, 16, 4)
    output = quantizer(x)

    flat = x.reshape(-1, 4)
    codes = ((flat[:, None] - old_codebook) ** 2).sum(-1).argmin(-1)  # chosen with the old codebook
    assert torch.equal(output.codes.reshape(-1), codes)
    counts = torch.bincount(codes, minlength=8).float()
    sums = torch.stack([flat[codes == k].sum(0) for k in range(8)])
    size = decay * old_size + (1 - decay) * counts
    embedding_sum = decay * old_sum + (1 - decay) * sums
    smoothed = (size + epsilon) / (size.sum() + 8 * epsilon) * size.sum()
    torch.testing.assert_close(quantizer.cluster_size, size)
    torch.testing.assert_close(quantizer.embedding_sum, embedding_sum)
    torch.testing.assert_close(quantizer.codebook, embedding_sum / smoothed[:, None])
    assert quantizer.cluster_size.dtype == quantizer.embedding_sum.dtype == torch.float32
    assert int(quantizer.step) == 1 and torch.equal(quantizer.steps_unused, (counts == 0).long())


def test_kmeans_init_beats_random_codes_and_finds_every_cluster():
    vectors, centres = clustered()
    random_init = VectorQuantizer(8, 16, kmeans_init=False)
    seeding_only = VectorQuantizer(8, 16, kmeans_iterations=0)
    full = VectorQuantizer(8, 16, kmeans_iterations=10)
    for quantizer in (seeding_only, full):
        quantizer.train()(vectors[None])
    errors = [mean_squared_error(q, vectors) for q in (random_init, seeding_only, full)]
    assert errors[2] <= errors[1] < errors[0] / 100
    assert errors[2] < 2 * 0.1 ** 2                       # about the clusters' own spread
    codes = full.encode(vectors[None])
    assert torch.bincount(codes.reshape(-1), minlength=16).min() > 0       # every code used
    nearest_centre = torch.cdist(full.codebook, centres).argmin(-1)
    assert sorted(nearest_centre.tolist()) == list(range(16))             # one code per cluster


def test_kmeans_with_fewer_vectors_than_clusters_samples_them_with_replacement():
    vectors = torch.randn(5, 3)
    centroids, counts = kmeans(vectors, 12, iterations=2, generator=torch.Generator().manual_seed(0))
    matches = (centroids[:, None] == vectors[None]).all(-1)                  # (12, 5)
    assert matches.any(1).all() and matches.any(0).all()  # every centroid is a vector, every vector is used
    assert counts.sum() == 5 and (counts > 0).sum() == 5


def test_dead_codes_are_reseeded_next_to_the_code_of_a_vector_of_the_current_batch():
    quantizer = VectorQuantizer(4, 8, kmeans_init=False, dead_code_steps=2, seed=1)
    generator = torch.Generator().manual_seed(0)
    batches = [5 + 0.1 * torch.randn(1, 64, 4, generator=generator) for _ in range(3)]  # far from most codes

    first = quantizer(batches[0])
    never_used = torch.bincount(first.codes.reshape(-1), minlength=8) == 0
    assert never_used.sum() >= 4 and first.metrics["replaced_codes"] == 0
    second = quantizer(batches[1])
    never_used &= torch.bincount(second.codes.reshape(-1), minlength=8) == 0
    assert second.metrics["replaced_codes"] == never_used.sum() and (quantizer.steps_unused[never_used] == 0).all()

    # each dead code now lies a tenth of the way from a batch vector's (live) code to that vector
    vectors, live_codes = batches[1].reshape(-1, 4), quantizer.codebook[~never_used]
    nearest_live = live_codes[torch.cdist(vectors, live_codes).argmin(-1)]                # (64, 4)
    seeds = nearest_live + 0.1 * (vectors - nearest_live)
    reseeded = torch.isclose(quantizer.codebook[:, None], seeds[None], atol=1e-5).all(-1).any(1)  # (8,)
    assert torch.equal(reseeded, never_used)
    third = quantizer(batches[2])                                          # re-seeded codes now win vectors
    assert torch.bincount(third.codes.reshape(-1), minlength=8)[never_used].sum() > 0


def test_a_checkpoint_resumes_training_exactly():
    def steps(quantizer, first, last):
        for step in range(first, last):
            quantizer(low_rank_batch(step, batch=4))

    uninterrupted = ResidualVQ(8, 16, 2, quantizer_dropout=True, dead_code_steps=1).train()
    steps(uninterrupted, 0, 4)
    before = ResidualVQ(8, 16, 2, quantizer_dropout=True, dead_code_steps=1).train()
    steps(before, 0, 2)
    resumed = ResidualVQ(8, 16, 2, quantizer_dropout=True, dead_code_steps=1).train()
    resumed.load_state_dict(before.state_dict())
    steps(resumed, 2, 4)
    for name, value in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


# ----------------------------------------------------------------------------------------------------
# Residual VQ


def test_each_level_lowers_the_residual_error_on_structured_data():
    quantizer = ResidualVQ(8, 16, 4, dead_code_steps=2).train()
    held_out = low_rank_batch(seed=-1)
    quantizer(low_rank_batch(0))                        # k-means initialisation only
    after_init = quantizer.residual_errors(held_out)
    for step in range(1, 8):
        quantizer(low_rank_batch(step))
    trained = quantizer.residual_errors(held_out)
    for errors in (after_init, trained):
        assert errors.shape == (4,) and (errors[1:] <= errors[:-1]).all(), errors
        assert errors[-1] < errors[0] / 4
    assert trained[-1] <= after_init[-1] * 1.1


def test_a_warm_up_passes_vectors_through_then_starts_every_level_from_its_latest_vectors():
    # Warm-up batches come from one set of clusters, then from another: the codes must start on the second
    # set (the latest vectors the warm-up kept), over all of it, not only on the batch that ends the warm-up.
    old, _ = clustered(num_clusters=16, count=512, seed=1)
    new, centres = clustered(num_clusters=16, count=512, seed=2)
    quantizer = ResidualVQ(8, 16, 2, warmup_steps=4, warmup_vectors=1024).train()
    untouched = [level.codebook.clone() for level in quantizer.levels]
    for batch in (old[None], old[None], new[None], new[None]):
        out = quantizer(batch)
        assert torch.equal(out.quantized, batch) and out.loss.item() == 0.0 and out.metrics["commitment"] == 0
    assert all(torch.equal(level.codebook, before) for level, before in zip(quantizer.levels, untouched))
    last_batch = new[new.norm(dim=-1) < new.norm(dim=-1).median()][None]    # only some of the clusters
    out = quantizer(last_batch)
    assert out.loss.item() > 0 and not torch.equal(out.quantized, last_batch)
    nearest_centre = torch.cdist(quantizer.levels[0].codebook, centres).argmin(-1)
    assert sorted(nearest_centre.tolist()) == list(range(16))             # one code per cluster of the new set
    assert quantizer.residual_errors(new[None])[0] < 2 * 0.1 ** 2
    assert quantizer.residual_errors(old[None])[0] > 1.0                   # the old set was forgotten


def test_a_warm_up_ends_once_even_when_a_resumed_run_lengthens_it_or_a_short_one_cuts_it_to_zero():
    vectors, _ = clustered(num_clusters=16, count=512)
    lengthened = ResidualVQ(8, 16, 2, warmup_steps=1).train()
    lengthened(vectors[None])                                  # the warm-up step
    lengthened(vectors[None])                                  # k-means start, then quantised
    lengthened.warmup_steps = 10                               # a longer run resumed: already quantising
    out = lengthened(vectors[None])
    assert lengthened.quantising and out.loss.item() > 0 and not torch.equal(out.quantized, vectors[None])
    cut = ResidualVQ(8, 16, 2, warmup_steps=5).train()
    cut.warmup_steps = 0                                       # a run too short for its warm-up
    cut(vectors[None])
    assert cut.quantising and cut.residual_errors(vectors[None])[0] < 2 * 0.1 ** 2   # k-means on that batch


def test_without_a_warm_up_the_levels_start_from_the_first_batch_alone():
    vectors, centres = clustered(num_clusters=16, count=512)
    first_batch = vectors[vectors.norm(dim=-1) < vectors.norm(dim=-1).median()][None]
    quantizer = ResidualVQ(8, 16, 2).train()
    quantizer(first_batch)
    assert quantizer.residual_errors(vectors[None])[0] > 10 * quantizer.residual_errors(first_batch)[0]


def test_encode_decode_round_trip_and_fewer_levels():
    quantizer = ResidualVQ(8, 16, 4)
    quantizer.train()(low_rank_batch(0))
    quantizer.eval()
    x = low_rank_batch(1, batch=3)
    output = quantizer(x)
    codes = quantizer.encode(x)
    assert codes.shape == (3, 4, 32) and torch.equal(output.codes, codes)
    torch.testing.assert_close(quantizer.decode(codes), output.quantized, rtol=0, atol=1e-6)
    assert torch.equal(quantizer.encode(x, num_levels=2), codes[:, :2])
    coarse = quantizer(x, num_levels=2)
    assert coarse.codes.shape == (3, 2, 32)
    torch.testing.assert_close(quantizer.decode(codes[:, :2]), coarse.quantized, rtol=0, atol=1e-6)
    assert set(output.metrics) == {"commitment", "replaced_codes"} | {f"{name}/{level}" for name in
                                                                     ("perplexity", "usage") for level in range(4)}


def test_quantizer_dropout_varies_levels_per_example_and_masks_their_loss():
    beta, levels = 0.5, 4
    quantizer = ResidualVQ(8, 16, levels, quantizer_dropout=True, ema=False, kmeans_init=False,
                           commitment_weight=beta)  # ema=False: the forward pass leaves the codebooks as they are
    x = low_rank_batch(0, batch=32, frames=4)
    output = quantizer.train()(x)

    partial_sums = torch.stack([quantizer.decode(output.codes[:, :n]) for n in range(1, levels + 1)])
    matches = (partial_sums - output.quantized).abs().amax((2, 3)) < 1e-5      # (levels, batch)
    assert matches.any(0).all()                                               # each example: some prefix
    levels_used = matches.float().argmax(0) + 1                               # (batch,)
    assert len(set(levels_used.tolist())) > 1

    expected = torch.zeros(())
    for level in range(levels):
        residual = x - (quantizer.decode(output.codes[:, :level]) if level else 0)
        per_example = (residual - quantizer.levels[level].codebook[output.codes[:, level]]).pow(2).mean((1, 2))
        expected = expected + ((beta + 1) * per_example * (levels_used > level)).mean()  # commitment + codebook
    torch.testing.assert_close(output.loss, expected)

    evaluated = quantizer.eval()(x)
    torch.testing.assert_close(evaluated.quantized, quantizer.decode(evaluated.codes), rtol=0, atol=1e-6)


def test_bfloat16_autocast_on_cpu_keeps_float32_codebooks():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(8, 8)
    quantizer = ResidualVQ(8, 16, 3, quantizer_dropout=True, dead_code_steps=1).train()
    inputs = low_rank_batch(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latents = encoder(inputs)
        assert latents.dtype == torch.bfloat16
        for _ in range(3):
            output = quantizer(latents)
        (output.loss + output.quantized.float().pow(2).mean()).backward()
    assert output.quantized.dtype == torch.bfloat16 and output.loss.dtype == torch.float32
    assert encoder.weight.grad is not None and torch.isfinite(encoder.weight.grad).all()
    for level in quantizer.levels:
        assert level.codebook.dtype == level.cluster_size.dtype == level.embedding_sum.dtype == torch.float32
    quantizer.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = quantizer.encode(latents)
    assert torch.equal(codes, quantizer.encode(latents.detach().float()))


@pytest.mark.parametrize("warmup_steps", [0, 2])
def test_two_ddp_processes_keep_the_codebooks_of_one_process_on_the_global_batch(tmp_path, warmup_steps):
    run_on_two_cpu_processes("_ddp_quantize_worker.py", str(tmp_path), str(warmup_steps))

    single = train(small_rvq(warmup_steps))
    assert sum(single["replaced"]) > 0                     # dead-code replacement did happen
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for result in ranks:
        assert result["replaced"] == single["replaced"]
        for name, value in single["state"].items():
            torch.testing.assert_close(result["state"][name], value, rtol=1e-5, atol=1e-5, msg=name)
    # each rank's loss is the mean over its half of the examples: their mean is the global batch's
    torch.testing.assert_close(torch.tensor(ranks[0]["loss"]) / 2 + torch.tensor(ranks[1]["loss"]) / 2,
                               torch.tensor(single["loss"]))


# ----------------------------------------------------------------------------------------------------
# Errors that say what to fix


def test_bad_inputs_are_refused_with_a_helpful_message():
    quantizer = VectorQuantizer(8, 16)
    residual = ResidualVQ(8, 16, 4)
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, frames, 8\), got \(2, 8\)"):
        quantizer(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, frames, 8\), got \(2, 3, 5\)"):
        residual(torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match="expects a float tensor"):
        quantizer.encode(torch.ones(2, 3, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        residual(torch.full((1, 2, 8), float("nan")))
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantizer(torch.full((1, 2, 8), float("inf")))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\).*from 0 to 16"):
        quantizer.decode(torch.tensor([[0, 16]]))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\).*from -1"):
        residual.decode(torch.tensor([[[-1, 2]]]))
    with pytest.raises(TypeError, match="integer codes"):
        residual.decode(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"codes for 5 levels, but this ResidualVQ has 4"):
        residual.decode(torch.zeros(1, 5, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expects codes of shape \(batch, frames\), got \(3,\)"):
        quantizer.decode(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_levels must be between 1 and 4"):
        residual(torch.randn(1, 2, 8), num_levels=5)
    with pytest.raises(ValueError, match="decay must lie in"):
        VectorQuantizer(8, 16, decay=1.0)


# ----------------------------------------------------------------------------------------------------
# Factorised, normalised codes


def test_factorised_codes_are_the_largest_cosine_in_the_projected_space():
    torch.manual_seed(0)
    quantizer = FactorisedResidualVQ(8, 16, 3, code_dim=4).eval()
    x = low_rank_batch(0, batch=2, frames=5)
    codes = quantizer.encode(x)
    level = quantizer.levels[0]
    projected = level.project_in(x)
    cosines = torch.nn.functional.cosine_similarity(projected[:, :, None], level.codebook[None, None], dim=-1)
    assert codes.shape == (2, 3, 5) and torch.equal(codes[:, 0], cosines.argmax(-1))
    assert torch.allclose(level.unit_codes().norm(dim=-1), torch.ones(16))
    output = quantizer(x)                                     # eval mode: forward = decode(encode)
    assert torch.equal(output.codes, codes)
    torch.testing.assert_close(quantizer.decode(codes), output.quantized, rtol=0, atol=1e-6)
    torch.testing.assert_close(quantizer.decode(codes[:, :2]), quantizer(x, num_levels=2).quantized, rtol=0, atol=1e-6)


def test_factorised_rvq_learns_every_part_and_its_levels_each_lower_the_error():
    """Trained by gradient on structured data: the codebooks, both projections and the input get gradients,
    the held-out error falls, and each level lowers it further."""
    torch.manual_seed(0)
    quantizer = FactorisedResidualVQ(8, 16, 3, code_dim=4, dead_code_steps=5).train()
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=1e-2)
    held_out = low_rank_batch(seed=-1)
    before = quantizer.residual_errors(held_out)
    for step in range(150):
        x = low_rank_batch(step).requires_grad_()
        output = quantizer(x)
        loss = (output.quantized - x.detach()).pow(2).mean() + output.loss
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            assert x.grad.abs().sum() > 0 and all(parameter.grad.abs().sum() > 0 for parameter in quantizer.parameters())
        optimizer.step()
    after = quantizer.residual_errors(held_out)
    assert after[-1] < before[-1] / 4 and (after[1:] < after[:-1]).all(), (before, after)


def test_factorised_dead_codes_are_reseeded_on_projected_vectors_and_dropout_masks_levels():
    quantizer = FactorisedResidualVQ(8, 64, 2, code_dim=4, dead_code_steps=2, quantizer_dropout=True).train()
    x = low_rank_batch(0, batch=32, frames=2)
    quantizer(x)
    assert quantizer.levels[0].steps_unused.max() == 1               # nothing is dead after one step
    output = quantizer(x)
    level = quantizer.levels[0]
    projected = level._project(x).reshape(-1, 4)
    used_now = torch.zeros(64, dtype=torch.bool)
    used_now[output.codes[:, 0].unique()] = True
    reseeded = (level.steps_unused == 0) & ~used_now                     # level 0's codes unused twice
    assert reseeded.sum() > 0 and output.metrics["replaced_codes"] >= reseeded.sum()
    distances = torch.cdist(level.codebook.detach()[reseeded], projected,
                            compute_mode="donot_use_mm_for_euclid_dist").min(-1).values
    assert (distances < 1e-6).all()                                      # each sits on a projected vector
    partial = torch.stack([quantizer.decode(output.codes[:, :n]) for n in (1, 2)])
    matches = (partial - output.quantized).abs().amax((2, 3)) < 1e-5
    assert matches.any(0).all() and matches.all(0).logical_not().any()   # some examples used only level 1


@pytest.mark.parametrize("kind", [ResidualVQ, FactorisedResidualVQ])
def test_a_dropout_share_lets_only_that_share_of_examples_draw_their_levels(kind):
    """quantizer_dropout=0.5 (DAC): the other half of a batch uses every level; 1.0 and True draw for all, as
    SoundStream does, the same draws; a share outside [0, 1] is refused with what it means."""
    levels_used = {}
    for share in (0.0, 0.5, 1.0, True):
        quantizer = kind(8, 16, 4, quantizer_dropout=share).train()
        levels_used[share] = quantizer._levels_per_example(4000, 4, torch.device("cpu"))
    assert (levels_used[0.0] == 4).all()
    assert torch.equal(levels_used[1.0], levels_used[True]) and abs((levels_used[1.0] == 4).float().mean() - 0.25) < 0.03
    assert abs((levels_used[0.5] == 4).float().mean() - (0.5 + 0.5 * 0.25)) < 0.03    # half keep all, 1/4 draw 4
    assert abs((levels_used[0.5] == 1).float().mean() - 0.5 * 0.25) < 0.03
    with pytest.raises(ValueError, match=r"share of training examples .* in \[0, 1\]"):
        kind(8, 16, 4, quantizer_dropout=1.5)
