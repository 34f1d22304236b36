"""Label-mixup and latent boundary generators, the outlier store (SD: test_diffusion.py)."""
import dataclasses
import io

import pytest
import torch

from ood_lib.config import DDPMConfig, LatentOutlierConfig, MixupConfig
from ood_lib.diffusion import build_unet, class_embeddings, generate, guided_eps, mix_labels, sample
from ood_lib.outliers import (OutlierSet, boundary_indices, boundary_outliers, kth_neighbour_distance,
                              label_mixup, latent_boundary_outliers)

TINY = DDPMConfig(block_out_channels=(8, 16, 16))
C = 3


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet(TINY, C).eval()


@pytest.fixture(scope="module")
def latent_unet():
    torch.manual_seed(1)
    return build_unet(DDPMConfig(block_out_channels=(8, 16)), C, image_size=8, channels=4).eval()


def test_mix_labels_is_the_convex_combination_of_embeddings(unet):
    e = class_embeddings(unet)
    a, b, lam = torch.tensor([0, 2]), torch.tensor([1, 0]), torch.tensor([0.25, 0.5])
    got = mix_labels(unet, a, b, lam)
    torch.testing.assert_close(got[0], 0.25 * e[0] + 0.75 * e[1])
    torch.testing.assert_close(got[1], 0.5 * e[2] + 0.5 * e[0])


def test_embedding_vectors_condition_like_their_labels(unet):
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        by_label = guided_eps(unet, x, 500, y, 2.0)
        by_vector = guided_eps(unet, x, 500, class_embeddings(unet)[y], 2.0)
    torch.testing.assert_close(by_vector, by_label, rtol=0, atol=1e-6)
    assert isinstance(unet.class_embedding, torch.nn.Embedding)  # lookup restored afterwards


def test_label_mixup_with_lambda_one_is_plain_conditional_sampling(unet):
    cfg = MixupConfig(lam_low=1.0, lam_high=1.0, w=2.0, stride=250, n_outliers=6, batch_size=4, seed=5)
    out = label_mixup(unet, 6, C, cfg, progress=False)
    assert (out.lam == 1).all() and (out.y_target != out.y_source).all()
    plain = sample(unet, out.y_source, w=2.0, stride=250, seed=5)
    torch.testing.assert_close(out.x, plain, rtol=0, atol=1e-4)


def test_label_mixup_draws_two_classes_and_lambda_in_range_and_mixing_matters(unet):
    cfg = MixupConfig(lam_low=0.3, lam_high=0.7, stride=250, seed=0)
    out = label_mixup(unet, 80, C, cfg, progress=False)
    assert (out.y_source != out.y_target).all()
    assert out.lam.min() >= 0.3 and out.lam.max() <= 0.7 and out.lam.std() > 0.05
    pure = sample(unet, out.y_source[:8], w=cfg.w, stride=250, seed=0)
    assert (out.x[:8] - pure).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_label_mixup_is_deterministic_under_a_seed(unet, sampler):
    cfg = MixupConfig(stride=250, sampler=sampler, seed=3)
    a = label_mixup(unet, 5, C, cfg, progress=False)
    b = label_mixup(unet, 5, C, cfg, progress=False)
    c = label_mixup(unet, 5, C, dataclasses.replace(cfg, seed=4), progress=False)
    assert torch.equal(a.x, b.x) and torch.equal(a.lam, b.lam)
    assert not torch.equal(a.x, c.x)


def test_samples_do_not_depend_on_the_batch_size(unet):
    y = torch.tensor([0, 1, 2, 0, 1])
    whole = generate(unet, y, 1.0, 250, seed=2)
    batched = generate(unet, y, 1.0, 250, seed=2, batch_size=2)
    torch.testing.assert_close(batched, whole, rtol=0, atol=1e-4)  # float reassociation across batch sizes


def test_unknown_sampler_is_rejected(unet):
    with pytest.raises(ValueError, match="unknown sampler"):
        generate(unet, torch.tensor([0]), 1.0, 250, sampler="euler")


