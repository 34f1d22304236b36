"""OOD scores. Convention: every score is "higher = more OOD".

Post-hoc scores read a trained model's outputs (logits, penultimate features, and the
extra heads of metric and three-head models); some are fitted on the ID training set
first (k-NN bank, class means and covariance, ViM's principal space, DOD's joint bank).
:class:`ScoreSuite` fits every score that applies to a model and scores any image set.
Each score is one :class:`Score` entry of :data:`SCORES`; :func:`register_score` adds yours
(README: "Add a score or a loss").

=================  ===========================================================  ===================
name               definition (higher = more OOD)                                applies to
=================  ===========================================================  ===================
``msp``            -max softmax (Hendrycks & Gimpel 2017)                        all
``maxlogit``       -max logit (Hendrycks et al. 2022)                            all
``energy``         -T logsumexp(logits / T) (Liu et al. 2020)                    all
``odin``           -max softmax(f(x~)/T), x~ input-perturbed (Liang et al. 2018) all
``mahalanobis``    min_c (f-mu_c)' S^-1 (f-mu_c), tied S (Lee et al. 2018)       all
``knn``            k-th neighbour distance, normalised features (Sun et al. 22)  all
``vim``            alpha*||residual|| - logsumexp(logits) (Wang et al. 2022)     linear class head
``cosine_proxy``   -max_c cos(embedding, proxy_c) (Wahd 2024)                    metric models
``sd_binary``      p(outlier) of the binary head (Yoon et al. 2024)              three-head models
``dod_distance``   sum of squared distances to the k nearest ID features         all
``dod``            dod_distance + alpha * #outliers among k nearest in ID+SD     models with outliers
=================  ===========================================================  ===================
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import ScoreConfig
from .models import model_outputs

# ---------------------------------------------------------------------------- logit scores
def msp(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum softmax probability (Hendrycks & Gimpel, ICLR 2017)."""
    return -F.softmax(logits, dim=1).max(dim=1).values


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum logit (Hendrycks et al., "Scaling OOD detection", ICML 2022)."""
    return -logits.max(dim=1).values


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy E(x) = -T logsumexp(f(x)/T) (Liu et al., NeurIPS 2020); ID has low energy."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def binary_head(bin_logits: torch.Tensor) -> torch.Tensor:
    """Probability of "outlier" from the SD three-head model's binary head (Yoon et al. 2024;
    class 1 = outlier, as in ``ood_lib.losses.three_head_loss``)."""
    return F.softmax(bin_logits, dim=1)[:, 1]


def cosine_to_proxy(embeddings: torch.Tensor, proxies: torch.Tensor) -> torch.Tensor:
    """Negative largest cosine between an embedding and the class proxies / weights of a
    metric-learning model (Wahd 2024 scores by the proximity to the nearest class)."""
    return -(F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).t()).max(dim=1).values


def odin(model: torch.nn.Module, x: torch.Tensor, temperature: float = 1000.0, epsilon: float = 0.0014,
         batch_size: int = 256) -> torch.Tensor:
    """ODIN (Liang et al., ICLR 2018): temperature scaling plus input perturbation.

    x~ = x - epsilon * sign(-grad_x log S_yhat(x; T)) moves each input toward a more confident
    softmax; the score is -max softmax(f(x~) / T). ``epsilon`` is in the units of ``x``
    (images in [0, 1]). With ``epsilon=0`` and ``temperature=1`` it equals :func:`msp`.
    """
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device).requires_grad_(True)
        logits = model.head(model.features(xb)) / temperature
        nll = F.cross_entropy(logits, logits.argmax(dim=1).detach(), reduction="sum")   # -log S_yhat
        grad, = torch.autograd.grad(nll, xb)
        with torch.no_grad():
            perturbed = xb - epsilon * grad.sign()
            out.append(msp(model.head(model.features(perturbed)) / temperature).cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------- feature scores
def _unit(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(F.normalize(x.float(), dim=1).numpy().astype(np.float32))


def _has_faiss() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


class KNNScorer:
    """Distance to the k-th nearest ID training feature after L2 normalisation
    (Sun et al., "OOD detection with deep nearest neighbours", ICML 2022): an exact search,
    with faiss on the CPU and with matrix products on the GPU when there is one
    (``backend="torch"``; ``results/benchmarks/knn_scoring_h200_cuda.md``: 0.04 s where CPU
    faiss took 3.0 s), and on a CPU without faiss. Both return the same neighbours up to float
    rounding."""

    def __init__(self, bank: torch.Tensor, k: int = 10, backend: str | None = None, chunk_size: int = 4096):
        if k < 1 or k > len(bank):
            raise ValueError(f"k={k} must be in [1, {len(bank)}] (the bank size)")
        self.k, self.chunk_size = k, chunk_size
        self.backend = backend or ("torch" if torch.cuda.is_available() or not _has_faiss() else "faiss")
        if self.backend == "torch":
            device = "cuda" if torch.cuda.is_available() else "cpu"
            self.bank = F.normalize(bank.float(), dim=1).to(device)
        else:
            import faiss   # imported here: a GPU machine searches with torch and needs no faiss

            bank = _unit(bank)
            self.index = faiss.IndexFlatL2(bank.shape[1])
            self.index.add(bank)

    def search(self, feats: torch.Tensor, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances and indices of the ``k`` nearest bank rows (normalised features)."""
        k = k or self.k
        if self.backend == "faiss":
            dist2, idx = self.index.search(_unit(feats), k)
            return np.maximum(dist2, 0.0), idx
        dists, idxs = [], []
        for q in F.normalize(feats.float(), dim=1).split(self.chunk_size):
            d2 = (2 - 2 * q.to(self.bank.device) @ self.bank.T).clamp_min_(0.0)   # unit vectors
            d, i = d2.topk(k, dim=1, largest=False, sorted=True)
            dists.append(d.cpu())
            idxs.append(i.cpu())
        return torch.cat(dists).numpy(), torch.cat(idxs).numpy()

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        dist2, _ = self.search(feats)
        return torch.from_numpy(np.sqrt(dist2[:, -1]))


