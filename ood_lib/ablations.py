"""The papers' tables and ablations, on any profile (each a function of cached pipeline stages).

* Paper 1 (label-mixup + metric learning): :func:`paper1_table`, every loss family without
  and with label-mixup outliers (softmax = CE without outliers, OE with them).
* Paper 2 (OAL): :func:`oal_ablation` (MICL and KD switched off) and
  :func:`pixel_vs_latent` (the same loss with pixel-space and latent-space outliers, beside
  the cost of making them).
* Paper 3 (SD): :func:`sd_grid` (Table 2: sampling timestep S x guidance w),
  :func:`sd_voting` (Table 3: distance score vs distance + voting, with the Fréchet distance
  of each S) and :func:`sd_as_test` (Table 4: SD outliers made from held-out ID test images
  used as an OOD *test* set).

Every function returns tidy rows (``pipeline.evaluate``'s columns plus the ablated setting)
or a finished table; ``report.write_table`` writes them. Seeds are the profile's
(``override(profile, seeds=(0,))`` for one).
"""
from __future__ import annotations

import pandas as pd

from . import pipeline, report
from .artifacts import cached
from .config import Profile, override, to_dict
from .data import ImageSet
from .diagnostics import frechet_distance
from .diffusion import load_unet
from .evaluation import metrics_table, score_sets
from .models import predict
from .outliers import semantic_discrepant
from .train import load_classifier

# The three papers and the claims each table here tests. Their own numbers are not quoted:
# they are on their data (CIFAR-10 and larger models), and the tables' text could not be
# read offline; follow the links.
PAPERS = {
    "paper 1": {"title": "Wahd 2024, Deep metric learning-based out-of-distribution detection with synthetic "
                         "outlier exposure", "url": "https://arxiv.org/abs/2405.00631",
                "claims": ["metric-learning losses beat softmax", "label-mixup outliers improve every loss"],
                "tables": ["paper1_losses_mixup"]},
    "paper 2": {"title": "Gao et al. 2024, OAL: Enhancing OOD detection using latent diffusion",
                "url": "https://arxiv.org/abs/2406.16525",
                "claims": ["latent-space outliers are cheaper than pixel-space ones and train a better detector",
                           "MICL and KD each help; KD keeps ID accuracy"],
                "tables": ["paper2_pixel_vs_latent", "paper2_oal_ablation"]},
    "paper 3": {"title": "Yoon et al. 2024, Diffusion-based semantic-discrepant outlier generation for OOD "
                         "detection", "url": "",
                "claims": ["a limited timestep S keeps nuisances and gives the best outliers (Table 2)",
                           "voting adds to the distance score (Table 3)",
                           "SD outliers used as a test set break models trained without them (Table 4)"],
                "tables": ["paper3_table2_S_w", "paper3_table3_voting", "paper3_table4_sd_as_test"]},
}

# Paper 3's grids (Yoon et al., Tables 2 and 3).
SD_S = (50, 80, 100, 150, 200)
SD_W = (2.0, 3.0, 4.0)

METRIC_LOSSES = ("arcface", "cosface", "supcon", "proxyanchor")
# Paper 1 scores each family as the paper does: max softmax probability for softmax models,
# the largest scaled cosine to a class proxy for metric models.
PAPER1_SCORE = {"ce": "msp", "oe": "msp", **{m: "cosine_proxy" for m in METRIC_LOSSES}}

# OAL's ablation: the weights switched off in each variant (``ClassifierConfig`` fields).
OAL_VARIANTS = {"OAL (MICL + KD)": {}, "no MICL": {"micl_weight": 0.0}, "no KD": {"kd_weight": 0.0},
                "no MICL, no KD": {"micl_weight": 0.0, "kd_weight": 0.0}}


