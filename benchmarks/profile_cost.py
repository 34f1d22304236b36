"""What a profile's stages cost on this device: seconds per training step of each trainable
model at the profile's sizes (pixel DDPM, autoencoder, latent DDPM, a classifier step with and
without outliers) and per generator evaluation (one image through a UNet, the unit of the
outlier generators), measured on random tensors of the right shape on the training loops'
fast path (bf16 autocast and channels-last on a GPU), times the profile's step and
evaluation counts. This is the plan ``./run_all.sh`` prints (``ood_lib.timings``), and how the
GPU profiles were sized: the `cifar10` profile cannot run on a 2-core CPU.

    python benchmarks/profile_cost.py --profile cifar10_quick     # CUDA when present
    python benchmarks/profile_cost.py --profile digits --steps 5

Writes ``<out>/cost_<profile>_<device>.{md,csv}`` (default ``results/benchmarks``; the ``stage``
column is the artefact cache's stage name). Estimates cover training and generation only
(data loading, scoring and notebook start-up come on top) and assume the default run: one
seed, the models of ``pipeline.DEFAULT_RUNS``.
"""
from __future__ import annotations

import argparse
import math
import platform
import time

import pandas as pd
import torch
import torch.nn.functional as F

from ood_lib import get_profile, pipeline, timings
from ood_lib.autoencoder import build_autoencoder
from ood_lib.data import DATASETS
from ood_lib.diffusion import build_unet
from ood_lib.train import build_model
from ood_lib.runtime import set_threads


