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

ENERGY_MARGIN_RULES = ("from_ce", "fixed")


def energy_oe(logits_id: torch.Tensor, labels: torch.Tensor, logits_out: torch.Tensor | None,
              lam: float = 0.1, m_in: float = -25.0, m_out: float = -7.0) -> torch.Tensor:
    """Energy-bounded OE (Liu et al. 2020, eq. 6), batch means:

    CE(ID) + lam * (mean_in relu(E_in - m_in)^2 + mean_out relu(m_out - E_out)^2).

    Why: instead of pushing outliers to a uniform softmax it shapes the energy surface directly,
    squared hinges pull ID energies below ``m_in`` and push outlier energies above ``m_out``, so
    the energy score separates them. Without outliers it is CE plus the ID hinge.

    The defaults -25 / -7 are Liu et al.'s constants for *fine-tuning* a pre-trained WRN on
    CIFAR-10. They only make sense at the energy scale of such a model: a small CNN trained from
    scratch on the digits reaches ID training energies of about -5 (CE), so at -25 the ID hinge
    is ~(23)^2 at initialisation, 30x the CE term, and it never switches off; train with margins
    measured on a CE model instead (:func:`energy_margins`, ``ClassifierConfig.energy_margins``).
    """
    loss = F.cross_entropy(logits_id, labels)
    if lam:
        reg = F.relu(energy(logits_id) - m_in).pow(2).mean()
        if logits_out is not None and len(logits_out):
            reg = reg + F.relu(m_out - energy(logits_out)).pow(2).mean()
        loss = loss + lam * reg
    return loss


def energy_margins(ce_energies: torch.Tensor, q_in: float = 0.5, q_out: float = 0.95) -> tuple[float, float]:
    """The ``"from_ce"`` margin rule of this library (a named deviation from Liu et al., who pick
    m_in / m_out for their fine-tuning setting): margins read off the energies
    E(x) = -logsumexp f(x) that a cross-entropy model of the same backbone and schedule gives
    the ID *training* images,

        m_in  = quantile_{q_in}(E_ce)    (default the median)
        m_out = quantile_{q_out}(E_ce)   (default the 95th percentile).

    The ID hinge then only pulls down the ID images that CE leaves less confident than its
    typical one, and the outlier hinge pushes outliers above the energy CE gives 95 % of the ID
    training set, i.e. out of the ID set at the 95 %-TPR threshold that FPR95 is measured at.
    Both margins sit in the energy range the model reaches, so the hinges switch off when their
    goal is met and CE keeps driving the classifier (at initialisation, E ~ -log K for both sets:
    the outlier hinge is 0 and the ID hinge a few units, not hundreds).
    """
    e = torch.as_tensor(ce_energies, dtype=torch.float64).flatten()
    if e.numel() == 0 or not torch.isfinite(e).all():
        raise ValueError("energy_margins needs a non-empty vector of finite CE energies")
    if not 0.0 <= q_in < q_out <= 1.0:
        raise ValueError(f"energy margin quantiles must satisfy 0 <= q_in < q_out <= 1, got ({q_in}, {q_out})")
    m_in, m_out = torch.quantile(e, torch.tensor([q_in, q_out], dtype=torch.float64)).tolist()
    return float(m_in), float(m_out)


# --------------------------------------------------------------------------------------------
# Metric-learning family (Wahd 2024) via pytorch-metric-learning
# --------------------------------------------------------------------------------------------

