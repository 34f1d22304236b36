"""ID-accuracy collapse of energy-OE and SupCon + OE on the `digits` profile: before / after.

Trains, on the digits profile's ID training split with its classifier settings (small CNN,
8 epochs, AdamW 1e-3 OneCycle, batch 64, outlier batch 64):

* ``ce`` without outliers (the reference, and the CE model the "from_ce" margins come from);
* ``energy_oe`` with ``energy_margins="fixed"`` (m_in -25, m_out -7: Liu et al.'s CIFAR
  fine-tuning constants, "before") and ``"from_ce"`` (median / 95th percentile of the CE
  model's ID training energies, "after");
* ``supcon`` + OE with ``supcon_oe="joint"`` (OE gradient reaches the backbone, "before") and
  ``"probe"`` (OE trains the proxies only, "after");

with cheap outlier sets that need no diffusion model (``--outliers``):

* ``blend``: pixel blends lam * a + (1 - lam) * b of two ID training images of different
  classes, lam ~ U(0.4, 0.6) (the character of label-mixup outliers: between two classes);
* ``blur``: ID training images under a Gaussian blur (sigma 1 pixel): near copies of their
  sources, the character of the digits SD outliers (they sit closer to their source than any
  other ID digit);

``none`` adds SupCon without outliers for reference, and ``--pipeline sd mixup`` the pipeline's
real generator outliers (``ood_lib.pipeline.classifier``, cached under ``$OOD_CACHE``; trains
the pixel DDPM first, about 6 min on one core). Reports ID test accuracy and near-OOD AUROC on digits 6-9 (test split)
with the energy, k-NN and (metric models) cosine-to-proxy scores. Each run is stored in
``--store`` (JSON lines) and skipped when rerun, so the script resumes.

    OOD_CACHE=/tmp/collapse_cache TQDM_DISABLE=1 OMP_NUM_THREADS=1 python benchmarks/collapse_check.py
    python benchmarks/collapse_check.py --seeds 0 --outliers blend --losses energy_oe   # one quick run

Uses one CPU thread (``torch.set_num_threads(1)``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ood_lib.config import get_profile  # noqa: E402
from ood_lib.data import load_benchmark  # noqa: E402
from ood_lib.evaluation import score_sets  # noqa: E402
from ood_lib.metrics import auroc  # noqa: E402
from ood_lib.train import ce_energy_margins, load_classifier, train_classifier  # noqa: E402

# (loss, variant) -> ClassifierConfig overrides
VARIANTS = {
    ("energy_oe", "before"): {"energy_margins": "fixed"},
    ("energy_oe", "after"): {"energy_margins": "from_ce"},
    ("supcon", "before"): {"supcon_oe": "joint"},
    ("supcon", "after"): {"supcon_oe": "probe"},
}
NEAR = "digits_6to9"


def cheap_outliers(kind: str, x: torch.Tensor, y: torch.Tensor, n: int = 1200, seed: int = 123) -> torch.Tensor:
    """The cheap outlier sets described in the module docstring (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "blend":
        i, j = torch.randint(len(x), (2, 4 * n), generator=g)
        keep = (y[i] != y[j]).nonzero().flatten()[:n]
        i, j = i[keep], j[keep]
        lam = 0.4 + 0.2 * torch.rand(len(i), 1, 1, 1, generator=g)
        return (lam * x[i] + (1 - lam) * x[j]).clamp(0, 1)
    if kind == "blur":
        idx = torch.randperm(len(x), generator=g)[:n]
        r = torch.arange(-3, 4, dtype=torch.float32)
        k = torch.exp(-r ** 2 / 2.0)
        k = k / k.sum()
        xb = F.conv2d(x[idx], k.view(1, 1, 1, -1).expand(x.shape[1], 1, 1, 7), padding=(0, 3), groups=x.shape[1])
        xb = F.conv2d(xb, k.view(1, 1, -1, 1).expand(x.shape[1], 1, 7, 1), padding=(3, 0), groups=x.shape[1])
        return xb.clamp(0, 1)
    raise KeyError(f"unknown cheap outlier set {kind!r}; valid: blend, blur")


def evaluate(model, b, outliers_x=None) -> dict:
    """ID test accuracy and near-OOD (digits 6-9, test) AUROC in %, per score."""
    s = score_sets(model, b.id_train, b.id_test, [b.ood_test[NEAR]], get_profile("digits").scores,
                   scores=("energy", "knn", "cosine_proxy"))
    row = {"ID_acc": 100 * s["id_acc"]}
    for name in s["scores"]:
        row[f"near_{name}"] = 100 * auroc(s["id"][name], s["ood"][NEAR][name])
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--outliers", nargs="*", default=["none", "blend", "blur"],
                    help="cheap sets: blend, blur; none: supcon without outliers (reference)")
    ap.add_argument("--losses", nargs="+", default=["energy_oe", "supcon"])
    ap.add_argument("--variants", nargs="+", default=["before", "after"])
    ap.add_argument("--pipeline", nargs="*", default=[], help="real generator outliers via ood_lib.pipeline, e.g. mixup")
    ap.add_argument("--store", default="/tmp/collapse_check/runs.jsonl")
    ap.add_argument("--out", default="results/digits/collapse_check.md")
    ap.add_argument("--epochs", type=int, default=None, help="override the profile's epochs (quick checks only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    prof = get_profile("digits", **({"clf": {"epochs": args.epochs}} if args.epochs else {}))
    b = load_benchmark(prof.data, verbose=False)
    x, y = b.id_train.x, b.id_train.y
    store = Path(args.store)
    store.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if store.exists():
        for line in store.read_text().splitlines():
            r = json.loads(line)
            done[(r["loss"], r["outliers"], r["variant"], r["seed"])] = r

    def record(row):
        done[(row["loss"], row["outliers"], row["variant"], row["seed"])] = row
        with store.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    sets = {kind: None if kind == "none" else cheap_outliers(kind, x, y) for kind in args.outliers}
    for seed in args.seeds:
        if ("ce", "none", "-", seed) not in done:
            t = time.perf_counter()
            ce_model = load_classifier(train_classifier(x, y, b.n_classes, prof.clf, loss="ce", seed=seed,
                                                        snapshot_epochs=()))
            m_in, m_out = ce_energy_margins(ce_model, x, prof.clf)   # the "from_ce" margins of this seed
            record({"loss": "ce", "outliers": "none", "variant": "-", "seed": seed, **evaluate(ce_model, b),
                    "seconds": time.perf_counter() - t, "m_in": m_in, "m_out": m_out})
        ce_margins = (done[("ce", "none", "-", seed)]["m_in"], done[("ce", "none", "-", seed)]["m_out"])
        for kind, ox in sets.items():
            for loss in args.losses:
                if ox is None and loss != "supcon":
                    continue                     # "none": the metric loss without outliers, for reference
                for variant in (args.variants if ox is not None else ["-"]):
                    if (loss, kind, variant, seed) in done:
                        continue
                    cfg = dataclasses.replace(prof.clf, **VARIANTS.get((loss, variant), {}))
                    extra = {}
                    if loss == "energy_oe" and cfg.energy_margins == "from_ce":
                        extra["energy_margins"] = ce_margins
                    t = time.perf_counter()
                    art = train_classifier(x, y, b.n_classes, cfg, loss=loss, outliers=ox, seed=seed,
                                           snapshot_epochs=(), **extra)
                    row = {"loss": loss, "outliers": kind, "variant": variant, "seed": seed,
                           **evaluate(load_classifier(art), b), "seconds": time.perf_counter() - t}
                    if "energy_margins" in art:
                        row["m_in"], row["m_out"] = art["energy_margins"]
                    record(row)
        for gen in args.pipeline:
            from ood_lib import pipeline
            for loss in args.losses:
                for variant in args.variants:
                    if (loss, gen, variant, seed) in done:
                        continue
                    p = get_profile("digits", clf=VARIANTS[(loss, variant)])
                    t = time.perf_counter()
                    art = pipeline.classifier(p, loss, seed, gen)
                    row = {"loss": loss, "outliers": gen, "variant": variant, "seed": seed,
                           **evaluate(load_classifier(art), b), "seconds": time.perf_counter() - t}
                    if "energy_margins" in art:
                        row["m_in"], row["m_out"] = art["energy_margins"]
                    record(row)

    df = pd.DataFrame(list(done.values()))
    df = df[df.seed.isin(args.seeds)].sort_values(["loss", "outliers", "variant", "seed"])
    cols = [c for c in ["loss", "outliers", "variant", "seed", "ID_acc", "near_energy", "near_knn",
                        "near_cosine_proxy", "m_in", "m_out"] if c in df]
    per_seed = df[cols].round(2)
    metrics = [c for c in ("ID_acc", "near_energy", "near_knn", "near_cosine_proxy") if c in df]
    agg = df.groupby(["loss", "outliers", "variant"], sort=True)[metrics].agg(["mean", "std"])
    summary = pd.DataFrame({m: [f"{a:.1f} ± {s:.1f}" if s == s else f"{a:.1f}" for a, s in
                                zip(agg[(m, "mean")], agg[(m, "std")])] for m in metrics}, index=agg.index)
    summary = summary.replace("nan", "–").reset_index()
    text = ("ID accuracy and near-OOD AUROC (digits 6-9, test split) in %, profile `digits`, seeds "
            f"{sorted(set(df.seed))}; before = energy_margins 'fixed' (-25, -7) / supcon_oe 'joint', after = "
            "energy_margins 'from_ce' (quantiles 0.5, 0.95) / supcon_oe 'probe'. "
            "Commands: `OOD_CACHE=/tmp/collapse_cache TQDM_DISABLE=1 python benchmarks/collapse_check.py` (cheap "
            "sets); rows `sd` / `mixup` (the pipeline's DDPM outliers): `... --seeds 0 --pipeline sd mixup` and "
            "`... --seeds 1 2 --outliers --pipeline sd mixup --variants after` (their 'before' over three seeds: "
            "results/digits/loss_grid_full.md).\n\n"
            + summary.to_markdown(index=False) + "\n\nPer seed:\n\n" + per_seed.to_markdown(index=False) + "\n")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
