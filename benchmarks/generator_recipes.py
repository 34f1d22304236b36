"""Which diffusion training recipe makes a generator that draws its class, for how many
seconds of training: conditional accuracy, degenerate share and Fréchet distance
(``pipeline.fidelity_rows``, judged by the profile's CE model or oracle on ID validation
statistics, never on a test split) against training seconds, for candidate recipes of the pixel
DDPM or the latent DDPM (min-SNR weighting, v-prediction, the cosine schedule, sizes, steps).

    python benchmarks/generator_recipes.py --profile digits --candidates eps_small_800 v_minsnr_1000
    python benchmarks/generator_recipes.py --profile digits --candidates latent_600 latent_minsnr_2000
    python benchmarks/generator_recipes.py --profile digits_nuisance --candidates ae_400 ae_f2_2000 --eval-at 1000
    python benchmarks/generator_recipes.py --profile digits_nuisance --candidates latent_f2_v_deep_2000 --eval-at 1000

A latent DDPM can draw its class no better than its autoencoder reconstructs one, so autoencoder
candidates (``ae_*``) are checked on that ceiling: the judge's accuracy on decode(encode(x)) of
ID validation images, and the L1 error, to ``<out>_autoencoder.{md,csv}``. A latent candidate may
name its autoencoder (the third element of its entry); it is trained, or loaded, as the profile's
cached ``autoencoder`` stage.

Each candidate trains from scratch in a temporary folder (the timing is training only, the
threads of ``runtime.compute_threads``, ``$OOD_THREADS``) and is checked at its last step, and also at each of
``--eval-at`` (checkpoints of the same schedule, so an earlier point is not a shorter run).
Rows go to ``<out>.{md,csv}`` after every check, so a stopped run keeps what it measured.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from diffusers.training_utils import EMAModel

from ood_lib import get_profile, pipeline
from ood_lib.artifacts import safe_load
from ood_lib.autoencoder import build_autoencoder, decode, encode, load_autoencoder, train_autoencoder
from ood_lib.config import override
from ood_lib.diffusion import build_unet, load_unet, schedule_of, to_model_space, train_ddpm
from ood_lib.runtime import set_threads

# name -> (model, the model's section as overrides). Every candidate names its whole recipe, so a
# candidate does not change when the profile's default does. "eps_small_800" is the cut the default
# run made in fc978f6 (16-32-32, 800 steps, epsilon), "eps_1000" the size before it.
EPS = {"prediction_type": "epsilon", "snr_gamma": 0.0}
EPS_MINSNR = {"prediction_type": "epsilon", "snr_gamma": 5.0}
V_MINSNR = {"prediction_type": "v_prediction", "snr_gamma": 5.0}
PIXEL, SMALL, LATENT = (32, 64, 64), (16, 32, 32), (32, 64)
CANDIDATES = {
    "eps_small_800": ("ddpm", {"block_out_channels": SMALL, "steps": 800, **EPS}),
    "eps_1000": ("ddpm", {"block_out_channels": PIXEL, "steps": 1000, **EPS}),
    "minsnr_1000": ("ddpm", {"block_out_channels": PIXEL, "steps": 1000, **EPS_MINSNR}),
    "v_minsnr_1000": ("ddpm", {"block_out_channels": PIXEL, "steps": 1000, **V_MINSNR}),
    "v_minsnr_small_800": ("ddpm", {"block_out_channels": SMALL, "steps": 800, **V_MINSNR}),
    "minsnr_cos_1000": ("ddpm", {"block_out_channels": PIXEL, "steps": 1000, **EPS_MINSNR,
                                 "beta_schedule": "squaredcos_cap_v2"}),
    "latent_600": ("latent_ddpm", {"block_out_channels": LATENT, "steps": 600, **EPS}),
    "latent_1000": ("latent_ddpm", {"block_out_channels": LATENT, "steps": 1000, **EPS}),
    "latent_minsnr_1000": ("latent_ddpm", {"block_out_channels": LATENT, "steps": 1000, **EPS_MINSNR}),
    "latent_minsnr_2000": ("latent_ddpm", {"block_out_channels": LATENT, "steps": 2000, **EPS_MINSNR}),
    "latent_wide_2000": ("latent_ddpm", {"block_out_channels": (64, 128), "steps": 2000, **EPS_MINSNR}),
    # digits_nuisance (32x32 RGB): the latent DDPM on 16x16 latents of a two-block autoencoder
    "latent_f2_2000": ("latent_ddpm", {"block_out_channels": LATENT, "steps": 2000, **EPS_MINSNR},
                       {"autoencoder": {"block_out_channels": (16, 32), "steps": 2000, "batch_size": 32}}),
    "latent_f2_v_deep_2000": ("latent_ddpm", {"block_out_channels": (32, 64, 64), "steps": 2000, **V_MINSNR},
                              {"autoencoder": {"block_out_channels": (16, 32), "steps": 2000, "batch_size": 32}}),
    # autoencoders: the profiles' default (digits), and wider/longer ones for 32x32 RGB (digits_nuisance)
    "ae_400": ("autoencoder", {"block_out_channels": (16, 32, 32), "steps": 400, "batch_size": 32}),
    "ae_wide_2000": ("autoencoder", {"block_out_channels": (32, 64, 128), "steps": 2000, "batch_size": 64}),
    # two blocks: 16x16 latents (a 2x smaller side instead of 4x)
    "ae_f2_1000": ("autoencoder", {"block_out_channels": (16, 32), "steps": 1000, "batch_size": 32}),
    "ae_f2_2000": ("autoencoder", {"block_out_channels": (16, 32), "steps": 2000, "batch_size": 32}),
    "ae_f2_wide_2000": ("autoencoder", {"block_out_channels": (32, 64), "steps": 2000, "batch_size": 32}),
}


def recipe(cfg) -> str:
    """What a candidate trains: sizes and recipe, whatever the profile's defaults."""
    snr = f"min-SNR {cfg.snr_gamma:g}" if cfg.snr_gamma else "no loss weighting"
    return (f"UNet {'-'.join(map(str, cfg.block_out_channels))}, {cfg.steps} steps, lr {cfg.lr:g}, "
            f"{cfg.prediction_type}, {snr}, {cfg.beta_schedule} betas")


