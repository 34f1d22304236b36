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
from .artifacts import cached, stage_key
from .config import Profile, override
from .images import ImageSet
from .diagnostics import regime_text
from .diffusion import load_unet
from .evaluation import metrics_table, score_sets
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


METRIC_LOSSES = ("arcface", "cosface", "supcon", "proxyanchor")
# Paper 1 scores each family as the paper does: max softmax probability for softmax models,
# the largest scaled cosine to a class proxy for metric models.
PAPER1_SCORE = {"ce": "msp", "oe": "msp", **{m: "cosine_proxy" for m in METRIC_LOSSES}}

# OAL's ablation (loss "oal", the official recipe): the ``ClassifierConfig`` weights switched off in
# each variant. KD is both distillation terms (logits and features); without KD no teacher is trained.
_NO_KD = {"oal_kd_logit_weight": 0.0, "oal_kd_feature_weight": 0.0}
OAL_VARIANTS = {"OAL (MICL + KD)": {}, "no MICL": {"oal_micl_weight": 0.0}, "no KD": _NO_KD,
                "no MICL, no KD": {"oal_micl_weight": 0.0, **_NO_KD}}


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
    family is CE without outliers and OE with them. The last column is the fidelity gate of the
    pixel DDPM that made the label-mixup outliers (``pipeline.mark_rows``)."""
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
    mixup = df[df.generator == "mixup"]
    if "generator_check" in mixup.columns and len(mixup):     # the pixel DDPM's gate behind every mixup cell
        table["label-mixup generator"] = mixup.generator_check.iloc[0]
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


def pixel_vs_latent(profile: Profile, loss: str = "oe", score: str = "knn", df: pd.DataFrame | None = None,
                    costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """``loss`` trained with pixel-space outliers (SD, label-mixup) and latent-space outliers,
    plus OAL: near/far AUROC, ID accuracy (mean ± std, %) and the generator's cost (seconds
    and UNet evaluations per 1,000 outliers, one-off training seconds of its models).
    ``df`` / ``costs``: the rows and ``pipeline.outlier_diagnostics`` when already computed."""
    runs = [(loss, g) for g in ("sd", "mixup", "latent")] + [("oal", "latent")]
    df = pipeline.evaluate(profile, runs) if df is None else df
    table = report.loss_grid_table(df, score)
    if costs is None:
        costs = pipeline.outlier_diagnostics(profile, seed=profile.seeds[0])
    costs = costs.set_index("set")
    space = {"sd": "pixel", "mixup": "pixel", "latent": "latent"}
    table.insert(0, "space", [space[g] for g, _ in table.index])
    for col, name in (("seconds_per_1000", "s / 1,000 outliers"), ("unet_evals_per_1000", "UNet evals / 1,000"),
                      ("training_seconds", "generator training s")):
        table[name] = [f"{costs.loc[g, col]:,.0f}" for g, _ in table.index]
    return table


# ----------------------------------------------------------------------------- paper 3
def _table2_grid(profile: Profile, S_values, ws) -> tuple:
    """The (S values, w values) asked for, or the profile's Table 2 grid (``table2_S`` x ``table2_w``)."""
    return tuple(S_values or profile.table2_S), tuple(ws or profile.table2_w)


def sd_profile(profile: Profile, S: int, w: float) -> Profile:
    return override(profile, sd={"S": S, "w": w})


