"""Tidy results -> tables (Markdown, CSV) and figures (seaborn/matplotlib).

Tables show percentages, mean ± std over seeds (just the mean for one seed).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from .artifacts import REPO_ROOT
from .data import Benchmark



def results_dir(profile_name: str) -> Path:
    """``results/<profile>/`` in the repository (``results/smoke`` is git-ignored)."""
    path = REPO_ROOT / "results" / profile_name
    (path / "figures").mkdir(parents=True, exist_ok=True)
    return path


def mean_std(values: pd.Series, digits: int = 1) -> str:
    values = 100 * values.astype(float)
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def summary_table(df: pd.DataFrame, metrics=("AUROC", "FPR95")) -> pd.DataFrame:
    """Rows generator × loss × score, columns (OOD set, metric); cells mean ± std (%) over seeds.
    OOD sets are ordered near first, then far, as they appear in ``df``."""
    order = list(dict.fromkeys(df.sort_values("ood_group", key=lambda s: s != "near", kind="stable").ood_dataset))
    rows = ["generator", "loss", "score"]
    cells = (df.groupby([*rows, "ood_dataset"], sort=False)[list(metrics)]
               .agg(mean_std).unstack("ood_dataset"))
    cells = cells.swaplevel(0, 1, axis=1)
    cells = cells.reindex(columns=pd.MultiIndex.from_product([order, list(metrics)]))
    acc = df.groupby(rows, sort=False)["ID_acc"].agg(mean_std)
    cells[("ID", "acc")] = acc
    return cells


def compact_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows generator × loss × score; near-OOD AUROC and FPR95 (mean over the near sets),
    far-OOD AUROC (mean over the far sets) and ID accuracy, mean ± std (%) over seeds."""
    rows = ["generator", "loss", "score"]
    per_seed = (df.groupby([*rows, "seed", "ood_group"], sort=False)[["AUROC", "FPR95"]].mean()
                  .unstack("ood_group"))
    per_seed.columns = [f"{group} {metric}" for metric, group in per_seed.columns]
    per_seed["ID acc"] = df.groupby([*rows, "seed"], sort=False)["ID_acc"].first()
    cols = [c for c in ("near AUROC", "near FPR95", "far AUROC", "ID acc") if c in per_seed.columns]
    return per_seed[cols].groupby(rows, sort=False).agg(mean_std)


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown of a summary table (two-level column names are joined)."""
    flat = table.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [f"{a} {b}" for a, b in flat.columns]
    return flat.reset_index().to_markdown(index=False)


def write_tables(df: pd.DataFrame, outdir: Path, title: str) -> Path:
    """``metrics.csv`` (tidy, all seeds and metrics) and ``table.md`` (AUROC / FPR95)."""
    df.to_csv(outdir / "metrics.csv", index=False, float_format="%.6f")
    md = outdir / "table.md"
    md.write_text(f"{title}\n\nAUROC and FPR@95TPR in %, ID test accuracy in %.\n\n"
                  f"{to_markdown(summary_table(df))}\n")
    return md


def dataset_summary(bench: Benchmark) -> pd.DataFrame:
    rows = [{"split": "id_" + k, "set": s.name, "group": s.group, "n": len(s),
             "classes": "" if s.y is None else " ".join(map(str, sorted(set(s.y.tolist()))))}
            for k, s in (("train", bench.id_train), ("val", bench.id_val), ("test", bench.id_test))]
    for split, sets in (("ood_val", bench.ood_val), ("ood_test", bench.ood_test)):
        rows += [{"split": split, "set": s.name, "group": s.group, "n": len(s),
                  "classes": "" if s.y is None else " ".join(map(str, sorted(set(s.y.tolist()))))}
                 for s in sets.values()]
    return pd.DataFrame(rows)


def image_grid(rows: dict, n: int = 10, path: Path | None = None, scale: float = 0.9):
    """One row of ``n`` images per entry of ``rows`` (name -> tensor (N, C, H, W) in [0, 1])."""
    fig, axes = plt.subplots(len(rows), n, figsize=(n * scale, len(rows) * scale + 0.3), squeeze=False)
    for r, (name, x) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(x):
                ax.imshow(x[c].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def outlier_title(out, i: int) -> str:
    """Short provenance of outlier ``i``: SD 'source→c_r', mixup 'a·λ+b', latent 'near c'."""
    if out.generator == "sd":
        return f"{int(out.y_source[i])}→{int(out.y_target[i])}"
    if out.generator == "mixup":
        return f"{int(out.y_source[i])}·{float(out.lam[i]):.2f}+{int(out.y_target[i])}"
    return f"near {int(out.y_source[i])}"


def outlier_grid(out, source_x: torch.Tensor | None = None, n: int = 10, path: Path | None = None):
    """``n`` outliers of an :class:`ood_lib.outliers.OutlierSet`, titled by their provenance;
    SD outliers are shown beneath their source images (``source_x``: the ID training images)."""
    with_source = out.generator == "sd" and source_x is not None
    rows = 2 if with_source else 1
    fig, axes = plt.subplots(rows, n, figsize=(n * 0.95, 1.2 * rows + 0.3), squeeze=False)
    for c in range(n):
        images = ([source_x[int(out.source_index[c])]] if with_source else []) + [out.x[c]]
        for r, img in enumerate(images):
            axes[r, c].imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
        axes[0, c].set_title(outlier_title(out, c), fontsize=7)
    if with_source:
        axes[0, 0].text(-4, 14, "source", ha="right", va="center", fontsize=8)
        axes[1, 0].text(-4, 14, "SD", ha="right", va="center", fontsize=8)
    shown = {k: v for k, v in out.params.items() if k in ("S", "w", "lam_low", "lam_high", "sigma", "k", "sampler", "labels")}
    fig.suptitle(f"{out.generator} outliers {shown}", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def write_outlier_diagnostics(diag: pd.DataFrame, outdir: Path) -> Path:
    """``outlier_diagnostics.csv`` and ``.md`` (from ``pipeline.outlier_diagnostics``)."""
    diag.to_csv(outdir / "outlier_diagnostics.csv", index=False, float_format="%.6f")
    md = outdir / "outlier_diagnostics.md"
    md.write_text("Outlier diagnostics (notebook 05): Fréchet distance to ID test in the CE classifier's "
                  "feature space, its mean max-softmax confidence, mean pixel L2 to the nearest ID training "
                  "image, generation cost per 1,000 outliers, one-off generator training seconds.\n\n"
                  f"{diag.round(3).to_markdown(index=False)}\n")
    return md


def score_histograms(scored: dict, path: Path | None = None, title: str = ""):
    """Histograms per score: ID test vs each OOD set (from ``pipeline.score_sets``)."""
    frames = []
    for score, values in scored["id"].items():
        frames.append(pd.DataFrame({"score": score, "set": "ID test", "value": values.numpy()}))
        for name, s in scored["ood"].items():
            frames.append(pd.DataFrame({"score": score, "set": name, "value": s[score].numpy()}))
    data = pd.concat(frames, ignore_index=True)
    g = sns.displot(data, x="value", hue="set", col="score", kind="hist", stat="density", common_norm=False,
                    element="step", fill=False, facet_kws={"sharex": False, "sharey": False}, height=2.8)
    g.figure.suptitle(title, y=1.03, fontsize=10)
    if path is not None:
        g.figure.savefig(path, dpi=110, bbox_inches="tight")
    return g.figure


def training_curves(logs: dict, key: str = "loss", path: Path | None = None):
    """Line plot of a per-epoch (or per-step) log for several runs: name -> sequence."""
    fig, ax = plt.subplots(figsize=(5, 3))
    for name, values in logs.items():
        ax.plot(range(1, len(values) + 1), list(values), label=name)
    ax.set_xlabel("step" if len(next(iter(logs.values()))) > 100 else "epoch")
    ax.set_ylabel(key)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """Validation sweep: rows (setting, loss), columns score, cells near-OOD AUROC (%)."""
    near = df[df.ood_group == "near"]
    return (100 * near.groupby(["setting", "loss", "score"]).AUROC.mean()).round(2).unstack("score").reset_index()
