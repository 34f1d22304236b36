"""Training losses: softmax CE and outlier exposure (OE), energy-bounded OE, metric-learning
wrappers (pytorch-metric-learning), the SD three-head loss, and OAL's CLUB/MICL and distillation."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .scores import energy  # one home: the energy score is the free energy the loss bounds


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



# --------------------------------------------------------------------------------------------
# Energy-bounded OE (Liu et al. 2020, "Energy-based out-of-distribution detection")
# --------------------------------------------------------------------------------------------

def energy_oe(logits_id: torch.Tensor, labels: torch.Tensor, logits_out: torch.Tensor | None,
              lam: float = 0.1, m_in: float = -25.0, m_out: float = -7.0) -> torch.Tensor:
    """Energy-bounded OE (Liu et al. 2020, eq. 6), batch means:

    CE(ID) + lam * (mean_in relu(E_in - m_in)^2 + mean_out relu(m_out - E_out)^2).

    Why: instead of pushing outliers to a uniform softmax it shapes the energy surface directly,
    squared hinges pull ID energies below ``m_in`` and push outlier energies above ``m_out``, so
    the energy score separates them. Without outliers it is CE plus the ID hinge.
    """
    loss = F.cross_entropy(logits_id, labels)
    if lam:
        reg = F.relu(energy(logits_id) - m_in).pow(2).mean()
        if logits_out is not None and len(logits_out):
            reg = reg + F.relu(m_out - energy(logits_out)).pow(2).mean()
        loss = loss + lam * reg
    return loss


# --------------------------------------------------------------------------------------------
# Metric-learning family (Wahd 2024) via pytorch-metric-learning
# --------------------------------------------------------------------------------------------

METRIC_LOSSES = ("arcface", "cosface", "supcon", "proxyanchor")


def _scaled_cosine(embeddings: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * cos(embedding_i, weights_k); ``weights`` is (n_classes, embedding_size)."""
    return scale * F.normalize(embeddings, dim=1) @ F.normalize(weights, dim=1).t()


