"""Small latent autoencoder (diffusers ``AutoencoderKL``) of the latent outlier generator
(OAL): the latent DDPM is trained on, and samples, its latents.

Images in [0, 1] are mapped to [-1, 1] and padded with -1 (the black background) so that
28x28 digits become 32x32 and, after three encoder blocks, 8x8 latents: the latent DDPM's
UNet halves its input twice, so the latent side must be a multiple of
:data:`LATENT_MULTIPLE`. :func:`to_ae_space` / :func:`from_ae_space` hold the padding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from .artifacts import atomic_save, load_checkpoint
from .config import AutoencoderConfig
from .runtime import (LossLog, make_accelerator, progress as progress_bar, seed_everything, shard, step_generator,
                      sync_gradients, global_mean)

LATENT_MULTIPLE = 4


def _downsample_factor(n_blocks: int) -> int:
    """Every encoder block but the last halves the image."""
    return 2 ** (n_blocks - 1)


def padded_size(size: int, n_blocks: int) -> int:
    """Smallest side >= ``size`` whose latent side is a multiple of LATENT_MULTIPLE."""
    m = _downsample_factor(n_blocks) * LATENT_MULTIPLE
    return math.ceil(size / m) * m


def _n_blocks(ae: AutoencoderKL) -> int:
    return len(ae.config.block_out_channels)


def to_ae_space(images: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """Images in [0, 1] (N x C x H x W) -> [-1, 1], centred in a -1 (black) padded frame."""
    h, w = images.shape[-2:]
    dh, dw = padded_size(h, n_blocks) - h, padded_size(w, n_blocks) - w
    return F.pad(images.mul(2).sub(1), (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=-1.0)


def from_ae_space(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_ae_space`: crop the centred ``size`` and map to [0, 1] (clamped)."""
    h, w = (size, size) if isinstance(size, int) else size
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w].add(1).div(2).clamp(0, 1)


def build_autoencoder(cfg: AutoencoderConfig, channels: int = 1, image_size: int = 28) -> AutoencoderKL:
    """AutoencoderKL with one plain encoder/decoder block per entry of ``block_out_channels``."""
    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.block_out_channels),
        latent_channels=cfg.latent_channels,
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=math.gcd(8, *cfg.block_out_channels),  # divides every channel count
        sample_size=padded_size(image_size, n),
    )


class _Objective(torch.nn.Module):
    """Encode, sample the posterior and decode inside one ``forward`` (AutoencoderKL's own does
    not return the KL). With several processes each draws its shard's posterior noise itself,
    so their steps match one process's in distribution, not bit for bit."""

    def __init__(self, ae: AutoencoderKL):
        super().__init__()
        self.ae = ae

    def forward(self, x: torch.Tensor, generator: torch.Generator):
        posterior = self.ae.encode(x).latent_dist
        return self.ae.decode(posterior.sample(generator=generator)).sample, posterior.kl().mean()


