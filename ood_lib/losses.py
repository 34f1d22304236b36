"""Training losses. Softmax family here: cross-entropy and outlier exposure (OE)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(U || softmax(logits)) = -log K - mean_k log p_k; zero iff uniform."""
    log_p = F.log_softmax(logits, dim=1)
    return (-log_p.mean(dim=1) - math.log(logits.shape[1])).mean()


def outlier_exposure(logits_id: torch.Tensor, labels: torch.Tensor, logits_out: torch.Tensor | None,
                     lam: float) -> torch.Tensor:
    """OE (Hendrycks et al. 2019): CE on ID + lam * KL(uniform || p) on outliers."""
    loss = F.cross_entropy(logits_id, labels)
    if logits_out is not None and len(logits_out) and lam:
        loss = loss + lam * kl_to_uniform(logits_out)
    return loss


LOSSES = ("ce", "oe")