class MetricLoss(nn.Module):
    """A pytorch-metric-learning loss plus class weights usable as classifier logits.

    Wahd 2024 trains the embedding with metric losses (ArcFace, CosFace, SupCon, ProxyAnchor)
    and applies OE on the scaled-cosine class logits, so every loss needs ``logits``:

    * arcface / cosface: pml's ``W`` (stored as embedding_size x n_classes) and ``scale``,
      without the margin (the margin is a training-time device only);
    * proxyanchor: pml's ``proxies`` (n_classes x embedding_size) with ``logit_scale`` (16);
    * supcon: no class parameters in the loss, so this wrapper adds ``proxies``
      (n_classes x embedding_size), trained by a normalised-softmax CE term
      ``CE(logit_scale * cos(e, proxies), y)`` added to the SupCon loss. By default the
      embeddings are detached in that term (``detach_proxy_ce=True``): the proxies are a
      cosine probe and the representation is trained by SupCon alone, as in the paper.
    """

    def __init__(self, name: str, loss: nn.Module, proxies: nn.Parameter | None = None,
                 logit_scale: float = 16.0, proxy_weight: float = 1.0, detach_proxy_ce: bool = True):
        super().__init__()
        if name not in METRIC_LOSSES:
            raise KeyError(f"unknown metric loss {name!r}; valid: {list(METRIC_LOSSES)}")
        self.name, self.loss = name, loss
        self.proxies = proxies
        self.logit_scale, self.proxy_weight, self.detach_proxy_ce = logit_scale, proxy_weight, detach_proxy_ce

    def class_weights(self) -> torch.Tensor:
        """The class weights/proxies as (n_classes, embedding_size)."""
        if self.name in ("arcface", "cosface"):
            return self.loss.W.t()
        if self.name == "proxyanchor":
            return self.loss.proxies
        return self.proxies

    @property
    def scale(self) -> float:
        return float(self.loss.scale) if self.name in ("arcface", "cosface") else float(self.logit_scale)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """scale * cos(embedding, class weight) (no margin): prediction and OE logits."""
        return _scaled_cosine(embeddings, self.class_weights(), self.scale)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The pml loss (batch mean); for supcon plus ``proxy_weight`` * the proxy CE term."""
        loss = self.loss(embeddings, labels)
        if self.name == "supcon" and self.proxy_weight:
            e = embeddings.detach() if self.detach_proxy_ce else embeddings
            loss = loss + self.proxy_weight * F.cross_entropy(self.logits(e), labels)
        return loss


def metric_loss(name: str, n_classes: int, embedding_size: int, **kw) -> MetricLoss:
    """Build a :class:`MetricLoss`. ``kw`` goes to the pml loss (e.g. ``margin``, ``scale`` for
    arcface/cosface, pml ArcFace's margin is in degrees; ``temperature`` for supcon;
    ``margin``, ``alpha`` for proxyanchor) except the wrapper's own ``logit_scale`` (16,
    proxyanchor/supcon), ``proxy_weight`` and ``detach_proxy_ce`` (supcon)."""
    from pytorch_metric_learning import losses as pml_losses

    own = {k: kw.pop(k) for k in ("logit_scale", "proxy_weight", "detach_proxy_ce") if k in kw}
    proxies = None
    if name == "arcface":
        loss = pml_losses.ArcFaceLoss(n_classes, embedding_size, **kw)
    elif name == "cosface":
        loss = pml_losses.CosFaceLoss(n_classes, embedding_size, **kw)
    elif name == "proxyanchor":
        loss = pml_losses.ProxyAnchorLoss(n_classes, embedding_size, **kw)
    elif name == "supcon":
        loss = pml_losses.SupConLoss(**kw)
        proxies = nn.Parameter(torch.empty(n_classes, embedding_size))
        nn.init.normal_(proxies, std=1.0 / math.sqrt(embedding_size))
    else:
        raise KeyError(f"unknown metric loss {name!r}; valid: {list(METRIC_LOSSES)}")
    return MetricLoss(name, loss, proxies, **own)


def metric_oe(metric: MetricLoss, emb_id: torch.Tensor, labels: torch.Tensor,
              emb_out: torch.Tensor | None, lam: float) -> torch.Tensor:
    """Metric loss on ID + lam * KL(uniform || softmax(scaled cosine logits)) on outliers
    (Wahd 2024: OE applied to the metric-learning class logits)."""
    loss = metric(emb_id, labels)
    if emb_out is not None and len(emb_out) and lam:
        loss = loss + lam * kl_to_uniform(metric.logits(emb_out))
    return loss


# --------------------------------------------------------------------------------------------
# SD outliers: three-head loss (Yoon et al. 2024)
# --------------------------------------------------------------------------------------------

def three_head_loss(bin_logits: torch.Tensor, in_logits: torch.Tensor, out_logits: torch.Tensor,
                    labels: torch.Tensor, is_outlier: torch.Tensor, lam: float = 1.0,
                    parts: bool = False):
    """SD three-head loss (Yoon et al. 2024) on a mixed batch of N rows:

    L = CE(g_bin, I) + (1 - I) * CE(g_in, y~) + I * lam * CE(g_out, y~),  I = 1 for outliers.

    Why: a binary head learns ID-vs-outlier, the in-head classifies ID rows, and a separate
    out-head classifies the semantic-discrepant outliers by their conditioning class, so the
    outliers shape the shared features without corrupting the ID classifier.

    Normalisation: each term's per-sample values are summed over the rows it applies to and
    divided by the full batch size N (not by the number of ID / outlier rows), i.e. the batch
    mean of the per-sample L. The in-head is only evaluated on ID rows and the out-head only on
    outlier rows (rows are selected, so the other head's values there cannot affect the loss).
    ``bin_logits`` is (N, 2) (CE, class 1 = outlier) or (N,)/(N, 1) (BCE with logits).
    Returns the total, or ``(total, {"bin", "in", "out"})`` with ``parts=True``.
    """
    is_outlier = is_outlier.bool()
    n = len(labels)
    target = is_outlier.long()
    if bin_logits.dim() == 1 or bin_logits.shape[1] == 1:
        l_bin = F.binary_cross_entropy_with_logits(bin_logits.reshape(-1), target.to(bin_logits.dtype),
                                                   reduction="sum") / n
    else:
        l_bin = F.cross_entropy(bin_logits, target, reduction="sum") / n
    idn = ~is_outlier
    zero = in_logits.sum() * 0.0
    l_in = F.cross_entropy(in_logits[idn], labels[idn], reduction="sum") / n if idn.any() else zero
    l_out = (lam * F.cross_entropy(out_logits[is_outlier], labels[is_outlier], reduction="sum") / n
             if is_outlier.any() else out_logits.sum() * 0.0)
    total = l_bin + l_in + l_out
    if parts:
        return total, {"bin": l_bin, "in": l_in, "out": l_out}
    return total


# --------------------------------------------------------------------------------------------
# OAL (Gao et al. 2024): CLUB mutual-information contrast + knowledge distillation
# --------------------------------------------------------------------------------------------

class CLUB(nn.Module):
    """CLUB upper bound on I(x; y) (Cheng et al. 2020), used by OAL's MICL term (``ood_lib.train.oal_loss``).

    q(y|x) = N(mu(x), diag(exp(logvar(x)))), mu and logvar two MLPs x_dim -> hidden -> y_dim
    (logvar through tanh, as in the reference code, for stability). Train q with
    :meth:`learning_loss` (its own optimiser, on detached inputs); :meth:`forward` is the MI
    estimate, mean_i log q(y_i|x_i) - mean_{i,j} log q(y_j|x_i) (normalising constants and the
    logvar term cancel between the two means).
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 64):
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh())

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log q(y_i | x_i) per row (full Gaussian log-density)."""
        mu, logvar = self.mu(x), self.logvar(x)
        return (-0.5 * ((y - mu) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi))).sum(dim=1)

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-mean log q(y|x): the loss that fits q."""
        return -self.log_likelihood(x, y).mean()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.mu(x), self.logvar(x)
        inv_var = (-logvar).exp()
        positive = (-0.5 * (y - mu) ** 2 * inv_var).sum(dim=1)                          # (N,)
        # all pairs (i, j): -0.5 * (y_j - mu_i)^2 / var_i, averaged over j then i
        negative = (-0.5 * (y.unsqueeze(0) - mu.unsqueeze(1)) ** 2 * inv_var.unsqueeze(1)).sum(dim=2)
        return positive.mean() - negative.mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      student_feats: torch.Tensor | None = None, teacher_feats: torch.Tensor | None = None,
                      T: float = 4.0, alpha_logits: float = 1.0, alpha_feats: float = 1.0) -> torch.Tensor:
    """Knowledge distillation used by OAL (Gao et al. 2024) to keep ID accuracy: a teacher
    trained without outliers guides the student.

    alpha_logits * T^2 * KL(softmax(t/T) || softmax(s/T)) (batchmean; Hinton et al. 2015)
    + alpha_feats * MSE(student_feats, teacher_feats) when both features are given.
    The teacher's outputs are detached.
    """
    teacher_logits = teacher_logits.detach()
    loss = alpha_logits * T * T * F.kl_div(F.log_softmax(student_logits / T, dim=1),
                                           F.log_softmax(teacher_logits / T, dim=1),
                                           reduction="batchmean", log_target=True)
    if student_feats is not None and teacher_feats is not None and alpha_feats:
        loss = loss + alpha_feats * F.mse_loss(student_feats, teacher_feats.detach())
    return loss
