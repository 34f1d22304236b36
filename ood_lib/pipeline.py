"""The pipeline's stages. Each returns its artefact, loading it from the cache when the
same config was computed before and computing (resumably) otherwise.

data -> ddpm -> sd_outliers -> classifier(loss, seed) -> evaluate -> report
"""
from __future__ import annotations

import json
import time
from functools import lru_cache

import pandas as pd
import torch

from .artifacts import cached
from .config import Profile, override, to_dict
from .data import Benchmark, load_digits
from .diffusion import load_unet, sample, train_ddpm
from .metrics import id_accuracy, ood_metrics
from .models import predict
from .outliers import make_sd_outliers
from .scores import SCORES, KNNScorer, compute_scores, msp
from .train import load_classifier, train_classifier

GENERATOR_OF_LOSS = {"ce": "none", "oe": "sd"}


@lru_cache(maxsize=4)
def benchmark(profile: Profile) -> Benchmark:
    return load_digits(profile.data)


def ddpm_key(profile: Profile) -> dict:
    return {"data": to_dict(profile.data), "ddpm": to_dict(profile.ddpm)}


def ddpm(profile: Profile) -> dict:
    """Train (or load) the class-conditional DDPM on the ID training split."""
    b = benchmark(profile)
    return cached("ddpm", ddpm_key(profile), lambda wd: train_ddpm(
        b.id_train.x, b.id_train.y, b.n_classes, profile.ddpm, wd))


def sd_key(profile: Profile) -> dict:
    return {"ddpm": ddpm_key(profile), "sd": to_dict(profile.sd)}


def sd_outliers(profile: Profile) -> dict:
    """SD outliers from the ID training split (see :func:`ood_lib.outliers.semantic_discrepant`)."""
    b = benchmark(profile)

    def compute(_):
        unet = load_unet(ddpm(profile))
        start = time.perf_counter()
        out = make_sd_outliers(unet, b.id_train.x, b.id_train.y, b.n_classes, profile.sd)
        out["seconds"] = time.perf_counter() - start
        return out

    return cached("sd_outliers", sd_key(profile), compute)


def classifier_key(profile: Profile, loss: str, seed: int) -> dict:
    clf = to_dict(profile.clf)
    key = {"data": to_dict(profile.data), "clf": clf, "loss": loss, "seed": seed}
    if GENERATOR_OF_LOSS[loss] == "sd":
        key["outliers"] = sd_key(profile)
    else:  # settings that only outlier losses read do not change this model
        for field in ("oe_lambda", "outlier_batch_size"):
            clf.pop(field)
    return key


def classifier(profile: Profile, loss: str, seed: int = 0) -> dict:
    """Train (or load) the small CNN with ``loss`` ("ce" or "oe" on SD outliers)."""
    if loss not in GENERATOR_OF_LOSS:
        raise KeyError(f"unknown loss {loss!r}; valid losses: {list(GENERATOR_OF_LOSS)}")
    b = benchmark(profile)

    def compute(workdir):
        outliers = sd_outliers(profile)["x"] if GENERATOR_OF_LOSS[loss] == "sd" else None
        start = time.perf_counter()
        art = train_classifier(b.id_train.x, b.id_train.y, b.n_classes, profile.clf, loss=loss,
                               outliers=outliers, seed=seed, workdir=workdir)
        art["seconds"] = time.perf_counter() - start
        return art

    return cached("classifier", classifier_key(profile, loss, seed), compute)


