"""Pseudo labels for the unlabelled setting: k-means on features, and how well clusters match classes.

Cluster ids and class ids are non-negative integers (torch tensors, numpy arrays
or lists). Purity and matched accuracy are fractions in [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def kmeans_labels(features, n_clusters: int, seed: int = 0, n_init: int = 10) -> torch.Tensor:
    """k-means cluster ids (LongTensor of length N) on z-scored N x D features.

    Each dimension is standardised (zero mean, unit variance; constant dimensions
    left at 0) first because autoencoder latents have dimensions of very different
    scale, and plain Euclidean k-means would cluster on the largest ones only.
    scikit-learn ``KMeans`` with ``random_state=seed`` and ``n_init`` restarts:
    same input and seed give the same labels.
    """
    x = _to_numpy(features).astype(np.float64).reshape(len(features), -1)
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters={n_clusters} must be in [1, {len(x)}] (the number of samples)")
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(x)
    return torch.as_tensor(km.labels_, dtype=torch.long)


def _contingency(clusters, labels):
    """counts[i, j] = |cluster ks[i] ∩ class cs[j]| over the ids that occur, plus those ids and N."""
    k = _to_numpy(clusters).astype(np.int64).ravel()
    c = _to_numpy(labels).astype(np.int64).ravel()
    if k.shape != c.shape:
        raise ValueError(f"clusters and labels differ in length: {k.size} vs {c.size}")
    if k.size == 0:
        raise ValueError("clusters and labels are empty")
    if k.min() < 0 or c.min() < 0:
        raise ValueError("cluster and class ids must be non-negative")
    ks, ki = np.unique(k, return_inverse=True)
    cs, ci = np.unique(c, return_inverse=True)
    counts = np.zeros((ks.size, cs.size), dtype=np.int64)
    np.add.at(counts, (ki, ci), 1)
    return counts, ks, cs, k.size


def cluster_purity(clusters, labels) -> float:
    """Σ_k max_c |cluster k ∩ class c| / N: each cluster votes its majority class
    (several clusters may pick the same class, so purity >= matched accuracy)."""
    counts, _, _, n = _contingency(clusters, labels)
    return int(counts.max(axis=1).sum()) / n


def match_clusters(clusters, labels) -> torch.Tensor:
    """Best one-to-one cluster -> class map (Hungarian, ``linear_sum_assignment``).

    Returns a LongTensor ``m`` with ``m[k]`` the class matched to cluster id ``k``
    (index it with the cluster ids to get pseudo class labels for display). Only
    clusters and classes that occur are matched; -1 for cluster ids left unmatched
    (more clusters than classes, or ids that never occur). With it,
    ``(m[clusters] == labels).mean()`` is :func:`matched_accuracy`.
    """
    counts, ks, cs, _ = _contingency(clusters, labels)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = torch.full((int(ks.max()) + 1,), -1, dtype=torch.long)
    mapping[torch.as_tensor(ks[rows])] = torch.as_tensor(cs[cols], dtype=torch.long)
    return mapping


def matched_accuracy(clusters, labels) -> float:
    """Accuracy of the pseudo labels after the best one-to-one cluster -> class matching."""
    counts, _, _, n = _contingency(clusters, labels)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return int(counts[rows, cols].sum()) / n
