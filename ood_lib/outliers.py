"""Synthetic outlier generators. Here: semantic-discrepant (SD) outliers of paper 3.

An ID image x_0 with label y is diffused to DDPM timestep S, then denoised with
classifier-free guidance toward a random *other* class c_r ~ U({0..C-1} minus {y}):
eps_t = (1 + w) * eps(x_t, c_r) - w * eps(x_t). The outlier keeps the source label y
(it is what the SD three-head loss trains its out-head on).
"""
from __future__ import annotations

import torch
from diffusers import UNet2DModel

from .config import SDConfig
from .diffusion import ddim_denoise, diffuse
from .runtime import progress as progress_bar


def other_class(y: torch.Tensor, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """c_r uniform over the classes different from y (shift by 1..C-1 modulo C)."""
    shift = torch.randint(1, n_classes, y.shape, generator=generator)
    return (y + shift) % n_classes


@torch.no_grad()
def semantic_discrepant(unet: UNet2DModel, x0: torch.Tensor, y: torch.Tensor, n_classes: int,
                        S: int, w: float, stride: int, seed: int = 0, batch_size: int = 256,
                        target: torch.Tensor | None = None, progress: bool = True,
                        clip_sample: bool = False) -> dict:
    """SD outliers from images ``x0`` in [0, 1] with labels ``y``.

    Returns ``{"x": outliers in [0, 1], "y_source": y, "y_target": c_r}``. ``S=0`` returns
    the inputs unchanged. ``target`` overrides the random c_r (for tests and figures).
    """
    g = torch.Generator().manual_seed(seed)
    y = y.long()
    c_r = other_class(y, n_classes, g) if target is None else target.long()
    noise = torch.randn(x0.shape, generator=g)
    if S == 0:
        return {"x": x0.clone(), "y_source": y.clone(), "y_target": c_r}
    device = next(unet.parameters()).device
    n_train = unet.config.get("num_train_timesteps") or 1000
    out = []
    for i in progress_bar(range(0, len(x0), batch_size), desc=f"SD outliers (S={S}, w={w})", main=progress):
        sl = slice(i, i + batch_size)
        x_S = diffuse(x0[sl].mul(2).sub(1), S, noise[sl], n_train)
        x = ddim_denoise(unet, x_S.to(device), S, c_r[sl].to(device), w, stride, clip_sample)
        out.append(x.cpu().add(1).div(2).clamp(0, 1))
    return {"x": torch.cat(out), "y_source": y.clone(), "y_target": c_r}


def make_sd_outliers(unet: UNet2DModel, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                     cfg: SDConfig, progress: bool = True) -> dict:
    """Draw ``cfg.n_outliers`` source images (with repetition if needed) and make SD outliers;
    the result also records the source indices and the generation parameters."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    reps = -(-cfg.n_outliers // len(x))
    idx = torch.cat([torch.randperm(len(x), generator=g) for _ in range(reps)])[: cfg.n_outliers]
    out = semantic_discrepant(unet, x[idx], y[idx], n_classes, cfg.S, cfg.w, cfg.stride,
                              seed=cfg.seed, batch_size=cfg.batch_size, progress=progress,
                              clip_sample=cfg.clip_sample)
    out.update(source_index=idx, generator="sd", S=cfg.S, w=cfg.w, stride=cfg.stride, seed=cfg.seed)
    return out