def training_data(profile, model: str):
    """What the model trains on (model space) and, for the latent DDPM, its latent scale."""
    b = pipeline.benchmark(profile)
    if model == "ddpm":
        return to_model_space(b.id_train.x), None
    z = encode(pipeline.autoencoder(profile), b.id_train.x)
    scale = 1.0 / z.std().item()
    return z * scale, scale


def unet_at_checkpoint(path: Path, cfg, n_classes: int, x: torch.Tensor):
    """The EMA UNet of a train_ddpm checkpoint."""
    state = safe_load(path)
    unet = build_unet(cfg, n_classes, x.shape[-1], x.shape[1])
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    ema.load_state_dict(state["ema"])
    ema.copy_to(unet.parameters())
    unet.register_to_config(**schedule_of(cfg))
    return unet.eval()


def candidate_profile(base, name: str):
    """The profile a candidate trains under: its model's section (and any section it names) replaced."""
    model, changes, *sections = CANDIDATES[name]
    return model, override(base, **{model: changes}, **(sections[0] if sections else {}))


def with_earlier_rows(df: pd.DataFrame, out: Path) -> pd.DataFrame:
    """``df`` after the rows ``<out>.csv`` already holds for other candidates: one command per
    candidate adds to the table instead of replacing it (a candidate run again replaces its rows)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.with_suffix(".csv").exists():
        return df
    earlier = pd.read_csv(out.with_suffix(".csv"))
    return pd.concat([earlier[~earlier.candidate.isin(set(df.candidate))], df], ignore_index=True)


def run_autoencoder(profile_name: str, name: str, eval_at, out: Path) -> pd.DataFrame:
    """Train an autoencoder candidate from scratch and check its reconstructions of ID validation
    at ``eval_at`` steps and its last: the judge's accuracy on them (the latent DDPM's ceiling),
    the judge's accuracy on the originals beside it, and the mean L1 error."""
    base = get_profile(profile_name)
    judge = pipeline.fidelity_judge(base)[0]
    _, profile = candidate_profile(base, name)
    cfg = profile.autoencoder
    b = pipeline.benchmark(profile)
    x_val, y_val = b.id_val.x, b.id_val.y
    real_accuracy = (judge(x_val)[0] == y_val).float().mean().item()
    marks = sorted({s for s in eval_at if 0 < s < cfg.steps} | {cfg.steps})
    rows, out = [], out.with_name(out.name + "_autoencoder")
    with tempfile.TemporaryDirectory() as tmp:
        seconds, done = 0.0, 0
        for mark in marks:
            t0 = time.perf_counter()
            try:
                ae = load_autoencoder(train_autoencoder(b.id_train.x, cfg, Path(tmp), stop_after=mark - done))
            except KeyboardInterrupt:     # an earlier mark: the checkpoint's weights
                ae = build_autoencoder(cfg, x_val.shape[1], x_val.shape[-1])
                ae.load_state_dict(safe_load(Path(tmp) / "checkpoint.pt")["model"])
                ae.eval()
            seconds += time.perf_counter() - t0
            done = mark
            recon = decode(ae, encode(ae, x_val), x_val.shape[-1], channels=x_val.shape[1])
            rows.append({"candidate": name, "step": mark, "train_seconds": round(seconds),
                         "recon_accuracy": round(100 * (judge(recon)[0] == y_val).float().mean().item(), 1),
                         "real_accuracy": round(100 * real_accuracy, 1),
                         "l1": round((recon - x_val).abs().mean().item(), 4),
                         "recipe": f"AE {'-'.join(map(str, cfg.block_out_channels))}, {cfg.steps} steps, batch "
                                   f"{cfg.batch_size}, lr {cfg.lr:g}"})
            print(f"{name} step {mark}: {seconds:.0f} s training; reconstructions {rows[-1]['recon_accuracy']} % "
                  f"on-class (originals {rows[-1]['real_accuracy']} %), L1 {rows[-1]['l1']}", flush=True)
            df = with_earlier_rows(pd.DataFrame(rows), out)
            df.to_csv(out.with_suffix(".csv"), index=False)
            out.with_suffix(".md").write_text(
                f"Autoencoder recipes on profile `{profile_name}`, {torch.get_num_threads()} threads (torch "
                f"{torch.__version__}): the judge's (`pipeline.fidelity_judge`) accuracy in % on decode(encode(x)) of "
                f"the {len(x_val)} ID validation images, the latent DDPM's ceiling, beside its accuracy on the "
                f"originals, and the mean L1 error. Command: `python benchmarks/generator_recipes.py --profile "
                f"{profile_name} --candidates <candidate> --eval-at <steps>`\n\n" + df.to_markdown(index=False) + "\n")
    return pd.DataFrame(rows)


