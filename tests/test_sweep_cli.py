import pandas as pd

from ood_lib.__main__ import main
from ood_lib.report import results_dir


def test_sweep_cli_evaluates_each_setting_on_validation_splits_only(capsys):
    main(["sweep", "--profile", "smoke", "--S", "50", "100", "--out", "test_sweep"])
    out = results_dir("smoke")
    df = pd.read_csv(out / "test_sweep.csv")
    assert set(df.setting.str.contains('"S": 50')) == {True, False}
    assert set(df.ood_dataset) == {"digits_6to9_val"}      # the validation near-OOD split, not the test suite
    assert len(df) == 2 * 2 * 3                             # settings x losses x scores
    assert df.AUROC.between(0, 1).all()
    md = (out / "test_sweep.md").read_text()
    assert "python -m ood_lib sweep --profile smoke --S 50 100 --seeds 0 --out test_sweep" in md


def test_grid_cli_writes_the_loss_by_source_table():
    main(["grid", "--profile", "smoke", "--runs", "ce:none", "supcon:mixup", "--out", "test_grid"])
    out = results_dir("smoke")
    df = pd.read_csv(out / "test_grid.csv")
    assert set(map(tuple, df[["loss", "generator"]].drop_duplicates().values.tolist())) == {("ce", "none"),
                                                                                           ("supcon", "mixup")}
    md = (out / "test_grid.md").read_text()
    assert "python -m ood_lib grid --profile smoke --runs ce:none supcon:mixup --seeds 0 --out test_grid" in md
    assert "near AUROC" in md and "far AUROC" in md and "| mixup" in md
