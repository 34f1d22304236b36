"""The pipeline's stages. Each returns its artefact, loading it from the cache when the
same config was computed before and computing (resumably) otherwise.

data -> ddpm -----------> sd_outliers, mixup_outliers --+
     -> autoencoder -> latent_ddpm -> latent_outliers --+-> classifier(loss, seed) -> evaluate -> report
"""
from __future__ import annotations

import json
import time
from functools import lru_cache

import pandas as pd
import torch

from . import evaluation
from .artifacts import cached
from .autoencoder import decode, encode, from_pretrained_autoencoder, load_autoencoder, train_autoencoder
from .clustering import cluster_purity, kmeans_labels, matched_accuracy
from .config import LOSS_FIELDS, Profile, override, to_dict
from .data import Benchmark, load_benchmark
from .diagnostics import UNetEvalCounter, frechet_distance, nearest_distance, per_thousand
from .diffusion import load_unet, sample, to_model_space, train_ddpm
from .metrics import auroc, id_accuracy
from .models import predict
from .outliers import (GENERATORS, OutlierSet, id_embeddings, label_mixup, latent_boundary_outliers,
                       make_sd_outliers, semantic_discrepant)
from .scores import SCORES, msp
from .train import LOSSES, NEEDS_OUTLIERS, load_classifier, loss_family, train_classifier

# The outlier source a loss trains with unless told otherwise.
DEFAULT_GENERATOR = {"ce": "none", "oe": "sd", "energy_oe": "sd", "sd_three_head": "sd", "oal": "latent",
                     "arcface": "none", "cosface": "none", "supcon": "none", "proxyanchor": "none"}
OUTLIER_SOURCES = ("none", *GENERATORS)
LABEL_SOURCES = ("true", "pseudo")


def benchmark(profile: Profile) -> Benchmark:
    """The profile's benchmark (``profile.data``: digits or cifar10), loaded once per process
    per data config (profiles that differ elsewhere, e.g. ablation overrides, share it)."""
    return _benchmark(profile.data)


@lru_cache(maxsize=4)
def _benchmark(data_cfg) -> Benchmark:
    return load_benchmark(data_cfg)


def _timed(compute):
    """Wrap a stage's compute so its artefact records the seconds it took."""
    def run(workdir):
        start = time.perf_counter()
        art = compute(workdir)
        art["seconds"] = time.perf_counter() - start
        return art
    return run


# ------------------------------------------------------------------ autoencoder, pseudo labels
def autoencoder_key(profile: Profile) -> dict:
    return {"data": to_dict(profile.data), "autoencoder": to_dict(profile.autoencoder)}


def autoencoder_artifact(profile: Profile) -> dict:
    """The trained autoencoder's artefact (weights, losses, seconds)."""
    b = benchmark(profile)
    return cached("autoencoder", autoencoder_key(profile),
                  _timed(lambda wd: train_autoencoder(b.id_train.x, profile.autoencoder, wd)))


def autoencoder(profile: Profile):
    """The latent autoencoder (AutoencoderKL), trained on the ID training images without
    labels, or loaded with ``from_pretrained`` when ``profile.autoencoder.pretrained`` is set."""
    if profile.autoencoder.pretrained:
        return from_pretrained_autoencoder(profile.autoencoder.pretrained)
    return load_autoencoder(autoencoder_artifact(profile))


def pseudo_labels(profile: Profile) -> dict:
    """Labels for the unlabelled setting: k-means (C clusters) on the autoencoder's latents
    of the ID training images. Returns ``{"labels", "purity", "matched_accuracy"}``; the
    true labels are used only to report the clusters' quality."""
    b = benchmark(profile)
    key = {"autoencoder": autoencoder_key(profile), "n_clusters": b.n_classes, "seed": profile.sd.seed}

    def compute(_):
        feats = encode(autoencoder(profile), b.id_train.x).flatten(1)
        labels = kmeans_labels(feats, b.n_classes, seed=profile.sd.seed)
        return {"labels": labels, "purity": cluster_purity(labels, b.id_train.y),
                "matched_accuracy": matched_accuracy(labels, b.id_train.y)}

    return cached("pseudo_labels", key, compute)


