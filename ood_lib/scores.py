"""Post-hoc OOD scores. Convention: every score is "higher = more OOD"."""
from __future__ import annotations

import faiss
import numpy as np
import torch
import torch.nn.functional as F


def msp(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum softmax probability (Hendrycks & Gimpel, ICLR 2017)."""
    return -F.softmax(logits, dim=1).max(dim=1).values


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy E(x) = -T logsumexp(f(x)/T) (Liu et al., NeurIPS 2020); ID has low energy."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


class KNNScorer:
    """Distance to the k-th nearest ID training feature after L2 normalisation
    (Sun et al., "OOD detection with deep nearest neighbours", ICML 2022), with faiss."""

    def __init__(self, bank: torch.Tensor, k: int = 10):
        if k < 1 or k > len(bank):
            raise ValueError(f"k={k} must be in [1, {len(bank)}] (the bank size)")
        self.k = k
        bank = F.normalize(bank.float(), dim=1).numpy().astype(np.float32)
        self.index = faiss.IndexFlatL2(bank.shape[1])
        self.index.add(bank)

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        q = F.normalize(feats.float(), dim=1).numpy().astype(np.float32)
        dist2, _ = self.index.search(q, self.k)
        return torch.from_numpy(np.sqrt(np.maximum(dist2[:, -1], 0.0)))


SCORES = ("msp", "energy", "knn")


def compute_scores(logits: torch.Tensor, feats: torch.Tensor, knn: KNNScorer) -> dict:
    """All :data:`SCORES` for one set of logits and features."""
    return {"msp": msp(logits), "energy": energy(logits), "knn": knn(feats)}
