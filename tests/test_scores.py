"""Each OOD score on a toy case with a known answer (all scores: higher = more OOD)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ood_lib.config import ClassifierConfig, ScoreConfig
from ood_lib.images import ImageSet
from ood_lib.evaluation import evaluate_model, metrics_table, score_sets
from ood_lib.metrics import ood_metrics
from ood_lib.scores import (SCORES, DODScorer, MahalanobisScorer, ScoreSuite, ViMScorer, applicable_scores,
                            binary_head, cosine_to_proxy, max_logit, msp, odin)
from ood_lib.train import build_model, load_classifier, train_classifier


def _gaussians(n=300, d=8, shift=4.0, seed=0):
    """Two Gaussians with means along different axes (they stay apart after L2 normalisation)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.eye(d)
    return torch.randn(n, d, generator=g) + shift * e[0], torch.randn(n, d, generator=g) + shift * e[1]


def test_maxlogit_binary_head_and_cosine_hand_values():
    logits = torch.tensor([[3.0, -1.0], [0.5, 0.2]])
    assert max_logit(logits).tolist() == [-3.0, -0.5]
    assert binary_head(torch.tensor([[0.0, math.log(3.0)]])).item() == pytest.approx(0.75)
    proxies = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    emb = torch.tensor([[5.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(cosine_to_proxy(emb, proxies), torch.tensor([-1.0, -1 / math.sqrt(2)]))


def test_mahalanobis_identity_precision_is_nearest_mean_squared_distance():
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(60, 5, generator=g), torch.arange(60) % 3
    q = torch.randn(10, 5, generator=g)
    got = MahalanobisScorer(feats, labels, precision=torch.eye(5))(q)
    means = torch.stack([feats[labels == c].mean(0) for c in range(3)])
    ref = torch.cdist(q.double(), means.double()).pow(2).min(dim=1).values.float()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_mahalanobis_tied_covariance_hand_formula_and_affine_invariance():
    g = torch.Generator().manual_seed(1)
    feats, labels = torch.randn(200, 4, generator=g), torch.arange(200) % 2
    feats[labels == 1] += 3.0
    q = torch.randn(7, 4, generator=g)
    got = MahalanobisScorer(feats, labels)(q)
    x, y = feats.double().numpy(), labels.numpy()
    mu = np.stack([x[y == c].mean(0) for c in (0, 1)])
    cov = sum((x[y == c] - mu[c]).T @ (x[y == c] - mu[c]) for c in (0, 1)) / len(x)
    prec = np.linalg.inv(cov)
    ref = np.min([np.einsum("nd,de,ne->n", q.double().numpy() - m, prec, q.double().numpy() - m) for m in mu], axis=0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5)
    a = torch.randn(4, 4, generator=g) + 3 * torch.eye(4)                    # invertible map of the features
    moved = MahalanobisScorer(feats @ a.t() + 1.0, labels)(q @ a.t() + 1.0)
    torch.testing.assert_close(moved, got, rtol=1e-4, atol=1e-4)


def test_vim_residual_and_virtual_logit():
    # 3 classes, 4-d features; the head's rows span the first 3 axes, so the 4th is the residual
    w = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    b = torch.zeros(3)
    g = torch.Generator().manual_seed(0)
    a, r = torch.randn(100, 3, generator=g) * 3, torch.randn(100, 1, generator=g) * 0.1
    train = torch.cat([torch.cat([a, r], 1), torch.cat([a, -r], 1)])   # residual axis exactly uncorrelated
    vim = ViMScorer(train, w, b, dim=3)
    train_logits = train @ w.t()
    alpha = train_logits.max(1).values.mean() / train[:, 3].abs().mean()
    assert vim.alpha == pytest.approx(alpha.item(), rel=1e-4)
    q = torch.tensor([[1.0, 2.0, 0.5, 0.0], [1.0, 2.0, 0.5, 2.0]])
    logits = q @ w.t()
    s = vim(q, logits)
    lse = torch.logsumexp(logits, dim=1)
    torch.testing.assert_close(s, (alpha * q[:, 3].abs() - lse).float(), rtol=1e-4, atol=1e-4)
    assert s[1] > s[0]                      # the off-space point is more OOD
    with pytest.raises(ValueError, match="principal dimension"):
        ViMScorer(train, w, b, dim=4)


def test_dod_distance_and_voting_terms_count_exactly():
    # ID bank on the unit circle near angle 0, outliers near angle pi/2 (features are normalised)
    ang_id = torch.tensor([0.0, 0.05, -0.05, 0.1, -0.1])
    ang_out = torch.tensor([1.5, 1.55, 1.6])
    to_xy = lambda a: torch.stack([a.cos(), a.sin()], dim=1)
    dod = DODScorer(to_xy(ang_id), to_xy(ang_out), k=3, alpha=2.0)
    q = to_xy(torch.tensor([0.0, 1.52, 0.8]))
    # distance: sum of the 3 smallest squared chord distances to ID points
    ref = (torch.cdist(q, to_xy(ang_id)) ** 2).sort(dim=1).values[:, :3].sum(1)
    torch.testing.assert_close(dod.distance(q).float(), ref, rtol=1e-4, atol=1e-5)
    # votes: q0's 3 nearest are ID points, q1's are the 3 outliers, q2 (between) is checked by brute force
    votes = dod.votes(q)
    assert votes[0].item() == 0 and votes[1].item() == 3
    joint = torch.cat([to_xy(ang_id), to_xy(ang_out)])
    nn_idx = torch.cdist(q[2:], joint).argsort(dim=1)[0, :3]
    assert votes[2].item() == (nn_idx >= 5).sum().item()
    torch.testing.assert_close(dod(q).float(), (dod.distance(q) + 2.0 * votes).float())
    with pytest.raises(ValueError, match="outlier bank"):
        DODScorer(to_xy(ang_id), None, k=3).votes(q)


def _tiny_model(loss="ce", outliers=False):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.rand(60, 1, 28, 28, generator=g) * 0.2
    for c in range(3):
        x[y == c, :, 9 * c:9 * c + 9] += 0.7
    cfg = ClassifierConfig(width=4, epochs=2, batch_size=20, outlier_batch_size=10)
    ox = torch.rand(20, 1, 28, 28, generator=g) if outliers else None
    extra = {"outliers": ox, "outlier_labels": torch.arange(20) % 3} if outliers else {}
    art = train_classifier(x, y, 3, cfg, loss=loss, **extra)
    return load_classifier(art), x, y, ox


def test_odin_with_zero_epsilon_and_unit_temperature_equals_msp():
    model, x, _, _ = _tiny_model()
    logits = model.head(model.features(x)).detach()
    torch.testing.assert_close(odin(model, x, temperature=1.0, epsilon=0.0), msp(logits), rtol=1e-5, atol=1e-6)
    # the perturbation moves inputs toward higher confidence: the score can only drop (T = 1)
    assert (odin(model, x, temperature=1.0, epsilon=0.01) <= msp(logits) + 1e-6).float().mean() > 0.9


def test_applicable_scores_by_model_type():
    cfg = ClassifierConfig(width=4)
    assert set(applicable_scores(build_model("ce", 3, 1, cfg))) == set(SCORES) - {"cosine_proxy", "sd_binary", "dod"}
    metric = applicable_scores(build_model("arcface", 3, 1, cfg), has_outliers=True)
    assert "cosine_proxy" in metric and "vim" not in metric and "dod" in metric
    three = applicable_scores(build_model("sd_three_head", 3, 1, cfg), has_outliers=True)
    assert "sd_binary" in three and "vim" in three and "cosine_proxy" not in three


@pytest.mark.parametrize("loss", ["ce", "sd_three_head", "arcface"])
def test_suite_scores_every_applicable_score_and_evaluation_table(loss):
    model, x, y, ox = _tiny_model(loss, outliers=loss != "ce")
    suite = ScoreSuite(model, x, y, ScoreConfig(knn_k=3, dod_k=3), outliers_x=ox)
    assert suite.names == applicable_scores(model, has_outliers=ox is not None)
    g = torch.Generator().manual_seed(5)
    far = ImageSet("noise", torch.rand(25, 1, 28, 28, generator=g), group="far")
    near = ImageSet("shifted", x[:20].roll(5, dims=3), group="near")
    scored = score_sets(model, ImageSet("train", x, y), ImageSet("test", x[:30], y[:30]), [near, far],
                        ScoreConfig(knn_k=3, dod_k=3), outliers_x=ox)
    assert set(scored["id"]) == set(suite.names) and scored["scores"] == suite.names
    assert all(v.shape == (30,) and torch.isfinite(v).all() for v in scored["id"].values())
    table = metrics_table(scored, loss=loss, seed=0)
    assert len(table) == 2 * len(suite.names) and set(table.ood_group) == {"near", "far"}
    row = table[(table.ood_dataset == "noise") & (table.score == "msp")].iloc[0]
    assert row.AUROC == pytest.approx(ood_metrics(scored["id"]["msp"], scored["ood"]["noise"]["msp"])["AUROC"])
    assert row.loss == loss and 0 <= row.ID_acc <= 1
    again = evaluate_model(model, ImageSet("train", x, y), ImageSet("test", x[:30], y[:30]), [near, far],
                           ScoreConfig(knn_k=3, dod_k=3), outliers_x=ox, scores=("msp", "knn"))
    assert set(again.score) == {"msp", "knn"}


def test_suite_rejects_unknown_scores():
    model, x, y, _ = _tiny_model()
    with pytest.raises(KeyError, match="valid scores"):
        ScoreSuite(model, x, y, scores=("msp", "nope"))


def test_two_gaussians_every_feature_score_separates():
    id_feats, ood_feats = _gaussians()
    labels = torch.zeros(len(id_feats), dtype=torch.long)
    maha = MahalanobisScorer(id_feats, labels)
    dod = DODScorer(id_feats[:200], ood_feats[:100], k=5)
    q_id, q_ood = id_feats[200:], ood_feats[200:]
    assert ood_metrics(maha(q_id), maha(q_ood))["AUROC"] > 0.99
    assert ood_metrics(dod(q_id), dod(q_ood))["AUROC"] > 0.99
    # logit scores: a confident ID and a flat OOD population
    lid = F.one_hot(torch.arange(100) % 4, 4).float() * 6
    lood = torch.randn(100, 4, generator=torch.Generator().manual_seed(0)) * 0.3
    for f in (msp, max_logit):
        assert ood_metrics(f(lid), f(lood))["AUROC"] == 1.0
