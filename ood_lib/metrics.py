"""Threshold-free OOD detection metrics and ID accuracy.

Conventions (shared by every function here):

* Every OOD score is "higher = more OOD". ``id_scores`` / ``ood_scores`` are
  1-D array-likes (numpy arrays, lists or torch tensors, any device), converted
  to float64 numpy arrays.
* AUROC: OOD is the positive class. Computed as the Mann-Whitney U statistic
  with mid-ranks for ties, i.e. P(ood > id) + 0.5 * P(ood == id); this equals
  ``sklearn.metrics.roc_auc_score`` exactly, including ties.
* AUPR-Out: average precision with OOD as positive, scores as is.
  AUPR-In: average precision with ID as positive, scores negated.
  Average precision is sklearn's ``average_precision_score`` definition:
  sum over distinct thresholds of (R_n - R_{n-1}) * P_n, no interpolation,
  tied scores form one threshold.
* FPR@TPR (default TPR = 0.95): fraction of OOD samples accepted as ID at the
  threshold that keeps ``tpr`` of the ID samples. A sample is accepted as ID
  when score <= tau; tau is the smallest ID score such that the fraction of ID
  scores <= tau is >= tpr (the ceil(tpr * n_id)-th smallest ID score, no
  interpolation). OOD samples tied with tau count as accepted. Equivalent to
  ``roc_curve(y_true=(ID=1), y_score=-scores, drop_intermediate=False)`` and
  reading fpr at the first index where tpr >= the target.
* All metrics are fractions in [0, 1] (not percent). Empty inputs and NaN/inf
  scores raise ValueError.
"""
import numpy as np
from scipy.stats import rankdata


def _to_numpy(x):
    if hasattr(x, "detach"):  # torch tensor (possibly on GPU / requiring grad)
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_scores(x, name):
    """Convert to a finite, non-empty 1-D float64 array or raise ValueError."""
    a = np.asarray(_to_numpy(x), dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    if n_nan or n_inf:
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} inf values "
                         f"(out of {a.size}); scores must be finite")
    return a


def _check_pair(id_scores, ood_scores):
    return _check_scores(id_scores, "id_scores"), _check_scores(ood_scores, "ood_scores")


def _average_precision(pos, neg):
    """sklearn-style AP where larger score = more positive: step-wise sum over
    distinct thresholds of (R_n - R_{n-1}) * P_n, ties form one threshold."""
    scores = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, y = scores[order], y[order]
    # last index of each group of tied scores = one threshold
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / pos.size
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def auroc(id_scores, ood_scores) -> float:
    """AUROC with OOD as positive: P(ood > id) + 0.5 P(ood == id) via mid-ranks."""
    id_s, ood_s = _check_pair(id_scores, ood_scores)
    ranks = rankdata(np.concatenate([id_s, ood_s]))  # mid-ranks for ties
    n_id, n_ood = id_s.size, ood_s.size
    u = ranks[n_id:].sum() - n_ood * (n_ood + 1) / 2.0
    return float(u / (n_id * n_ood))


def aupr_out(id_scores, ood_scores) -> float:
    """Average precision with OOD as the positive class (scores as is)."""
    id_s, ood_s = _check_pair(id_scores, ood_scores)
    return _average_precision(ood_s, id_s)


def aupr_in(id_scores, ood_scores) -> float:
    """Average precision with ID as the positive class (negated scores)."""
    id_s, ood_s = _check_pair(id_scores, ood_scores)
    return _average_precision(-id_s, -ood_s)


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """Fraction of OOD with score <= tau, tau = ceil(tpr*n_id)-th smallest ID score.

    No interpolation between ID scores; OOD ties with tau count as accepted.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    id_s, ood_s = _check_pair(id_scores, ood_scores)
    n = id_s.size
    # smallest k with k/n >= tpr, evaluated in floating point like roc_curve
    # (avoids ceil(0.95 * n) being off by one from rounding error)
    k = int(np.searchsorted(np.arange(1, n + 1) / n, tpr, side="left")) + 1
    tau = np.sort(id_s)[k - 1]
    return float(np.mean(ood_s <= tau))


def id_accuracy(logits_or_preds, labels) -> float:
    """Top-1 accuracy; accepts 2-D logits (argmax over dim 1) or 1-D predictions."""
    p, y = _to_numpy(logits_or_preds), _to_numpy(labels).ravel()
    if p.ndim == 2:
        p = p.argmax(axis=1)
    elif p.ndim != 1:
        raise ValueError(f"logits_or_preds must be 1-D or 2-D, got shape {p.shape}")
    if p.size == 0:
        raise ValueError("logits_or_preds is empty")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"got {p.shape[0]} predictions but {y.shape[0]} labels")
    return float(np.mean(p == y))


def ood_metrics(id_scores, ood_scores) -> dict:
    """All standard metrics as fractions: AUROC, AUPR_In, AUPR_Out, FPR95."""
    id_s, ood_s = _check_pair(id_scores, ood_scores)
    return {
        "AUROC": auroc(id_s, ood_s),
        "AUPR_In": aupr_in(id_s, ood_s),
        "AUPR_Out": aupr_out(id_s, ood_s),
        "FPR95": fpr_at_tpr(id_s, ood_s, 0.95),
    }
