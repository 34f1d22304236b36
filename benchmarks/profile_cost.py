"""What a profile's training stages cost on this machine: seconds per step of each trainable
model at the profile's sizes (pixel DDPM, autoencoder, latent DDPM, a classifier step with and
without outliers), measured on random tensors of the right shape, times the profile's step
counts. The `cifar10` profile cannot run on a 2-core CPU; this gives its expected GPU hours
from a few timed steps.

    python benchmarks/profile_cost.py --profile cifar10            # CUDA when present
    python benchmarks/profile_cost.py --profile digits --steps 5 --out /tmp/cost

Writes ``<out>/cost_<profile>_<device>.{md,csv}`` (default ``results/benchmarks``). Estimates
cover training only (sampling, scoring and data loading come on top) and assume the
default run: one seed, the models of ``pipeline.DEFAULT_RUNS``.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ood_lib import get_profile, pipeline
from ood_lib.autoencoder import build_autoencoder
from ood_lib.config import PROFILES
from ood_lib.diffusion import build_unet
from ood_lib.train import build_model


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


def ddpm_step(unet, batch: int, shape, device: str):
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x = torch.randn(batch, *shape, device=device)
    t = torch.randint(1000, (batch,), device=device)
    y = torch.randint(unet.config.num_class_embeds, (batch,), device=device)

    def step():
        loss = F.mse_loss(unet(x, t, class_labels=y).sample, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cifar10", choices=sorted(PROFILES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args(argv)
    P, dev = get_profile(args.profile), args.device
    size, channels = (32, 3) if getattr(P.data, "dataset", "digits") == "cifar10" else (28, 1)
    n_classes = 10 if channels == 3 else 6
    n_train = n_classes * P.data.n_train_per_class
    rows = []

    def add(stage, seconds_per_step, steps, note=""):
        rows.append({"stage": stage, "s/step": seconds_per_step, "steps": steps,
                     "hours": seconds_per_step * steps / 3600, "note": note})

    unet = build_unet(P.ddpm, n_classes, size, channels).to(dev)
    add("pixel DDPM", timed(ddpm_step(unet, P.ddpm.batch_size, (channels, size, size), dev), args.steps, dev),
        P.ddpm.steps, f"batch {P.ddpm.batch_size}, {sum(p.numel() for p in unet.parameters()) / 1e6:.1f}M params")
    ae = build_autoencoder(P.autoencoder, channels, size).to(dev)
    ae_opt = torch.optim.AdamW(ae.parameters(), lr=1e-4)
    xa = torch.rand(P.autoencoder.batch_size, channels, 32, 32, device=dev)

    def ae_step():
        loss = (ae(xa).sample - xa).abs().mean()
        ae_opt.zero_grad()
        loss.backward()
        ae_opt.step()
    add("autoencoder", timed(ae_step, args.steps, dev), P.autoencoder.steps, f"batch {P.autoencoder.batch_size}")
    lat = 32 // 2 ** (len(P.autoencoder.block_out_channels) - 1)
    lunet = build_unet(P.latent_ddpm, n_classes, lat, P.autoencoder.latent_channels).to(dev)
    add("latent DDPM", timed(ddpm_step(lunet, P.latent_ddpm.batch_size, (P.autoencoder.latent_channels, lat, lat), dev),
                             args.steps, dev), P.latent_ddpm.steps, f"batch {P.latent_ddpm.batch_size}")
    steps_per_epoch = -(-n_train // P.clf.batch_size)
    for name, n_out in (("classifier, no outliers", 0), ("classifier, with outliers", P.clf.outlier_batch_size)):
        model = build_model("oe", n_classes, channels, P.clf).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        xb = torch.rand(P.clf.batch_size + n_out, channels, size, size, device=dev)
        yb = torch.randint(n_classes, (P.clf.batch_size + n_out,), device=dev)

        def clf_step(model=model, opt=opt, xb=xb, yb=yb):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        runs = [r for r in pipeline.DEFAULT_RUNS if (r[1] == "none") == (n_out == 0)]
        add(name, timed(clf_step, args.steps, dev), P.clf.epochs * steps_per_epoch * len(runs),
            f"{P.clf.backbone}, {P.clf.epochs} epochs x {steps_per_epoch} steps x {len(runs)} default runs")
    df = pd.DataFrame(rows)
    total = df.hours.sum()
    name = torch.cuda.get_device_name() if dev == "cuda" else f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"cost_{P.name}_{dev}"
    df.to_csv(out / f"{stem}.csv", index=False, float_format="%.5f")
    shown = df.assign(**{"s/step": df["s/step"].map("{:.4f}".format), "hours": df.hours.map("{:.2f}".format)})
    (out / f"{stem}.md").write_text(
        f"Training cost of profile `{P.name}` on {name} (torch {torch.__version__}): median of {args.steps} timed "
        f"steps on random tensors × the profile's steps; default run (one seed, {len(pipeline.DEFAULT_RUNS)} "
        f"classifiers), training only: **{total:.1f} h**. Command: `python benchmarks/profile_cost.py --profile "
        f"{P.name} --steps {args.steps}`\n\n{shown.to_markdown(index=False)}\n")
    print(shown.to_string(index=False), f"\ntotal {total:.2f} h")


if __name__ == "__main__":
    main()