def _per_seed(df: pd.DataFrame, by: list, group: str, metric: str = "AUROC") -> pd.Series:
    """``metric`` averaged over the OOD sets of ``group``, one value per (``by``, seed)."""
    return df[df.ood_group == group].groupby([*by, "seed"], sort=False)[metric].mean()


def _mean_std(per_seed: pd.Series, by: list) -> pd.Series:
    return per_seed.groupby(by, sort=False).agg(report.mean_std)


# ----------------------------------------------------------------------------- paper 1
def paper1_runs(metric_losses=METRIC_LOSSES) -> list[tuple[str, str]]:
    """Softmax (CE / OE) and each metric loss, without and with label-mixup outliers."""
    return [("ce", "none"), ("oe", "mixup")] + [(m, g) for m in metric_losses for g in ("none", "mixup")]


def paper1_table(df: pd.DataFrame, scores: dict = PAPER1_SCORE) -> pd.DataFrame:
    """Rows loss family; near/far AUROC and ID accuracy without and with label-mixup outliers
    and the change, mean ± std (%) over seeds. Each loss uses its ``scores`` entry (paper 1's
    own scores by default; pass ``{loss: "knn", ...}`` for one common score). The softmax
    family is CE without outliers and OE with them."""
    values = {}
    for loss, score in scores.items():
        family = "softmax (CE / OE)" if loss in ("ce", "oe") else loss
        sel = df[(df.loss == loss) & (df.score == score) & df.generator.isin(["none", "mixup"])]
        for gen, part in sel.groupby("generator"):
            cells = values.setdefault(family, {"score": score})
            for group in ("near", "far"):
                cells[(f"{group} AUROC", gen)] = _per_seed(part, [], group)
            cells[("ID acc", gen)] = part.groupby("seed")["ID_acc"].first()
    rows = {}
    for family, cells in values.items():
        row = rows[family] = {"score": cells["score"]}
        for what in ("near AUROC", "far AUROC", "ID acc"):
            base, mix = cells.get((what, "none")), cells.get((what, "mixup"))
            row[f"{what}, no outliers"] = "" if base is None else report.mean_std(base)
            row[f"{what}, label-mixup"] = "" if mix is None else report.mean_std(mix)
            row[f"{what} change"] = "" if base is None or mix is None else f"{100 * (mix.mean() - base.mean()):+.1f}"
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "loss family"
    return table


# ----------------------------------------------------------------------------- paper 2
def oal_ablation(profile: Profile, variants: dict = OAL_VARIANTS) -> pd.DataFrame:
    """OAL trained with each variant's weights switched off (default: MICL, KD, both); tidy
    rows with a ``variant`` column (also written into ``loss`` so ``report`` tables work)."""
    frames = []
    for name, weights in variants.items():
        df = pipeline.evaluate(override(profile, clf=weights) if weights else profile, [("oal", "latent")])
        df.insert(0, "variant", name)
        df["loss"] = name
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def pixel_vs_latent(profile: Profile, loss: str = "oe", score: str = "knn") -> pd.DataFrame:
    """``loss`` trained with pixel-space outliers (SD, label-mixup) and latent-space outliers,
    plus OAL: near/far AUROC, ID accuracy (mean ± std, %) and the generator's cost (seconds
    and UNet evaluations per 1,000 outliers, one-off training seconds of its models)."""
    runs = [(loss, g) for g in ("sd", "mixup", "latent")] + [("oal", "latent")]
    df = pipeline.evaluate(profile, runs)
    table = report.loss_grid_table(df, score)
    costs = pipeline.outlier_diagnostics(profile, seed=profile.seeds[0]).set_index("set")
    space = {"sd": "pixel", "mixup": "pixel", "latent": "latent"}
    table.insert(0, "space", [space[g] for g, _ in table.index])
    for col, name in (("seconds_per_1000", "s / 1,000 outliers"), ("unet_evals_per_1000", "UNet evals / 1,000"),
                      ("training_seconds", "generator training s")):
        table[name] = [f"{costs.loc[g, col]:,.0f}" for g, _ in table.index]
    return table