def train_labels(profile: Profile, labels: str = "true") -> torch.Tensor:
    """Labels of the ID training split the generators condition on: true or pseudo."""
    if labels not in LABEL_SOURCES:
        raise ValueError(f"unknown label source {labels!r}; valid: {LABEL_SOURCES}")
    return benchmark(profile).id_train.y if labels == "true" else pseudo_labels(profile)["labels"]


# ------------------------------------------------------------------------------ diffusion
def ddpm_key(profile: Profile, labels: str = "true") -> dict:
    key = {"data": to_dict(profile.data), "ddpm": to_dict(profile.ddpm)}
    if labels != "true":
        key["labels"] = {"source": labels, "autoencoder": autoencoder_key(profile)}
    return key


def ddpm(profile: Profile, labels: str = "true") -> dict:
    """Train (or load) the class-conditional pixel DDPM on the ID training split, conditioned
    on true labels or on pseudo labels (the SD paper's unlabelled setting)."""
    b = benchmark(profile)
    return cached("ddpm", ddpm_key(profile, labels), _timed(lambda wd: train_ddpm(
        to_model_space(b.id_train.x), train_labels(profile, labels), b.n_classes, profile.ddpm, wd)))


def latent_ddpm_key(profile: Profile) -> dict:
    return {"autoencoder": autoencoder_key(profile), "latent_ddpm": to_dict(profile.latent_ddpm)}


def latent_ddpm(profile: Profile) -> dict:
    """Class-conditional DDPM on the autoencoder's latents of the ID training images, scaled
    to unit standard deviation (``artifact["scale"]``, as Stable Diffusion's 0.18215)."""
    b = benchmark(profile)

    def compute(workdir):
        z = encode(autoencoder(profile), b.id_train.x)
        scale = 1.0 / z.std().item()
        art = train_ddpm(z * scale, b.id_train.y, b.n_classes, profile.latent_ddpm, workdir)
        art["scale"] = scale
        return art

    return cached("latent_ddpm", latent_ddpm_key(profile), _timed(compute))


def decode_latents(profile: Profile, latents: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] from the latent DDPM's (scaled) latents."""
    x = benchmark(profile).id_train.x
    return decode(autoencoder(profile), latents / latent_ddpm(profile)["scale"], x.shape[-1], channels=x.shape[1])


# ------------------------------------------------------------------------------ outliers
def _generate(make, unet) -> OutlierSet:
    """Run a generator, recording its wall time and the UNet's image-evaluations."""
    start = time.perf_counter()
    with UNetEvalCounter(unet) as counter:
        out = make()
    out.seconds = time.perf_counter() - start
    out.unet_evals = counter.evals
    return out


def sd_key(profile: Profile) -> dict:
    return {"ddpm": ddpm_key(profile, profile.sd.labels), "sd": to_dict(profile.sd)}


def sd_outliers(profile: Profile) -> OutlierSet:
    """SD outliers from the ID training split (:func:`ood_lib.outliers.semantic_discrepant`),
    conditioned on true or pseudo labels (``profile.sd.labels``)."""
    b = benchmark(profile)

    def compute(_):
        unet = load_unet(ddpm(profile, profile.sd.labels))
        y = train_labels(profile, profile.sd.labels)
        out = _generate(lambda: make_sd_outliers(unet, b.id_train.x, y, b.n_classes, profile.sd), unet)
        out.params["labels"] = profile.sd.labels
        return out.to_dict()

    return OutlierSet.from_dict(cached("sd_outliers", sd_key(profile), compute))