def sd_grid(profile: Profile, S_values=None, ws=None, loss: str = "sd_three_head") -> pd.DataFrame:
    """``loss`` trained on SD outliers made at each (S, w) (default: the profile's Table 2 grid,
    ``table2_S`` x ``table2_w``): tidy rows with ``S`` and ``w`` columns."""
    frames = []
    S_values, ws = _table2_grid(profile, S_values, ws)
    for S in S_values:
        for w in ws:
            df = pipeline.evaluate(sd_profile(profile, S, w), [(loss, "sd")])
            df.insert(0, "S", S)
            df.insert(1, "w", w)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def sd_grid_table(df: pd.DataFrame, score: str = "dod", group: str = "near") -> pd.DataFrame:
    """Table 2: rows S, columns w, cells ``group`` AUROC (mean ± std %) of ``score``; beside each
    w, the regime check of its outliers (``pipeline.mark_rows``: share leaving the source class,
    share landing on c_r, "COPY REGIME" when under a quarter leave) and the pixel DDPM's fidelity
    gate at that w (``generator``)."""
    cells = _mean_std(_per_seed(df[df.score == score], ["S", "w"], group), ["S", "w"]).unstack("w")
    regime = df.groupby(["S", "w"], sort=False).outlier_check.first().unstack("w")
    gen = df.groupby("w", sort=False).generator_check.first() if "generator_check" in df.columns else None
    table = pd.DataFrame(index=cells.index)
    for w in cells.columns:
        table[f"w = {w:g}"] = cells[w]
        table[f"w = {w:g} regime"] = regime[w]
        if gen is not None:
            table[f"w = {w:g} generator"] = gen[w]
    return table


def voting_alpha(profile: Profile) -> dict:
    """DOD's voting weight for Table 3, chosen on the validation splits (``pipeline.choose_dod_alpha``
    among ``pipeline.dod_alpha_candidates``: weights where votes can move the score) for the SD
    three-head model at the profile's own S and w, seed ``profile.seeds[0]``. Returns
    ``{"alpha", "validation"}`` (the validation table, alpha = 0 included)."""
    run, seed = ("sd_three_head", "sd"), profile.seeds[0]
    alphas = [0.0, *pipeline.dod_alpha_candidates(profile, run, seed)]
    table = pipeline.dod_alpha_sweep(profile, [run], alphas, seeds=(seed,))
    return {"alpha": pipeline.choose_dod_alpha(table), "validation": table}


def voting_rows(profile: Profile, S_values, w: float, alpha: float, loss: str = "sd_three_head") -> pd.DataFrame:
    """Tidy test rows of the distance score and of DOD at voting weight ``alpha`` (votes
    reweighted from the cached scores, ``pipeline.with_dod_alpha``) for ``loss`` trained on SD
    outliers made at each S (guidance ``w``), with ``S``, ``w`` and ``alpha`` columns."""
    b = pipeline.benchmark(profile)
    frames = []
    for S in S_values:
        p = sd_profile(profile, S, w)
        for seed in profile.seeds:
            scored = pipeline.with_dod_alpha(pipeline.score_sets(p, loss, seed, "test", "sd"), alpha,
                                             profile.scores.dod_alpha)
            df = metrics_table(scored, profile=profile.name, id_dataset=b.name, generator="sd", loss=loss, seed=seed)
            df = pipeline.mark_rows(p, df[df.score.isin(["dod_distance", "dod"])])
            frames.append(df.assign(S=S, w=w, alpha=alpha))
    return pd.concat(frames, ignore_index=True)


def sd_voting(rows: pd.DataFrame, profile: Profile, group: str = "near") -> pd.DataFrame:
    """Table 3 from :func:`voting_rows`: rows S, columns the distance score, distance + voting
    (DOD at the rows' alpha), the Fréchet distance of that S's outliers to ID test (CE features,
    :func:`ood_lib.pipeline.sd_regime`), the regime check and the pixel DDPM's fidelity gate at w."""
    (alpha,), (w,) = rows.alpha.unique(), rows.w.unique()
    table = pd.DataFrame({
        "distance (dod_distance)": _mean_std(_per_seed(rows[rows.score == "dod_distance"], ["S"], group), ["S"]),
        f"distance + voting (dod, alpha = {alpha:.3g})": _mean_std(_per_seed(rows[rows.score == "dod"], ["S"], group),
                                                                  ["S"])})
    regimes = {S: pipeline.sd_regime(sd_profile(profile, S, w)) for S in table.index}
    table["Fréchet to ID (clf features)"] = [f"{regimes[S]['frechet']:.2f}" for S in table.index]
    table["regime"] = [regime_text(regimes[S], short=True) for S in table.index]
    if "generator_check" in rows.columns:
        table["generator"] = rows.groupby("S").generator_check.first().reindex(table.index)
    return table


