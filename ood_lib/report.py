"""Tidy results -> tables (Markdown, CSV) and figures (seaborn/matplotlib).

Tables show percentages, mean ± std over seeds (just the mean for one seed).
"""
from __future__ import annotations

import os

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .artifacts import process_role, project_root
from .images import Benchmark



def results_dir(profile_name: str) -> Path:
    """``$OOD_RESULTS/<profile>/``, else ``results/<profile>/`` in :func:`~ood_lib.artifacts.project_root`
    (``results/smoke`` is git-ignored)."""
    path = Path(os.environ.get("OOD_RESULTS", project_root() / "results")).expanduser() / profile_name
    (path / "figures").mkdir(parents=True, exist_ok=True)
    return path


def mean_std(values: pd.Series, digits: int = 1) -> str:
    values = 100 * values.astype(float)
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def marks(df: pd.DataFrame, rows: list) -> pd.Series | None:
    """One "marks" cell per group of ``rows``: a collapsed model (ID accuracy more than 3 points
    below CE's, ``pipeline.mark_rows``), the fidelity gate of the generator behind its outliers
    ("GENERATOR FAILED: ..." or "generator ok: ...") and the SD regime check of its outliers, so a
    result is never read without the diagnostic that says the method did nothing. None when
    ``df`` has no such columns."""
    if "collapsed" not in df.columns:
        return None

    def one(part):
        out = []
        if part.collapsed.any():
            gap = 100 * part.groupby("seed").ID_acc_vs_ce.first()
            out.append(f"COLLAPSED: ID acc {gap.mean():+.1f} vs CE")
        if "generator_check" in part and part.generator_check.iloc[0]:
            out.append(part.generator_check.iloc[0] if part.generator_failed.any()
                       else "generator " + part.generator_check.iloc[0])
        if "outlier_check" in part and part.outlier_check.iloc[0]:
            out.append("SD: " + part.outlier_check.iloc[0])
        return "; ".join(out)

    return df.groupby(rows, sort=False)[list(df.columns)].apply(one)


def _with_marks(table: pd.DataFrame, df: pd.DataFrame, rows: list, column="marks") -> pd.DataFrame:
    """``table`` (indexed by ``rows``) with the :func:`marks` of ``df`` as its last column, when ``df`` has them."""
    m = marks(df, rows)
    if m is not None:
        table[column] = m
    return table


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
    return _with_marks(cells, df, rows, ("", "marks"))


