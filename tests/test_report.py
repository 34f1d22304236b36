"""Report helpers: LaTeX / file export of summary tables, ROC curves, t-SNE embedding maps."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ood_lib import report  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """t-SNE on ~100 points is fastest single-threaded; OpenMP threads only contend with other jobs."""
    with threadpool_limits(1):
        yield


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _tidy(seeds=(0, 1)):
    """Tidy results like the pipeline's: 2 generators x 1 loss x 2 scores x seeds x 3 OOD sets."""
    rng = np.random.default_rng(0)
    rows = []
    for gen in ("sd", "mixup"):
        for score in ("msp", "energy"):
            for seed in seeds:
                for name, group in (("digits_6to9", "near"), ("fashion", "far"), ("noise_50%", "far")):
                    rows.append({"generator": gen, "loss": "oe", "score": score, "seed": seed,
                                 "ood_dataset": name, "ood_group": group,
                                 "AUROC": rng.uniform(0.8, 1.0), "FPR95": rng.uniform(0, 0.5),
                                 "ID_acc": 0.986 + 0.001 * seed})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ to_latex

def test_to_latex_summary_table_structure_and_escaping():
    table = report.summary_table(_tidy())
    tex = report.to_latex(table, caption="AUROC & FPR95 (%)", label="tab:main")
    assert tex.startswith(r"\begin{table}") and tex.rstrip().endswith(r"\end{table}")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1
    assert r"\caption{AUROC \& FPR95 (\%)}" in tex
    assert r"\label{tab:main}" in tex
    # specials escaped, never a bare underscore / percent
    assert r"digits\_6to9 AUROC" in tex and "digits_6to9" not in tex
    assert r"noise\_50\% FPR95" in tex
    assert "±" not in tex and r"$\pm$" in tex
    # one body row per table row, with as many cells as columns (3 index levels + 3x2 metrics + ID acc)
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(table) == 4
    assert all(line.endswith(r"\\") and line.count(" & ") == 3 + table.shape[1] - 1 for line in body)
    header = tex.split(r"\toprule")[1].split(r"\midrule")[0].strip()
    assert header.startswith("generator & loss & score & ")
    assert r"\begin{tabular}{lll" + "r" * table.shape[1] + "}" in tex


def test_to_latex_pm_and_single_level_columns():
    table = pd.DataFrame({"near AUROC": ["98.6 ± 0.1"], "ID acc": ["99.0"]},
                         index=pd.MultiIndex.from_tuples([("sd", "oe_loss", "msp")],
                                                         names=["generator", "loss", "score"]))
    tex = report.to_latex(table)
    assert r"98.6 $\pm$ 0.1" in tex
    assert r"sd & oe\_loss & msp & 98.6 $\pm$ 0.1 & 99.0 \\" in tex
    assert r"\caption" not in tex and r"\label" not in tex


def test_to_latex_compact_table_rows():
    table = report.compact_table(_tidy())
    tex = report.to_latex(table)
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(table)
    assert "near AUROC & near FPR95 & far AUROC & far FPR95 & ID acc" in tex


# ------------------------------------------------------------------ write_table

def test_write_table_three_files_and_csv_roundtrip(tmp_path):
    table = report.summary_table(_tidy())
    paths = report.write_table(table, tmp_path / "tables", "main", "Main results")
    assert set(paths) == {"md", "tex", "csv"}
    assert all(p.exists() and p.parent == tmp_path / "tables" for p in paths.values())
    assert [p.name for p in paths.values()] == ["main.md", "main.tex", "main.csv"]
    md = paths["md"].read_text()
    assert md.startswith("Main results\n\n") and report.to_markdown(table) in md
    assert paths["tex"].read_text() == report.to_latex(table, caption="Main results")
    back = pd.read_csv(paths["csv"], dtype=str, keep_default_na=False)
    assert list(back.columns[:3]) == ["generator", "loss", "score"]
    assert list(back.columns[3:]) == [f"{a} {b}" for a, b in table.columns]
    assert back.iloc[:, 3:].values.tolist() == table.astype(str).values.tolist()
    assert back[["generator", "loss", "score"]].apply(tuple, axis=1).tolist() == list(table.index)


