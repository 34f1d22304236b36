"""Generation throughput of the three outlier generators, side by side, in one process.

Loads (or trains) the profile's pixel DDPM, autoencoder and latent DDPM through the cached
pipeline stages, then times each generator on ``--n`` fresh outliers with the profile's
settings (repeated ``--repeats`` times, the best run kept) and counts UNet evaluations.
Writes ``results/<profile>/generation_throughput.{csv,md}`` with the cost per 1,000
outliers and the ratios to the latent generator. Run from the repository root:

    python benchmarks/generation_throughput.py --profile digits --n 200
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import pandas as pd
import torch

from ood_lib import get_profile, pipeline
from ood_lib.diagnostics import UNetEvalCounter, per_thousand
from ood_lib.diffusion import load_unet, n_params
from ood_lib.outliers import id_embeddings, label_mixup, latent_boundary_outliers, make_sd_outliers
from ood_lib.report import results_dir
from ood_lib.runtime import set_threads


def measure(make, unet, repeats: int) -> tuple[float, int]:
    """Best wall time over ``repeats`` runs of ``make()`` and its UNet image-evaluations."""
    best, evals = float("inf"), 0
    for _ in range(repeats):
        with UNetEvalCounter(unet) as counter:
            start = time.perf_counter()
            make()
            best = min(best, time.perf_counter() - start)
        evals = counter.evals
    return best, evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="digits")
    parser.add_argument("--n", type=int, default=200, help="outliers per generator and run")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    set_threads()   # the stages' thread count ($OOD_THREADS): two runs side by side must not oversubscribe
    P = get_profile(args.profile)
    b = pipeline.benchmark(P)
    pixel = load_unet(pipeline.ddpm(P))
    latent = load_unet(pipeline.latent_ddpm(P))

    sd_cfg = dataclasses.replace(P.sd, n_outliers=args.n, batch_size=min(args.n, P.sd.batch_size))
    mix_cfg = dataclasses.replace(P.mixup, n_outliers=args.n, batch_size=min(args.n, P.mixup.batch_size))
    lat_cfg = dataclasses.replace(P.latent, n_outliers=args.n, batch_size=min(args.n, P.latent.batch_size))
    emb, _ = id_embeddings(latent, b.id_train.x, b.id_train.y, b.n_classes, P.latent, progress=False)

    def latent_images():
        out = latent_boundary_outliers(latent, emb, b.id_train.y, b.n_classes, lat_cfg, progress=False)
        return pipeline.decode_latents(P, out.latents)

    runs = {
        "sd (pixel)": (lambda: make_sd_outliers(pixel, b.id_train.x, b.id_train.y, b.n_classes, sd_cfg, progress=False), pixel),
        "mixup (pixel)": (lambda: label_mixup(pixel, args.n, b.n_classes, mix_cfg, progress=False), pixel),
        "latent (latents only)": (lambda: latent_boundary_outliers(latent, emb, b.id_train.y, b.n_classes, lat_cfg,
                                                                    progress=False), latent),
        "latent (+ decoding)": (latent_images, latent),
    }
    rows = []
    for name, (make, unet) in runs.items():
        seconds, evals = measure(make, unet, args.repeats)
        rows.append({"generator": name, "unet_params": n_params(unet),
                     "unet_input": "x".join(map(str, (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size))),
                     "seconds_per_1000": per_thousand(seconds, args.n), "unet_evals_per_1000": per_thousand(evals, args.n),
                     "ms_per_unet_eval": 1000 * seconds / max(evals, 1)})
        print(f"{name}: {rows[-1]['seconds_per_1000']:.1f} s per 1,000 outliers", flush=True)
    df = pd.DataFrame(rows)
    ref = df.loc[df.generator == "latent (+ decoding)", "seconds_per_1000"].item()
    df["time_vs_latent"] = df.seconds_per_1000 / ref
    out = results_dir(P.name)
    df.to_csv(out / "generation_throughput.csv", index=False, float_format="%.4f")
    header = (f"Generation throughput, profile `{P.name}`, {args.n} outliers per generator, best of {args.repeats}; "
              f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
              f"device cpu. Command: `python benchmarks/generation_throughput.py --profile {P.name} --n {args.n}`.\n\n"
              "`time_vs_latent`: wall time relative to the latent generator with decoding.\n\n")
    (out / "generation_throughput.md").write_text(header + df.round(3).to_markdown(index=False) + "\n")
    print(df.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