def mixup_key(profile: Profile) -> dict:
    return {"ddpm": ddpm_key(profile), "mixup": to_dict(profile.mixup)}


def mixup_outliers(profile: Profile) -> OutlierSet:
    """Label-mixup outliers from the pixel DDPM (:func:`ood_lib.outliers.label_mixup`)."""
    b = benchmark(profile)

    def compute(_):
        unet = load_unet(ddpm(profile))
        out = _generate(lambda: label_mixup(unet, profile.mixup.n_outliers, b.n_classes, profile.mixup), unet)
        return out.to_dict()

    return OutlierSet.from_dict(cached("mixup_outliers", mixup_key(profile), compute))


def latent_key(profile: Profile) -> dict:
    return {"latent_ddpm": latent_ddpm_key(profile), "latent": to_dict(profile.latent)}


def latent_outliers(profile: Profile) -> OutlierSet:
    """Boundary outliers made by the latent DDPM (:func:`ood_lib.outliers.latent_boundary_outliers`);
    keeps the latents and their decoded images. Timings: embedding encoder training, sampling
    (boundary search + latent DDPM) and decoding."""
    b = benchmark(profile)
    cfg = profile.latent

    def compute(_):
        unet = load_unet(latent_ddpm(profile))
        t0 = time.perf_counter()
        emb, encoder_accuracy = id_embeddings(unet, b.id_train.x, b.id_train.y, b.n_classes, cfg)
        t1 = time.perf_counter()
        out = _generate(lambda: latent_boundary_outliers(unet, emb, b.id_train.y, b.n_classes, cfg), unet)
        t2 = time.perf_counter()
        out.x = decode_latents(profile, out.latents)
        t3 = time.perf_counter()
        out.timings = {"encoder": t1 - t0, "sampling": t2 - t1, "decoding": t3 - t2}
        out.seconds = t3 - t0
        out.params["encoder_accuracy"] = encoder_accuracy
        return out.to_dict()

    return OutlierSet.from_dict(cached("latent_outliers", latent_key(profile), compute))


OUTLIER_STAGES = {"sd": sd_outliers, "mixup": mixup_outliers, "latent": latent_outliers}


def outliers(profile: Profile, generator: str) -> OutlierSet:
    """The cached outlier set of ``generator`` ("sd", "mixup" or "latent")."""
    if generator not in OUTLIER_STAGES:
        raise KeyError(f"unknown generator {generator!r}; valid generators: {list(GENERATORS)}")
    return OUTLIER_STAGES[generator](profile)


def outlier_key(profile: Profile, generator: str) -> dict:
    return {"sd": sd_key, "mixup": mixup_key, "latent": latent_key}[generator](profile)


def _run(loss: str, generator: str | None) -> tuple[str, str]:
    """Validate a (loss, outlier source) pair; ``None`` picks the loss's default source."""
    if loss not in LOSSES:
        raise KeyError(f"unknown loss {loss!r}; valid losses: {list(LOSSES)}")
    generator = DEFAULT_GENERATOR[loss] if generator is None else generator
    if generator not in OUTLIER_SOURCES:
        raise KeyError(f"unknown outlier source {generator!r}; valid: {list(OUTLIER_SOURCES)}")
    if generator == "none" and loss in NEEDS_OUTLIERS:
        raise ValueError(f"loss {loss!r} trains on outliers: pick a generator from {list(GENERATORS)}")
    if loss == "ce" and generator != "none":
        raise ValueError("cross-entropy ignores outliers: use generator 'none' (or loss 'oe' to train on outliers)")
    if loss == "oal" and generator != "latent":
        raise ValueError("OAL trains on latent outliers (their latents and source images): use generator 'latent'")
    return loss, generator


def grid_runs() -> list[tuple[str, str]]:
    """Every (loss, outlier source) pair the training loop accepts: CE without outliers, the
    outlier losses with each generator, the metric losses with none and each generator, OAL
    with latent outliers (it reads their latents and source images)."""
    runs = []
    for loss in LOSSES:
        for generator in OUTLIER_SOURCES:
            try:
                runs.append(_run(loss, generator))
            except ValueError:
                pass
    return runs