def test_kth_neighbour_distance_by_hand():
    bank = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    q = torch.tensor([[0.0], [2.0]])
    assert kth_neighbour_distance(q, bank, 1).tolist() == [0.0, 1.0]
    assert kth_neighbour_distance(q, bank, 2).tolist() == [1.0, 1.0]
    # excluding itself, the 2nd neighbour of 0 is 3, of 1 is 3, of 3 is 0 (of 1, 0, 7), of 7 is 1
    assert kth_neighbour_distance(bank, bank, 2, exclude_self=True).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_boundary_selection_picks_the_largest_kth_neighbour_distance():
    # a tight cluster at 0..0.3, a loner at 5 and a farther loner at -4
    pts = torch.tensor([[0.0], [0.1], [0.2], [0.3], [5.0], [-4.0]])
    # k=2 distances without self: 0.2, 0.1, 0.1, 0.2, 4.8, 4.2 -> boundary: 5.0 then -4.0
    assert boundary_indices(pts, k=2, n=2).tolist() == [4, 5]
    assert set(boundary_indices(pts, k=2, n=4).tolist()) == {4, 5, 0, 3}


def test_boundary_outliers_keep_the_farthest_perturbations():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(60, 8, generator=g)
    labels = torch.arange(60) % 3
    out = boundary_outliers(emb, labels, 3, k=3, n_boundary=4, sigma=0.3, n_candidates=10, n_keep=5,
                            generator=torch.Generator().manual_seed(1))
    assert out["z"].shape == (15, 8) and torch.bincount(out["y"]).tolist() == [5, 5, 5]
    torch.testing.assert_close(out["z"].norm(dim=1), torch.ones(15))
    assert (labels[out["boundary_index"]] == out["y"]).all()
    # replay class 0: the kept candidates are the 5 largest distances among all 40
    unit = torch.nn.functional.normalize(emb, dim=1)
    e0 = unit[labels == 0]
    b = boundary_indices(e0, 3, 4)
    g1 = torch.Generator().manual_seed(1)
    cand = torch.nn.functional.normalize(e0[b.repeat_interleave(10)] + 0.3 * torch.randn(40, 8, generator=g1), dim=1)
    d = kth_neighbour_distance(cand, e0, 3)
    torch.testing.assert_close(out["distance"][:5], d.topk(5).values)
    assert out["distance"][:5].min() >= d.median()


def test_latent_boundary_outliers_are_deterministic_latents(latent_unet):
    g = torch.Generator().manual_seed(0)
    dim = class_embeddings(latent_unet).shape[1]
    emb, labels = torch.randn(30, dim, generator=g), torch.arange(30) % C
    cfg = LatentOutlierConfig(k=2, n_boundary=3, n_candidates=4, stride=250, n_outliers=7, batch_size=4, seed=2)
    a = latent_boundary_outliers(latent_unet, emb, labels, C, cfg, progress=False)
    b = latent_boundary_outliers(latent_unet, emb, labels, C, cfg, progress=False)
    assert a.latents.shape == (7, 4, 8, 8) and torch.equal(a.latents, b.latents)
    assert torch.equal(a.y_source, b.y_source) and (labels[a.source_index] == a.y_source).all()


def test_outlier_set_round_trips_through_the_artefact_format_and_loads_as_datasets():
    s = OutlierSet("mixup", torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 0]), {"w": 1.0},
                   y_target=torch.tensor([1, 2, 0, 2]), lam=torch.full((4,), 0.5), seconds=1.5, unet_evals=80)
    buf = io.BytesIO()
    torch.save(s.to_dict(), buf)
    buf.seek(0)
    back = OutlierSet.from_dict(torch.load(buf, weights_only=True))
    assert torch.equal(back.x, s.x) and torch.equal(back.lam, s.lam) and back.params == {"w": 1.0}
    assert back.latents is None and back.unet_evals == 80
    x, y = back.dataset()[2]
    assert torch.equal(x, s.x[2]) and y == 2
    with pytest.raises(ValueError, match="no latents"):
        back.dataset("latents")
    ood = back.as_ood_set()
    assert ood.name == "synthetic_mixup" and ood.group == "synthetic" and len(ood) == 4
