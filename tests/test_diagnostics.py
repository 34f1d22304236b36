import math

import numpy as np
import pytest
import torch

from ood_lib.clustering import (
    cluster_purity,
    kmeans_labels,
    match_clusters,
    matched_accuracy,
)
from ood_lib.diagnostics import (
    UNetEvalCounter,
    frechet_distance,
    nearest_distance,
    per_thousand,
)

# ---------------------------------------------------------------- frechet_distance

def _reference_fd(a, b):
    """Independent closed form: Tr (Σa Σb)^{1/2} = Σ sqrt(eig(Σa^{1/2} Σb Σa^{1/2})), ddof=1."""
    sa, sb = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    w, v = np.linalg.eigh(sa)
    ra = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_root = np.sqrt(np.clip(np.linalg.eigvalsh(ra @ sb @ ra), 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    return diff @ diff + np.trace(sa) + np.trace(sb) - 2 * tr_root


def test_frechet_self_is_zero():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(x, x)) < 1e-6
    assert frechet_distance(x, x) >= 0.0  # clamped, never negative from rounding


def test_frechet_1d_closed_form_sample_std_ddof1():
    a = np.array([1.0, 2.0, 3.0, 4.0])   # mean 2.5, var (ddof=1) = 5/3
    b = np.array([0.0, 4.0, 8.0])         # mean 4,   var (ddof=1) = 16
    expected = (2.5 - 4.0) ** 2 + (math.sqrt(5 / 3) - 4.0) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    # N x 1 torch input gives the same as a 1-D vector
    assert frechet_distance(torch.tensor(a)[:, None], torch.tensor(b)[:, None]) == pytest.approx(expected, rel=1e-10)


def test_frechet_diagonal_gaussians_hand_computed():
    # Corners (±1, ±2): mean 0, Σ = diag(4/3, 16/3) with ddof=1, stds (2, 4)/sqrt(3).
    a = np.array([[1, 2], [1, -2], [-1, 2], [-1, -2]], dtype=float)
    # Corners (±2, ±1) shifted by (3, 4): Σ = diag(16/3, 4/3), stds (4, 2)/sqrt(3).
    b = np.array([[2, 1], [2, -1], [-2, 1], [-2, -1]], dtype=float) + [3.0, 4.0]
    # ||mu||² = 25;  Σ_i (s_a,i - s_b,i)² = 2 * (2/sqrt(3))² = 8/3
    assert frechet_distance(a, b) == pytest.approx(25 + 8 / 3, rel=1e-10)


def test_frechet_matches_independent_reference_and_is_symmetric():
    g = np.random.default_rng(1)
    a = g.normal(size=(300, 5)) @ g.normal(size=(5, 5))
    b = g.normal(size=(200, 5)) @ g.normal(size=(5, 5)) + 0.5
    fd = frechet_distance(a, b)
    assert fd == pytest.approx(_reference_fd(a, b), rel=1e-8)
    assert fd == pytest.approx(frechet_distance(b, a), rel=1e-8)


def test_frechet_translation_adds_squared_norm():
    g = np.random.default_rng(2)
    a, b = g.normal(size=(400, 6)), 2.0 * g.normal(size=(300, 6))
    a, b = a - a.mean(0), b - b.mean(0)  # equal means, so the mean term is exactly ||v||²
    v = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    assert frechet_distance(a, b + v) == pytest.approx(frechet_distance(a, b) + v @ v, rel=1e-8)
    assert frechet_distance(a + v, b) == pytest.approx(frechet_distance(a, b) + v @ v, rel=1e-8)
    assert frechet_distance(a, a + v) == pytest.approx(v @ v, rel=1e-8)


def test_frechet_singular_covariance_is_finite():
    # fewer samples than dimensions: both covariances are rank deficient
    g = np.random.default_rng(3)
    fd = frechet_distance(g.normal(size=(5, 20)), g.normal(size=(5, 20)))
    assert np.isfinite(fd) and fd >= 0.0


def test_frechet_input_errors():
    with pytest.raises(ValueError, match="feature dimensions"):
        frechet_distance(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 2)), np.zeros((4, 2)))


# ---------------------------------------------------------------- nearest_distance

def _brute_nearest(x, bank):
    x, bank = x.reshape(len(x), -1), bank.reshape(len(bank), -1)
    out = np.empty(len(x))
    for i, row in enumerate(x):
        out[i] = min(np.sqrt(((row - b) ** 2).sum()) for b in bank)
    return out


@pytest.mark.parametrize("batch_size", [1024, 7, 1])
def test_nearest_distance_matches_brute_force(batch_size):
    g = torch.Generator().manual_seed(0)
    x, bank = torch.randn(40, 1, 4, 4, generator=g), torch.randn(30, 1, 4, 4, generator=g)
    got = nearest_distance(x, bank, batch_size=batch_size)
    assert got.shape == (40,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _brute_nearest(x.double().numpy(), bank.double().numpy()),
                               rtol=1e-6, atol=1e-6)