def compact_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows generator × loss × score; near-OOD AUROC and FPR95 (mean over the near sets),
    far-OOD AUROC and FPR95 (mean over the far sets) and ID accuracy, mean ± std (%) over seeds."""
    rows = ["generator", "loss", "score"]
    per_seed = (df.groupby([*rows, "seed", "ood_group"], sort=False)[["AUROC", "FPR95"]].mean()
                  .unstack("ood_group"))
    per_seed.columns = [f"{group} {metric}" for metric, group in per_seed.columns]
    per_seed["ID acc"] = df.groupby([*rows, "seed"], sort=False)["ID_acc"].first()
    cols = [c for c in ("near AUROC", "near FPR95", "far AUROC", "far FPR95", "ID acc") if c in per_seed.columns]
    return _with_marks(per_seed[cols].groupby(rows, sort=False).agg(mean_std), df, rows)


def loss_grid_table(df: pd.DataFrame, score: str = "knn") -> pd.DataFrame:
    """Rows outlier source × loss, one ``score``: near AUROC / FPR95, far AUROC, ID acc (the
    :func:`compact_table` columns), so every loss family is compared with the same score."""
    if score not in set(df.score):
        raise KeyError(f"no rows with score {score!r}; scores present: {sorted(set(df.score))}")
    return compact_table(df[df.score == score]).droplevel("score")


def score_table(df: pd.DataFrame, group: str = "near", metric: str = "AUROC") -> pd.DataFrame:
    """Rows outlier source × loss, columns score: ``metric`` averaged over the OOD sets of
    ``group``, mean ± std (%) over seeds; empty where a score does not apply to a model."""
    from .scores import SCORES

    rows = ["generator", "loss"]
    per_seed = df[df.ood_group == group].groupby([*rows, "score", "seed"], sort=False)[metric].mean()
    cells = per_seed.groupby([*rows, "score"], sort=False).agg(mean_std).unstack("score")
    order = list(dict.fromkeys(zip(df.generator, df.loss)))
    cells = cells.reindex(index=pd.MultiIndex.from_tuples(order, names=rows),
                          columns=[s for s in SCORES if s in cells.columns])
    return _with_marks(cells, df, rows).fillna("")


def write_grid(df: pd.DataFrame, outdir: Path, stem: str, score: str, command: str) -> pd.DataFrame:
    """The loss × outlier-source table (:func:`loss_grid_table`) as ``<stem>.{md,tex,csv}``, with
    what it shows and the command that made it; returns the table."""
    seeds = sorted(set(df.seed))
    table = loss_grid_table(df, score)
    write_table(table, outdir, stem,
                f"Loss × outlier source, profile `{df.profile.iloc[0]}`, test splits, score `{score}`: near = mean "
                f"over the near-OOD sets, far = mean over the far-OOD sets; mean ± std over seeds {seeds}, in %. "
                f"Command: `{command}`")
    return table


def write_score_tables(df: pd.DataFrame, outdir: Path, suffix: str, title: str) -> dict:
    """``metrics<suffix>.csv`` (the tidy table: every OOD set, model, score, seed and metric) and
    the model × score AUROC tables ``scores_near<suffix>`` and ``scores_far<suffix>`` (.md, .tex,
    .csv). Returns ``{"near": table, "far": table}``."""
    df.to_csv(Path(outdir) / f"metrics{suffix}.csv", index=False, float_format="%.6f")
    tables = {}
    for group in ("near", "far"):
        tables[group] = score_table(df, group)
        write_table(tables[group], outdir, f"scores_{group}{suffix}",
                    f"{title}: {group}-OOD AUROC (%, mean over the {group}-OOD test sets), model × score, "
                    f"mean ± std over seeds; empty: the score does not apply to the model.")
    return tables


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown of a summary table (two-level column names are joined)."""
    flat = table.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [f"{a} {b}" for a, b in flat.columns]
    return flat.reset_index().to_markdown(index=False)


def dataset_summary(bench: Benchmark) -> pd.DataFrame:
    rows = [{"split": "id_" + k, "set": s.name, "group": s.group, "n": len(s),
             "classes": "" if s.y is None else " ".join(map(str, sorted(set(s.y.tolist()))))}
            for k, s in (("train", bench.id_train), ("val", bench.id_val), ("test", bench.id_test))]
    for split, sets in (("ood_val", bench.ood_val), ("ood_test", bench.ood_test)):
        rows += [{"split": split, "set": s.name, "group": s.group, "n": len(s),
                  "classes": "" if s.y is None else " ".join(map(str, sorted(set(s.y.tolist()))))}
                 for s in sets.values()]
    return pd.DataFrame(rows)