# The subset `./run_all.sh` trains by default (one seed), chosen so the papers' default tables
# need no other model: OE with each outlier source (paper 2: pixel vs latent), CE / OE and
# ArcFace without and with label-mixup outliers (paper 1), the SD three-head model (paper 3)
# and OAL. ``grid_runs()`` over the profile's seeds is the full grid.
DEFAULT_RUNS = (("ce", "none"), ("oe", "sd"), ("oe", "mixup"), ("oe", "latent"), ("arcface", "none"),
                ("arcface", "mixup"), ("sd_three_head", "sd"), ("oal", "latent"))


def classifier_key(profile: Profile, loss: str, seed: int, generator: str | None = None) -> dict:
    """The classifier's cache key: only the config fields its loss reads (``LOSS_FIELDS``),
    and the key of its outlier set."""
    loss, generator = _run(loss, generator)
    clf = to_dict(profile.clf)
    optional = {f for fields in LOSS_FIELDS.values() for f in fields}
    used = set(LOSS_FIELDS.get(loss_family(loss), ()))
    if generator == "none":
        used -= {"oe_lambda", "outlier_batch_size"}
    clf = {k: v for k, v in clf.items() if k not in optional or k in used}
    key = {"data": to_dict(profile.data), "clf": clf, "loss": loss, "seed": seed}
    if generator != "none":
        key["outliers"] = {"generator": generator, **outlier_key(profile, generator)}
    if loss == "oal":
        key["teacher"] = classifier_key(profile, "ce", seed)
    return key


def classifier(profile: Profile, loss: str, seed: int = 0, generator: str | None = None) -> dict:
    """Train (or load) a classifier with ``loss`` (``ood_lib.train.LOSSES``) on the ID training
    split plus the outliers of ``generator`` ("none", "sd", "mixup", "latent"; default
    ``DEFAULT_GENERATOR[loss]``)."""
    loss, generator = _run(loss, generator)
    b = benchmark(profile)

    def compute(workdir):
        pool = None if generator == "none" else outliers(profile, generator)
        extra = {}
        if pool is not None:
            extra = {"outliers": pool.x, "outlier_labels": pool.y_source}
        if loss == "oal":
            extra.update(outlier_embeddings=pool.latents, outlier_sources=pool.source_index,
                         teacher=load_classifier(classifier(profile, "ce", seed)))
        start = time.perf_counter()
        art = train_classifier(b.id_train.x, b.id_train.y, b.n_classes, profile.clf, loss=loss, seed=seed,
                               workdir=workdir, **extra)
        art["seconds"] = time.perf_counter() - start
        return art

    return cached("classifier", classifier_key(profile, loss, seed, generator), compute)


def score_sets(profile: Profile, loss: str, seed: int = 0, split: str = "test",
               generator: str | None = None) -> dict:
    """Every applicable score (``ood_lib.scores``) of one trained model on the ID set and every
    OOD set of ``split`` (cached; see :func:`ood_lib.evaluation.score_sets`). DOD's voting bank
    is the outlier set the model trained with. Adds ``"train_seconds"``."""
    loss, generator = _run(loss, generator)
    b = benchmark(profile)
    key = {"classifier": classifier_key(profile, loss, seed, generator), "split": split,
           "scores": to_dict(profile.scores), "names": list(SCORES)}

    def compute(_):
        art = classifier(profile, loss, seed, generator)
        pool = None if generator == "none" else outliers(profile, generator).x
        id_set, oods = (b.id_test, b.ood_test) if split == "test" else (b.id_val, b.ood_val)
        scored = evaluation.score_sets(load_classifier(art), b.id_train, id_set, oods.values(), profile.scores,
                                       outliers_x=pool)
        scored["train_seconds"] = art["seconds"]
        return scored

    return cached("scores", key, compute, verbose=False)