def test_nearest_distance_zero_for_rows_in_bank():
    g = torch.Generator().manual_seed(1)
    bank = torch.rand(100, 3, 8, 8, generator=g) * 255  # large values: matmul cdist would cancel badly
    x = torch.cat([bank[[5, 17, 99]], torch.rand(2, 3, 8, 8, generator=g) * 255])
    got = nearest_distance(x, bank, batch_size=16)
    assert torch.equal(got[:3], torch.zeros(3, dtype=torch.float64))
    assert (got[3:] > 0).all()


# ---------------------------------------------------------------- UNetEvalCounter

def test_unet_eval_counter_counts_images_and_removes_hook():
    conv = torch.nn.Conv2d(1, 2, 3)
    with UNetEvalCounter(conv) as c:
        conv(torch.zeros(3, 1, 5, 5))
        conv(torch.zeros(5, 1, 5, 5))
    assert c.evals == 8 and c.calls == 2
    conv(torch.zeros(4, 1, 5, 5))  # after the block: not counted
    assert c.evals == 8 and c.calls == 2
    assert len(conv._forward_hooks) == 0


def test_unet_eval_counter_sample_kwarg_and_exception():
    class Net(torch.nn.Module):
        def forward(self, sample, timestep=None):
            return sample

    net = Net()
    with pytest.raises(RuntimeError), UNetEvalCounter(net) as c:
        net(sample=torch.zeros(6, 1))
        raise RuntimeError("boom")
    assert c.evals == 6
    assert len(net._forward_hooks) == 0


def test_per_thousand():
    assert per_thousand(500, 250) == 2000.0
    assert per_thousand(3, 3) == 1000.0
    with pytest.raises(ValueError, match="n must be > 0"):
        per_thousand(10, 0)


# ---------------------------------------------------------------- clustering

def test_purity_and_matched_accuracy_hand_made():
    clusters = [0, 0, 0, 1, 1, 1, 1, 2]
    labels = [0, 0, 1, 1, 1, 2, 2, 2]
    # cluster 0: {0:2, 1:1}; cluster 1: {1:2, 2:2}; cluster 2: {2:1}
    assert cluster_purity(clusters, labels) == 5 / 8  # 2 + 2 + 1
    assert matched_accuracy(clusters, labels) == 5 / 8  # 0->0, 1->1, 2->2: 2 + 2 + 1
    assert match_clusters(clusters, labels).tolist() == [0, 1, 2]


def test_purity_exceeds_matched_accuracy_when_clusters_share_majority():
    clusters = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    labels = torch.tensor([0, 0, 0, 1, 0, 0, 1])
    # cluster 0: {0:3, 1:1}; cluster 1: {0:2, 1:1}; both have majority class 0
    assert cluster_purity(clusters, labels) == 5 / 7  # 3 + 2
    assert matched_accuracy(clusters, labels) == 4 / 7  # 0->0 (3) + 1->1 (1) beats 0->1 (1) + 1->0 (2)
    m = match_clusters(clusters, labels)
    assert m.tolist() == [0, 1]
    assert (m[clusters] == labels).float().mean().item() == pytest.approx(4 / 7)


def test_match_clusters_more_clusters_than_classes_and_sparse_ids():
    clusters = [0, 0, 1, 1, 3, 3, 3]   # id 2 never occurs
    labels = [7, 7, 7, 4, 4, 4, 4]
    m = match_clusters(clusters, labels)
    # cluster 3 -> class 4 (3 hits), cluster 0 -> class 7 (2 hits), cluster 1 unmatched
    assert m.tolist() == [7, -1, -1, 4]
    assert matched_accuracy(clusters, labels) == 5 / 7
    assert cluster_purity(clusters, labels) == 6 / 7  # 2 + 1 + 3


def test_kmeans_recovers_blobs_and_is_deterministic():
    g = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    labels = np.repeat(np.arange(3), 50)
    feats = centres[labels] + g.normal(scale=0.5, size=(150, 3))
    feats[:, 2] = g.normal(scale=0.5, size=150)  # a pure-noise dimension
    perm = g.permutation(150)
    feats, labels = torch.tensor(feats[perm], dtype=torch.float32), torch.tensor(labels[perm])
    clusters = kmeans_labels(feats, 3, seed=0)
    assert clusters.dtype == torch.long and clusters.shape == (150,)
    assert cluster_purity(clusters, labels) == 1.0
    assert matched_accuracy(clusters, labels) == 1.0
    assert torch.equal(clusters, kmeans_labels(feats, 3, seed=0))
    assert torch.equal(kmeans_labels(feats, 3, seed=5), kmeans_labels(feats, 3, seed=5))


def test_kmeans_standardises_dimensions():
    # two blobs separated by 1 unit in dim 0; dim 1 is noise with std 100.
    # Raw k-means splits on the noisy dimension; on z-scores the separation wins.
    g = np.random.default_rng(4)
    labels = np.repeat([0, 1], 100)
    feats = np.stack([labels + g.normal(scale=0.05, size=200), g.normal(scale=100.0, size=200)], axis=1)
    clusters = kmeans_labels(feats, 2, seed=0)
    assert matched_accuracy(clusters, labels) == 1.0
