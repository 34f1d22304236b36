"""Diagnostics for synthetic outliers: how far they are from the ID data, and what they cost.

* :func:`frechet_distance`: distance between Gaussians fitted to two feature sets
  (the FID formula), to compare outlier distributions with the ID distribution.
* :func:`nearest_distance`: per-sample distance to the nearest ID image, to see
  whether outliers are near-copies of training images or far from everything.
* :class:`UNetEvalCounter` and :func:`per_thousand`: "UNet evaluations per 1,000
  outliers", the sampling cost that makes generators comparable.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg


def _as_2d_float64(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor (possibly on GPU / requiring grad)
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:  # a 1-D vector is N samples of a 1-D feature
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be N x D, got shape {a.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples to fit a covariance, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return a


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two N x D feature sets.

    d² = ||mu_a - mu_b||² + Tr(Σa + Σb - 2 (Σa Σb)^{1/2}), the FID formula
    (Heusel et al., NeurIPS 2017), with the sample mean and the unbiased sample
    covariance (``np.cov``, ddof=1), in float64, matrix root by ``scipy.linalg.sqrtm``.
    It is "FID" proper only on Inception-v3 pool features; on other features
    (e.g. our classifier's penultimate layer) report it as a Fréchet distance in
    that feature space, since values are not comparable across feature extractors.

    As in the reference FID code, a numerically singular product gets ``eps * I``
    added to both covariances, the negligible imaginary part of the root is
    dropped, and the result is clamped at 0 (rounding can make it slightly negative).
    Accepts torch tensors or numpy arrays; a 1-D input is N samples of one feature.
    """
    a = _as_2d_float64(feats_a, "feats_a")
    b = _as_2d_float64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a = np.atleast_2d(np.cov(a, rowvar=False, ddof=1))
    sigma_b = np.atleast_2d(np.cov(b, rowvar=False, ddof=1))

    with warnings.catch_warnings():
        # a singular product (fewer samples than features) still has a root; scipy's warning about
        # it carried this file's absolute path into every notebook that printed it
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(covmean).all():
        warnings.warn(f"frechet_distance: singular covariance product; adding {eps} to the diagonals")
        offset = np.eye(sigma_a.shape[0]) * eps
        covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: matrix root has a large imaginary part "
                             f"(max |imag| = {np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real

    diff = mu_a - mu_b
    d2 = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean)
    return float(max(d2, 0.0))