# ----------------------------------------------------------------------------- paper 3
def sd_profile(profile: Profile, S: int, w: float) -> Profile:
    return override(profile, sd={"S": S, "w": w})


def sd_grid(profile: Profile, S_values=SD_S, ws=SD_W, loss: str = "sd_three_head") -> pd.DataFrame:
    """``loss`` trained on SD outliers made at each (S, w): tidy rows with ``S`` and ``w`` columns."""
    frames = []
    for S in S_values:
        for w in ws:
            df = pipeline.evaluate(sd_profile(profile, S, w), [(loss, "sd")])
            df.insert(0, "S", S)
            df.insert(1, "w", w)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def sd_grid_table(df: pd.DataFrame, score: str = "dod", group: str = "near") -> pd.DataFrame:
    """Table 2: rows S, columns w, cells ``group`` AUROC (mean ± std %) of ``score``."""
    cells = _mean_std(_per_seed(df[df.score == score], ["S", "w"], group), ["S", "w"]).unstack("w")
    cells.columns = [f"w = {w:g}" for w in cells.columns]
    return cells


def sd_frechet(profile: Profile, S_values, w: float, seed: int = 0) -> dict:
    """Fréchet distance of each S's SD outliers to the ID test images, in the penultimate
    features of the cross-entropy classifier (as ``pipeline.outlier_diagnostics``)."""
    b = pipeline.benchmark(profile)
    judge = load_classifier(pipeline.classifier(profile, "ce", seed))
    ref = predict(judge, b.id_test.x)[1]
    return {S: frechet_distance(predict(judge, pipeline.sd_outliers(sd_profile(profile, S, w)).x)[1], ref)
            for S in S_values}


def sd_voting(df: pd.DataFrame, profile: Profile, w: float, group: str = "near") -> pd.DataFrame:
    """Table 3: rows S (at guidance ``w``), columns the distance score, distance + voting (DOD)
    and the Fréchet distance of that S's outliers; ``df`` from :func:`sd_grid`."""
    df = df[df.w == w]
    if df.empty:
        raise ValueError(f"no sd_grid rows at w={w}")
    table = pd.DataFrame({
        "distance (dod_distance)": _mean_std(_per_seed(df[df.score == "dod_distance"], ["S"], group), ["S"]),
        "distance + voting (dod)": _mean_std(_per_seed(df[df.score == "dod"], ["S"], group), ["S"])})
    frechet = sd_frechet(profile, list(table.index), w, seed=profile.seeds[0])
    table["Fréchet to ID (clf features)"] = [f"{frechet[S]:.2f}" for S in table.index]
    return table


def sd_test_set(profile: Profile) -> ImageSet:
    """SD outliers made (with ``profile.sd``'s S and w, fresh noise) from the ID *test*
    images, which no model or generator saw: paper 3's Table 4 OOD test set."""
    b = pipeline.benchmark(profile)
    key = {"ddpm": pipeline.ddpm_key(profile), "sd": to_dict(profile.sd), "source": "id_test"}

    def compute(_):
        unet = load_unet(pipeline.ddpm(profile))
        out = semantic_discrepant(unet, b.id_test.x, b.id_test.y, b.n_classes, profile.sd.S, profile.sd.w,
                                  profile.sd.stride, seed=profile.sd.seed + 1000, batch_size=profile.sd.batch_size,
                                  clip_sample=profile.sd.clip_sample)
        return {"x": out["x"], "y": out["y_source"]}

    art = cached("sd_test_outliers", key, compute)
    return ImageSet(f"SD outliers of ID test (S={profile.sd.S}, w={profile.sd.w:g})", art["x"], art["y"], "sd_test")