class MahalanobisScorer:
    """Minimum Mahalanobis distance to the class means with one tied covariance
    (Lee et al., NeurIPS 2018; penultimate features, no input preprocessing):

    score(f) = min_c (f - mu_c)' P (f - mu_c),  P = pinv(S),  S = mean_i (f_i - mu_{y_i})(f_i - mu_{y_i})'.

    ``precision`` replaces P (e.g. the identity: squared distance to the nearest class mean).
    """

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor, precision: torch.Tensor | None = None):
        feats = feats.double()
        classes = torch.unique(labels)
        self.means = torch.stack([feats[labels == c].mean(dim=0) for c in classes])
        if precision is None:
            centred = feats - self.means[torch.searchsorted(classes, labels)]
            precision = torch.linalg.pinv(centred.t() @ centred / len(feats), hermitian=True)
        self.precision = precision.double()
        self._mean_term = ((self.means @ self.precision) * self.means).sum(dim=1)   # mu' P mu

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        f = feats.double()
        fp = f @ self.precision
        d = (fp * f).sum(dim=1, keepdim=True) - 2 * fp @ self.means.t() + self._mean_term
        return d.min(dim=1).values.clamp_min(0.0).float()


class ViMScorer:
    """Virtual-logit matching (Wang et al., CVPR 2022) for a linear class head logits = W f + b.

    Features are centred at u = -pinv(W) b; the principal space is spanned by the top ``dim``
    eigenvectors of the centred training features' (uncentred) covariance, and the residual
    ||(f - u) projected off it|| is scaled by alpha = mean max-logit / mean residual norm on the
    training set. The virtual logit's softmax probability is monotone in
    alpha * ||residual|| - logsumexp(logits), which is the score returned.
    """

    def __init__(self, feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dim: int = 0,
                 train_logits: torch.Tensor | None = None):
        feats = feats.double()
        d = feats.shape[1]
        dim = dim or d // 2
        if not 0 < dim < d:
            raise ValueError(f"ViM principal dimension {dim} must be in [1, {d - 1}] (feature dimension {d})")
        self.origin = -torch.linalg.pinv(weight.double()) @ bias.double()
        centred = feats - self.origin
        _, eigvecs = torch.linalg.eigh(centred.t() @ centred / len(feats))          # ascending eigenvalues
        self.residual_space = eigvecs[:, : d - dim]                                   # all but the top `dim`
        if train_logits is None:
            train_logits = feats @ weight.double().t() + bias.double()
        self.alpha = (train_logits.double().max(dim=1).values.mean() / self._residual(feats).mean()).item()

    def _residual(self, feats: torch.Tensor) -> torch.Tensor:
        return ((feats.double() - self.origin) @ self.residual_space).norm(dim=1)

    def __call__(self, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return (self.alpha * self._residual(feats) - torch.logsumexp(logits.double(), dim=1)).float()


class DODScorer:
    """Paper 3's (Yoon et al. 2024) distance + voting score on L2-normalised features:

    DOD(x) = sum_{i<=k} ||f(x) - f(x_d^i)||^2 + alpha * sum_{i<=k} 1[x_v^i is an outlier],

    x_d^i the k nearest ID training features, x_v^i the k nearest in the joint bank of ID and
    SD-outlier features. :meth:`distance` is the first term alone (``dod_distance``),
    :meth:`votes` the outlier count among the k nearest in the joint bank.
    """

    def __init__(self, id_bank: torch.Tensor, outlier_bank: torch.Tensor | None = None, k: int = 10,
                 alpha: float = 1.0):
        self.k, self.alpha = k, alpha
        self.id_index = KNNScorer(id_bank, k)
        self.joint = None
        if outlier_bank is not None and len(outlier_bank):
            self.joint = KNNScorer(torch.cat([id_bank, outlier_bank]), k)
            self.n_id = len(id_bank)

    def distance(self, feats: torch.Tensor) -> torch.Tensor:
        dist2, _ = self.id_index.search(feats)
        return torch.from_numpy(dist2.sum(axis=1))

    def votes(self, feats: torch.Tensor) -> torch.Tensor:
        if self.joint is None:
            raise ValueError("the voting term needs an outlier bank (outlier_bank=...)")
        _, idx = self.joint.search(feats)
        return torch.from_numpy((idx >= self.n_id).sum(axis=1)).float()

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        return self.distance(feats) + self.alpha * self.votes(feats)


# ---------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Score:
    """One OOD score (higher = more OOD) as a registry entry (:func:`register_score`).

    ``compute(ctx)`` returns one value per image from ``ctx.out`` (the model's outputs for the
    images: ``logits``, ``features``, and ``embeddings`` / ``bin`` when the model has them),
    ``ctx.x`` (the images), ``ctx.model``, ``ctx.cfg`` (:class:`ScoreConfig`) and ``ctx.state``
    (what ``fit`` returned). ``fit(ctx)``, optional, runs once per model on the ID training set:
    ``ctx.train`` (its outputs), ``ctx.train_y``, ``ctx.outliers`` (the outputs of the synthetic
    outliers the model trained with, or ``None``), ``ctx.model``, ``ctx.cfg``.
    ``applies(model, has_outliers)`` says which models the score needs."""

    name: str
    compute: Callable[[SimpleNamespace], torch.Tensor]
    fit: Callable[[SimpleNamespace], Any] | None = None
    applies: Callable[[torch.nn.Module, bool], bool] = lambda model, has_outliers: True
    reference: str = ""


SCORES: dict[str, Score] = {}


def register_score(score: Score, replace: bool = False) -> Score:
    """Add a score to every suite (``ScoreSuite``, the pipeline's tables)."""
    if score.name in SCORES and not replace:
        raise ValueError(f"score {score.name!r} is already registered (replace=True to replace it)")
    SCORES[score.name] = score
    return score


def _linear_head(model, has_outliers):
    return isinstance(getattr(model, "head", None), torch.nn.Linear)


for _score in (
    Score("msp", lambda c: msp(c.out["logits"]), reference="Hendrycks & Gimpel 2017"),
    Score("maxlogit", lambda c: max_logit(c.out["logits"]), reference="Hendrycks et al. 2022"),
    Score("energy", lambda c: energy(c.out["logits"]), reference="Liu et al. 2020"),
    Score("odin", lambda c: odin(c.model, c.x, c.cfg.odin_temperature, c.cfg.odin_epsilon),
          reference="Liang et al. 2018"),
    Score("mahalanobis", lambda c: c.state(c.out["features"]),
          fit=lambda c: MahalanobisScorer(c.train["features"], c.train_y), reference="Lee et al. 2018"),
    Score("knn", lambda c: c.state(c.out["features"]), fit=lambda c: KNNScorer(c.train["features"], c.cfg.knn_k),
          reference="Sun et al. 2022"),
    Score("vim", lambda c: c.state(c.out["features"], c.out["logits"]),
          fit=lambda c: ViMScorer(c.train["features"], c.model.head.weight.detach().cpu(),
                                  c.model.head.bias.detach().cpu(), c.cfg.vim_dim, train_logits=c.train["logits"]),
          applies=_linear_head, reference="Wang et al. 2022"),
    Score("cosine_proxy", lambda c: cosine_to_proxy(c.out["embeddings"], c.state),
          fit=lambda c: c.model.metric.class_weights().detach().cpu(),
          applies=lambda model, has_outliers: hasattr(model, "metric"), reference="Wahd 2024"),
    Score("sd_binary", lambda c: binary_head(c.out["bin"]),
          applies=lambda model, has_outliers: "bin" in getattr(model, "heads", {}), reference="Yoon et al. 2024"),
    Score("dod_distance", lambda c: c.state.distance(c.out["features"]),
          fit=lambda c: DODScorer(c.train["features"], None, c.cfg.dod_k, c.cfg.dod_alpha),
          reference="Yoon et al. 2024, distance term"),
    Score("dod", lambda c: c.state(c.out["features"]),
          fit=lambda c: DODScorer(c.train["features"], c.outliers["features"], c.cfg.dod_k, c.cfg.dod_alpha),
          applies=lambda model, has_outliers: has_outliers, reference="Yoon et al. 2024"),
):
    register_score(_score)


# ---------------------------------------------------------------------------- the suite
def applicable_scores(model: torch.nn.Module, has_outliers: bool = False) -> tuple[str, ...]:
    """The names in :data:`SCORES` that apply to ``model`` (see the table in the module docstring)."""
    return tuple(name for name, s in SCORES.items() if s.applies(model, has_outliers))


class ScoreSuite:
    """Every requested score that applies to ``model``, fitted on its ID training set.

    ``train_x``/``train_y``: the ID training images and labels (k-NN and DOD banks, class
    means, ViM's space); ``outliers_x``: the synthetic outliers the model trained with (DOD's
    voting bank). ``names`` lists the scores the suite computes; calling it on images
    returns ``{name: scores}`` (higher = more OOD)."""

    def __init__(self, model: torch.nn.Module, train_x: torch.Tensor, train_y: torch.Tensor,
                 cfg: ScoreConfig = ScoreConfig(), outliers_x: torch.Tensor | None = None,
                 scores: tuple | None = None):
        unknown = [s for s in (scores or ()) if s not in SCORES]
        if unknown:
            raise KeyError(f"unknown scores {unknown}; valid scores: {list(SCORES)}")
        has_outliers = outliers_x is not None and len(outliers_x) > 0
        self.names = tuple(s for s in applicable_scores(model, has_outliers) if scores is None or s in scores)
        self.model, self.cfg = model, cfg
        fit = SimpleNamespace(model=model, cfg=cfg, train=model_outputs(model, train_x), train_y=train_y,
                              outliers=model_outputs(model, outliers_x) if has_outliers else None)
        self.state = {name: SCORES[name].fit(fit) for name in self.names if SCORES[name].fit}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.score(x)[0]

    def score(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``({name: scores}, model outputs)``: the outputs (:func:`model_outputs`) give the
        logits for ID accuracy and the features for figures without a second pass."""
        out = model_outputs(self.model, x)
        ctx = SimpleNamespace(model=self.model, cfg=self.cfg, x=x, out=out)
        return {name: SCORES[name].compute(SimpleNamespace(**vars(ctx), state=self.state.get(name))).float()
                for name in self.names}, out