def evaluate(profile: Profile, losses=("ce", "oe"), split: str = "test") -> pd.DataFrame:
    """The tidy results table: one row per (ood_dataset, generator, loss, score, seed), over the
    profile's seeds, every score that applies to each model. ``losses`` holds loss names
    (trained with their default outlier source) or ``(loss, generator)`` pairs."""
    frames = []
    for spec in losses:
        loss, generator = _run(*(spec if isinstance(spec, tuple) else (spec, None)))
        for seed in profile.seeds:
            s = score_sets(profile, loss, seed, split, generator)
            df = evaluation.metrics_table(s, profile=profile.name, id_dataset=benchmark(profile).name, generator=generator,
                                          loss=loss, seed=seed)
            df["train_seconds"] = s["train_seconds"]
            frames.append(df)
    cols = ["profile", "id_dataset", "ood_dataset", "ood_group", "generator", "loss", "score", "seed"]
    df = pd.concat(frames, ignore_index=True)
    return df[cols + [c for c in df.columns if c not in cols]]


def embedding_sets(profile: Profile, loss: str, seed: int = 0, generator: str | None = None,
                   epoch: int | None = None) -> dict:
    """Penultimate features of ID test, every OOD test set and the model's training outliers,
    from the final weights or the snapshot after ``epoch`` (``ood_lib.train`` keeps epoch 1):
    ``{set name: (features, kind)}`` with kind "id", "near", "far" or "outlier", the input of
    ``report.embedding_maps`` (paper 3's Figure 3)."""
    loss, generator = _run(loss, generator)
    b = benchmark(profile)
    model = load_classifier(classifier(profile, loss, seed, generator), epoch=epoch)
    sets = {"ID test": (b.id_test.x, "id"), **{s.name: (s.x, s.group) for s in b.ood_test.values()}}
    if generator != "none":
        sets[f"{generator} outliers"] = (outliers(profile, generator).x, "outlier")
    return {name: (predict(model, x)[1], kind) for name, (x, kind) in sets.items()}


def validation_sweep(profile: Profile, grid: list[dict], losses=("ce", "oe"), seeds=(0,)) -> pd.DataFrame:
    """Evaluate each setting of ``grid`` (profile overrides, e.g. ``{"sd": {"S": 200}}``) on the
    validation splits (ID val vs digits 6-9 val): model selection never sees a test set."""
    frames = []
    for setting in grid:
        df = evaluate(override(profile, seeds=tuple(seeds), **setting), losses=losses, split="val")
        df.insert(0, "setting", json.dumps(setting, sort_keys=True))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def dod_alpha_sweep(profile: Profile, runs, alphas, seeds=(0,)) -> pd.DataFrame:
    """Near-OOD AUROC (%) on the validation splits of DOD = distance + alpha * votes for each alpha
    (rows: runs, columns: alpha), mean over ``seeds``: the model selection of DOD's voting weight.
    The votes are recovered from the cached ``dod`` and ``dod_distance`` scores (computed with
    ``profile.scores.dod_alpha``), so no model is rescored."""
    base = profile.scores.dod_alpha
    if not base:
        raise ValueError("profile.scores.dod_alpha is 0: the cached DOD scores carry no votes to reweight")
    rows = {}
    for loss, generator in runs:
        aurocs = {a: [] for a in alphas}
        for seed in seeds:
            s = score_sets(profile, loss, seed, "val", generator)
            if "dod" not in s["id"]:
                raise ValueError(f"{loss}:{generator} has no DOD score (it trains without outliers)")
            split = lambda d: (d["dod_distance"], (d["dod"] - d["dod_distance"]) / base)
            id_dist, id_votes = split(s["id"])
            for name, ood in s["ood"].items():
                if s["groups"][name] != "near":
                    continue
                ood_dist, ood_votes = split(ood)
                for a in alphas:
                    aurocs[a].append(auroc(id_dist + a * id_votes, ood_dist + a * ood_votes))
        rows[(generator, loss)] = {a: 100 * sum(v) / len(v) for a, v in aurocs.items()}
    table = pd.DataFrame.from_dict(rows, orient="index").round(2)
    table.index.names = ["generator", "loss"]
    table.columns = [f"alpha={a:g}" for a in alphas]
    return table