def sd_as_test(profile: Profile, runs) -> pd.DataFrame:
    """Table 4: each model of ``runs`` (``(loss, generator)`` pairs, over the profile's seeds)
    scored on ID test vs :func:`sd_test_set`; tidy rows, ``ood_group`` "sd_test"."""
    b = pipeline.benchmark(profile)
    test = sd_test_set(profile)
    frames = []
    for loss, generator in runs:
        for seed in profile.seeds:
            key = {"classifier": pipeline.classifier_key(profile, loss, seed, generator), "split": "sd_test",
                   "sd": to_dict(profile.sd), "scores": to_dict(profile.scores)}

            def compute(_, loss=loss, generator=generator, seed=seed):
                model = load_classifier(pipeline.classifier(profile, loss, seed, generator))
                pool = None if generator == "none" else pipeline.outliers(profile, generator).x
                return score_sets(model, b.id_train, b.id_test, [test], profile.scores, outliers_x=pool)

            scored = cached("scores", key, compute, verbose=False)
            frames.append(metrics_table(scored, profile=profile.name, id_dataset=b.name, generator=generator,
                                        loss=loss, seed=seed))
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- tables and their files
def _title(profile: Profile, what: str, command: str) -> str:
    return (f"{what} Profile `{profile.name}`, test splits, mean ± std over seeds {list(profile.seeds)}, in %. "
            f"Command: `{command}`")


def sd_tables(profile: Profile, S_values=SD_S, ws=SD_W) -> dict:
    """Paper 3's Tables 2 and 3 (keys ``table2``, ``table3``); Table 3 at the middle w of ``ws``."""
    df = sd_grid(profile, S_values, ws)
    return {"table2": sd_grid_table(df), "table3": sd_voting(df, profile, _table3_w(ws))}


