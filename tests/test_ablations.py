"""The papers' tables (ood_lib.ablations) on hand-made tidy results, and the settings contract."""
import dataclasses

import pandas as pd
import pytest
import torch

from ood_lib import ablations, get_profile, pipeline
from ood_lib.config import ClassifierConfig, DDPMConfig, config_hash, override, to_dict
from ood_lib.diffusion import build_unet
from ood_lib.train import augment


def rows(loss, generator, score, near, far, acc, seeds=(0, 1), **extra):
    """Tidy rows: one near and one far set; ``near``/``far``/``acc`` are per-seed values."""
    out = []
    for i, seed in enumerate(seeds):
        for name, group, value in (("n", "near", near[i]), ("f", "far", far[i])):
            out.append({"loss": loss, "generator": generator, "score": score, "seed": seed, "ood_dataset": name,
                        "ood_group": group, "AUROC": value, "FPR95": 1 - value, "ID_acc": acc[i], **extra})
    return out


def test_paper1_table_pairs_softmax_ce_with_oe_and_reports_the_change():
    df = pd.DataFrame(rows("ce", "none", "msp", [0.90, 0.92], [0.8, 0.8], [0.99, 0.99])
                      + rows("oe", "mixup", "msp", [0.95, 0.97], [0.9, 0.9], [0.98, 0.98])
                      + rows("arcface", "none", "cosine_proxy", [0.93, 0.93], [0.85, 0.85], [0.99, 0.99])
                      + rows("arcface", "mixup", "cosine_proxy", [0.92, 0.92], [0.95, 0.95], [0.99, 0.99])
                      + rows("arcface", "sd", "cosine_proxy", [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]))
    t = ablations.paper1_table(df, {"ce": "msp", "oe": "msp", "arcface": "cosine_proxy"})
    assert list(t.index) == ["softmax (CE / OE)", "arcface"]
    soft = t.loc["softmax (CE / OE)"]
    assert soft["near AUROC, no outliers"] == "91.0 ± 1.4"        # mean and sample std of 90, 92
    assert soft["near AUROC, label-mixup"] == "96.0 ± 1.4"
    assert soft["near AUROC change"] == "+5.0"
    assert t.loc["arcface", "near AUROC change"] == "-1.0"         # the SD rows are ignored
    assert t.loc["arcface", "far AUROC change"] == "+10.0"


def test_sd_grid_table():
    df = pd.DataFrame([r for S in (50, 100) for w in (2.0, 3.0)
                       for r in rows("sd_three_head", "sd", "dod", [S / 200 + w / 10] * 2, [0.9] * 2, [0.99] * 2,
                                     S=S, w=w)])
    df["outlier_check"] = [f"{int(S)} % left source" for S in df.S]     # pipeline.mark_rows' regime text
    t = ablations.sd_grid_table(df)
    assert list(t.index) == [50, 100] and list(t.columns) == ["w = 2", "w = 2 regime", "w = 3", "w = 3 regime"]
    assert t.loc[100, "w = 3"] == "80.0 ± 0.0" and t.loc[50, "w = 2 regime"] == "50 % left source"


def test_default_settings_reuse_the_default_runs_models():
    P = get_profile("digits")
    cfg = ablations.settings(P, full=False)
    default = set(pipeline.DEFAULT_RUNS)
    assert set(ablations.paper1_runs(cfg["metric_losses"])) <= default
    assert {("oe", g) for g in ("sd", "mixup", "latent")} | {("oal", "latent")} <= default
    assert ("sd_three_head", "sd") in default and cfg["S"] == (P.sd.S,) and cfg["w"] == (P.sd.w,)
    assert all(not v for v in cfg["oal_variants"].values()) and set(cfg["test_runs"]) == default
    assert cfg["profile"].seeds == (0,) and cfg["suffix"] == ""
    full = ablations.settings(P, full=True)
    assert full["S"] == (50, 100, 150, 200, 300, 400, 500, 600) and full["w"] == (1.0, 2.0, 3.0, 4.0)
    assert full["suffix"] == "_full" and full["profile"].seeds == P.seeds and len(full["oal_variants"]) == 4
    smoke = ablations.settings(get_profile("smoke"), full=True)   # the --full code path on a 2 x 2 grid
    assert smoke["S"] == (100, 300) and smoke["w"] == (1.0, 3.0)


def test_table2_grid_is_checked_against_the_diffusion_length():
    with pytest.raises(ValueError, match="table2_S"):
        override(get_profile("smoke"), table2_S=(100, 5000))
    with pytest.raises(ValueError, match="at least one value"):
        override(get_profile("smoke"), table2_w=())


def test_fields_added_later_keep_old_cache_keys():
    assert "attention" not in to_dict(DDPMConfig()) and "augment" not in to_dict(ClassifierConfig())
    assert config_hash(DDPMConfig()) == config_hash({k: v for k, v in to_dict(DDPMConfig()).items()})
    assert to_dict(DDPMConfig(attention=True))["attention"] is True
    assert config_hash(DDPMConfig(attention=True)) != config_hash(DDPMConfig())


def test_unet_attention_in_the_two_lowest_resolution_levels():
    cfg = DDPMConfig(block_out_channels=(16, 32, 32, 32), attention=True)
    unet = build_unet(cfg, n_classes=3, image_size=16, channels=3)
    assert unet.config.down_block_types == ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    assert unet.config.up_block_types == ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    plain = build_unet(dataclasses.replace(cfg, attention=False), 3, 16, 3)
    assert set(plain.config.down_block_types) == {"DownBlock2D"}


def test_augment_is_a_shifted_window_of_the_padded_image_maybe_flipped():
    x = torch.rand(64, 3, 8, 8)
    a = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, augment(x, torch.Generator().manual_seed(0)))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(len(x)):
        windows = [padded[i, :, r:r + 8, c:c + 8] for r in range(9) for c in range(9)]
        plain = any(torch.equal(a[i], w) for w in windows)
        flipped = any(torch.equal(a[i].flip(-1), w) for w in windows)
        assert plain or flipped
        flips += flipped and not plain
    assert 16 < flips < 48                                           # about half are flipped