# Table 4's two test sets: SD outliers of the ID test images (guided to c_r != y: semantics
# changed) and the control (same images, noise and S, guided to their own class: no semantic
# change). A detector that flags the control is detecting the generator, not semantics.
TABLE4_SETS = {"sd": "SD outliers of ID test", "control": "control: ID test regenerated toward its own class"}


def sd_test_key(profile: Profile, control: bool = False) -> dict:
    return stage_key(pipeline.STAGES["sd_test_outliers"], profile, inputs={"ddpm": pipeline.ddpm_key(profile)},
                     data=pipeline.data_fingerprint(profile, "id_test"), control=control)


def _sd_test_artifact(profile: Profile, control: bool) -> dict:
    b = pipeline.benchmark(profile)

    def compute(_):
        unet = load_unet(pipeline.ddpm(profile))
        out = semantic_discrepant(unet, b.id_test.x, b.id_test.y, b.n_classes, profile.sd.S, profile.sd.w,
                                  profile.sd.stride, seed=profile.sd.seed + 1000, batch_size=profile.sd.batch_size,
                                  clip_sample=profile.sd.clip_sample, target=b.id_test.y if control else None)
        return {"x": out["x"], "y": out["y_source"], "y_target": out["y_target"]}

    return cached("sd_test_outliers", sd_test_key(profile, control), compute)


def sd_test_set(profile: Profile, control: bool = False) -> ImageSet:
    """SD outliers made (with ``profile.sd``'s S and w, fresh noise) from the ID *test* images,
    which no model or generator saw: paper 3's Table 4 OOD test set. With ``control`` the same
    images and noise are denoised toward their *own* class (Table 4's control)."""
    art = _sd_test_artifact(profile, control)
    name = f"{TABLE4_SETS['control' if control else 'sd']} (S={profile.sd.S}, w={profile.sd.w:g})"
    return ImageSet(name, art["x"], art["y"], "sd_test")


def sd_test_regimes(profile: Profile) -> pd.DataFrame:
    """The regime check (``pipeline.regime_of``) of Table 4's SD test set and its control."""
    b = pipeline.benchmark(profile)
    rows = {}
    for kind in TABLE4_SETS:
        art = _sd_test_artifact(profile, control=kind == "control")
        rows[TABLE4_SETS[kind]] = pipeline.regime_of(profile, art["x"], art["y"], art["y_target"], b.id_test.x)
    return pd.DataFrame.from_dict(rows, orient="index")


def sd_as_test(profile: Profile, runs) -> pd.DataFrame:
    """Table 4: each model of ``runs`` (``(loss, generator)`` pairs, over the profile's seeds)
    scored on ID test vs :func:`sd_test_set` and vs its control; tidy rows, ``ood_group``
    "sd_test", column ``test_set`` "sd" or "control", with ``pipeline.mark_rows``' marks (every row
    marked GENERATOR FAILED when the pixel DDPM that made the test sets fails its SD-setting gate)."""
    b = pipeline.benchmark(profile)
    frames = []
    for kind in TABLE4_SETS:
        test = sd_test_set(profile, control=kind == "control")
        for loss, generator in runs:
            for seed in profile.seeds:
                key = stage_key(pipeline.STAGES["scores"], profile,
                                inputs={"classifier": pipeline.classifier_key(profile, loss, seed, generator),
                                        "test_set": sd_test_key(profile, kind == "control")},
                                data=pipeline.data_fingerprint(profile, "id_train", "id_test"), split="sd_test")

                def compute(_, loss=loss, generator=generator, seed=seed, test=test):
                    model = load_classifier(pipeline.classifier(profile, loss, seed, generator))
                    pool = None if generator == "none" else pipeline.outliers(profile, generator).x
                    return score_sets(model, b.id_train, b.id_test, [test], profile.scores, outliers_x=pool)

                scored = cached("scores", key, compute, verbose=False)
                df = metrics_table(scored, profile=profile.name, id_dataset=b.name, generator=generator,
                                   loss=loss, seed=seed)
                df.insert(0, "test_set", kind)
                frames.append(df)
    df = pipeline.mark_rows(profile, pd.concat(frames, ignore_index=True))
    # the test sets are the pixel DDPM's SD outputs: a failed generator voids every row, not only
    # the rows of models trained on its outliers
    test_gen = pipeline.model_check(profile, "ddpm", "sd")
    if not test_gen["passed"]:
        df["generator_check"] = "test set: " + test_gen["text"]
        df["generator_failed"] = True
    return df


