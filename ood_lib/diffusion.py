"""Class-conditional pixel DDPM with classifier-free guidance (diffusers), trained with
Accelerate, EMA weights and resumable checkpoints; DDIM sampling with guidance.

Pixel images live in [0, 1] and are mapped to [-1, 1] for the model (:func:`to_model_space`);
the latent DDPM trains on scaled autoencoder latents with the same code. The label
``n_classes`` is the null label used for the unconditional branch of classifier-free guidance.

Conditioning is either integer labels or, for label-mixup and boundary outliers, vectors in
the UNet's class-embedding space (:func:`class_embeddings`, :func:`mix_labels`).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr

from .artifacts import atomic_save, load_checkpoint
from .runtime import (LossLog, make_accelerator, progress as progress_bar, seed_everything, shard, step_generator,
                      sync_gradients, global_mean)
from .config import DDPMConfig


def build_unet(cfg: DDPMConfig, n_classes: int, image_size: int = 28, channels: int = 1) -> UNet2DModel:
    """UNet with ``n_classes + 1`` label embeddings (last = null); without attention, or with
    self-attention in its two lowest-resolution levels (``cfg.attention``, as the CIFAR DDPM)."""
    n_blocks = len(cfg.block_out_channels)
    if image_size % 2 ** (n_blocks - 1):
        raise ValueError(f"a {n_blocks}-level UNet halves the image {n_blocks - 1} times: image size {image_size} must "
                         f"be a multiple of {2 ** (n_blocks - 1)} (set the dataset's image_size, or fewer "
                         f"ddpm.block_out_channels)")
    attn = [cfg.attention and i >= n_blocks - 2 for i in range(n_blocks)]
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        norm_num_groups=8,
        num_class_embeds=n_classes + 1,
    )


def schedule_of(cfg: DDPMConfig) -> dict:
    """The settings a sampler must share with training: stored in the artefact and on the
    loaded UNet's config (:func:`load_unet`), read back by :func:`unet_schedule`."""
    return {"num_train_timesteps": cfg.num_train_timesteps, "beta_schedule": cfg.beta_schedule,
            "prediction_type": cfg.prediction_type}


def unet_schedule(unet: UNet2DModel) -> dict:
    """The training schedule a UNet was trained with (defaults: 1,000 linear steps, epsilon)."""
    c = unet.config
    return {"num_train_timesteps": c.get("num_train_timesteps") or 1000,
            "beta_schedule": c.get("beta_schedule") or "linear", "prediction_type": c.get("prediction_type") or "epsilon"}


def noise_scheduler(cfg: DDPMConfig) -> DDPMScheduler:
    s = schedule_of(cfg)
    return DDPMScheduler(num_train_timesteps=s["num_train_timesteps"], beta_schedule=s["beta_schedule"],
                         prediction_type=s["prediction_type"])


def diffusion_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                   scheduler: DDPMScheduler, snr_gamma: float = 0.0) -> torch.Tensor:
    """MSE to the scheduler's target (the noise, or v = sqrt(abar) * noise - sqrt(1 - abar) * x0),
    per sample weighted by min-SNR-gamma (Hang et al. 2023) when ``snr_gamma`` > 0: the weight
    min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v, as diffusers' training examples."""
    v = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(x0, noise, t) if v else noise
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
    if snr_gamma > 0:
        snr = compute_snr(scheduler, t)
        weight = torch.clamp(snr, max=snr_gamma) / (snr + 1 if v else snr)
        per_sample = per_sample * weight
    return per_sample.mean()


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> the pixel DDPM's [-1, 1]."""
    return images.mul(2).sub(1)


def to_image_space(x: torch.Tensor) -> torch.Tensor:
    """The pixel DDPM's [-1, 1] -> images in [0, 1] (clamped)."""
    return x.add(1).div(2).clamp(0, 1)