def run(profile_name: str, names, eval_at, n_per_class: int, out: Path, keep: Path | None = None) -> pd.DataFrame:
    rows = []
    base = get_profile(profile_name)
    judge = pipeline.fidelity_judge(base)[0]
    for name in names:
        if CANDIDATES[name][0] == "autoencoder":
            run_autoencoder(profile_name, name, eval_at, out)
            continue
        model, profile = candidate_profile(base, name)
        cfg = getattr(profile, model)
        x, scale = training_data(profile, model)
        y = pipeline.benchmark(profile).id_train.y
        n_classes = pipeline.benchmark(profile).n_classes
        marks = sorted({s for s in eval_at if 0 < s < cfg.steps} | {cfg.steps})
        with tempfile.TemporaryDirectory() as tmp:
            seconds, done = 0.0, 0
            for mark in marks:
                t0 = time.perf_counter()
                try:
                    art = train_ddpm(x, y, n_classes, cfg, Path(tmp), stop_after=mark - done)
                    unet = load_unet(art)
                except KeyboardInterrupt:
                    unet = unet_at_checkpoint(Path(tmp) / "checkpoint.pt", cfg, n_classes, x)
                seconds += time.perf_counter() - t0
                done = mark
                t0 = time.perf_counter()
                checked = pipeline.fidelity_rows(profile, unet, model, n_per_class, judge=judge, latent_scale=scale)
                if keep is not None:      # the UNet and the checks' samples, to look at
                    keep.mkdir(parents=True, exist_ok=True)
                    torch.save({"unet_config": dict(unet.config), "state": unet.state_dict(), "scale": scale,
                                "samples": {r["setting"]: r["samples"] for r in checked}},
                               keep / f"{name}_step{mark}.pt")
                for r in checked:
                    rows.append({"candidate": name, "model": r["model"], "step": mark, "train_seconds": round(seconds),
                                 "setting": r["setting"], "w": r["w"], "stride": r["stride"],
                                 "accuracy": r["accuracy"], "min_class_accuracy": r["min_class_accuracy"],
                                 "degenerate": r["degenerate"], "noise": r["degenerate_noise"],
                                 "saturated": r["degenerate_saturated"], "blank": r["degenerate_blank"],
                                 "frechet_id_val": r["frechet_id_val"],
                                 "frechet_id_test": r["frechet_id_test"], "gate": r["text"],
                                 "recipe": recipe(cfg)})
                print(f"{name} step {mark}: {seconds:.0f} s training, check {time.perf_counter() - t0:.0f} s; "
                      + "; ".join(f"{r['setting']} {100 * r['accuracy']:.0f} %" for r in checked), flush=True)
                write(pd.DataFrame(rows), out, profile_name, n_per_class)
    return pd.DataFrame(rows)