def image_grid(rows: dict, n: int = 10, path: Path | None = None, scale: float = 0.9, title: str = ""):
    """One row of ``n`` images per entry of ``rows`` (name -> tensor (N, C, H, W) in [0, 1]); a
    row with more than ``n`` images shows ``n`` spread evenly over it (sets sorted by class
    show every class, not the first class ``n`` times)."""
    fig, axes = plt.subplots(len(rows), n, figsize=(n * scale, len(rows) * scale + 0.3), squeeze=False)
    for r, (name, x) in enumerate(rows.items()):
        shown = x[torch.linspace(0, len(x) - 1, n).round().long()] if len(x) > n else x
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(shown):
                ax.imshow(shown[c].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(name, fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
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


def outlier_grid(out, source_x: torch.Tensor | None = None, n: int = 10, path: Path | None = None,
                 profile_name: str = ""):
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
    if with_source:   # row labels in axes coordinates: right for any image size
        axes[0, 0].text(-0.08, 0.5, "source", ha="right", va="center", fontsize=8, transform=axes[0, 0].transAxes)
        axes[1, 0].text(-0.08, 0.5, "SD", ha="right", va="center", fontsize=8, transform=axes[1, 0].transAxes)
    shown = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in out.params.items()
                      if k in ("S", "w", "lam_low", "lam_high", "sigma", "k", "sampler", "labels"))
    fig.suptitle(f"{profile_name + ': ' if profile_name else ''}{out.generator} outliers ({shown})", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def nuisance_semantics_plot(screen: pd.DataFrame, others: pd.DataFrame | None = None, path: Path | None = None,
                            title: str = ""):
    """Paper 3's premise as a picture: nuisance kept (x: mean of background and stroke kept) against
    semantics changed (y: share the oracle reads as another digit) for SD outliers over S (one
    line per w, from ``pipeline.nuisance_screen``), with ``others`` (``pipeline.nuisance_check``
    rows of label-mixup and latent outliers) as points. The premise holds where a point sits
    top right: nuisances kept, digit changed."""
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for w, rows in screen.groupby("w"):
        kept = (rows.background_kept + rows.stroke_kept) / 2
        ax.plot(kept, rows.left_source_oracle, marker="o", label=f"SD, w = {w:g}")
        for k, c, S in zip(kept, rows.left_source_oracle, rows.S):
            ax.annotate(f"S={S}", (k, c), fontsize=6, xytext=(3, 3), textcoords="offset points")
    for row in ([] if others is None else others.itertuples()):
        ax.scatter((row.background_kept + row.stroke_kept) / 2, row.left_source_oracle, marker="s", s=40,
                   label=f"{row.set} (vs nearest ID)" if row.set != "sd" else "sd (default S, w)")
    ax.set_xlabel("nuisance kept (1 = source's colours, 0 = a random image's)")
    ax.set_ylabel("semantics changed (oracle: another digit)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
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


def fidelity_samples(row: dict, classes) -> dict:
    """The samples a fidelity check kept (``pipeline.generator_fidelity`` rows: the first few of
    each class, in class order) as :func:`image_grid` rows, one per class."""
    per = len(row["samples"]) // len(classes)
    return {f"class {c}": row["samples"][i * per:(i + 1) * per] for i, c in enumerate(classes)}


def write_fidelity(table: pd.DataFrame, outdir: Path, profile_name: str) -> dict[str, Path]:
    """``generator_fidelity.{md,tex,csv}`` from ``pipeline.fidelity_table``: accuracies and
    degenerate shares in %, Fréchet distances as they are."""
    shown = table.copy()
    pct = [c for c in shown.columns if c in ("accuracy", "min_class_accuracy") or c.startswith(("acc_", "degenerate"))]
    shown[pct] = (100 * shown[pct].astype(float)).round(1)
    shown[["frechet_id_val", "frechet_id_test"]] = shown[["frechet_id_val", "frechet_id_test"]].round(3)
    n = int(shown.n.iloc[0]) if len(shown) else 0
    return write_table(shown.drop(columns=["passed"]).set_index(["model", "setting"]), outdir, "generator_fidelity",
                       f"Generator fidelity, profile `{profile_name}` (notebook 02, `pipeline.fidelity_table`): {n} "
                       f"samples from pure noise per row, an equal number per class, at each outlier generator's "
                       f"sampler settings and at w = 0, judged by an independent classifier (the CE model of seed 0; "
                       f"digits_nuisance: the digit oracle). accuracy: judged as the class it was conditioned on "
                       f"(overall, lowest class, acc_<class>); degenerate: noise-like, saturated or blank against "
                       f"ID validation's range (`ood_lib.fidelity.degenerate`); Fréchet distance to ID validation in "
                       f"the judge's features beside ID test's own at the same n. Gate: accuracy >= 90 % and "
                       f"degenerate <= 5 % at the outlier settings, else GENERATOR FAILED (rows of w = 0 are "
                       f"shown, not gated). In %.")


def run_title(profile_name: str, loss: str, generator: str, what: str = "") -> str:
    """A figure title that says profile, model and outlier source."""
    source = "no outliers" if generator in (None, "none") else f"{generator} outliers"
    return f"{profile_name}: {loss} model, {source}" + (f": {what}" if what else "")


def score_axis(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Histogram bins that fit one score's own values: 40 bins over its 0.5-99.5 % range (all
    sets together), on a log axis when the values are positive and span more than two decades."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    if not np.isfinite([lo, hi]).all() or hi <= lo:
        lo, hi = float(np.min(values)) - 0.5, float(np.max(values)) + 0.5
    log = lo > 0 and hi / lo > 100
    return (np.geomspace(lo, hi, 41) if log else np.linspace(lo, hi, 41)), log


# Okabe & Ito's colour-blind-safe colours (vermillion kept for synthetic outliers), then grey and brown
SET_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442", "#999999", "#8C564B")
OUTLIER_COLOUR = "#D55E00"


def set_colours(names) -> dict:
    """One colour per data set, the same in every figure of a model: "ID test" black, the others
    from :data:`SET_PALETTE` in order (cycling past eight)."""
    others = [n for n in names if n != "ID test"]
    return {"ID test": "#000000", **{n: SET_PALETTE[i % len(SET_PALETTE)] for i, n in enumerate(others)}}


def _panel_grid(n: int, width: float, height: float, max_cols: int = 3):
    """``n`` panels on rows of at most ``max_cols`` (so 6 scores fill 2 x 3 with no empty panel),
    the unused cells of the last row hidden; constrained layout keeps legends outside the axes
    from overlapping the next row."""
    cols = min(max_cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def score_histograms(scored: dict, path: Path | None = None, title: str = ""):
    """Histograms per score: ID test vs each OOD set (from ``pipeline.score_sets``), each score
    binned over its own range (:func:`score_axis`), 3 panels a row, one legend beside them."""
    names = list(scored["id"])
    sets = {"ID test": scored["id"], **scored["ood"]}
    fig, axes = _panel_grid(len(names), 3.4, 2.7)
    colours = set_colours(sets)
    for ax, score in zip(axes, names):
        values = {name: _np(s[score]) for name, s in sets.items()}
        bins, log = score_axis(np.concatenate(list(values.values())))
        for name, v in values.items():
            ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, density=True, histtype="step", color=colours[name],
                    linewidth=1.8 if name == "ID test" else 1.1, label=name)
        if log:
            ax.set_xscale("log")
        ax.set_title(score, fontsize=10)
        ax.set_xlabel(f"{score} score" + (" (log axis)" if log else ""), fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=9, frameon=False)
    fig.suptitle(f"{title}\n(higher = more OOD; each score over its own 0.5-99.5 % range, values beyond it "
                 f"in the edge bins)" if title else "", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def training_curves(logs: dict, key: str = "loss", path: Path | None = None, title: str = ""):
    """Line plot of a per-epoch (or per-step) log for several runs: name -> sequence (many runs:
    one colour per run from a qualitative palette, the legend beside the axes). Per-step logs
    are drawn faint with their 25-step running mean on top; a positive log that spans more
    than two decades gets a log axis."""
    fig, ax = plt.subplots(figsize=(5, 3))
    colours = sns.color_palette("tab20" if len(logs) > 10 else "tab10", len(logs))
    per_step = len(next(iter(logs.values()))) > 100
    for colour, (name, values) in zip(colours, logs.items()):
        v = np.asarray(list(values), dtype=float)
        steps = np.arange(1, len(v) + 1)
        if per_step:
            ax.plot(steps, v, color=colour, alpha=0.25, linewidth=0.6)
            ax.plot(steps, pd.Series(v).rolling(25, min_periods=1).mean(), label=f"{name} (25-step mean)", color=colour)
        else:
            ax.plot(steps, v, label=name, color=colour, marker="o", markersize=2.5)
    values = np.concatenate([np.asarray(list(v), dtype=float) for v in logs.values()])
    if (values > 0).all() and values.max() / values.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step" if per_step else "epoch")
    ax.set_ylabel(key)
    if title:
        ax.set_title(title, fontsize=9)
    if len(logs) > 6:
        ax.legend(fontsize=6, ncol=1 + len(logs) // 15, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """Validation sweep: rows (setting, loss), columns score, cells near-OOD AUROC (%), the ID
    validation accuracy (%) and the marks (collapse, SD regime check) of each model."""
    near = df[df.ood_group == "near"]
    table = (100 * near.groupby(["setting", "loss", "score"]).AUROC.mean()).round(2).unstack("score")
    table["ID acc"] = (100 * df.groupby(["setting", "loss"]).ID_acc.mean()).round(1)
    return _with_marks(table, df, ["setting", "loss"]).reset_index()


# ---------------------------------------------------------------------------
# LaTeX tables, one-call table export, ROC curves, t-SNE feature maps
# ---------------------------------------------------------------------------

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
                   "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text) -> str:
    """Cell text -> LaTeX: specials escaped (one pass, so inserted braces are not re-escaped),
    '±' as ``$\\pm$``, missing values as '--'."""
    if text is None or (not isinstance(text, str) and pd.isna(text)):
        return "--"
    out = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$")


def _flat(table: pd.DataFrame) -> pd.DataFrame:
    """Index levels as leading columns, two-level column names joined with a space (as in ``to_markdown``)."""
    flat = table.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [" ".join(str(part) for part in col) for col in flat.columns]
    return flat.reset_index()


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """Booktabs LaTeX of a summary table (``summary_table`` / ``compact_table``), for the paper.

    Written by hand rather than with ``Styler.to_latex`` so that escaping is exactly: the LaTeX
    specials (``_ % & # $ { }`` and ``\\ ~ ^``) in every header and cell, '±' as ``$\\pm$``.
    Index levels become left-aligned leading columns, the metric columns are right-aligned;
    one ``\\\\`` row per table row between ``\\midrule`` and ``\\bottomrule``."""
    flat = _flat(table)
    n_index = table.index.nlevels
    spec = "l" * n_index + "r" * (flat.shape[1] - n_index)
    header = " & ".join(_latex_escape("" if c is None or c == "index" else c) for c in flat.columns)
    lines = [r"\begin{table}[ht]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", header + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(v) for v in row) + r" \\" for row in flat.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, outdir: Path, stem: str, title: str) -> dict[str, Path]:
    """One summary table in the three forms the write-up needs: ``<stem>.md`` (title, blank line,
    Markdown), ``<stem>.tex`` (booktabs, title as caption) and ``<stem>.csv`` (flattened, index
    levels as columns). Returns ``{"md": ..., "tex": ..., "csv": ...}``; under ``accelerate
    launch`` only the main process writes."""
    outdir = Path(outdir)
    paths = {ext: outdir / f"{stem}.{ext}" for ext in ("md", "tex", "csv")}
    if not process_role()[0]:
        return paths
    outdir.mkdir(parents=True, exist_ok=True)
    paths["md"].write_text(f"{title}\n\n{to_markdown(table)}\n")
    paths["tex"].write_text(to_latex(table, caption=title))
    _flat(table).to_csv(paths["csv"], index=False)
    return paths


def _np(x):
    """1-D float numpy array from a tensor (any device) or array-like."""
    from .metrics import _to_numpy

    return _to_numpy(x).astype(float).ravel()


def roc_curves(scored: dict, scores=None, path: Path | None = None, title: str = ""):
    """ROC curves per score (from ``pipeline.score_sets``): one panel per score, 3 a row, one curve
    per OOD set, OOD = positive class (label 1), scores as given since higher = more OOD. Each
    panel's legend, below it, gives the AUROC (%) of :func:`ood_lib.metrics.ood_metrics`, so it
    matches the tables."""
    from sklearn.metrics import roc_curve

    from .metrics import ood_metrics

    scores = list(scored["id"]) if scores is None else list(scores)
    fig, axes = _panel_grid(len(scores), 3.6, 3.4 + 0.17 * len(scored["ood"]))
    colours = set_colours(["ID test", *scored["ood"]])
    for ax, score in zip(axes, scores):
        id_s = _np(scored["id"][score])
        for name, per_score in scored["ood"].items():
            ood_s = _np(per_score[score])
            y = np.r_[np.zeros(id_s.size), np.ones(ood_s.size)]
            fpr, tpr, _ = roc_curve(y, np.r_[id_s, ood_s])
            auc = 100 * ood_metrics(id_s, ood_s)["AUROC"]
            ax.plot(fpr, tpr, lw=1.4, color=colours[name], label=f"{name}: {auc:.1f}")
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8, label="_nolegend_")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="FPR (ID flagged as OOD)", ylabel="TPR (OOD detected)")
        ax.set_title(score, fontsize=10)
        ax.set_aspect("equal")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, title="AUROC (%)",
                  title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


_KIND_MARKERS = {"id": "o", "near": "^", "far": "s", "outlier": "x"}


def _set_styles(sets: dict) -> dict:
    """(colour, marker) per set: a distinct colour-blind-safe colour per set (:func:`set_colours`;
    the first ID set black), a marker per kind (ID circles, near-OOD triangles, far-OOD squares,
    synthetic outliers vermillion crosses), so sets stay apart in print and in greyscale."""
    for name, (_, kind) in sets.items():
        if kind not in _KIND_MARKERS:
            raise ValueError(f"set {name!r}: kind must be one of {sorted(_KIND_MARKERS)}, got {kind!r}")
    colours = set_colours(["ID test", *[n for n, (_, k) in sets.items() if k != "outlier"]])
    first_id = next((n for n, (_, k) in sets.items() if k == "id"), None)
    return {name: ("#000000" if name == first_id else OUTLIER_COLOUR if kind == "outlier" else colours[name],
                   _KIND_MARKERS[kind]) for name, (_, kind) in sets.items()}


def embedding_maps(panels: dict, path: Path | None = None, title: str = "", max_per_set: int = 400,
                   seed: int = 0, perplexity: float = 30.0):
    """t-SNE maps of penultimate features (as in paper 3's Figure 3): where the synthetic outliers
    fall relative to ID, near- and far-OOD. ``panels``: panel title -> ordered ``{set: (features
    (N, D), kind)}``, kind in id / near / far / outlier. Each set is subsampled to ``max_per_set``
    rows (``torch.Generator(seed)``), rows are L2-normalised, one t-SNE per panel; panels side by
    side, one legend beside them (:func:`_set_styles`). Returns ``(figure, {panel: DataFrame[x, y,
    set, kind]})``."""
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4.3), squeeze=False)
    coords = {}
    for ax, (panel, sets) in zip(axes[0], panels.items()):
        styles = _set_styles(sets)
        gen = torch.Generator().manual_seed(seed)
        feats, names, kinds = [], [], []
        for name, (x, kind) in sets.items():
            x = torch.as_tensor(x).detach().cpu().float().flatten(1)
            if len(x) > max_per_set:
                x = x[torch.randperm(len(x), generator=gen)[:max_per_set].sort().values]
            feats.append(torch.nn.functional.normalize(x, dim=1))
            names += [name] * len(x)
            kinds += [kind] * len(x)
        stacked = torch.cat(feats).double().numpy()
        n = len(stacked)
        tsne = TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(perplexity, (n - 1) / 3))
        xy = tsne.fit_transform(stacked)
        df = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "set": names, "kind": kinds})
        coords[panel] = df
        for name, (_, kind) in sets.items():
            part = df[df["set"] == name]
            colour, marker = styles[name]
            if kind == "outlier":
                ax.scatter(part.x, part.y, s=14, marker=marker, linewidths=0.8, color=colour, label=name)
            else:
                ax.scatter(part.x, part.y, s=9, marker=marker, alpha=0.65, linewidths=0, color=colour, label=name)
        ax.set_title(panel, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.92), fontsize=9, markerscale=2,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig, coords