def train_ddpm(x: torch.Tensor, labels: torch.Tensor, n_classes: int, cfg: DDPMConfig,
               workdir, stop_after: int | None = None) -> dict:
    """Train the conditional DDPM on ``x`` (N x C x H x W, already in model space: pixel
    images via :func:`to_model_space` or scaled latents); checkpoint to
    ``workdir/checkpoint.pt`` and resume from it.

    Returns ``{"unet_config", "ema_state", "losses", "steps", "schedule"}``. ``stop_after`` ends the
    loop early after that many steps in this call (used to test resumption).
    """
    seed_everything(cfg.seed)
    accelerator = make_accelerator()
    dev = accelerator.device
    unet = build_unet(cfg, n_classes, x.shape[-1], x.shape[1])
    if dev.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    scheduler = noise_scheduler(cfg)
    ckpt_path = workdir / "checkpoint.pt"
    step, losses = 0, []
    state = load_checkpoint(ckpt_path, "DDPM training")
    if state is not None:
        unet.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        ema.load_state_dict(state["ema"])
        step, losses = state["step"], list(state["losses"])
        accelerator.print(f"resuming DDPM training from step {step}")
    unet = unet.to(dev)
    ema.to(dev)
    x_all, y_all = x.to(dev), labels.long().to(dev)          # the training set stays on the device
    log = LossLog(losses)
    done_here = 0
    bar = progress_bar(total=cfg.steps, initial=step, desc="DDPM training", main=accelerator.is_main_process)
    unet.train()
    while step < cfg.steps:
        g = step_generator(cfg.seed, step, dev)
        idx = torch.randint(len(x_all), (cfg.batch_size,), generator=g, device=dev)
        x0 = x_all[idx]
        y = y_all[idx].clone()
        y[torch.rand(len(y), generator=g, device=dev) < cfg.p_uncond] = n_classes
        noise = torch.randn(x0.shape, generator=g, device=dev)
        t = torch.randint(cfg.num_train_timesteps, (len(x0),), generator=g, device=dev)
        x0, y, noise, t = (shard(v, accelerator) for v in (x0, y, noise, t))   # this process's share
        xt = scheduler.add_noise(x0, noise, t)
        with accelerator.autocast():
            pred = unet(xt, t, class_labels=y).sample
        loss = diffusion_loss(pred, x0, noise, t, scheduler, cfg.snr_gamma)
        accelerator.backward(loss)
        sync_gradients(unet.parameters(), accelerator, len(x0), cfg.batch_size)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_sched.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        step += 1
        done_here += 1
        checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.steps
        log.record(global_mean(loss, accelerator), step, checkpoint, bar, "DDPM",
                   f"lower DDPMConfig.lr (now {cfg.lr}) and delete {workdir} to restart")
        if checkpoint:
            if accelerator.is_main_process:
                atomic_save({"model": unet.state_dict(),
                             "optimizer": optimizer.state_dict(), "lr_scheduler": lr_sched.state_dict(),
                             "ema": ema.state_dict(), "step": step, "losses": losses}, ckpt_path)
        if stop_after is not None and done_here >= stop_after and step < cfg.steps:
            log.flush(step)
            bar.close()
            raise KeyboardInterrupt(f"stopped after {done_here} steps (stop_after)")
    bar.close()
    final = copy.deepcopy(unet).cpu()
    ema.copy_to(final.parameters())
    return {"unet_config": dict(final.config), "ema_state": final.state_dict(),
            "losses": torch.tensor(losses), "steps": step, "schedule": schedule_of(cfg)}


def load_unet(artifact: dict) -> UNet2DModel:
    """Rebuild the EMA UNet from a :func:`train_ddpm` artefact, in eval mode, its config holding
    the training schedule the samplers read (:func:`unet_schedule`)."""
    unet = UNet2DModel.from_config(artifact["unet_config"])
    unet.load_state_dict(artifact["ema_state"])
    unet.register_to_config(**artifact.get("schedule", {}))
    return unet.eval()


# --------------------------------------------------------------------------- sampling
def class_embeddings(unet: UNet2DModel) -> torch.Tensor:
    """The UNet's label-embedding table, (n_classes + 1) x D (last row: null label)."""
    return unet.class_embedding.weight.detach()