METRIC_LOSSES = ("arcface", "cosface", "supcon", "proxyanchor")
SUPCON_OE_TARGETS = ("probe", "joint")   # what SupCon's OE term trains: see MetricLoss


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
      cosine probe and the representation is trained by SupCon alone, as in the paper
      (Khosla et al. 2020 train the encoder with SupCon and a classifier on frozen features).

    What the OE term of :func:`metric_oe` acts on (``oe_target``, supcon only):

    * ``"probe"`` (default): the outlier embeddings are detached, so KL(U || softmax(logits))
      on outliers trains the proxies alone: the probe is fitted with CE on ID and OE on
      outliers, and no gradient but SupCon's reaches the embeddings and the backbone
      (Khosla et al.'s classifier on frozen features, with Hendrycks et al.'s OE on that
      classifier). The outliers still pass through the backbone in the same batch as the ID
      images (``ood_lib.train.batch_loss``), so BatchNorm's batch statistics include them.
    * ``"joint"`` (the earlier behaviour, kept as a named variant): the OE gradient also reaches
      the embeddings and the backbone. SupCon is invariant to rotations of the embedding, so
      the backbone lowers the OE term by turning every embedding, ID ones included, away from
      the span of the proxies, faster than the detached proxy CE can follow. On digits (pixel-
      blend outliers, seed 0) 96-99 % of the squared norm of each ID class mean ended outside
      that span and cos(e, own proxy) averaged 0.10, while the embedding's nearest-class-mean
      accuracy stayed 99.2 %; with the DDPM outliers the probe's ID accuracy fell to 42-84 %.

    For arcface / cosface / proxyanchor the class weights are part of the metric loss, and OE
    acts on embeddings and weights alike (Wahd 2024); ``oe_target`` is ignored there.
    """

    def __init__(self, name: str, loss: nn.Module, proxies: nn.Parameter | None = None,
                 logit_scale: float = 16.0, proxy_weight: float = 1.0, detach_proxy_ce: bool = True,
                 oe_target: str = "probe"):
        super().__init__()
        if name not in METRIC_LOSSES:
            raise KeyError(f"unknown metric loss {name!r}; valid: {list(METRIC_LOSSES)}")
        if oe_target not in SUPCON_OE_TARGETS:
            raise ValueError(f"unknown oe_target {oe_target!r}; valid: {list(SUPCON_OE_TARGETS)}")
        self.name, self.loss = name, loss
        self.proxies = proxies
        self.logit_scale, self.proxy_weight, self.detach_proxy_ce = logit_scale, proxy_weight, detach_proxy_ce
        self.oe_target = oe_target

    @property
    def oe_on_probe_only(self) -> bool:
        """Whether the OE term trains the proxies only (supcon with ``oe_target="probe"``)."""
        return self.name == "supcon" and self.oe_target == "probe"

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
    proxyanchor/supcon), ``proxy_weight``, ``detach_proxy_ce`` and ``oe_target`` (supcon)."""
    from pytorch_metric_learning import losses as pml_losses

    own = {k: kw.pop(k) for k in ("logit_scale", "proxy_weight", "detach_proxy_ce", "oe_target") if k in kw}
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
    (Wahd 2024: OE applied to the metric-learning class logits).

    What the OE term acts on: for arcface / cosface / proxyanchor, the outlier embeddings (hence
    the backbone) and the class weights. For supcon with ``metric.oe_target == "probe"`` (the
    default) the outlier embeddings are detached: OE trains the proxies (the cosine probe) only
    and the representation is trained by SupCon alone; ``"joint"`` lets it reach the backbone
    (see :class:`MetricLoss` for why that collapses ID accuracy)."""
    loss = metric(emb_id, labels)
    if emb_out is not None and len(emb_out) and lam:
        e_out = emb_out.detach() if metric.oe_on_probe_only else emb_out
        loss = loss + lam * kl_to_uniform(metric.logits(e_out))
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
    out-head classifies the semantic-discrepant outliers, so the outliers shape the shared
    features without corrupting the ID classifier. The out-head's target ỹ is the *source*
    image's (pseudo-)label, not the guidance class c_r (paper 3's equation: the outlier keeps
    its source's label ỹ); ``ood_lib.train`` passes ``OutlierSet.y_source``.

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
    """CLUB upper bound on I(x; y) (Cheng et al. 2020), OAL's MICL term.

    q(y|x) = N(mu(x), diag(exp(logvar(x)))), mu and logvar two MLPs x_dim -> hidden -> y_dim
    (logvar through tanh, as in the reference code, for stability). :meth:`forward` is the MI
    estimate, mean_i log q(y_i|x_i) - mean_{i,j} log q(y_j|x_i) (normalising constants and the
    logvar term cancel between the two means); :meth:`learning_loss` is -mean log q(y|x).

    How each OAL loss uses it (``ood_lib.train``):

    * ``"oal"`` (official recipe): x = outlier embeddings, y = the batch's ID features, paired
      at random; the estimate itself is minimised by the whole model, CLUB layers included
      (no likelihood step). ``deep=True`` gives mu the official ``DEEP_CLUB`` layout used for
      diffusion latents (x_dim -> x_dim/2 -> x_dim/4 -> hidden -> y_dim).
    * ``"oal_source_paired"`` (this library's variant): x = features of each outlier's source
      image, y = its latent; q is fitted with :meth:`learning_loss` on detached inputs.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 64, deep: bool = False):
        super().__init__()
        if deep:
            h1, h2 = max(1, x_dim // 2), max(1, x_dim // 4)
            self.mu = nn.Sequential(nn.Linear(x_dim, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
                                    nn.Linear(h2, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        else:
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
    """Hinton-style distillation of this library's ``"oal_source_paired"`` variant (not the
    official OAL recipe, see :func:`oal_distillation`): a teacher trained without outliers
    guides the student.

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


def softmax_kl(student_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(target) || softmax(student)), summed over classes and averaged over rows
    (``nn.KLDivLoss(reduction="batchmean")`` on log-softmax(student) and softmax(target), as
    OAL's trainer calls it). The target is not detached: gradients reach whatever made it."""
    log_q = F.log_softmax(student_logits, dim=1)
    log_p = F.log_softmax(target_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def oal_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_feats: torch.Tensor,
                     projected_teacher_feats: torch.Tensor | None, logit_weight: float = 4.0,
                     feature_weight: float = 8.0) -> torch.Tensor:
    """OAL's distillation (HengGao12/OAL ``openood/trainers/oal_trainer.py``), at T = 1:

    logit_weight * KL(softmax(teacher logits) || softmax(student logits))
    + feature_weight * KL(softmax(P(teacher features)) || softmax(student features)),

    P a learned projection of the teacher's penultimate features to the student's width
    (:class:`ood_lib.models.FeatureProjection`), trained by this same term: only the teacher's
    outputs are detached. The official weights are 4 and 8; the feature term reads the
    penultimate features as logits over feature dimensions."""
    loss = logit_weight * softmax_kl(student_logits, teacher_logits.detach()) if logit_weight else 0.0
    if feature_weight:
        loss = loss + feature_weight * softmax_kl(student_feats, projected_teacher_feats)
    return loss if torch.is_tensor(loss) else student_logits.sum() * 0.0