def confidence_on(profile: Profile, losses=("ce", "oe"), seed: int = 0) -> pd.DataFrame:
    """Mean max-softmax confidence of each trained model (columns) on ID test, every OOD test
    set and the SD outliers (rows): outliers teach OE something only where a model is
    confident on them."""
    b = benchmark(profile)
    sets = {"ID test": b.id_test.x, **{k: v.x for k, v in b.ood_test.items()}, "SD outliers": sd_outliers(profile).x}
    table = {}
    for loss in losses:
        model = load_classifier(classifier(profile, loss, seed))
        table[loss] = {name: -msp(predict(model, x)[0]).mean().item() for name, x in sets.items()}
    return pd.DataFrame(table).round(3)


def conditional_accuracy(profile: Profile, ws=(0.0, 1.0, 3.0), n_per_class: int = 20, seed: int = 0) -> pd.DataFrame:
    """How well the DDPM follows its label: the CE classifier's accuracy on guided DDIM samples
    of each class at the label-mixup sampler's stride, for each guidance weight w (a check of
    the sampler, not of OOD detection)."""
    b = benchmark(profile)
    key = {"ddpm": ddpm_key(profile), "judge": classifier_key(profile, "ce", seed), "ws": list(ws),
           "n_per_class": n_per_class, "seed": seed, "stride": profile.mixup.stride, "clip_sample": profile.sd.clip_sample}

    def compute(_):
        unet = load_unet(ddpm(profile))
        judge = load_classifier(classifier(profile, "ce", seed))
        labels = torch.arange(b.n_classes).repeat_interleave(n_per_class)
        rows = []
        for w in ws:
            x = sample(unet, labels, w=w, stride=profile.mixup.stride, seed=seed, clip_sample=profile.sd.clip_sample)
            logits, _ = predict(judge, x)
            rows.append({"w": w, "accuracy": id_accuracy(logits, labels),
                         "mean_msp": -msp(logits).mean().item()})
        return rows

    return pd.DataFrame(cached("conditional_accuracy", key, compute)).round(3)


# --------------------------------------------------------------------------- diagnostics
def generator_training_seconds(profile: Profile, generator: str) -> float:
    """One-off training cost of the models a generator needs (pixel DDPM, or autoencoder +
    latent DDPM), from the artefacts' recorded times (NaN if not recorded)."""
    if generator == "latent":
        ae = 0.0 if profile.autoencoder.pretrained else autoencoder_artifact(profile).get("seconds", float("nan"))
        return ae + latent_ddpm(profile).get("seconds", float("nan"))
    labels = profile.sd.labels if generator == "sd" else "true"
    return ddpm(profile, labels).get("seconds", float("nan"))


