"""Evaluate a trained model: fit its scores on the ID training set, score an ID test set and
an OOD suite, and turn the scores into the tidy metrics table (one row per OOD set × score).

>>> scored = score_sets(model, bench.id_train, bench.id_test, bench.ood_test.values())
>>> metrics_table(scored, loss="ce", seed=0)          # AUROC, AUPR_In, AUPR_Out, FPR95, ID_acc
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd
import torch

from .config import ScoreConfig
from .images import ImageSet
from .metrics import id_accuracy, ood_metrics
from .scores import ScoreSuite


def score_sets(model: torch.nn.Module, train: ImageSet, id_set: ImageSet, ood_sets: Iterable[ImageSet],
               cfg: ScoreConfig = ScoreConfig(), outliers_x: torch.Tensor | None = None,
               scores: tuple | None = None) -> dict:
    """Scores of ``model`` on ``id_set`` and each OOD set (every score of ``scores`` that
    applies to the model, default all; see ``ood_lib.scores``). ``outliers_x``: the
    synthetic outliers the model trained with (DOD's voting bank).

    Returns ``{"id": {score: tensor}, "ood": {name: {score: tensor}}, "groups": {name: group},
    "id_acc": float, "scores": names}``.
    """
    suite = ScoreSuite(model, train.x, train.y, cfg, outliers_x, scores)
    id_scores, id_out = suite.score(id_set.x)
    ood_sets = list(ood_sets)
    return {"id": id_scores, "id_acc": id_accuracy(id_out["logits"], id_set.y),
            "ood": {s.name: suite(s.x) for s in ood_sets}, "groups": {s.name: s.group for s in ood_sets},
            "scores": suite.names}


def metrics_table(scored: dict, **labels) -> pd.DataFrame:
    """The tidy table of a :func:`score_sets` result: one row per (OOD set, score) with
    AUROC, AUPR_In, AUPR_Out, FPR95 (fractions) and ID_acc; ``labels`` (e.g. profile, loss,
    seed) become leading columns."""
    rows = [{**labels, "ood_dataset": name, "ood_group": scored["groups"][name], "score": score,
             **ood_metrics(scored["id"][score], ood_scores[score]), "ID_acc": scored["id_acc"]}
            for name, ood_scores in scored["ood"].items() for score in scored["id"]]
    return pd.DataFrame(rows)


def evaluate_model(model: torch.nn.Module, train: ImageSet, id_set: ImageSet, ood_sets: Iterable[ImageSet],
                   cfg: ScoreConfig = ScoreConfig(), outliers_x: torch.Tensor | None = None,
                   scores: tuple | None = None, **labels) -> pd.DataFrame:
    """:func:`score_sets` then :func:`metrics_table`: a trained model's tidy results."""
    return metrics_table(score_sets(model, train, id_set, ood_sets, cfg, outliers_x, scores), **labels)


# A model whose ID accuracy is more than this below CE's (same seed, same split) has collapsed.
COLLAPSE_BELOW_CE = 0.03


def mark_collapse(df: pd.DataFrame, ce_acc: dict | None = None) -> pd.DataFrame:
    """A copy of tidy rows with ``ID_acc_vs_ce`` (ID accuracy minus the CE model's of the same
    seed) and ``collapsed`` (more than :data:`COLLAPSE_BELOW_CE` below it). ``ce_acc``:
    ``{seed: CE ID accuracy}``; by default read from the rows' own ``ce`` / ``none`` model (a
    saved grid's ``metrics*.csv``)."""
    if ce_acc is None:
        ce = df[(df.loss == "ce") & (df.generator == "none")]
        if ce.empty:
            raise ValueError("no CE rows (loss 'ce', generator 'none') to compare ID accuracy with")
        ce_acc = ce.groupby("seed").ID_acc.first().to_dict()
    df = df.copy()
    df["ID_acc_vs_ce"] = df.ID_acc - df.seed.map(ce_acc)
    df["collapsed"] = df.ID_acc_vs_ce < -COLLAPSE_BELOW_CE
    return df
