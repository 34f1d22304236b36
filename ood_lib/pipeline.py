"""The pipeline's stages. Each returns its artefact, loading it from the cache when the
same config was computed before and computing (resumably) otherwise.

data -> ddpm -----------> sd_outliers, mixup_outliers --+
     -> autoencoder -> latent_ddpm -> latent_outliers --+-> classifier(loss, seed) -> evaluate -> report
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from functools import lru_cache

import pandas as pd
import torch

from . import evaluation
from .artifacts import Stage, cached, seconds_before, stage_key, tensor_fingerprint
from .autoencoder import decode, encode, from_pretrained_autoencoder, load_autoencoder, train_autoencoder
from .clustering import cluster_purity, kmeans_labels, matched_accuracy
from .config import LOSS_FIELDS, ClassifierConfig, Profile, override
from .data import load_benchmark
from .diagnostics import UNetEvalCounter, frechet_distance, nearest_distance, per_thousand, regime_text, sd_regime as _regime
from .diffusion import generate, load_unet, to_image_space, to_model_space, train_ddpm
from .fidelity import FAILED, fidelity, gate
from .images import Benchmark, data_root
from .metrics import auroc
from .models import predict
from .outliers import (GENERATORS, OutlierSet, id_embeddings, label_mixup, latent_boundary_outliers,
                       make_sd_outliers, semantic_discrepant)
from .scores import SCORES, msp
from .train import (LOSSES, OAL_LOSSES, load_classifier, needs_teacher, oal_teacher,
                    train_classifier)

OUTLIER_SOURCES = ("none", *GENERATORS)
LABEL_SOURCES = ("true", "pseudo")


def benchmark(profile: Profile) -> Benchmark:
    """The profile's benchmark (``profile.data``: digits or cifar10), loaded once per process
    per data config and data location (profiles that differ elsewhere, e.g. ablation overrides,
    share it; a notebook that points ``OOD_DATA_ROOT`` elsewhere gets the sets found there)."""
    return _benchmark(profile.data, _data_location())


def _data_location() -> tuple:
    """Where the data comes from: the data root and whether downloads are allowed."""
    return str(data_root()), os.environ.get("OOD_DOWNLOAD", "")


@lru_cache(maxsize=4)
def _benchmark(data_cfg, location: tuple) -> Benchmark:
    return load_benchmark(data_cfg)


# ------------------------------------------------------------------------------ stage keys
# Every cached stage, the profile fields its own computation reads and its version (bump the
# version when the stage's behaviour changes). A key also holds the keys of the stage's inputs
# and the fingerprint of the data splits it reads (``artifacts.stage_key``).
_CLF_COMMON = tuple(f"clf.{f.name}" for f in dataclasses.fields(ClassifierConfig)
                    if f.name not in {x for fields in LOSS_FIELDS.values() for x in fields})
STAGES = {s.name: s for s in (
    Stage("autoencoder", 1, ("autoencoder",)),
    Stage("pseudo_labels", 1, ("sd.seed",)),                   # k-means seed
    Stage("ddpm", 1, ("ddpm",)),
    Stage("latent_ddpm", 1, ("latent_ddpm",)),
    Stage("sd_outliers", 1, ("sd",)),
    Stage("mixup_outliers", 1, ("mixup",)),
    Stage("latent_outliers", 1, ("latent",)),
    Stage("classifier", 1, _CLF_COMMON),                       # plus the fields its loss reads (Loss.fields)
    Stage("scores", 1, ("scores",)),
    Stage("generator_fidelity", 1, ()),                        # its sampler setting: a key extra
    Stage("sd_regime_screen", 2, ("sd.S", "sd.w", "sd.stride", "sd.clip_sample", "sd.seed")),
    Stage("sd_regime", 2, ("sd",)),                            # v2: reference Fréchet at the set's n
    Stage("sd_test_outliers", 1, ("sd",)),
    Stage("nuisance_oracle", 1, ()),                           # digits_nuisance only; its settings: key extras
    Stage("nuisance_check", 1, ()),                            # reads its outlier set's and oracle's keys
    Stage("nuisance_screen", 1, ("sd.S", "sd.w", "sd.stride", "sd.clip_sample", "sd.seed")),
)}


def data_fingerprint(profile: Profile, *splits: str) -> dict:
    """What a stage reads of the data: for each split (``id_train``, ``id_val``, ``id_test``,
    ``ood_val``, ``ood_test``) every set's name, group, source and a content fingerprint, and
    the optional sets that were not found (their absence changes a suite)."""
    return {split: _fingerprints(profile.data, _data_location())[split] for split in splits}


@lru_cache(maxsize=4)
def _fingerprints(data_cfg, location: tuple) -> dict:
    b = _benchmark(data_cfg, location)

    def one(s):
        return {"name": s.name, "group": s.group, "n": len(s), "source": str(b.sources.get(s.name, "")),
                "content": tensor_fingerprint(s.x, s.y)}

    out = {split: one(getattr(b, split)) for split in ("id_train", "id_val", "id_test")}
    for split in ("ood_val", "ood_test"):
        out[split] = {"sets": {k: one(v) for k, v in sorted(getattr(b, split).items())},
                      "skipped": sorted(b.skipped)}
    return out


def _timed(compute):
    """Wrap a stage's compute so its artefact records the seconds it took, the runs interrupted
    before a resume included."""
    def run(workdir):
        before, start = seconds_before(workdir), time.perf_counter()
        art = compute(workdir)
        art["seconds"] = before + time.perf_counter() - start
        return art
    return run


# ------------------------------------------------------------------ autoencoder, pseudo labels
def autoencoder_key(profile: Profile) -> dict:
    return stage_key(STAGES["autoencoder"], profile, data=data_fingerprint(profile, "id_train"))


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

    def compute(_):
        feats = encode(autoencoder(profile), b.id_train.x).flatten(1)
        labels = kmeans_labels(feats, b.n_classes, seed=profile.sd.seed)
        return {"labels": labels, "purity": cluster_purity(labels, b.id_train.y),
                "matched_accuracy": matched_accuracy(labels, b.id_train.y)}

    return cached("pseudo_labels", pseudo_labels_key(profile), compute)


def pseudo_labels_key(profile: Profile) -> dict:
    return stage_key(STAGES["pseudo_labels"], profile, inputs={"autoencoder": autoencoder_key(profile)},
                     data=data_fingerprint(profile, "id_train"))


def train_labels(profile: Profile, labels: str = "true") -> torch.Tensor:
    """Labels of the ID training split the generators condition on: true or pseudo."""
    if labels not in LABEL_SOURCES:
        raise ValueError(f"unknown label source {labels!r}; valid: {LABEL_SOURCES}")
    return benchmark(profile).id_train.y if labels == "true" else pseudo_labels(profile)["labels"]


# ------------------------------------------------------------------------------ diffusion
def ddpm_key(profile: Profile, labels: str = "true") -> dict:
    if labels not in LABEL_SOURCES:
        raise ValueError(f"unknown label source {labels!r}; valid: {LABEL_SOURCES}")
    inputs = {"pseudo_labels": pseudo_labels_key(profile)} if labels == "pseudo" else {}
    return stage_key(STAGES["ddpm"], profile, inputs=inputs, data=data_fingerprint(profile, "id_train"), labels=labels)


def ddpm(profile: Profile, labels: str = "true") -> dict:
    """Train (or load) the class-conditional pixel DDPM on the ID training split, conditioned
    on true labels or on pseudo labels (the SD paper's unlabelled setting)."""
    b = benchmark(profile)
    made = []

    def compute(workdir):
        made.append(True)
        return train_ddpm(to_model_space(b.id_train.x), train_labels(profile, labels), b.n_classes, profile.ddpm, workdir)

    art = cached("ddpm", ddpm_key(profile, labels), _timed(compute))
    if made and labels == "true":
        _print_check(profile, "ddpm")
    return art


def _print_check(profile: Profile, model: str) -> None:
    """A generator just trained: its fidelity gate at each outlier setting (:func:`generator_fidelity`)."""
    for r in generator_fidelity(profile, model):
        print(f"[{model}] fidelity at the {r['setting']} settings: {r['text']}")


def latent_ddpm_key(profile: Profile) -> dict:
    return stage_key(STAGES["latent_ddpm"], profile, inputs={"autoencoder": autoencoder_key(profile)},
                     data=data_fingerprint(profile, "id_train"))


def latent_ddpm(profile: Profile) -> dict:
    """Class-conditional DDPM on the autoencoder's latents of the ID training images, scaled
    to unit standard deviation (``artifact["scale"]``, as Stable Diffusion's 0.18215)."""
    b = benchmark(profile)

    def compute(workdir):
        z = encode(autoencoder(profile), b.id_train.x)
        scale = 1.0 / z.std().item()
        art = train_ddpm(z * scale, b.id_train.y, b.n_classes, profile.latent_ddpm, workdir)
        art["scale"] = scale
        made.append(True)
        return art

    made = []
    art = cached("latent_ddpm", latent_ddpm_key(profile), _timed(compute))
    if made:
        _print_check(profile, "latent_ddpm")
    return art


def decode_latents(profile: Profile, latents: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Images in [0, 1] from the latent DDPM's (scaled) latents (``scale``: the latent DDPM's,
    by default the profile's)."""
    x = benchmark(profile).id_train.x
    scale = latent_ddpm(profile)["scale"] if scale is None else scale
    return decode(autoencoder(profile), latents / scale, x.shape[-1], channels=x.shape[1])


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
    return stage_key(STAGES["sd_outliers"], profile, inputs={"ddpm": ddpm_key(profile, profile.sd.labels)},
                     data=data_fingerprint(profile, "id_train"))


def sd_outliers(profile: Profile, check: bool = False) -> OutlierSet:
    """SD outliers from the ID training split (:func:`ood_lib.outliers.semantic_discrepant`),
    conditioned on true or pseudo labels (``profile.sd.labels``). When the set is made, or with
    ``check``, it prints the set's regime check (:func:`sd_regime`; trains the CE judge if needed)."""
    b = benchmark(profile)
    made = []

    def compute(_):
        unet = load_unet(ddpm(profile, profile.sd.labels))
        y = train_labels(profile, profile.sd.labels)
        out = _generate(lambda: make_sd_outliers(unet, b.id_train.x, y, b.n_classes, profile.sd), unet)
        out.params["labels"] = profile.sd.labels
        made.append(True)
        return out.to_dict()

    out = OutlierSet.from_dict(cached("sd_outliers", sd_key(profile), compute))
    if check or made:
        print(f"[sd_outliers] S={profile.sd.S}, w={profile.sd.w:g}: {regime_text(sd_regime(profile))}")
    return out


def regime_of(profile: Profile, x_out, y_source, y_target, x_source, source_index=None, seed: int | None = None) -> dict:
    """:func:`ood_lib.diagnostics.sd_regime` of any SD outlier set, judged by the profile's CE
    classifier (seed ``profile.seeds[0]``): class verdicts, distance moved against the
    source's nearest other ID training image (``source_index``: the sources' own indices in the
    training split, excluded from that search), Fréchet distance to ID test (penultimate features)
    beside that of as many ID validation images (all of them when the set is larger)."""
    b = benchmark(profile)
    seed = profile.seeds[0] if seed is None else seed
    judge = load_classifier(classifier(profile, "ce", seed))
    logits, feats = predict(judge, x_out)
    ref = predict(judge, b.id_test.x)[1]
    # each source's nearest *other* training image (``source_index``: the source itself, excluded)
    d = torch.cdist(x_source.flatten(1).double(), b.id_train.x.flatten(1).double(),
                    compute_mode="donot_use_mm_for_euclid_dist")
    if source_index is not None:
        d[torch.arange(len(d)), source_index] = float("inf")
    # the reference: ID val images, as many as there are outliers (a Fréchet distance on n samples
    # is biased upward as n shrinks, so set and reference are compared at the same n where possible)
    val = b.id_val.x[torch.randperm(len(b.id_val.x), generator=torch.Generator().manual_seed(0))[:len(x_out)]]
    return _regime(logits.argmax(1), y_source, y_target, x_out, x_source, d.min(dim=1).values,
                   frechet_distance(feats, ref), frechet_distance(predict(judge, val)[1], ref))


def sd_regime(profile: Profile, n: int = 600) -> dict:
    """The regime check of the profile's SD training outliers (on ``n`` of them, drawn with a
    fixed seed): share leaving the source class, share landing on c_r, L2 moved against the
    nearest-other-ID distance, Fréchet distance; ``copy_regime`` when under a quarter leave."""
    b = benchmark(profile)
    seed = profile.seeds[0]
    key = stage_key(STAGES["sd_regime"], profile, inputs={"outliers": sd_key(profile),
                                                          "judge": classifier_key(profile, "ce", seed)},
                    data=data_fingerprint(profile, "id_train", "id_val", "id_test"), n=n)

    def compute(_):
        out = sd_outliers(profile)
        idx = torch.randperm(len(out), generator=torch.Generator().manual_seed(0))[:n]
        src = out.source_index[idx]
        return regime_of(profile, out.x[idx], out.y_source[idx], out.y_target[idx], b.id_train.x[src], src, seed)

    return cached(STAGES["sd_regime"], key, compute, verbose=False)


def mixup_key(profile: Profile) -> dict:
    return stage_key(STAGES["mixup_outliers"], profile, inputs={"ddpm": ddpm_key(profile)})


def mixup_outliers(profile: Profile) -> OutlierSet:
    """Label-mixup outliers from the pixel DDPM (:func:`ood_lib.outliers.label_mixup`)."""
    b = benchmark(profile)

    def compute(_):
        unet = load_unet(ddpm(profile))
        out = _generate(lambda: label_mixup(unet, profile.mixup.n_outliers, b.n_classes, profile.mixup), unet)
        return out.to_dict()

    return OutlierSet.from_dict(cached("mixup_outliers", mixup_key(profile), compute))


def latent_key(profile: Profile) -> dict:
    return stage_key(STAGES["latent_outliers"], profile, inputs={"latent_ddpm": latent_ddpm_key(profile)},
                     data=data_fingerprint(profile, "id_train"))


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
    generator = LOSSES[loss].outliers if generator is None else generator
    if generator not in OUTLIER_SOURCES:
        raise KeyError(f"unknown outlier source {generator!r}; valid: {list(OUTLIER_SOURCES)}")
    if generator == "none" and LOSSES[loss].needs_outliers:
        raise ValueError(f"loss {loss!r} trains on outliers: pick a generator from {list(GENERATORS)}")
    if loss == "ce" and generator != "none":
        raise ValueError("cross-entropy ignores outliers: use generator 'none' (or loss 'oe' to train on outliers)")
    if loss in OAL_LOSSES and generator != "latent":
        raise ValueError(f"{loss} trains on the latent generator's outliers (their latents): use generator 'latent'")
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
    """The classifier's cache key: only the config fields its loss reads (``LOSSES[loss].fields``),
    and the key of its outlier set."""
    loss, generator = _run(loss, generator)
    used = LOSSES[loss].fields
    if generator == "none":
        used = tuple(f for f in used if f not in ("oe_lambda", "outlier_batch_size"))
    stage = dataclasses.replace(STAGES["classifier"], reads=STAGES["classifier"].reads + tuple(f"clf.{f}" for f in used))
    inputs = {} if generator == "none" else {"outliers": outlier_key(profile, generator)}
    if loss == "energy_oe" and profile.clf.energy_margins == "from_ce":
        inputs["margins_from"] = classifier_key(profile, "ce", seed)
    if loss in OAL_LOSSES and needs_teacher(loss, profile.clf):
        inputs["teacher"] = classifier_key(profile, oal_teacher(profile.clf), seed)
    return stage_key(stage, profile, inputs=inputs, data=data_fingerprint(profile, "id_train"), loss=loss,
                     generator=generator, seed=seed)


def classifier(profile: Profile, loss: str, seed: int = 0, generator: str | None = None) -> dict:
    """Train (or load) a classifier with ``loss`` (``ood_lib.train.LOSSES``) on the ID training
    split plus the outliers of ``generator`` ("none", "sd", "mixup", "latent"; default
    ``LOSSES[loss].outliers``)."""
    loss, generator = _run(loss, generator)
    b = benchmark(profile)

    def compute(workdir):
        pool = None if generator == "none" else outliers(profile, generator)
        extra = {}
        if pool is not None:
            extra = {"outliers": pool.x, "outlier_labels": pool.y_source}
        if loss in OAL_LOSSES:
            # "oal" pairs ID images with random latents; the variant with its outliers' sources
            extra["outlier_embeddings"] = pool.latents
            if loss == "oal_source_paired":
                extra["outlier_sources"] = pool.source_index
            if needs_teacher(loss, profile.clf):   # the teacher: profile.clf.oal_teacher, same profile and seed
                extra["teacher"] = load_classifier(classifier(profile, oal_teacher(profile.clf), seed))
        if loss == "energy_oe" and profile.clf.energy_margins == "from_ce":
            # margins from the cached CE model of the same profile and seed (classifier_key must hold its key)
            from .train import ce_energy_margins
            ce = load_classifier(classifier(profile, "ce", seed))
            extra["energy_margins"] = ce_energy_margins(ce, b.id_train.x, profile.clf)
        start = time.perf_counter()
        art = train_classifier(b.id_train.x, b.id_train.y, b.n_classes, profile.clf, loss=loss, seed=seed,
                               workdir=workdir, **extra)
        art["seconds"] = time.perf_counter() - start
        return art

    return cached("classifier", classifier_key(profile, loss, seed, generator), compute)


def scores_key(profile: Profile, loss: str, seed: int = 0, split: str = "test", generator: str | None = None) -> dict:
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', not {split!r}")
    return stage_key(STAGES["scores"], profile, inputs={"classifier": classifier_key(profile, loss, seed, generator)},
                     data=data_fingerprint(profile, "id_train", *(("id_test", "ood_test") if split == "test"
                                                                  else ("id_val", "ood_val"))),
                     split=split, names=list(SCORES))


def score_sets(profile: Profile, loss: str, seed: int = 0, split: str = "test",
               generator: str | None = None) -> dict:
    """Every applicable score (``ood_lib.scores``) of one trained model on the ID set and every
    OOD set of ``split`` (cached; see :func:`ood_lib.evaluation.score_sets`). DOD's voting bank
    is the outlier set the model trained with. Adds ``"train_seconds"``."""
    loss, generator = _run(loss, generator)
    b = benchmark(profile)
    key = scores_key(profile, loss, seed, split, generator)

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
    df = mark_rows(profile, pd.concat(frames, ignore_index=True), split)
    return df[cols + [c for c in df.columns if c not in cols]]


def mark_rows(profile: Profile, df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Adds the diagnostics every table shows beside a result: ``ID_acc_vs_ce`` and ``collapsed``
    (:func:`ood_lib.evaluation.mark_collapse`, against this profile's CE model of the same seed),
    ``outlier_check`` (the SD regime check of the model's SD outliers, "" for other sources) and
    ``generator_check`` / ``generator_failed`` (the fidelity gate of the generator behind the
    model's outliers, :func:`generator_check`; "" / False without outliers)."""
    ce = {seed: score_sets(profile, "ce", seed, split, "none")["id_acc"] for seed in sorted(set(df.seed))}
    df = evaluation.mark_collapse(df, ce)
    regime = sd_regime(profile) if (df.generator == "sd").any() else None
    df["outlier_check"] = [regime_text(regime, short=True) if g == "sd" else "" for g in df.generator]
    df["copy_regime"] = [g == "sd" and regime["copy_regime"] for g in df.generator]
    checks = {g: generator_check(profile, g) for g in set(df.generator) if g != "none"}
    df["generator_check"] = [checks[g]["text"] if g in checks else "" for g in df.generator]
    df["generator_failed"] = [g in checks and not checks[g]["passed"] for g in df.generator]
    return df


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


def choose_sd_setting(df: pd.DataFrame, loss: str = "sd_three_head", score: str = "dod_distance",
                      tie: float = 0.001) -> dict:
    """The selection rule for SD's (S, w), fixed before the sweep it judges: among the settings of
    a :func:`validation_sweep` whose outliers are not in the copy regime, the highest near-OOD
    validation AUROC of ``loss`` with ``score`` (mean over seeds and near sets; the distance term of
    DOD, so the choice does not depend on the voting weight chosen later); settings within ``tie``
    of the best go to the smallest S, then the smallest w (the least change to the source image).
    Returns ``{"setting": dict, "auroc": float, "excluded": [copy-regime settings]}``."""
    rows = df[(df.loss == loss) & (df.score == score) & (df.ood_group == "near")]
    if rows.empty:
        raise ValueError(f"no validation rows of {loss} with score {score}")
    copy = rows.groupby("setting").copy_regime.any()
    auroc_by = rows[~rows.setting.map(copy)].groupby("setting").AUROC.mean()
    if auroc_by.empty:
        raise ValueError("every setting of the sweep is in the copy regime: extend S or w")
    settings = {k: json.loads(k) for k in auroc_by.index}
    near_best = [k for k, v in auroc_by.items() if v >= auroc_by.max() - tie]
    best = min(near_best, key=lambda k: (settings[k]["sd"]["S"], settings[k]["sd"].get("w", 0)))
    return {"setting": settings[best], "auroc": float(auroc_by[best]), "excluded": sorted(copy[copy].index)}


def with_dod_alpha(scored: dict, alpha: float, base: float) -> dict:
    """A :func:`score_sets` result whose ``dod`` is recomputed as distance + ``alpha`` * votes;
    the votes are recovered from the cached ``dod`` and ``dod_distance`` (computed with voting
    weight ``base``), so no model is rescored."""
    if not base:
        raise ValueError("the cached DOD scores were computed with alpha = 0: they carry no votes to reweight")

    def one(d):
        if "dod" not in d:
            return d
        votes = ((d["dod"] - d["dod_distance"]) / base).round()
        return {**d, "dod": d["dod_distance"] + alpha * votes}

    return {**scored, "id": one(scored["id"]), "ood": {k: one(v) for k, v in scored["ood"].items()}}


def dod_alpha_sweep(profile: Profile, runs, alphas, seeds=(0,)) -> pd.DataFrame:
    """Near-OOD AUROC (%) on the validation splits of DOD = distance + alpha * votes for each alpha
    (rows: runs, columns: alpha), mean over ``seeds``: the model selection of DOD's voting weight
    (:func:`with_dod_alpha`: no model is rescored)."""
    rows = {}
    for loss, generator in runs:
        aurocs = {a: [] for a in alphas}
        for seed in seeds:
            s = score_sets(profile, loss, seed, "val", generator)
            if "dod" not in s["id"]:
                raise ValueError(f"{loss}:{generator} has no DOD score (it trains without outliers)")
            for a in alphas:
                r = with_dod_alpha(s, a, profile.scores.dod_alpha)
                aurocs[a] += [auroc(r["id"]["dod"], ood["dod"]) for name, ood in r["ood"].items()
                              if r["groups"][name] == "near"]
        rows[(generator, loss)] = {a: 100 * sum(v) / len(v) for a, v in aurocs.items()}
    table = pd.DataFrame.from_dict(rows, orient="index").round(2)
    table.index.names = ["generator", "loss"]
    table.columns = [f"alpha={a:g}" for a in alphas]
    return table


# DOD's voting weight is chosen among these multiples of (ID spread of the distance term) / k, so
# that the vote term (at most alpha * k) ranges from a tenth to ten times that spread.
DOD_ALPHA_MULTIPLIERS = (0.1, 0.3, 1.0, 3.0, 10.0)


def dod_alpha_candidates(profile: Profile, run=("sd_three_head", "sd"), seed: int = 0,
                         multipliers=DOD_ALPHA_MULTIPLIERS) -> list[float]:
    """Voting weights where votes can move DOD: ``m * std(distance term on ID val) / k`` for each
    multiplier m (a weight of 0.01 against distances that spread over ~1 moves no rank)."""
    s = score_sets(profile, *run[:1], seed, "val", run[1])
    spread = float(s["id"]["dod_distance"].double().std())
    return [float(f"{m * spread / profile.scores.dod_k:.3g}") for m in multipliers]


def choose_dod_alpha(table: pd.DataFrame, tie: float = 0.1) -> float:
    """The selection rule for DOD's voting weight, fixed before the validation numbers it judges:
    the nonzero alpha column of a :func:`dod_alpha_sweep` table (first row: the SD three-head
    model) with the highest validation near-OOD AUROC; alphas within ``tie`` points of the best
    go to the smallest alpha."""
    row = table.iloc[0]
    values = {float(c.split("=")[1]): v for c, v in row.items() if float(c.split("=")[1]) > 0}
    best = max(values.values())
    return min(a for a, v in values.items() if v >= best - tie)


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


# ------------------------------------------------------------------------ generator fidelity
GENERATOR_MODELS = {"sd": ("ddpm", "sd"), "mixup": ("ddpm", "mixup"), "latent": ("latent_ddpm", "latent")}
MODEL_NAMES = {"ddpm": "pixel DDPM", "latent_ddpm": "latent DDPM"}


def fidelity_settings(profile: Profile, model: str) -> dict[str, dict]:
    """The sampler settings at which ``model`` ("ddpm" or "latent_ddpm") is checked: those of
    each outlier generator that samples it (SD's w, stride and clipping from pure noise; the
    label-mixup or latent sampler), and w = 0 (no guidance) at the first one's stride."""
    if model == "ddpm":
        m, sd = profile.mixup, profile.sd
        out = {"mixup": {"w": m.w, "stride": m.stride, "sampler": m.sampler, "clip_sample": False},
               "sd": {"w": sd.w, "stride": sd.stride, "sampler": "ddim", "clip_sample": sd.clip_sample}}
    elif model == "latent_ddpm":
        lt = profile.latent
        out = {"latent": {"w": lt.w, "stride": lt.stride, "sampler": lt.sampler, "clip_sample": False}}
    else:
        raise KeyError(f"unknown generator model {model!r}; valid: {list(MODEL_NAMES)}")
    first = next(iter(out.values()))
    return {**out, "w=0": {**first, "w": 0.0}}


def fidelity_judge(profile: Profile):
    """The independent classifier that judges generated samples: the profile's CE model (seed
    ``profile.seeds[0]``), or on ``digits_nuisance`` the digit oracle (its ten digits mapped to
    the ID classes; another digit counts as wrong). Returns ``(judge(x) -> (pred, feats), key)``."""
    b = benchmark(profile)
    if has_nuisances(profile):
        oracle = load_classifier(nuisance_oracle(profile))
        to_class = torch.full((10,), -1, dtype=torch.long)
        to_class[[int(c) for c in b.classes]] = torch.arange(b.n_classes)

        def judge(x):
            logits, feats = predict(oracle, x)
            return to_class[logits.argmax(1)], feats
        return judge, nuisance_oracle_key(profile)
    seed = profile.seeds[0]
    model = load_classifier(classifier(profile, "ce", seed))

    def judge(x):
        logits, feats = predict(model, x)
        return logits.argmax(1), feats
    return judge, classifier_key(profile, "ce", seed)


def fidelity_judge_key(profile: Profile) -> dict:
    return nuisance_oracle_key(profile) if has_nuisances(profile) else classifier_key(profile, "ce", profile.seeds[0])


def fidelity_rows(profile: Profile, unet, model: str, n_per_class: int = 50, seed: int = 0,
                  judge=None, keep: int = 8, latent_scale: float | None = None) -> list[dict]:
    """:func:`ood_lib.fidelity.fidelity` and its :func:`~ood_lib.fidelity.gate` of ``unet`` (the
    profile's ``model``, or any UNet of that kind, e.g. a benchmark's candidate) at each of
    :func:`fidelity_settings` (uncached; :func:`generator_fidelity` caches the profile's own)."""
    judge = judge or fidelity_judge(profile)[0]
    return [_fidelity_at(profile, unet, model, name, setting, n_per_class, seed, judge, keep, latent_scale)
            for name, setting in fidelity_settings(profile, model).items()]


def _fidelity_at(profile: Profile, unet, model: str, name: str, setting: dict, n_per_class: int, seed: int,
                 judge, keep: int = 8, latent_scale: float | None = None) -> dict:
    """One fidelity row: ``n_per_class`` samples of each class from pure noise at ``setting``
    (latents decoded, with ``latent_scale`` when the UNet is not the profile's), judged; the row
    keeps its first ``keep`` samples per class (``samples``, for the grid)."""
    b = benchmark(profile)
    val_feats, test_feats = judge(b.id_val.x)[1], judge(b.id_test.x)[1]
    labels = torch.arange(b.n_classes).repeat_interleave(n_per_class)
    s = setting
    z = generate(unet, labels, s["w"], s["stride"], seed, s["sampler"], s["clip_sample"], batch_size=500)
    x = to_image_space(z) if model == "ddpm" else decode_latents(profile, z, latent_scale)
    pred, feats = judge(x)
    row = fidelity(pred, labels, x, b.id_val.x, feats, val_feats, test_feats, b.n_classes)
    first = torch.cat([torch.nonzero(labels == c).flatten()[:keep] for c in range(b.n_classes)])
    verdict = gate(row)
    if name == "w=0":                            # shown beside the gated settings, never gated itself
        verdict["text"] = "not gated (w = 0): " + verdict["text"].replace(f"{FAILED}: ", "below the gate: ")
    return {"model": MODEL_NAMES[model], "setting": name, **s, **row, **verdict, "samples": x[first]}


def generator_fidelity(profile: Profile, model: str = "ddpm", n_per_class: int | None = None, seed: int = 0) -> list[dict]:
    """The fidelity check of the profile's pixel DDPM (``model="ddpm"``, true labels) or latent
    DDPM (``"latent_ddpm"``) at each of :func:`fidelity_settings`, each setting cached on its own
    (an ablation that changes one generator's w checks only that setting); printed when the
    generator is trained (:func:`ddpm`, :func:`latent_ddpm`).
    ``n_per_class``: default ``profile.fidelity_n_per_class``."""
    n_per_class = n_per_class or profile.fidelity_n_per_class
    model_key = ddpm_key(profile) if model == "ddpm" else latent_ddpm_key(profile)
    # trained (and its check printed, which calls this function) before any setting's lock is taken
    generator = ddpm(profile) if model == "ddpm" else latent_ddpm(profile)
    rows = []
    for name, setting in fidelity_settings(profile, model).items():
        key = stage_key(STAGES["generator_fidelity"], inputs={model: model_key, "judge": fidelity_judge_key(profile)},
                        data=data_fingerprint(profile, "id_val", "id_test"), model=model, setting=setting,
                        n_per_class=n_per_class, seed=seed)

        def compute(_, name=name, setting=setting):
            unet = load_unet(generator)
            return _fidelity_at(profile, unet, model, name, setting, n_per_class, seed, fidelity_judge(profile)[0])

        rows.append({**cached(STAGES["generator_fidelity"], key, compute, verbose=False), "setting": name})
    return rows


def fidelity_table(profile: Profile, models=("ddpm", "latent_ddpm"), n_per_class: int | None = None) -> pd.DataFrame:
    """One row per (generator model, sampler setting): conditional accuracy overall, lowest and
    per class, degenerate shares, Fréchet distance to ID validation beside ID test's own, the gate."""
    b = benchmark(profile)
    rows = []
    for model in models:
        for r in generator_fidelity(profile, model, n_per_class):
            row = {k: v for k, v in r.items() if k not in ("samples", "per_class", "clip_sample")}
            row.update({f"acc_{c}": a for c, a in zip(b.classes, r["per_class"])})
            rows.append(row)
    return pd.DataFrame(rows)


def generator_check(profile: Profile, generator: str) -> dict:
    """The gate of the generator model behind an outlier source ("sd", "mixup", "latent") at that
    source's settings: ``{"passed", "text"}``. SD outliers from a DDPM trained on pseudo labels
    are not checked (its classes are clusters, which the judge does not know)."""
    if generator not in GENERATOR_MODELS:
        raise KeyError(f"unknown generator {generator!r}; valid: {list(GENERATOR_MODELS)}")
    if generator == "sd" and profile.sd.labels == "pseudo":
        return {"passed": True, "text": "not checked: DDPM on pseudo labels"}
    model, setting = GENERATOR_MODELS[generator]
    return model_check(profile, model, setting)


def model_check(profile: Profile, model: str, setting: str) -> dict:
    """The gate of the profile's ``model`` ("ddpm", "latent_ddpm") at one of its
    :func:`fidelity_settings`: ``{"passed", "text"}``."""
    row = next(r for r in generator_fidelity(profile, model) if r["setting"] == setting)
    return {"passed": row["passed"], "text": row["text"]}


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
    * ``generator_check``: the fidelity gate of the generator behind the set (:func:`generator_check`);
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
            row.update(generator_check=generator_check(profile, name)["text"],
                       seconds_per_1000=per_thousand(out.seconds, len(out)),
                       unet_evals_per_1000=per_thousand(out.unet_evals, len(out)),
                       training_seconds=generator_training_seconds(profile, name))
        rows.append(row)
    return pd.DataFrame(rows)


def sd_regime_screen(profile: Profile, S_values=(50, 100, 200, 400, 600), ws=None, n: int = 120) -> pd.DataFrame:
    """The SD regime check (:func:`regime_of`) at each timestep S and guidance w (default: the
    profile's w) on ``n`` ID training images drawn once, without training any classifier on the
    outliers: where the class starts to change, at a tenth of a sweep's cost. One row per
    (S, w): share leaving the source class, share on c_r, L2 moved vs the source's nearest other
    ID image, Fréchet distance, ``copy_regime``."""
    b = benchmark(profile)
    rows = []
    for S in S_values:
        for w in (ws or (profile.sd.w,)):
            p = override(profile, sd={"S": S, "w": w})
            key = stage_key(STAGES["sd_regime_screen"], p, inputs={"ddpm": ddpm_key(p),
                                                                   "judge": classifier_key(p, "ce", p.seeds[0])},
                            data=data_fingerprint(p, "id_train", "id_val", "id_test"), n=n)

            def compute(_, p=p):
                idx = torch.randperm(len(b.id_train.x), generator=torch.Generator().manual_seed(0))[:n]
                x0, y0 = b.id_train.x[idx], b.id_train.y[idx]
                out = semantic_discrepant(load_unet(ddpm(p)), x0, y0, b.n_classes, p.sd.S, p.sd.w, p.sd.stride,
                                          seed=p.sd.seed, batch_size=n, progress=False, clip_sample=p.sd.clip_sample)
                return regime_of(p, out["x"], y0, out["y_target"], x0, idx)

            rows.append({"S": S, "w": w, **cached(STAGES["sd_regime_screen"], key, compute, verbose=False)})
    return pd.DataFrame(rows)


def sd_candidates(screen: pd.DataFrame) -> list[dict]:
    """The settings a validation sweep trains, from :func:`sd_regime_screen` (rule fixed before
    the sweep): for each w, the smallest S outside the copy regime, i.e. the least change to
    the source image that still changes its class (paper 3's "limited S")."""
    out = []
    for w, part in screen.sort_values("S").groupby("w"):
        free = part[~part.copy_regime.astype(bool)]
        if len(free):
            out.append({"sd": {"S": int(free.S.iloc[0]), "w": float(w)}})
    return out


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


# ------------------------------------------------------------------ nuisances (digits_nuisance)
ORACLE = {"copies": 3, "epochs": 3, "width": 16, "lr": 1e-3, "seed": 0}   # the oracle digit reader: 97.8 % on
# digits_nuisance's ID test digits, 95.6 % on its near-OOD ones (60 s on 2 cores; README)


def has_nuisances(profile: Profile) -> bool:
    """Whether the profile's dataset knows every image's nuisances (``digits_nuisance``)."""
    return profile.data.dataset == "digits_nuisance"


def _needs_nuisances(profile: Profile) -> None:
    if not has_nuisances(profile):
        raise ValueError(f"profile {profile.name!r} reads dataset {profile.data.dataset!r}: nuisance measures need "
                         f"the digits_nuisance dataset (profile 'digits_nuisance'), whose nuisances are known")


def nuisance_oracle(profile: Profile) -> dict:
    """The ten-digit oracle (CE on :func:`ood_lib.nuisance.oracle_data`, settings :data:`ORACLE`) with
    its accuracy on the benchmark's ID and near-OOD test digits (``id_test_accuracy``,
    ``near_test_accuracy``): it judges
    whether an outlier's digit changed, and is never a model under test."""
    from . import nuisance

    _needs_nuisances(profile)
    b = benchmark(profile)
    key = nuisance_oracle_key(profile)

    def compute(_):
        cfg = ClassifierConfig(width=ORACLE["width"], epochs=ORACLE["epochs"], lr=ORACLE["lr"])
        x, y = nuisance.oracle_data(ORACLE["copies"], ORACLE["seed"])
        art = train_classifier(x, y, 10, cfg, loss="ce", seed=ORACLE["seed"])
        near = [v for v in b.ood_test.values() if v.group == "near" and v.y is not None]
        reader = load_classifier(art)
        for split, x, digits in (("id", b.id_test.x, _digits(b, b.id_test.y)),   # near sets keep the dataset's labels
                                 ("near", torch.cat([v.x for v in near]), torch.cat([v.y for v in near]))):
            art[f"{split}_test_accuracy"] = (predict(reader, x)[0].argmax(1) == digits).float().mean().item()
        return art

    return cached(STAGES["nuisance_oracle"], key, compute)


def _digits(b: Benchmark, y: torch.Tensor | None) -> torch.Tensor | None:
    """ID class indices as the digits they name (the oracle's classes)."""
    return None if y is None else torch.tensor([int(b.classes[i]) for i in y.tolist()])


def nuisance_measures(profile: Profile, x_out: torch.Tensor, y_source, y_target, source_index=None,
                      seed: int = 0) -> dict:
    """:func:`ood_lib.nuisance.nuisance_kept` and :func:`~ood_lib.nuisance.semantics_changed` of an
    outlier set. ``source_index``: each outlier's source in the ID training split (SD); without
    it (label-mixup, latent outliers) an outlier's nearest ID training image (pixel L2) stands
    for its source. The comparison images are random *other* ID training images (``seed``)."""
    from . import nuisance

    b = benchmark(profile)
    train = b.id_train
    if source_index is None:
        d = torch.cdist(x_out.flatten(1).double(), train.x.flatten(1).double(), compute_mode="donot_use_mm_for_euclid_dist")
        source_index = d.argmin(1)
    g = torch.Generator().manual_seed(seed)
    other = (source_index + torch.randint(1, len(train.x), source_index.shape, generator=g)) % len(train.x)
    alpha = nuisance.pool_alpha(train.index[source_index])
    kept = nuisance.nuisance_kept(x_out, train.x[source_index], alpha, train.x[other])
    oracle = load_classifier(nuisance_oracle(profile))
    verdict = predict(oracle, x_out)[0].argmax(1)
    return {**kept, **nuisance.semantics_changed(verdict, _digits(b, y_source), _digits(b, y_target))}


def nuisance_check(profile: Profile, generator: str, n: int = 600) -> dict:
    """:func:`nuisance_measures` of the profile's ``generator`` outliers (``n`` of them, drawn with
    a fixed seed): nuisance kept beside semantics changed, as the oracle reads them."""
    _needs_nuisances(profile)
    key = stage_key(STAGES["nuisance_check"], inputs={"outliers": outlier_key(profile, generator),
                                                       "oracle": nuisance_oracle_key(profile)},
                    data=data_fingerprint(profile, "id_train"), n=n)

    def compute(_):
        out = outliers(profile, generator)
        idx = torch.randperm(len(out), generator=torch.Generator().manual_seed(0))[:n]
        src = out.source_index[idx] if generator == "sd" else None
        y_target = out.y_target[idx] if out.y_target is not None else None
        return nuisance_measures(profile, out.x[idx], out.y_source[idx], y_target, src)

    return {"set": generator, **cached(STAGES["nuisance_check"], key, compute, verbose=False)}


def nuisance_oracle_key(profile: Profile) -> dict:
    return stage_key(STAGES["nuisance_oracle"], data=data_fingerprint(profile, "id_test", "ood_test"), **ORACLE)


def nuisance_screen(profile: Profile, S_values=(100, 200, 300, 400, 500, 600), ws=None, n: int = 120) -> pd.DataFrame:
    """Nuisance kept against semantics changed over the SD timestep S (and guidance ``ws``,
    default the profile's w) on ``n`` ID training images drawn once, as :func:`sd_regime_screen`
    does, without training any classifier: one row per (S, w)."""
    _needs_nuisances(profile)
    b = benchmark(profile)
    rows = []
    for S in S_values:
        for w in (ws or (profile.sd.w,)):
            p = override(profile, sd={"S": S, "w": w})
            key = stage_key(STAGES["nuisance_screen"], p, inputs={"ddpm": ddpm_key(p), "oracle": nuisance_oracle_key(p)},
                            data=data_fingerprint(p, "id_train"), n=n)

            def compute(_, p=p):
                idx = torch.randperm(len(b.id_train.x), generator=torch.Generator().manual_seed(0))[:n]
                out = semantic_discrepant(load_unet(ddpm(p)), b.id_train.x[idx], b.id_train.y[idx], b.n_classes,
                                          p.sd.S, p.sd.w, p.sd.stride, seed=p.sd.seed, batch_size=n, progress=False,
                                          clip_sample=p.sd.clip_sample)
                return nuisance_measures(p, out["x"], out["y_source"], out["y_target"], idx)

            rows.append({"S": S, "w": w, **cached(STAGES["nuisance_screen"], key, compute, verbose=False)})
    return pd.DataFrame(rows)