def test_write_table_single_seed_numbers_roundtrip(tmp_path):
    table = report.compact_table(_tidy(seeds=(0,)))  # one seed: plain means, e.g. "98.6"
    paths = report.write_table(table, tmp_path, "compact", "Compact")
    back = pd.read_csv(paths["csv"])
    np.testing.assert_allclose(back["ID acc"].to_numpy(), table["ID acc"].astype(float).to_numpy())


# ------------------------------------------------------------------ roc_curves

def _scored():
    g = torch.Generator().manual_seed(0)
    id_msp = torch.rand(50, generator=g)  # in [0, 1)
    return {
        "id": {"msp": id_msp, "energy": torch.randn(50, generator=g)},
        "ood": {
            "perfect": {"msp": 2 + torch.rand(30, generator=g), "energy": torch.randn(30, generator=g) + 1},
            "overlap": {"msp": torch.rand(40, generator=g) + 0.5, "energy": torch.randn(40, generator=g)},
        },
        "logits": "ignored",
    }


def test_roc_curves_perfect_separation_and_line_counts(tmp_path):
    scored = _scored()
    fig = report.roc_curves(scored, path=tmp_path / "roc.png", title="ROC")
    assert (tmp_path / "roc.png").stat().st_size > 0
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["msp", "energy"]
    for ax in axes:
        assert len(ax.get_lines()) == len(scored["ood"]) + 1
        diag = ax.get_lines()[-1]
        assert diag.get_linestyle() == "--"
        np.testing.assert_array_equal(diag.get_xdata(), [0, 1])
        np.testing.assert_array_equal(diag.get_ydata(), [0, 1])
    texts = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert len(texts) == 2 and texts[0] == "perfect: 100.0"
    assert axes[0].get_legend().get_title().get_text() == "AUROC (%)"
    # the legend sits below its panel, outside the curves
    assert axes[0].get_legend().get_bbox_to_anchor().y0 < axes[0].get_window_extent().y0
    # perfect curve passes through (0, 1)
    perfect = axes[0].get_lines()[0]
    pts = set(zip(perfect.get_xdata().tolist(), perfect.get_ydata().tolist()))
    assert (0.0, 1.0) in pts
    # legend AUROC agrees with ood_metrics for the overlapping set
    from ood_lib.metrics import ood_metrics
    expected = 100 * ood_metrics(scored["id"]["msp"], scored["ood"]["overlap"]["msp"])["AUROC"]
    assert texts[1] == f"overlap: {expected:.1f}"
    assert 50 < expected < 100


def test_roc_curves_score_subset_and_orientation():
    scored = _scored()
    # reversed scores (OOD lower) give AUROC 0 and a curve along the bottom then right edge
    scored["ood"] = {"reversed": {"msp": scored["id"]["msp"] - 5, "energy": scored["id"]["energy"]}}
    fig = report.roc_curves(scored, scores=["msp"])
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_legend().get_texts()[0].get_text() == "reversed: 0.0"
    line = ax.get_lines()[0]
    assert (1.0, 0.0) in set(zip(line.get_xdata().tolist(), line.get_ydata().tolist()))


# ------------------------------------------------------------------ embedding_maps

