import pandas as pd

from ood_lib.__main__ import main
from ood_lib.report import results_dir


def test_sweep_cli_evaluates_each_setting_on_validation_splits_only(capsys):
    main(["sweep", "--profile", "smoke", "--S", "50", "100", "--out", "test_sweep"])
    out = results_dir("smoke")
    df = pd.read_csv(out / "test_sweep.csv")
    assert set(df.setting.str.contains('"S": 50')) == {True, False}
    assert set(df.ood_dataset) == {"digits_6to9_val"}      # the validation near-OOD split, not the test suite
    # settings x (CE: 8 scores + OE: the same and DOD, whose voting bank is its SD outliers)
    assert len(df) == 2 * (8 + 9)
    assert df.AUROC.between(0, 1).all()
    md = (out / "test_sweep.md").read_text()
    assert "python -m ood_lib sweep --profile smoke --S 50 100 --seeds 0 --out test_sweep" in md


def test_sweep_cli_compares_classifier_sizes_with_their_id_accuracy():
    main(["sweep", "--profile", "smoke", "--S", "50", "--width", "4", "8", "--losses", "ce", "--out", "test_width"])
    out = results_dir("smoke")
    df = pd.read_csv(out / "test_width.csv")
    widths = df.setting.str.extract(r'"width": (\d+)')[0].astype(int)
    assert set(widths) == {4, 8}
    acc = df.groupby(widths).ID_acc.first()
    assert acc[4] != acc[8]                                   # two models, not one trained twice
    md = (out / "test_width.md").read_text()
    assert "--S 50 --width 4 8 --losses ce --seeds 0 --out test_width" in md
    assert "ID acc" in md and f"{100 * acc[8]:.1f}" in md     # the validation accuracy beside the AUROCs


def test_grid_cli_writes_the_loss_by_source_and_score_tables():
    main(["grid", "--profile", "smoke", "--runs", "ce:none", "supcon:mixup", "--suffix", "_test"])
    out = results_dir("smoke")
    df = pd.read_csv(out / "metrics_test.csv")
    assert set(map(tuple, df[["loss", "generator"]].drop_duplicates().values.tolist())) == {("ce", "none"),
                                                                                           ("supcon", "mixup")}
    grid = pd.read_csv(out / "loss_grid_test.csv")
    assert list(grid.generator) == ["none", "mixup"] and list(grid.loss) == ["ce", "supcon"]
    md = (out / "loss_grid_test.md").read_text()
    assert "python -m ood_lib grid --profile smoke --runs ce:none supcon:mixup --seeds 0 --score knn --suffix '_test'" in md
    assert "near AUROC" in md and "far AUROC" in md and "| mixup" in md
    # the k-NN column of the grid is the near-OOD AUROC of the score table
    near = pd.read_csv(out / "scores_near_test.csv", keep_default_na=False)
    assert near.knn.tolist() == grid["near AUROC"].tolist()
    assert near.loc[near.loss == "ce", "cosine_proxy"].item() == ""     # a metric score on a softmax model
    assert (out / "scores_far_test.tex").read_text().count(r"\toprule") == 1


def test_dod_alpha_sweep_reweights_the_cached_votes():
    from ood_lib import get_profile, pipeline
    from ood_lib.metrics import auroc

    alpha = get_profile("smoke").scores.dod_alpha
    main(["dod-alpha", "--profile", "smoke", "--runs", "sd_three_head:sd", "--alpha", "0", str(alpha), "2.5"])
    table = pd.read_csv(results_dir("smoke") / "dod_alpha_val.csv")
    s = pipeline.score_sets(get_profile("smoke"), "sd_three_head", 0, "val", "sd")
    near = s["ood"]["digits_6to9_val"]
    # alpha = 0 is the distance score, the profile's alpha is the cached DOD score
    assert table["alpha=0"].item() == round(100 * auroc(s["id"]["dod_distance"], near["dod_distance"]), 2)
    assert table[f"alpha={alpha:g}"].item() == round(100 * auroc(s["id"]["dod"], near["dod"]), 2)
    votes_id, votes_near = s["id"]["dod"] - s["id"]["dod_distance"], near["dod"] - near["dod_distance"]
    assert table["alpha=2.5"].item() == round(100 * auroc(s["id"]["dod_distance"] + 2.5 * votes_id,
                                                          near["dod_distance"] + 2.5 * votes_near), 2)


def test_paper_tables_cli_hands_every_table_and_the_tidy_evidence_to_the_claims(monkeypatch):
    """The CLI merges what each ablations.write_* returns: Table 4's tidy rows reach the claims
    under "table4" (a regression: they once arrived wrapped in write_sd_as_test's dict)."""
    from ood_lib import ablations

    rows = pd.DataFrame({"loss": ["ce"], "generator": ["none"], "seed": [0]})
    seen = {}
    monkeypatch.setattr(ablations, "write_sd_tables", lambda p, o, s, S, w, c: seen.update(S=S, w=w) or
                        {"table2": rows, "sd_grid": rows})
    monkeypatch.setattr(ablations, "write_oal_tables", lambda *a: {"ablation": rows})
    monkeypatch.setattr(ablations, "write_paper1", lambda *a: {"paper1": rows})
    monkeypatch.setattr(ablations, "write_sd_as_test", lambda *a: {"table4_table": rows, "table4": rows,
                                                                   "table4_regime": rows})

    def write_claims(tables, profile, outdir, suffix, command):
        seen.update(evidence=ablations.evidence(tables), suffix=suffix, command=command)
        return rows

    monkeypatch.setattr(ablations, "write_claims", write_claims)
    main(["paper-tables", "--profile", "smoke", "--full"])
    assert set(seen["evidence"]) == {"sd_grid", "paper1", "table4"} and seen["evidence"]["table4"] is rows
    assert (seen["S"], seen["w"], seen["suffix"]) == ((100, 300), (1.0, 3.0), "_full")
    assert seen["command"] == "python -m ood_lib paper-tables --profile smoke --full"


def test_grid_cli_default_trains_the_default_runs():
    main(["grid", "--profile", "smoke", "--default", "--suffix", "_default_test"])
    from ood_lib import pipeline

    out = results_dir("smoke")
    grid = pd.read_csv(out / "loss_grid_default_test.csv")
    assert set(zip(grid.loss, grid.generator)) == set(pipeline.DEFAULT_RUNS)
    assert "grid --profile smoke --default" in (out / "loss_grid_default_test.md").read_text().split("\n")[0]