def outlier_diagnostics(profile: Profile, generators=GENERATORS, seed: int = 0) -> pd.DataFrame:
    """One row per outlier set, plus ID-validation and near-OOD reference rows:

    * ``frechet_clf``: Fréchet distance to the ID test images in the penultimate-feature
      space of the cross-entropy classifier (the FID formula, *not* Inception features);
    * ``mean_msp``: that classifier's mean max-softmax confidence;
    * ``nearest_id_l2``: mean pixel L2 distance to the nearest ID training image;
    * generation cost per 1,000 outliers (seconds, UNet image-evaluations) and the one-off
      training seconds of the generator's models.
    """
    b = benchmark(profile)
    judge = load_classifier(classifier(profile, "ce", seed))
    ref_logits, ref_feats = predict(judge, b.id_test.x)
    near = [s for s in b.ood_test.values() if s.group == "near"]
    sets = [("ID val (reference)", b.id_val.x, None)] + [(f"{s.name} (reference)", s.x, None) for s in near]
    sets += [(g, outliers(profile, g).x, outliers(profile, g)) for g in generators]
    rows = []
    for name, x, out in sets:
        logits, feats = predict(judge, x)
        row = {"set": name, "n": len(x), "frechet_clf": frechet_distance(feats, ref_feats),
               "mean_msp": -msp(logits).mean().item(),
               "nearest_id_l2": nearest_distance(x, b.id_train.x).mean().item()}
        if out is not None:
            row.update(seconds_per_1000=per_thousand(out.seconds, len(out)),
                       unet_evals_per_1000=per_thousand(out.unet_evals, len(out)),
                       training_seconds=generator_training_seconds(profile, name))
        rows.append(row)
    return pd.DataFrame(rows)


def sd_semantic_shift(profile: Profile, S_values=(50, 100, 200, 400, 600), n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Does an SD outlier keep its source's nuisances while its semantics shift? For each S,
    ``n`` SD outliers from ID training images: the CE classifier's verdict (source class,
    guidance class c_r, or another class) and the pixel L2 distance to the source image,
    beside the mean distance from a source image to its nearest *other* ID training image."""
    b = benchmark(profile)
    key = {"ddpm": ddpm_key(profile), "judge": classifier_key(profile, "ce", seed), "S": list(S_values),
           "n": n, "seed": seed, "w": profile.sd.w, "stride": profile.sd.stride,
           "clip_sample": profile.sd.clip_sample}

    def compute(_):
        unet = load_unet(ddpm(profile))
        judge = load_classifier(classifier(profile, "ce", seed))
        idx = torch.randperm(len(b.id_train.x), generator=torch.Generator().manual_seed(seed))[:n]
        x0, y0 = b.id_train.x[idx], b.id_train.y[idx]
        others = torch.ones(len(b.id_train.x), dtype=torch.bool)
        others[idx] = False
        baseline = nearest_distance(x0, b.id_train.x[others]).mean().item()
        rows = []
        for S in S_values:
            out = semantic_discrepant(unet, x0, y0, b.n_classes, S, profile.sd.w, profile.sd.stride, seed=seed,
                                      batch_size=n, progress=False, clip_sample=profile.sd.clip_sample)
            pred = predict(judge, out["x"])[0].argmax(1)
            rows.append({"S": S, "judged_source": (pred == y0).float().mean().item(),
                         "judged_target": (pred == out["y_target"]).float().mean().item(),
                         "l2_to_source": (out["x"] - x0).flatten(1).norm(dim=1).mean().item(),
                         "l2_source_to_nearest_other": baseline})
        return rows

    return pd.DataFrame(cached("sd_semantic_shift", key, compute)).round(3)


def outlier_verdicts(profile: Profile, generator: str, seed: int = 0) -> pd.Series:
    """How the cross-entropy classifier sees an outlier set: the fraction it assigns to the
    outliers' source class (SD: source image's label; mixup: a; latent: boundary class), to
    their other class (SD: c_r; mixup: b), or to any other class, and its mean confidence."""
    out = outliers(profile, generator)
    logits = predict(load_classifier(classifier(profile, "ce", seed)), out.x)[0]
    pred = logits.argmax(1)
    source = pred == out.y_source
    target = pred == out.y_target if out.y_target is not None else torch.zeros_like(source)
    return pd.Series({"source class": source.float().mean().item(), "other class (c_r / b)": target.float().mean().item(),
                      "any other class": (~source & ~target).float().mean().item(),
                      "mean confidence": -msp(logits).mean().item()}, name=generator).round(3)