def _clusters(n_id=60, n_out=50, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.zeros(d)
    mu[0] = 6.0
    id_x = torch.randn(n_id, d, generator=g) + mu
    out_x = torch.randn(n_out, d, generator=g) - mu
    return id_x, out_x


def test_embedding_maps_counts_kinds_and_determinism(tmp_path):
    id_x, out_x = _clusters()
    g = torch.Generator().manual_seed(1)
    panels = {
        "epoch 1": {"ID test": (id_x, "id"), "near": (torch.randn(25, 16, generator=g), "near"),
                    "far": (torch.randn(10, 16, generator=g) + 3, "far"), "SD": (out_x, "outlier")},
        "final": {"ID test": (id_x, "id"), "SD": (out_x, "outlier")},
    }
    fig, coords = report.embedding_maps(panels, path=tmp_path / "tsne.png", title="t", max_per_set=40,
                                        perplexity=10.0)
    assert (tmp_path / "tsne.png").stat().st_size > 0
    assert list(coords) == ["epoch 1", "final"] and len(fig.axes) == 2
    df = coords["epoch 1"]
    assert list(df.columns) == ["x", "y", "set", "kind"]
    assert df["set"].value_counts().to_dict() == {"ID test": 40, "SD": 40, "near": 25, "far": 10}
    assert df.groupby("set")["kind"].first().to_dict() == {"ID test": "id", "SD": "outlier", "near": "near",
                                                           "far": "far"}
    assert np.isfinite(df[["x", "y"]].to_numpy()).all()
    # one legend beside the panels (none over the points), one entry per set; outliers drawn as
    # vermillion crosses, ID black, every set its own colour
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ID test", "near", "far", "SD"]
    colours = {c.get_label(): c.get_facecolor()[0] if c.get_label() != "SD" else c.get_edgecolor()[0]
               for c in fig.axes[0].collections}
    r, g_, b, _ = colours["SD"]
    assert r > 0.6 and r > g_ + 0.3 and r > b + 0.3          # vermillion
    assert tuple(colours["ID test"][:3]) == (0.0, 0.0, 0.0)
    assert len({tuple(np.round(c[:3], 3)) for c in colours.values()}) == 4
    # same seed -> identical coordinates
    _, again = report.embedding_maps(panels, max_per_set=40, perplexity=10.0)
    for panel in panels:
        pd.testing.assert_frame_equal(coords[panel], again[panel])


def test_embedding_maps_subsample_is_seeded():
    id_x, out_x = _clusters()
    panels = {"p": {"ID": (id_x, "id"), "out": (out_x, "outlier")}}
    _, a = report.embedding_maps(panels, max_per_set=20, seed=0, perplexity=5.0)
    _, b = report.embedding_maps(panels, max_per_set=20, seed=1, perplexity=5.0)
    assert len(a["p"]) == len(b["p"]) == 40
    assert not np.allclose(a["p"][["x", "y"]].to_numpy(), b["p"][["x", "y"]].to_numpy())


def test_embedding_maps_separates_clusters():
    id_x, out_x = _clusters()
    _, coords = report.embedding_maps({"final": {"ID": (id_x, "id"), "SD": (out_x, "outlier")}},
                                      max_per_set=400, perplexity=15.0)
    df = coords["final"]
    xy, is_out = df[["x", "y"]].to_numpy(), (df["kind"] == "outlier").to_numpy()
    c_id, c_out = xy[~is_out].mean(0), xy[is_out].mean(0)
    pred = np.linalg.norm(xy - c_out, axis=1) < np.linalg.norm(xy - c_id, axis=1)
    assert (pred == is_out).mean() > 0.95


def test_embedding_maps_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        report.embedding_maps({"p": {"a": (torch.randn(10, 4), "weird")}})


def test_score_histograms_fill_their_grid_and_label_axes():
    scored = _scored()
    six = {"id": {f"s{i}": scored["id"]["msp"] + i for i in range(6)},
           "ood": {k: {f"s{i}": v["msp"] + i for i in range(6)} for k, v in scored["ood"].items()}}
    fig = report.score_histograms(six, title="t")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(fig.axes) == 6                       # 2 rows of 3, no empty panel
    assert all(ax.get_ylabel() == "density" and ax.get_xlabel().startswith(ax.get_title()) for ax in visible)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ID test", *scored["ood"]]


def test_set_colours_are_distinct_and_id_black():
    names = ["ID test", *[f"set{i}" for i in range(8)]]
    colours = report.set_colours(names)
    assert colours["ID test"] == "#000000" and len(set(colours.values())) == 9