def _table3_w(ws) -> float:
    return sorted(ws)[len(ws) // 2]


def write_sd_tables(profile: Profile, outdir, suffix: str, S_values=SD_S, ws=SD_W, command: str = "") -> dict:
    """Writes :func:`sd_tables` (``paper3_table2_S_w<suffix>``, ``paper3_table3_voting<suffix>``)."""
    tables = sd_tables(profile, S_values, ws)
    w3 = _table3_w(ws)
    report.write_table(tables["table2"], outdir, f"paper3_table2_S_w{suffix}", _title(
        profile, "Paper 3 Table 2: near-OOD AUROC of the SD three-head model with the DOD score, SD outliers made "
        "at timestep S (rows) and guidance w (columns).", command))
    report.write_table(tables["table3"], outdir, f"paper3_table3_voting{suffix}", _title(
        profile, f"Paper 3 Table 3: near-OOD AUROC of the SD three-head model (w = {w3:g}) with the distance "
        "score alone and with voting (DOD), and the Fréchet distance of each S's outliers to the ID test images "
        "(penultimate features of the CE classifier, seed 0; not Inception features).", command))
    return tables


def write_sd_as_test(profile: Profile, runs, outdir, suffix: str, command: str = "") -> pd.DataFrame:
    """Paper 3's Table 4 (``paper3_table4_sd_as_test<suffix>``): model × score AUROC against
    SD outliers of the held-out ID test images."""
    table = report.score_table(sd_as_test(profile, runs), group="sd_test")
    report.write_table(table, outdir, f"paper3_table4_sd_as_test{suffix}", _title(
        profile, f"Paper 3 Table 4: AUROC of ID test vs SD outliers made from the ID test images (S = "
        f"{profile.sd.S}, w = {profile.sd.w:g}; unseen by every model), model × score; empty: the score does "
        "not apply.", command))
    return table


def paper1_tables(profile: Profile, metric_losses=METRIC_LOSSES) -> dict:
    """Paper 1's table with its own scores (key ``paper``) and with k-NN for every loss (``knn``)."""
    runs = paper1_runs(metric_losses)
    df = pipeline.evaluate(profile, runs)
    losses = {loss for loss, _ in runs}
    return {"paper": paper1_table(df, {k: v for k, v in PAPER1_SCORE.items() if k in losses}),
            "knn": paper1_table(df, {k: "knn" for k in PAPER1_SCORE if k in losses})}


def write_paper1(profile: Profile, outdir, suffix: str, metric_losses=METRIC_LOSSES, command: str = "") -> dict:
    """Writes :func:`paper1_tables` (``paper1_losses_mixup<suffix>``, ``paper1_losses_mixup_knn<suffix>``)."""
    tables = paper1_tables(profile, metric_losses)
    what = ("Paper 1: each loss family without and with label-mixup outliers (softmax: CE without, OE with), "
            "near/far = mean over the near/far-OOD test sets; score: {}.")
    report.write_table(tables["paper"], outdir, f"paper1_losses_mixup{suffix}", _title(
        profile, what.format("the paper's (MSP for softmax, scaled cosine to the nearest proxy for metric losses)"),
        command))
    report.write_table(tables["knn"], outdir, f"paper1_losses_mixup_knn{suffix}", _title(
        profile, what.format("k-NN for every loss"), command))
    return tables


def oal_tables(profile: Profile, variants: dict = OAL_VARIANTS) -> dict:
    """Paper 2's tables: ``ablation`` (MICL / KD switched off, k-NN and MSP) and
    ``pixel_vs_latent`` (OE with each outlier source, and OAL)."""
    df = oal_ablation(profile, variants)
    ablation = pd.concat({s: report.compact_table(df[df.score == s]).droplevel(["generator", "score"])
                          for s in ("knn", "msp")}, names=["score"])
    return {"ablation": ablation, "pixel_vs_latent": pixel_vs_latent(profile)}


def write_oal_tables(profile: Profile, outdir, suffix: str, variants: dict = OAL_VARIANTS, command: str = "") -> dict:
    """Writes :func:`oal_tables` (``paper2_oal_ablation<suffix>``, ``paper2_pixel_vs_latent<suffix>``)."""
    tables = oal_tables(profile, variants)
    report.write_table(tables["ablation"], outdir, f"paper2_oal_ablation{suffix}", _title(
        profile, "Paper 2: OAL (latent outliers) with its mutual-information term (MICL) and its distillation "
        "(KD) switched off; near/far = mean over the near/far-OOD test sets.", command))
    report.write_table(tables["pixel_vs_latent"], outdir, f"paper2_pixel_vs_latent{suffix}", _title(
        profile, "Paper 2: outlier exposure with pixel-space outliers (SD, label-mixup from the pixel DDPM) and "
        "latent-space outliers (latent DDPM), and OAL, score k-NN; generation cost measured on the machine that "
        "made the outliers.", command))
    return tables


def settings(profile: Profile, full: bool, seed: int = 0) -> dict:
    """What notebooks 08/09 and ``python -m ood_lib paper-tables`` compute: with ``full``, the
    papers' grids over the profile's seeds (suffix ``_full``); otherwise the subset that reuses
    the default run's models (``pipeline.DEFAULT_RUNS``, one seed): the profile's own S and w,
    OAL without ablation, ArcFace as the metric loss."""
    if full:
        return {"profile": profile, "suffix": "_full", "S": SD_S, "w": SD_W, "oal_variants": OAL_VARIANTS,
                "metric_losses": METRIC_LOSSES, "test_runs": pipeline.grid_runs()}
    return {"profile": override(profile, seeds=(seed,)), "suffix": "", "S": (profile.sd.S,), "w": (profile.sd.w,),
            "oal_variants": {k: v for k, v in OAL_VARIANTS.items() if not v}, "metric_losses": ("arcface",),
            "test_runs": list(pipeline.DEFAULT_RUNS)}


# ----------------------------------------------------------------------------- reading
def _mean(cell) -> float:
    """The mean of a ``report.mean_std`` cell ("98.6 ± 0.3" or "98.6"); NaN when empty."""
    text = str(cell).split("±")[0].replace(",", "").strip()
    return float(text) if text else float("nan")


def _std(cell) -> float:
    """The std of a ``report.mean_std`` cell; 0 for a single-seed cell ("98.6")."""
    parts = str(cell).split("±")
    return float(parts[1].strip()) if len(parts) > 1 else 0.0


def _above(a, b) -> bool:
    """Whether cell ``a``'s mean exceeds cell ``b``'s by more than the larger of their seed
    stds: a gap inside the seed-to-seed spread does not count as a difference."""
    return round(_mean(a) - _mean(b), 6) > max(_std(a), _std(b))   # rounded: cells hold one decimal


# An AUROC (%) below this is "near chance" in the Table 4 claim check.
NEAR_CHANCE = 60.0


def _verdict(flags: list) -> str:
    return "yes" if all(flags) else ("no" if not any(flags) else "partly")


def claim_checks(tables: dict) -> pd.DataFrame:
    """Each paper claim against this run's tables (the ``*_tables`` outputs merged into one
    dict: keys paper, pixel_vs_latent, ablation, table2, table3, table4): whether it holds
    here ("yes", "partly", "no") and the numbers that decide it (near-OOD AUROC, %). It reads
    the same rounded cells a reader sees, and a gap counts only when it exceeds the seeds'
    spread (:func:`_above`), so a verdict never rests on a difference the tables do not show."""
    rows = []

    def add(paper, claim, flags, evidence):
        rows.append({"paper": paper, "claim": claim, "holds here": _verdict(flags) if flags else "not run",
                     "evidence (near-OOD AUROC, %)": evidence})

    p1 = tables.get("paper")
    if p1 is not None:
        soft = _mean(p1.loc["softmax (CE / OE)", "near AUROC, no outliers"])
        metric = [f for f in p1.index if f != "softmax (CE / OE)"]
        vals = {f: _mean(p1.loc[f, "near AUROC, no outliers"]) for f in metric}
        soft_cell = p1.loc["softmax (CE / OE)", "near AUROC, no outliers"]
        add("paper 1", PAPERS["paper 1"]["claims"][0],
            [_above(p1.loc[f, "near AUROC, no outliers"], soft_cell) for f in metric],
            f"softmax {soft:.1f}; " + ", ".join(f"{f} {v:.1f}" for f, v in vals.items()))
        changes = {f: _mean(p1.loc[f, "near AUROC change"]) for f in p1.index}
        add("paper 1", PAPERS["paper 1"]["claims"][1], [c > 0 for c in changes.values()],
            "change with label-mixup outliers: " + ", ".join(f"{f} {c:+.1f}" for f, c in changes.items()))
    pvl = tables.get("pixel_vs_latent")
    if pvl is not None:
        oe = pvl.xs("oe", level="loss")
        lat, pix = _mean(oe.loc["latent", "near AUROC"]), {g: _mean(oe.loc[g, "near AUROC"]) for g in ("sd", "mixup")}
        cost = {g: _mean(oe.loc[g, "s / 1,000 outliers"]) for g in ("sd", "mixup", "latent")}
        add("paper 2", PAPERS["paper 2"]["claims"][0],
            [_above(oe.loc["latent", "near AUROC"], oe.loc[g, "near AUROC"]) for g in pix]
            + [cost["latent"] < cost[g] for g in ("sd", "mixup")],
            f"OE + latent {lat:.1f} vs " + ", ".join(f"OE + {g} {v:.1f}" for g, v in pix.items())
            + "; s / 1,000 outliers: " + ", ".join(f"{g} {c:,.0f}" for g, c in cost.items()))
    abl = tables.get("ablation")
    if abl is not None and len(abl.xs("knn", level="score")) > 1:
        knn = abl.xs("knn", level="score")
        full = _mean(knn.loc["OAL (MICL + KD)", "near AUROC"])
        ablated = [v for v in ("no MICL", "no KD") if v in knn.index]
        others = {v: _mean(knn.loc[v, "near AUROC"]) for v in ablated}
        acc = {v: _mean(knn.loc[v, "ID acc"]) for v in ("OAL (MICL + KD)", "no KD") if v in knn.index}
        add("paper 2", PAPERS["paper 2"]["claims"][1],
            [_above(knn.loc["OAL (MICL + KD)", "near AUROC"], knn.loc[v, "near AUROC"]) for v in ablated]
            + ([not _above(knn.loc["no KD", "ID acc"], knn.loc["OAL (MICL + KD)", "ID acc"])] if "no KD" in acc else []),
            f"k-NN: OAL {full:.1f}, " + ", ".join(f"{k} {v:.1f}" for k, v in others.items())
            + "; ID acc " + ", ".join(f"{k} {v:.1f}" for k, v in acc.items()))
    t2 = tables.get("table2")
    if t2 is not None and len(t2) > 1:
        best = {c: t2[c].map(_mean).idxmax() for c in t2.columns}
        top = max(t2.index)
        add("paper 3", PAPERS["paper 3"]["claims"][0], [S < top and _above(t2.loc[S, c], t2.loc[top, c])
                                                        for c, S in best.items()],
            "best S per w: " + ", ".join(f"{c}: S = {S} ({t2.loc[S, c]}; S = {top}: {t2.loc[top, c]})"
                                         for c, S in best.items()))
    t3 = tables.get("table3")
    if t3 is not None:
        dist, dod = t3.iloc[:, 0].map(_mean), t3.iloc[:, 1].map(_mean)
        add("paper 3", PAPERS["paper 3"]["claims"][1], [_above(v, d) for d, v in zip(t3.iloc[:, 0], t3.iloc[:, 1])],
            ", ".join(f"S = {S}: {d:.1f} → {v:.1f}" for S, d, v in zip(t3.index, dist, dod)))
    t4 = tables.get("table4")
    if t4 is not None:
        best = t4.apply(lambda r: max((_mean(v) for v in r if str(v)), default=float("nan")), axis=1)
        gen = best.index.get_level_values("generator")
        groups = {"no outliers": best[gen == "none"], "other outliers": best[(gen != "none") & (gen != "sd")],
                  "SD outliers": best[gen == "sd"]}
        # Broken: every model trained without any outliers is near chance, and no model trained
        # with other outliers reaches the best model trained with SD outliers.
        flags = [v < NEAR_CHANCE for v in groups["no outliers"]]
        if len(groups["other outliers"]) and len(groups["SD outliers"]):
            flags.append(groups["other outliers"].max() < groups["SD outliers"].max())
        add("paper 3", PAPERS["paper 3"]["claims"][2], flags,
            "best score per model, trained with " + "; ".join(
                f"{name} {g.min():.1f}–{g.max():.1f}" for name, g in groups.items() if len(g)))
    return pd.DataFrame(rows)


def write_claims(tables: dict, profile: Profile, outdir, suffix: str, command: str = "") -> pd.DataFrame:
    """Writes :func:`claim_checks` of ``tables`` (``paper_claims<suffix>``) and returns it."""
    claims = claim_checks(tables)
    report.write_table(claims.set_index(["paper", "claim"]), outdir, f"paper_claims{suffix}",
                       f"The papers' claims on profile `{profile.name}` (seeds {list(profile.seeds)}). "
                       f"Command: `{command}`")
    return claims


def papers_table() -> pd.DataFrame:
    """The three papers: title, link, the claims checked here and the tables that check them."""
    return pd.DataFrame([{"paper": k, "title": v["title"], "link": v["url"] or "(no public copy found)",
                          "claims": "; ".join(v["claims"]), "tables here": ", ".join(v["tables"])}
                         for k, v in PAPERS.items()]).set_index("paper")