def mix_labels(unet: UNet2DModel, a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Label-mixup conditioning vectors lam * e(a) + (1 - lam) * e(b)."""
    table = class_embeddings(unet)
    lam = torch.as_tensor(lam, dtype=table.dtype, device=table.device).reshape(-1, 1)
    return lam * table[a.long()] + (1 - lam) * table[b.long()]


@contextmanager
def _vector_conditioning(unet: UNet2DModel):
    """Let ``class_labels`` carry embedding vectors: the label lookup becomes the identity."""
    table = unet.class_embedding
    unet.class_embedding = torch.nn.Identity()
    try:
        yield
    finally:
        unet.class_embedding = table


def guided_eps(unet: UNet2DModel, x_t: torch.Tensor, t, cond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance: eps = (1 + w) * eps(x_t, c) - w * eps(x_t, null).

    ``cond`` holds integer labels (B,) or conditioning vectors (B x D) in the embedding space."""
    n_null = unet.config.num_class_embeds - 1
    t = torch.as_tensor(t, device=x_t.device).expand(len(x_t))
    if cond.is_floating_point():
        null = class_embeddings(unet)[n_null].to(cond).expand_as(cond)
        with _vector_conditioning(unet):
            both = unet(torch.cat([x_t, x_t]), torch.cat([t, t]), class_labels=torch.cat([cond, null])).sample
    else:
        null = torch.full_like(cond, n_null)
        both = unet(torch.cat([x_t, x_t]), torch.cat([t, t]), class_labels=torch.cat([cond, null])).sample
    eps_c, eps_u = both.chunk(2)
    return (1 + w) * eps_c - w * eps_u


SAMPLERS = ("ddim", "ddpm")


def ddim_scheduler(num_train_timesteps: int, stride: int, clip_sample: bool = False,
                   beta_schedule: str = "linear", prediction_type: str = "epsilon") -> DDIMScheduler:
    """Deterministic DDIM (eta=0) visiting timesteps ..., 2*stride, stride, 0.

    ``clip_sample`` (diffusers' default is True) clips the x_0 prediction to [-1, 1] at every
    step. Combined with classifier-free guidance it pulls samples away from their class, so it
    is off here; ``pipeline.generator_fidelity`` on a profile with ``sd={"clip_sample": True}``
    measures the effect."""
    return _scheduler("ddim", stride, clip_sample, {"num_train_timesteps": num_train_timesteps,
                                                    "beta_schedule": beta_schedule, "prediction_type": prediction_type})


def _scheduler(sampler: str, stride: int, clip_sample: bool, schedule: dict):
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {SAMPLERS}")
    num_train_timesteps = schedule["num_train_timesteps"]
    if num_train_timesteps % stride:
        raise ValueError(f"stride {stride} must divide num_train_timesteps {num_train_timesteps}")
    kind = DDIMScheduler if sampler == "ddim" else DDPMScheduler
    extra = {"set_alpha_to_one": True} if sampler == "ddim" else {}
    sched = kind(**schedule, clip_sample=clip_sample, timestep_spacing="leading", **extra)
    sched.set_timesteps(num_train_timesteps // stride)
    return sched


@torch.no_grad()
def denoise(unet: UNet2DModel, x_t: torch.Tensor, t_start: int, cond: torch.Tensor, w: float,
            stride: int, clip_sample: bool = False, sampler: str = "ddim",
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoise ``x_t`` (model space, at DDPM timestep ``t_start``) to x_0 with guided DDIM
    (deterministic) or ancestral DDPM steps (noise from ``generator``).

    DDIM visits t_start, t_start - stride, ... and steps from the last one straight to x_0, so
    any t_start works (e.g. paper 3's S = 80 with stride 20 or 50). The DDPM sampler needs
    t_start on its grid (a multiple of ``stride``)."""
    schedule = unet_schedule(unet)
    n_train = schedule["num_train_timesteps"]
    sched = _scheduler(sampler, stride, clip_sample, schedule)
    if not 0 <= t_start < n_train:
        raise ValueError(f"start timestep {t_start} must lie in [0, {n_train})")
    if sampler == "ddpm" and t_start % stride:
        raise ValueError(f"the DDPM sampler needs a start timestep that is a multiple of the stride {stride}, "
                         f"not {t_start}; use sampler='ddim' for any start")
    x = x_t
    for t in range(t_start, -1, -stride):
        eps = guided_eps(unet, x, t, cond, w)
        if sampler == "ddim":
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        else:
            x = sched.step(eps.cpu(), t, x.cpu(), generator=generator).prev_sample.to(x_t.device)
    return x


@torch.no_grad()
def generate(unet: UNet2DModel, cond: torch.Tensor, w: float, stride: int, seed: int = 0,
             sampler: str = "ddim", clip_sample: bool = False, batch_size: int | None = None,
             progress: bool = False, desc: str = "sampling") -> torch.Tensor:
    """Samples in model space from pure noise, conditioned on ``cond`` (labels or vectors).

    The starting noise of all samples is drawn first from ``torch.Generator(seed)``, so the
    i-th sample does not depend on ``batch_size``."""
    g = torch.Generator().manual_seed(seed)
    c = unet.config
    noise = torch.randn((len(cond), c.in_channels, c.sample_size, c.sample_size), generator=g)
    n_train = unet_schedule(unet)["num_train_timesteps"]
    device = next(unet.parameters()).device
    step = batch_size or len(cond)
    out = []
    for i in progress_bar(range(0, len(cond), step), desc=desc, main=progress):
        out.append(denoise(unet, noise[i:i + step].to(device), n_train - stride, cond[i:i + step].to(device),
                           w, stride, clip_sample, sampler, g).cpu())
    return torch.cat(out)


def sample(unet: UNet2DModel, labels: torch.Tensor, w: float = 3.0, stride: int = 20, seed: int = 0,
           clip_sample: bool = False, sampler: str = "ddim") -> torch.Tensor:
    """Class-conditional pixel samples in [0, 1] from pure noise (guided DDIM by default)."""
    return to_image_space(generate(unet, labels, w, stride, seed, sampler, clip_sample))


def diffuse(x0: torch.Tensor, t: int, noise: torch.Tensor, num_train_timesteps: int = 1000,
            beta_schedule: str = "linear") -> torch.Tensor:
    """q(x_t | x_0) for images in [-1, 1] at DDPM timestep ``t``."""
    sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)
    return sched.add_noise(x0, noise, torch.full((len(x0),), t, dtype=torch.long))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


