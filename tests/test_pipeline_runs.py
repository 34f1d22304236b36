"""The pipeline's classifier stage with every outlier source, on the smoke profile."""
import dataclasses

import pytest

from ood_lib import get_profile, pipeline

P = get_profile("smoke")


def test_classifier_key_holds_only_the_fields_its_loss_reads():
    louder = dataclasses.replace(P, clf=dataclasses.replace(P.clf, energy_lambda=0.5, sd_lambda=3.0))
    assert pipeline.classifier_key(louder, "ce", 0) == pipeline.classifier_key(P, "ce", 0)
    assert pipeline.classifier_key(louder, "energy_oe", 0) != pipeline.classifier_key(P, "energy_oe", 0)
    assert pipeline.classifier_key(louder, "oe", 0) == pipeline.classifier_key(P, "oe", 0)
    ce = pipeline.classifier_key(P, "ce", 0)["reads"]
    assert "clf.oe_lambda" not in ce and "clf.energy_lambda" not in ce and "clf.backbone" in ce
    # a metric loss reads the OE weight only when it trains on outliers
    assert "clf.oe_lambda" not in pipeline.classifier_key(P, "arcface", 0)["reads"]
    assert "clf.oe_lambda" in pipeline.classifier_key(P, "arcface", 0, "mixup")["reads"]
    assert pipeline.classifier_key(P, "oe", 0, "sd") != pipeline.classifier_key(P, "oe", 0, "latent")


def test_bad_runs_are_named():
    with pytest.raises(KeyError, match="valid losses"):
        pipeline.classifier_key(P, "focal", 0)
    with pytest.raises(KeyError, match="outlier source"):
        pipeline.classifier_key(P, "oe", 0, "gan")
    with pytest.raises(ValueError, match="trains on outliers"):
        pipeline.classifier_key(P, "oe", 0, "none")
    with pytest.raises(ValueError, match="latent"):
        pipeline.classifier_key(P, "oal", 0, "sd")
    with pytest.raises(ValueError, match="ignores outliers"):
        pipeline.classifier_key(P, "ce", 0, "sd")


def test_grid_runs_are_every_accepted_pair():
    runs = pipeline.grid_runs()
    assert len(runs) == 28 == len(set(runs))                 # 1 CE + 3 x 3 outlier losses + 4 x 4 metric + 2 OAL
    assert [g for loss, g in runs if loss == "ce"] == ["none"]
    assert [g for loss, g in runs if loss in ("oal", "oal_source_paired")] == ["latent", "latent"]
    assert {g for loss, g in runs if loss == "supcon"} == {"none", "sd", "mixup", "latent"}
    assert set(pipeline.DEFAULT_RUNS) <= set(runs)


def test_evaluate_loss_and_outlier_source_pairs():
    runs = [("ce", None), ("sd_three_head", "sd"), ("arcface", "mixup"), ("energy_oe", "latent"), ("oal", None)]
    df = pipeline.evaluate(P, runs)
    got = set(map(tuple, df[["loss", "generator"]].drop_duplicates().values.tolist()))
    assert got == {("ce", "none"), ("sd_three_head", "sd"), ("arcface", "mixup"), ("energy_oe", "latent"),
                   ("oal", "latent")}
    assert df.AUROC.between(0, 1).all() and df.ID_acc.between(0, 1).all()
    # every applicable score of every model on every OOD set, once
    assert df.groupby(["loss", "generator", "seed", "score"]).size().eq(df.ood_dataset.nunique()).all()
    scores = df.groupby("loss").score.agg(set)
    assert {"sd_binary", "dod"} <= scores["sd_three_head"] and "cosine_proxy" not in scores["sd_three_head"]
    assert "cosine_proxy" in scores["arcface"] and "vim" not in scores["arcface"]
    assert "dod" not in scores["ce"] and "dod_distance" in scores["ce"] and "odin" in scores["ce"]


def test_every_default_smoke_model_learns():
    """The smoke path tests trained models, not chance ones: each default run is >= 80 % on ID
    test in eval mode (at 4 epochs BatchNorm's running statistics lagged and all were at 16.7 %)."""
    df = pipeline.evaluate(P, list(pipeline.DEFAULT_RUNS))
    acc = df.groupby(["loss", "generator"]).ID_acc.first()
    assert len(acc) == len(pipeline.DEFAULT_RUNS)
    assert (acc >= 0.8).all(), acc[acc < 0.8].to_dict()