def timed(step, n: int, device: str) -> float:
    """Median seconds of ``n`` calls of ``step`` after two warm-up calls."""
    for _ in range(2):
        step()
    times = []
    for _ in range(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def fast(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """The model as the training loops run it: channels-last on a GPU."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device == "cuda" else model


def autocast(device: str):
    """bf16 autocast on a GPU (``runtime.make_accelerator``), full precision on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")


def train_step(model, forward, device: str):
    """One optimiser step of ``forward()``'s loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast(device):
            loss = forward()
        opt.zero_grad()
        loss.float().backward()
        opt.step()
    return step


def unet_batch(unet, batch: int, shape, device: str):
    x = torch.randn(batch, *shape, device=device)
    t = torch.randint(1000, (batch,), device=device)
    y = torch.randint(unet.config.num_class_embeds, (batch,), device=device)
    return x, t, y


def ddpm_step(unet, batch: int, shape, device: str):
    x, t, y = unet_batch(unet, batch, shape, device)
    return train_step(unet, lambda: F.mse_loss(unet(x, t, class_labels=y).sample.float(), x), device)


def eval_seconds(unet, batch: int, shape, n: int, device: str) -> float:
    """Seconds per image of one UNet evaluation (no gradient) at the generator's batch size."""
    x, t, y = unet_batch(unet, batch, shape, device)

    @torch.no_grad()
    def step():
        with autocast(device):
            unet(x, t, class_labels=y)
    return timed(step, n, device) / batch


def evals_per_outlier(P) -> dict:
    """UNet evaluations per outlier of each generator (guidance counts two per step):
    SD denoises S / stride + 1 steps, label-mixup and latent sampling T / stride."""
    T = P.ddpm.num_train_timesteps
    return {"sd_outliers": 2 * (P.sd.S // P.sd.stride + 1), "mixup_outliers": 2 * math.ceil(T / P.mixup.stride),
            "latent_outliers": 2 * math.ceil(P.latent_ddpm.num_train_timesteps / P.latent.stride)}


def measure(P, n_steps: int, dev: str) -> pd.DataFrame:
    """The cost rows of profile ``P`` on device ``dev`` (see the module docstring)."""
    size, channels = (32, 3) if P.data.dataset == "cifar10" else (28, 1)
    ds = DATASETS.get(P.data.dataset)
    n_classes = len(P.data.id_classes or (ds.id_classes if ds else ())) or 6
    n_train = n_classes * P.data.n_train_per_class
    rows = []

    def add(stage, what, unit_seconds, units):
        rows.append({"stage": stage, "what": what, "unit_seconds": unit_seconds, "units": units,
                     "seconds": unit_seconds * units})

    unet = fast(build_unet(P.ddpm, n_classes, size, channels), dev)
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    add("ddpm", f"pixel DDPM training step, batch {P.ddpm.batch_size}, {params:.1f}M params",
        timed(ddpm_step(unet, P.ddpm.batch_size, (channels, size, size), dev), n_steps, dev), P.ddpm.steps)
    per_outlier = evals_per_outlier(P)
    pixel_eval = eval_seconds(unet, P.sd.batch_size, (channels, size, size), n_steps, dev)
    add("sd_outliers", f"pixel UNet evaluation, {per_outlier['sd_outliers']} per SD outlier", pixel_eval,
        per_outlier["sd_outliers"] * P.sd.n_outliers)
    add("mixup_outliers", f"pixel UNet evaluation, {per_outlier['mixup_outliers']} per label-mixup outlier",
        pixel_eval, per_outlier["mixup_outliers"] * P.mixup.n_outliers)
    ae = fast(build_autoencoder(P.autoencoder, channels, size), dev)
    xa = torch.rand(P.autoencoder.batch_size, channels, 32, 32, device=dev)
    add("autoencoder", f"autoencoder training step, batch {P.autoencoder.batch_size}",
        timed(train_step(ae, lambda: (ae(xa).sample.float() - xa).abs().mean(), dev), n_steps, dev),
        P.autoencoder.steps)
    lat = 32 // 2 ** (len(P.autoencoder.block_out_channels) - 1)
    lshape = (P.autoencoder.latent_channels, lat, lat)
    lunet = fast(build_unet(P.latent_ddpm, n_classes, lat, P.autoencoder.latent_channels), dev)
    add("latent_ddpm", f"latent DDPM training step, batch {P.latent_ddpm.batch_size}",
        timed(ddpm_step(lunet, P.latent_ddpm.batch_size, lshape, dev), n_steps, dev), P.latent_ddpm.steps)
    add("latent_outliers", f"latent UNet evaluation, {per_outlier['latent_outliers']} per latent outlier",
        eval_seconds(lunet, P.latent.batch_size, lshape, n_steps, dev),
        per_outlier["latent_outliers"] * P.latent.n_outliers)
    steps_per_epoch = -(-n_train // P.clf.batch_size)
    for name, n_out in (("no outliers", 0), ("with outliers", P.clf.outlier_batch_size)):
        model = fast(build_model("oe", n_classes, channels, P.clf), dev)
        xb = torch.rand(P.clf.batch_size + n_out, channels, size, size, device=dev)
        yb = torch.randint(n_classes, (P.clf.batch_size + n_out,), device=dev)
        if dev == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        runs = [r for r in pipeline.DEFAULT_RUNS if (r[1] == "none") == (n_out == 0)]
        add("classifier", f"{P.clf.backbone} training step {name}, batch {P.clf.batch_size}"
            + (f" + {n_out}" if n_out else "") + f"; {P.clf.epochs} epochs x {steps_per_epoch} steps x {len(runs)} "
            "default runs", timed(train_step(model, lambda m=model, x=xb, y=yb: F.cross_entropy(m(x), y), dev),
                                  n_steps, dev), P.clf.epochs * steps_per_epoch * len(runs))
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cifar10", help="a built-in profile or a .toml config file")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="default: results/benchmarks in the project")
    args = parser.parse_args(argv)
    set_threads()   # the stages' thread count ($OOD_THREADS): two runs side by side must not oversubscribe
    P, dev = get_profile(args.profile), args.device
    df = measure(P, args.steps, dev)
    total = df.seconds.sum()
    name = torch.cuda.get_device_name() if dev == "cuda" else f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)"
    path = timings.cost_path(P.name, dev, args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.6g")
    shown = df.assign(unit_seconds=df.unit_seconds.map("{:.3g}".format), seconds=df.seconds.map("{:.0f}".format))
    path.with_suffix(".md").write_text(
        f"Cost of profile `{P.name}` on {name} (torch {torch.__version__}): median of {args.steps} timed steps on "
        f"random tensors{' (bf16 autocast, channels-last)' if dev == 'cuda' else ''} × the profile's steps and "
        f"generator evaluations; default run (one seed, {len(pipeline.DEFAULT_RUNS)} classifiers), training and "
        f"generation only: **{total / 60:.1f} min**. Command: `python benchmarks/profile_cost.py --profile {P.name} "
        f"--steps {args.steps}`\n\n{shown.to_markdown(index=False)}\n")
    print(shown.to_string(index=False), f"\ntotal {total:.0f} s ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