def train_autoencoder(images: torch.Tensor, cfg: AutoencoderConfig, workdir,
                      stop_after: int | None = None) -> dict:
    """Train the autoencoder on ``images`` (N x C x H x W in [0, 1]); checkpoint to
    ``workdir/checkpoint.pt`` and resume from it.

    Loss: L1 between the image and the decoded *sample* of the posterior, plus
    ``cfg.kl_weight`` x KL to N(0, I). L1 rather than MSE because MSE is dominated by the few
    large errors at stroke edges and settles for blurred strokes; L1 keeps them sharper (the
    Stable Diffusion VAE uses L1 too). The tiny KL term only keeps the latent scale bounded.

    Returns ``{"ae_config", "state", "losses", "steps", "image_size"}``. ``stop_after``
    raises KeyboardInterrupt after that many steps in this call (to test resumption).
    """
    seed_everything(cfg.seed)
    accelerator = make_accelerator()
    n_blocks = len(cfg.block_out_channels)
    ae = build_autoencoder(cfg, images.shape[1], images.shape[-1])
    optimizer = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=0.0)
    ckpt_path = workdir / "checkpoint.pt"
    step, losses = 0, []
    state = load_checkpoint(ckpt_path, "autoencoder training")
    if state is not None:
        ae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, losses = state["step"], list(state["losses"])
        accelerator.print(f"resuming autoencoder training from step {step}")
    objective = _Objective(ae).to(accelerator.device)
    dev = accelerator.device
    x_all = to_ae_space(images.float(), n_blocks).to(dev)     # the training set stays on the device
    log = LossLog(losses)
    done_here = 0
    bar = progress_bar(total=cfg.steps, initial=step, desc="autoencoder training",
                       main=accelerator.is_main_process)
    objective.train()
    while step < cfg.steps:
        g = step_generator(cfg.seed, step, dev)
        x = shard(x_all[torch.randint(len(x_all), (cfg.batch_size,), generator=g, device=dev)], accelerator)
        with accelerator.autocast():
            recon, kl = objective(x, g)
        loss = F.l1_loss(recon.float(), x) + cfg.kl_weight * kl.float()
        accelerator.backward(loss)
        sync_gradients(objective.parameters(), accelerator, len(x), cfg.batch_size)
        accelerator.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        done_here += 1
        checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.steps
        log.record(global_mean(loss, accelerator), step, checkpoint, bar, "autoencoder",
                   f"lower AutoencoderConfig.lr (now {cfg.lr}) and delete {workdir} to restart")
        if checkpoint and accelerator.is_main_process:
            atomic_save({"model": objective.ae.state_dict(),
                         "optimizer": optimizer.state_dict(), "step": step, "losses": losses}, ckpt_path)
        if stop_after is not None and done_here >= stop_after and step < cfg.steps:
            log.flush(step)
            bar.close()
            raise KeyboardInterrupt(f"stopped after {done_here} steps (stop_after)")
    bar.close()
    final = objective.ae.cpu().eval()
    return {"ae_config": dict(final.config), "state": final.state_dict(),
            "losses": torch.tensor(losses), "steps": step, "image_size": int(images.shape[-1])}


def load_autoencoder(artifact: dict) -> AutoencoderKL:
    """Rebuild the autoencoder from a :func:`train_autoencoder` artefact, in eval mode."""
    ae = AutoencoderKL.from_config(artifact["ae_config"])
    ae.load_state_dict(artifact["state"])
    return ae.eval()


def from_pretrained_autoencoder(path_or_id: str) -> AutoencoderKL:
    """A pretrained diffusers VAE (local folder or hub id), in eval mode."""
    try:
        ae = AutoencoderKL.from_pretrained(path_or_id)
    except (OSError, ValueError, ConnectionError) as err:  # missing files, bad id, offline hub
        raise RuntimeError(
            f"could not load AutoencoderKL weights from {path_or_id!r} (neither a local diffusers "
            f"folder nor reachable on the Hugging Face hub: {type(err).__name__}: {err}). Leave "
            f"AutoencoderConfig.pretrained empty to train a small autoencoder instead."
        ) from err
    return ae.eval()


@torch.no_grad()
def encode(ae: AutoencoderKL, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Deterministic latents (posterior means) of images in [0, 1], on the CPU."""
    dev = next(ae.parameters()).device
    x = to_ae_space(_match_channels(images.float(), ae.config.in_channels), _n_blocks(ae))
    return torch.cat([ae.encode(x[i:i + batch_size].to(dev)).latent_dist.mean.cpu()
                      for i in range(0, len(x), batch_size)])


@torch.no_grad()
def decode(ae: AutoencoderKL, latents: torch.Tensor, image_size: int = 28,
           batch_size: int = 256, channels: int | None = 1) -> torch.Tensor:
    """Images in [0, 1] (cropped to ``image_size``, with ``channels`` channels; None keeps the
    autoencoder's) from latents, on the CPU."""
    dev = next(ae.parameters()).device
    x = torch.cat([from_ae_space(ae.decode(latents[i:i + batch_size].to(dev)).sample.cpu(), image_size)
                   for i in range(0, len(latents), batch_size)])
    return _match_channels(x, channels) if channels else x


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey images for an RGB autoencoder (a pretrained VAE) and back: repeat or average."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    if channels == 1:
        return images.mean(1, keepdim=True)
    raise ValueError(f"cannot map {images.shape[1]}-channel images to {channels} channels")


def reconstruction_error(ae: AutoencoderKL, images: torch.Tensor) -> float:
    """Mean absolute error of decode(encode(x)) against x, in [0, 1] pixel units."""
    recon = decode(ae, encode(ae, images), images.shape[-1], channels=images.shape[1])
    return (recon - images).abs().mean().item()
