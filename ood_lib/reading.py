"""Each notebook's closing reading, written from the numbers the notebook computed.

A reading that is typed by hand goes stale when the numbers change; these functions turn a
notebook's own tables into its sentences, so the executed copy of any profile (the committed
smoke copy, the default run's copy) never contradicts what it shows. Each returns Markdown.
"""
from __future__ import annotations

import math

import pandas as pd

from .diagnostics import COPY_REGIME_BELOW, regime_text


def _pct(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def profile(P) -> str:
    """00: what this run will do."""
    return (f"**Reading.** Profile `{P.name}` on the `{P.data.dataset}` dataset: a {P.ddpm.steps:,}-step pixel DDPM, "
            f"{P.sd.n_outliers:,} SD outliers at S = {P.sd.S}, w = {P.sd.w:g}, classifiers trained for "
            f"{P.clf.epochs} epochs ({P.clf.backbone}) over seeds {list(P.seeds)}. Every later notebook reads these sizes.")


def benchmark(bench) -> str:
    """01: the benchmark's sets and sizes."""
    near = [f"`{k}` ({len(v)})" for k, v in bench.ood_test.items() if v.group == "near"]
    far = [f"`{k}` ({len(v)})" for k, v in bench.ood_test.items() if v.group == "far"]
    skipped = f" Skipped (not found): {', '.join(sorted(bench.skipped))}." if bench.skipped else ""
    return (f"**Reading.** {bench.n_classes} ID classes ({', '.join(bench.classes)}): {len(bench.id_train)} training, "
            f"{len(bench.id_val)} validation and {len(bench.id_test)} test images. Near-OOD test sets: "
            f"{', '.join(near) or 'none'}; far-OOD: {', '.join(far) or 'none'}. Model selection uses only the ID "
            f"and near-OOD validation splits ({', '.join(f'`{k}`' for k in bench.ood_val) or 'none'}).{skipped}")


def diffusion(pixel: dict, latent: dict | None = None) -> str:
    """02: did the generators train (mean loss of the first vs the last tenth of the steps, at most 50)?"""
    def fell(art, name):
        losses = pd.Series(art["losses"], dtype=float)
        k = max(1, min(50, len(losses) // 10))
        first, last = losses.iloc[:k].mean(), losses.iloc[-k:].mean()
        verdict = "fell" if last < first else "did **not** fall"
        return f"the {name}'s ε-MSE {verdict} from {first:.3f} (first {k} steps) to {last:.3f} (last {k})"
    parts = [fell(pixel, "pixel DDPM")] + ([fell(latent, "latent DDPM")] if latent is not None else [])
    return f"**Reading.** Over {len(pixel['losses']):,} steps, " + "; ".join(parts) + \
        ". The sample grids above show whether each class is recognisable."


def fidelity(table: pd.DataFrame) -> str:
    """02: does each generator draw its class at the settings its outliers use (``pipeline.fidelity_table``)?"""
    parts = []
    for _, r in table[table.setting != "w=0"].iterrows():
        verdict = "passes" if r.passed else "**fails**"
        parts.append(f"the {r.model} at the {r.setting} settings (w = {r.w:g}) {verdict} the gate: "
                     f"{100 * r.accuracy:.0f} % on-class (lowest class {100 * r.min_class_accuracy:.0f} %), "
                     f"{100 * r.degenerate:.0f} % degenerate, Fréchet {r.frechet_id_val:.2f} to ID validation "
                     f"(ID test's own {r.frechet_id_test:.2f})")
    failed = not table[table.setting != "w=0"].passed.all()
    tail = (" A failed generator's outliers are marked GENERATOR FAILED in every table and left out of the claims' evidence."
            if failed else " Every outlier source rests on a generator that draws its class.")
    return "**Fidelity.** " + "; ".join(parts) + "." + tail


def outliers(diag: pd.DataFrame) -> str:
    """03 / 05: where each outlier set lies against ID validation (``pipeline.outlier_diagnostics``)."""
    ref = diag[diag.set == "ID val (reference)"].iloc[0]
    parts, copies = [], []
    for _, row in diag[~diag.set.str.endswith("(reference)")].iterrows():
        closer = "closer to" if row.frechet_clf < ref.frechet_clf else "farther from"
        parts.append(f"`{row.set}`: Fréchet {row.frechet_clf:.3f} ({closer} ID test than ID validation's "
                     f"{ref.frechet_clf:.3f}), mean confidence {row.mean_msp:.2f} (ID validation {ref.mean_msp:.2f}), "
                     f"{row.nearest_id_l2:.2f} L2 to the nearest training image (ID validation {ref.nearest_id_l2:.2f})")
        if row.nearest_id_l2 <= ref.nearest_id_l2 and row.mean_msp >= ref.mean_msp:
            copies.append(f"`{row.set}`")
    verdict = (f" {', '.join(copies)} sit{'s' if len(copies) == 1 else ''} as close to the training images as ID "
               f"validation does, with ID-level confidence: copies rather than outliers." if copies else
               " No set sits as close to the training images as ID validation with ID-level confidence (no copies).")
    return "**Reading.** " + "; ".join(parts) + "." + verdict


def sd_regime(regime: dict, S: int, w: float) -> str:
    """04: is the SD set a set of outliers or of copies?"""
    verdict = (f"fewer than {100 * COPY_REGIME_BELOW:.0f} % of the outliers left their source class: this setting is "
               f"in the **copy regime**, and training against it teaches the model to reject its own training images"
               if regime["copy_regime"] else
               f"at least {100 * COPY_REGIME_BELOW:.0f} % left their source class, so the set is not in the copy regime")
    return f"**Reading.** At S = {S}, w = {w:g}: {regime_text(regime)}. So {verdict}."


def loss_grid(df: pd.DataFrame, score: str = "knn") -> str:
    """06: the best (loss, outlier source) by near-OOD AUROC, CE's, and the collapsed models."""
    near = df[(df.ood_group == "near") & (df.score == score)]
    by = near.groupby(["loss", "generator"]).AUROC.mean().sort_values(ascending=False)
    if by.empty:
        return "**Reading.** No near-OOD rows to read."
    (loss, gen), best = by.index[0], by.iloc[0]
    ce = by.get(("ce", "none"), float("nan"))
    collapsed = sorted({f"{r.loss}:{r.generator}" for r in df.itertuples() if getattr(r, "collapsed", False)})
    warn = (f" Collapsed (ID accuracy more than 3 points below CE's): {', '.join(collapsed)}; their AUROC does not "
            f"count." if collapsed else " No model collapsed (all within 3 points of CE's ID accuracy).")
    return (f"**Reading.** By mean near-OOD AUROC with `{score}`, the best model is `{loss}` with `{gen}` outliers "
            f"({_pct(best)}), against {_pct(ce)} for plain cross-entropy; {len(by)} models over seeds "
            f"{sorted(df.seed.unique().tolist())}.{warn}")


def scores(df: pd.DataFrame) -> str:
    """07: which score separates best, near and far, averaged over the models it applies to."""
    parts = []
    for group in ("near", "far"):
        by = df[df.ood_group == group].groupby("score").AUROC.mean().sort_values(ascending=False)
        if len(by):
            parts.append(f"{group}-OOD: `{by.index[0]}` ({_pct(by.iloc[0])}) best, `{by.index[-1]}` "
                         f"({_pct(by.iloc[-1])}) worst")
    return ("**Reading.** Mean AUROC over the models each score applies to — " + "; ".join(parts) +
            ". Far-OOD is the easier task when its best AUROC is the higher one; the histograms show why a score "
            "fails (overlapping ID and OOD mass).")


def table2(rows: pd.DataFrame, score: str = "dod") -> str:
    """08: paper 3's Table 2 from its tidy rows (``ablations.sd_grid``): best (S, w) and the regime."""
    near = rows[(rows.ood_group == "near") & (rows.score == score)]
    by = near.groupby(["S", "w"]).AUROC.mean().sort_values(ascending=False)
    if by.empty:
        return "**Reading.** No Table 2 rows."
    (S, w), best = by.index[0], by.iloc[0]
    copies = sorted({(r.S, r.w) for r in rows.itertuples() if getattr(r, "copy_regime", False)})
    regime = (f" Settings in the copy regime: {', '.join(f'S = {s}, w = {v:g}' for s, v in copies)}."
              if copies else " No setting is in the copy regime.")
    return (f"**Reading.** Near-OOD AUROC ({score}) is highest at S = {S}, w = {w:g} ({_pct(best)}) and lowest at "
            f"S = {by.index[-1][0]}, w = {by.index[-1][1]:g} ({_pct(by.iloc[-1])}), a spread of "
            f"{100 * (best - by.iloc[-1]):.1f} points over the grid.{regime}")


def claims(table: pd.DataFrame) -> str:
    """09: the current rules' verdicts (superseded rules are shown in the table, not counted here)."""
    current = table[table["superseded by"].fillna("") == ""]
    counts = current.verdict.value_counts()
    held = current[current.verdict == "yes"]
    return (f"**Reading.** Of {len(current)} current claim rules, {counts.get('yes', 0)} hold, "
            f"{counts.get('partly', 0)} hold partly, {counts.get('no', 0)} do not and {counts.get('not run', 0)} "
            f"were not run on this profile" + (f"; holding: {', '.join(f'`{i}`' for i in held.id)}" if len(held) else "")
            + ". A verdict needs the mean gap to exceed the seeds' spread with the same sign on every seed"
            + ("; with one seed (the default run) it is a first look, not a test." if _one_seed(current) else "."))


def _one_seed(table: pd.DataFrame) -> bool:
    seeds = table.get("seeds", pd.Series(dtype=str)).fillna("").astype(str)
    return not seeds.empty and all(s.split(" ")[0] in ("", "1") for s in seeds)