def score_sets(profile: Profile, loss: str, seed: int = 0, split: str = "test") -> dict:
    """Scores of one trained model on the ID set and every OOD set of ``split`` (cached).

    Returns ``{"id": {score: tensor}, "ood": {name: {score: tensor}}, "groups": {name: group},
    "id_acc": float, "train_seconds": float}``.
    """
    b = benchmark(profile)
    key = {"classifier": classifier_key(profile, loss, seed), "split": split, "knn_k": profile.knn_k}

    def compute(_):
        art = classifier(profile, loss, seed)
        model = load_classifier(art)
        knn = KNNScorer(predict(model, b.id_train.x)[1], k=profile.knn_k)
        id_set = b.id_test if split == "test" else b.id_val
        oods = b.ood_test if split == "test" else b.ood_val
        logits, feats = predict(model, id_set.x)
        return {"id": compute_scores(logits, feats, knn), "id_acc": id_accuracy(logits, id_set.y),
                "ood": {s.name: compute_scores(*predict(model, s.x), knn) for s in oods.values()},
                "groups": {s.name: s.group for s in oods.values()}, "train_seconds": art["seconds"]}

    return cached("scores", key, compute, verbose=False)


def evaluate(profile: Profile, losses=("ce", "oe"), split: str = "test") -> pd.DataFrame:
    """The tidy results table: one row per (ood_dataset, loss, score, seed)."""
    rows = []
    for loss in losses:
        for seed in profile.seeds:
            s = score_sets(profile, loss, seed, split)
            for ood_name, ood_scores in s["ood"].items():
                for score in SCORES:
                    rows.append({"profile": profile.name, "id_dataset": "digits_0to5", "ood_dataset": ood_name,
                                 "ood_group": s["groups"][ood_name], "generator": GENERATOR_OF_LOSS[loss],
                                 "loss": loss, "score": score, "seed": seed,
                                 **ood_metrics(s["id"][score], ood_scores[score]),
                                 "ID_acc": s["id_acc"], "train_seconds": s["train_seconds"]})
    return pd.DataFrame(rows)


def validation_sweep(profile: Profile, grid: list[dict], losses=("ce", "oe"), seeds=(0,)) -> pd.DataFrame:
    """Evaluate each setting of ``grid`` (profile overrides, e.g. ``{"sd": {"S": 200}}``) on the
    validation splits (ID val vs digits 6-9 val): model selection never sees a test set."""
    frames = []
    for setting in grid:
        df = evaluate(override(profile, seeds=tuple(seeds), **setting), losses=losses, split="val")
        df.insert(0, "setting", json.dumps(setting, sort_keys=True))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def confidence_on(profile: Profile, losses=("ce", "oe"), seed: int = 0) -> pd.DataFrame:
    """Mean max-softmax confidence of each trained model (columns) on ID test, every OOD test
    set and the SD outliers (rows): outliers teach OE something only where a model is
    confident on them."""
    b = benchmark(profile)
    sets = {"ID test": b.id_test.x, **{k: v.x for k, v in b.ood_test.items()}, "SD outliers": sd_outliers(profile)["x"]}
    table = {}
    for loss in losses:
        model = load_classifier(classifier(profile, loss, seed))
        table[loss] = {name: -msp(predict(model, x)[0]).mean().item() for name, x in sets.items()}
    return pd.DataFrame(table).round(3)


def conditional_accuracy(profile: Profile, ws=(0.0, 1.0, 3.0), n_per_class: int = 20, seed: int = 0) -> pd.DataFrame:
    """How well the DDPM follows its label: the CE classifier's accuracy on guided DDIM samples
    of each class, for each guidance weight w (a check of the sampler, not of OOD detection)."""
    b = benchmark(profile)
    key = {"ddpm": ddpm_key(profile), "judge": classifier_key(profile, "ce", seed), "ws": list(ws),
           "n_per_class": n_per_class, "seed": seed, "stride": profile.sd.stride, "clip_sample": profile.sd.clip_sample}

    def compute(_):
        unet = load_unet(ddpm(profile))
        judge = load_classifier(classifier(profile, "ce", seed))
        labels = torch.arange(b.n_classes).repeat_interleave(n_per_class)
        rows = []
        for w in ws:
            x = sample(unet, labels, w=w, stride=profile.sd.stride, seed=seed, clip_sample=profile.sd.clip_sample)
            logits, _ = predict(judge, x)
            rows.append({"w": w, "accuracy": id_accuracy(logits, labels),
                         "mean_msp": -msp(logits).mean().item()})
        return rows

    return pd.DataFrame(cached("conditional_accuracy", key, compute)).round(3)