def table4(df: pd.DataFrame) -> pd.DataFrame:
    """Table 4 from :func:`sd_as_test` rows: model × score AUROC on the SD test set and on its
    control, one block of rows per test set."""
    return pd.concat({TABLE4_SETS[kind]: report.score_table(df[df.test_set == kind], group="sd_test")
                      for kind in TABLE4_SETS if (df.test_set == kind).any()}, names=["test set"])


# ----------------------------------------------------------------------------- tables and their files
def _title(profile: Profile, what: str, command: str) -> str:
    return (f"{what} Profile `{profile.name}`, test splits, mean ± std over seeds {list(profile.seeds)}, in %. "
            f"Command: `{command}`")


def sd_tables(profile: Profile, S_values=None, ws=None) -> dict:
    """Paper 3's Tables 2 and 3 (keys ``table2``, ``table3``; Table 3 at the middle w of ``ws``
    and the voting weight of :func:`voting_alpha`), the validation choice of that weight
    (``voting_alpha``) and the claims' evidence rows (``sd_grid``, ``voting``). Default grid: the
    profile's ``table2_S`` x ``table2_w``."""
    S_values, ws = _table2_grid(profile, S_values, ws)
    df = sd_grid(profile, S_values, ws)
    alpha = voting_alpha(profile)
    voting = voting_rows(profile, S_values, _table3_w(ws), alpha["alpha"])
    return {"table2": sd_grid_table(df), "table3": sd_voting(voting, profile), "voting_alpha": alpha["validation"],
            "sd_grid": df, "voting": voting}


