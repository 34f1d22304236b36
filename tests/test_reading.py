"""The notebooks' closing readings say what their tables say (hand-made tables)."""
import pandas as pd

from ood_lib import reading


def _rows(cells, **extra):
    """Tidy rows: (loss, generator, score, group, AUROC) per seed 0."""
    return pd.DataFrame([{"loss": l, "generator": g, "score": s, "ood_group": grp, "AUROC": a, "seed": 0, **extra}
                         for l, g, s, grp, a in cells])


def test_loss_grid_names_the_best_model_ce_and_the_collapsed():
    df = _rows([("ce", "none", "knn", "near", 0.90), ("oe", "sd", "knn", "near", 0.95),
                ("energy_oe", "sd", "knn", "near", 0.97)])
    df["collapsed"] = df.loss == "energy_oe"
    text = reading.loss_grid(df)
    assert "`energy_oe` with `sd` outliers (97.0 %)" in text and "90.0 % for plain cross-entropy" in text
    assert "Collapsed" in text and "energy_oe:sd" in text


def test_scores_reading_ranks_within_each_group():
    df = _rows([("ce", "none", "msp", "near", 0.8), ("ce", "none", "knn", "near", 0.9),
                ("ce", "none", "msp", "far", 0.99), ("ce", "none", "knn", "far", 0.7)])
    text = reading.scores(df)
    assert "near-OOD: `knn` (90.0 %) best, `msp` (80.0 %) worst" in text
    assert "far-OOD: `msp` (99.0 %) best, `knn` (70.0 %) worst" in text


def test_table2_reading_and_copy_regime():
    df = _rows([("sd_three_head", "sd", "dod", "near", a) for a in (0.6, 0.9)])
    df["S"], df["w"], df["copy_regime"] = [100, 400], [1.0, 3.0], [True, False]
    text = reading.table2(df)
    assert "highest at S = 400, w = 3 (90.0 %)" in text and "lowest at S = 100, w = 1 (60.0 %)" in text
    assert "30.0 points" in text and "copy regime: S = 100, w = 1" in text


def test_claims_reading_counts_current_rules_only():
    table = pd.DataFrame({"id": ["a.v1", "a.v2", "b.v1"], "verdict": ["no", "yes", "partly"],
                          "superseded by": ["a.v2", "", ""]})
    text = reading.claims(table)
    assert "Of 2 current claim rules, 1 hold, 1 hold partly, 0 do not" in text and "`a.v2`" in text


def test_sd_regime_reading_says_copy_regime():
    regime = {"left_source": 0.1, "to_target": 0.05, "l2_to_source": 1.2, "l2_source_to_nearest_other": 5.0,
              "frechet": 0.09, "frechet_id_val": 0.1, "copy_regime": True}
    assert "**copy regime**" in reading.sd_regime(regime, 100, 1.0)
    assert "not in the copy regime" in reading.sd_regime({**regime, "left_source": 0.6, "copy_regime": False}, 400, 3)