def nearest_distance(x: torch.Tensor, bank: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Euclidean distance from each (flattened) row of ``x`` to its nearest (flattened) row of ``bank``.

    Used for "distance to the nearest ID image". Both inputs are N x ... (any
    trailing shape, flattened). Chunked over ``x`` and ``bank`` so memory stays at
    ``batch_size²`` distances. The nearest row is found with ``torch.cdist`` in
    float64, then its distance is recomputed directly from the difference, so a
    row that is in the bank gets exactly 0 (the matmul form of cdist cancels
    badly there). Returns a float64 tensor of length N on ``bank``'s device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x, bank = torch.as_tensor(x), torch.as_tensor(bank)
    if len(bank) == 0:
        raise ValueError("bank is empty")
    x, bank = x.reshape(len(x), -1), bank.reshape(len(bank), -1)
    if x.shape[1] != bank.shape[1]:
        raise ValueError(f"flattened sizes differ: x has {x.shape[1]}, bank has {bank.shape[1]}")
    dev = bank.device
    out = torch.empty(len(x), dtype=torch.float64, device=dev)
    for i in range(0, len(x), batch_size):
        xc = x[i:i + batch_size].to(dev, torch.float64)
        best = torch.full((len(xc),), float("inf"), dtype=torch.float64, device=dev)
        best_idx = torch.zeros(len(xc), dtype=torch.long, device=dev)
        for j in range(0, len(bank), batch_size):
            d, idx = torch.cdist(xc, bank[j:j + batch_size].to(torch.float64)).min(dim=1)
            better = d < best
            best = torch.where(better, d, best)
            best_idx = torch.where(better, idx + j, best_idx)
        out[i:i + batch_size] = (xc - bank[best_idx].to(torch.float64)).norm(dim=1)
    return out


class UNetEvalCounter:
    """Counts the images a module (the UNet) is evaluated on, for sampling-cost reports.

    ``with UNetEvalCounter(unet) as c: ...`` then ``c.evals`` is the sum of the
    batch sizes of every forward call inside the block (the first positional
    input, or the ``sample`` keyword as diffusers passes it) and ``c.calls`` the
    number of calls. It counts images, not calls: classifier-free guidance runs the
    conditional and unconditional branch as one doubled batch, so a guided step
    counts 2 per image, which is its real cost. The hook is removed on exit,
    also when the block raises.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.evals = 0
        self.calls = 0
        self._handle = None

    def _hook(self, module, args, kwargs, output):
        x = args[0] if args else kwargs.get("sample")
        if x is None:
            raise ValueError("UNetEvalCounter: forward called without a positional input or `sample`")
        self.evals += int(x.shape[0])
        self.calls += 1

    def __enter__(self) -> UNetEvalCounter:
        self._handle = self.model.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def per_thousand(total: float, n: int) -> float:
    """``total`` per 1,000 items, e.g. UNet evaluations per 1,000 outliers."""
    if n <= 0:
        raise ValueError(f"per_thousand: n must be > 0 (number of items), got {n}")
    return float(total) * 1000.0 / n


# A setting whose outliers mostly keep their source's class is a copy of ID data, not an outlier set.
COPY_REGIME_BELOW = 0.25


def sd_regime(pred: torch.Tensor, y_source: torch.Tensor, y_target: torch.Tensor | None, x_out: torch.Tensor,
              x_source: torch.Tensor, source_to_nearest_other: torch.Tensor, frechet: float,
              frechet_reference: float) -> dict:
    """The regime check of an SD outlier set (paper 3's premise: nuisances kept, semantics changed).

    ``pred``: a judge classifier's class for each outlier; ``y_source`` / ``y_target``: the
    source image's class and the guidance class c_r; ``x_out`` / ``x_source``: outliers and their
    source images; ``source_to_nearest_other``: each source's distance to its nearest *other*
    ID training image; ``frechet``: the set's Fréchet distance to ID test, beside
    ``frechet_reference`` (ID validation's). ``copy_regime`` is True when fewer than
    :data:`COPY_REGIME_BELOW` of the outliers leave their source class: such a set is the
    training images regenerated, and outlier exposure on it trains the model to be unsure
    of its own ID data.
    """
    left = (pred != y_source).float().mean().item()
    to_target = (pred == y_target).float().mean().item() if y_target is not None else float("nan")
    l2 = (x_out - x_source).flatten(1).norm(dim=1).double()
    return {"n": len(pred), "left_source": left, "to_target": to_target, "l2_to_source": l2.mean().item(),
            "l2_source_to_nearest_other": source_to_nearest_other.double().mean().item(),
            "frechet": frechet, "frechet_id_val": frechet_reference, "copy_regime": left < COPY_REGIME_BELOW}


def regime_text(regime: dict, short: bool = False) -> str:
    """One line for tables (``short``) and logs: how many SD outliers left their class, how far
    they moved, their Fréchet distance, and "COPY REGIME" when under a quarter left."""
    mark = " — COPY REGIME" if regime["copy_regime"] else ""
    if short:
        return f"{100 * regime['left_source']:.0f} % left source, {100 * regime['to_target']:.0f} % to c_r{mark}"
    text = (f"{100 * regime['left_source']:.0f} % left source class, {100 * regime['to_target']:.0f} % to c_r; "
            f"L2 to source {regime['l2_to_source']:.2f} vs nearest other ID {regime['l2_source_to_nearest_other']:.2f}; "
            f"Fréchet {regime['frechet']:.3f} (ID val {regime['frechet_id_val']:.3f})")
    return text + mark