def write(df: pd.DataFrame, out: Path, profile_name: str, n_per_class: int) -> None:
    df = with_earlier_rows(df, out)
    df.to_csv(out.with_suffix(".csv"), index=False)
    shown = df.assign(**{c: (100 * df[c]).round(1) for c in ("accuracy", "min_class_accuracy", "degenerate", "noise",
                                                              "saturated", "blank")},
                      **{c: df[c].round(2) for c in ("frechet_id_val", "frechet_id_test")})
    head = (f"Generator recipes on profile `{profile_name}`, {torch.get_num_threads()} threads "
            f"(torch {torch.__version__}): {n_per_class} samples per class from pure noise at each outlier "
            f"generator's sampler settings and at w = 0, judged by `pipeline.fidelity_judge` (accuracy, lowest "
            f"class and degenerate share in %; Fréchet distance to ID validation in the judge's features, beside "
            f"ID test's own). Command: `python benchmarks/generator_recipes.py --profile {profile_name} "
            f"--candidates {' '.join(dict.fromkeys(df.candidate))}`\n\n")
    out.with_suffix(".md").write_text(head + shown.drop(columns=["model"]).to_markdown(index=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="digits")
    ap.add_argument("--candidates", nargs="+", required=True, choices=sorted(CANDIDATES))
    ap.add_argument("--eval-at", nargs="*", type=int, default=[], help="earlier steps to check too")
    ap.add_argument("--n-per-class", type=int, default=50)
    ap.add_argument("--out", default=None, help="default results/benchmarks/generator_recipes_<profile>")
    ap.add_argument("--keep", default=None, help="a folder for each check's UNet and samples (to look at)")
    args = ap.parse_args()
    set_threads()   # the stages' thread count ($OOD_THREADS): two runs side by side must not oversubscribe
    out = Path(args.out or f"results/benchmarks/generator_recipes_{args.profile}")
    run(args.profile, args.candidates, args.eval_at, args.n_per_class, out, Path(args.keep) if args.keep else None)


if __name__ == "__main__":
    main()