def _table3_w(ws) -> float:
    return sorted(ws)[len(ws) // 2]


def write_sd_tables(profile: Profile, outdir, suffix: str, S_values=None, ws=None, command: str = "") -> dict:
    """Writes :func:`sd_tables` (``paper3_table2_S_w<suffix>``, ``paper3_table3_voting<suffix>``)."""
    S_values, ws = _table2_grid(profile, S_values, ws)
    tables = sd_tables(profile, S_values, ws)
    w3 = _table3_w(ws)
    report.write_table(tables["table2"], outdir, f"paper3_table2_S_w{suffix}", _title(
        profile, "Paper 3 Table 2: near-OOD AUROC of the SD three-head model with the DOD score, SD outliers made "
        "at timestep S (rows) and guidance w (columns).", command))
    report.write_table(tables["table3"], outdir, f"paper3_table3_voting{suffix}", _title(
        profile, f"Paper 3 Table 3: near-OOD AUROC of the SD three-head model (w = {w3:g}) with the distance "
        "score alone and with voting (DOD at the voting weight chosen on validation, `paper3_table3_alpha_val`), the "
        "Fréchet distance of each S's outliers to the ID test images (penultimate features of the CE classifier; not "
        "Inception features) and their regime check.", command))
    report.write_table(tables["voting_alpha"], outdir, f"paper3_table3_alpha_val{suffix}",
                       f"DOD's voting weight chosen on the validation splits (ID val vs near-OOD val; "
                       f"`pipeline.choose_dod_alpha`) for the SD three-head model at S = {profile.sd.S}, "
                       f"w = {profile.sd.w:g}, seed {profile.seeds[0]}: near-OOD AUROC (%); alpha = 0 is the distance "
                       f"alone, the others are multiples {list(pipeline.DOD_ALPHA_MULTIPLIERS)} of the distance "
                       f"term's ID-validation std / k. Command: `{command}`")
    return tables


def write_sd_as_test(profile: Profile, runs, outdir, suffix: str, command: str = "") -> dict:
    """Paper 3's Table 4 (``paper3_table4_sd_as_test<suffix>``): model × score AUROC against SD
    outliers of the held-out ID test images and against the control (same images regenerated
    toward their own class), and the regime check of both sets (``paper3_table4_regime<suffix>``).
    Returns ``{"table4_table": table, "table4": tidy rows (the claims' evidence), "table4_regime": regimes}``."""
    rows = sd_as_test(profile, runs)
    table = table4(rows)
    report.write_table(table, outdir, f"paper3_table4_sd_as_test{suffix}", _title(
        profile, f"Paper 3 Table 4: AUROC of ID test vs SD outliers made from the ID test images (S = "
        f"{profile.sd.S}, w = {profile.sd.w:g}; unseen by every model), model × score, and vs the control: the same "
        "images, noise and S denoised toward their own class (no semantic change; a score that flags the control "
        "detects the generator, not semantics). Empty: the score does not apply.", command))
    regimes = sd_test_regimes(profile)
    report.write_table(regimes.round(3), outdir, f"paper3_table4_regime{suffix}", _title(
        profile, "Regime check of Table 4's test sets, judged by the CE model (seed "
        f"{profile.seeds[0]}): share leaving the source class, share on c_r, L2 moved vs the source's nearest "
        "other ID training image, Fréchet distance to ID test (CE features) beside ID validation's.", command))
    return {"table4_table": table, "table4": rows, "table4_regime": regimes}


def paper1_tables(profile: Profile, metric_losses=METRIC_LOSSES) -> dict:
    """Paper 1's table with its own scores (key ``paper``) and with k-NN for every loss (``knn``),
    and the tidy rows they come from (``paper1``, the claims' evidence)."""
    runs = paper1_runs(metric_losses)
    df = pipeline.evaluate(profile, runs)
    losses = {loss for loss, _ in runs}
    return {"paper": paper1_table(df, {k: v for k, v in PAPER1_SCORE.items() if k in losses}),
            "knn": paper1_table(df, {k: "knn" for k in PAPER1_SCORE if k in losses}), "paper1": df}


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
    ``pixel_vs_latent_table`` (OE with each outlier source, and OAL), with the claims' evidence:
    the tidy rows (``oal``, ``pixel_vs_latent``) and ``generator_cost`` (s / 1,000 outliers)."""
    df = oal_ablation(profile, variants)
    ablation = pd.concat({s: report.compact_table(df[df.score == s]).droplevel(["generator", "score"])
                          for s in ("knn", "msp")}, names=["score"])
    pvl = pipeline.evaluate(profile, [("oe", g) for g in ("sd", "mixup", "latent")] + [("oal", "latent")])
    costs = pipeline.outlier_diagnostics(profile, seed=profile.seeds[0])
    cost = {g: c for g, c in zip(costs.set, costs.seconds_per_1000) if g in ("sd", "mixup", "latent")}
    return {"ablation": ablation, "pixel_vs_latent_table": pixel_vs_latent(profile, df=pvl, costs=costs), "oal": df,
            "pixel_vs_latent": pvl[pvl.loss == "oe"], "generator_cost": cost}


def write_oal_tables(profile: Profile, outdir, suffix: str, variants: dict = OAL_VARIANTS, command: str = "") -> dict:
    """Writes :func:`oal_tables` (``paper2_oal_ablation<suffix>``, ``paper2_pixel_vs_latent<suffix>``)."""
    tables = oal_tables(profile, variants)
    report.write_table(tables["ablation"], outdir, f"paper2_oal_ablation{suffix}", _title(
        profile, "Paper 2: OAL (latent outliers) with its mutual-information term (MICL) and its distillation "
        "(KD) switched off; near/far = mean over the near/far-OOD test sets.", command))
    report.write_table(tables["pixel_vs_latent_table"], outdir, f"paper2_pixel_vs_latent{suffix}", _title(
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
        return {"profile": profile, "suffix": "_full", "S": profile.table2_S, "w": profile.table2_w,
                "oal_variants": OAL_VARIANTS, "metric_losses": METRIC_LOSSES, "test_runs": pipeline.grid_runs()}
    return {"profile": override(profile, seeds=(seed,)), "suffix": "", "S": (profile.sd.S,), "w": (profile.sd.w,),
            "oal_variants": {k: v for k, v in OAL_VARIANTS.items() if not v}, "metric_losses": ("arcface",),
            "test_runs": list(pipeline.DEFAULT_RUNS)}


# ----------------------------------------------------------------------------- reading
def claim_checks(evidence: dict) -> pd.DataFrame:
    """The claims table: every rule of :data:`ood_lib.claims.REGISTRY` (old versions too, with
    their own verdicts) judged on per-seed tidy rows. ``evidence``'s keys and columns are in
    :mod:`ood_lib.claims`; the rounded tables above are for reading, not for judging."""
    from . import claims

    return claims.judge_all(evidence)


def evidence(tables: dict) -> dict:
    """The claims' evidence (per-seed tidy rows, ``ood_lib.claims.KEYS``) among the merged outputs
    of the ``*_tables`` / ``write_*`` functions; the rest are tables for reading. Rows of models
    whose generator failed its fidelity gate (``generator_failed``, ``pipeline.mark_rows``) are
    left out here, before any rule reads them (:func:`failed_generator_rows` names them)."""
    from . import claims

    return {k: v[~_failed(v)] if isinstance(v, pd.DataFrame) and _failed(v).any() else v
            for k, v in tables.items() if k in claims.KEYS}


def _failed(df: pd.DataFrame) -> pd.Series:
    if "generator_failed" not in df.columns:
        return pd.Series(False, index=df.index)
    return df.generator_failed.astype("boolean").fillna(False).astype(bool)


def failed_generator_rows(tables: dict) -> list[str]:
    """The models :func:`evidence` leaves out, each with its gate's text: "key: loss/generator
    seed s (GENERATOR FAILED: ...)"."""
    from . import claims

    names = []
    for key, df in tables.items():
        if key in claims.KEYS and isinstance(df, pd.DataFrame) and _failed(df).any():
            for (loss, gen, seed), part in df[_failed(df)].groupby(["loss", "generator", "seed"], sort=True):
                names.append(f"{key}: {loss}/{gen} seed {seed} ({part.generator_check.iloc[0]})")
    return names


def write_claims(tables: dict, profile: Profile, outdir, suffix: str, command: str = "") -> pd.DataFrame:
    """Writes :func:`claim_checks` of the evidence among ``tables`` (``paper_claims<suffix>``), its
    title naming the models left out for a failed generator, and returns it."""
    from . import claims

    failed = failed_generator_rows(tables)
    left_out = (" Left out before judging, their generator below the fidelity gate: " + "; ".join(failed) + "."
                if failed else "")
    return claims.write(evidence(tables), outdir, f"paper_claims{suffix}",
                        f"The papers' claims on profile `{profile.name}` (seeds {list(profile.seeds)}), each judged by "
                        "a rule with a stable id (ood_lib/claims.py); superseded rules stay with their own verdicts. "
                        f"Effect and spread: AUROC points of the weakest comparison.{left_out} Command: `{command}`")


def papers_table() -> pd.DataFrame:
    """The three papers: title, link, the claims checked here and the tables that check them."""
    return pd.DataFrame([{"paper": k, "title": v["title"], "link": v["url"] or "(no public copy found)",
                          "claims": "; ".join(v["claims"]), "tables here": ", ".join(v["tables"])}
                         for k, v in PAPERS.items()]).set_index("paper")
