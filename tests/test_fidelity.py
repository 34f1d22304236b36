"""The generator fidelity check and gate (ood_lib.fidelity, pipeline.generator_fidelity): a
generator that draws noise is marked GENERATOR FAILED and its models leave the claims."""
import pandas as pd
import pytest
import torch

from ood_lib import ablations, claims, fidelity, get_profile, pipeline, report
from ood_lib.diffusion import build_unet
from ood_lib.config import DDPMConfig


def digit_like(n, seed=0):
    """Dark images with one bright bar each: what the reference (real) images look like."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        r = int(torch.randint(4, 20, (1,), generator=g))
        x[i, 0, r:r + 4, 6:22] = 1.0
    return x


def test_degenerate_flags_noise_saturation_and_blanks_by_the_reference_range():
    ref = digit_like(50)
    noise = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    blank = torch.zeros(10, 1, 28, 28)
    bright = torch.ones(10, 1, 28, 28)
    bright[:, :, :2] = 0          # a white page with a dark stripe: bright, smooth, not blank
    masks = fidelity.degenerate(torch.cat([digit_like(10, seed=2), noise, blank, bright]), ref)
    assert masks["any"].tolist() == [False] * 10 + [True] * 30
    assert masks["noise"][10:20].all() and masks["blank"][20:30].all() and masks["saturated"][30:].all()
    assert not masks["noise"][20:].any()


def test_fidelity_counts_by_hand_and_the_gate_names_what_failed():
    labels = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])            # class 0: 1/2, class 1: 2/2
    x = digit_like(4)
    feats = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    r = fidelity.fidelity(pred, labels, x, digit_like(20, seed=5), feats, feats + 0.1, feats, 2)
    assert r["accuracy"] == 0.75 and r["per_class"] == [0.5, 1.0] and r["min_class_accuracy"] == 0.5
    assert r["degenerate"] == 0.0 and r["frechet_id_test"] == pytest.approx(0.03, abs=1e-6)
    assert fidelity.gate(r) == {"passed": False, "text": "GENERATOR FAILED: 75 % on-class (gate 90 %)"}
    ok = {**r, "accuracy": 0.95, "degenerate": 0.05}
    assert fidelity.gate(ok) == {"passed": True, "text": "ok: 95 % on-class, 5 % degenerate"}
    assert "6 % degenerate (gate 5 %)" in fidelity.gate({**ok, "degenerate": 0.06})["text"]


class NoiseUNet(torch.nn.Module):
    """A hand-made generator that outputs noise: its 'predicted noise' is random and large,
    whatever the image, time or class."""

    def __init__(self, unet):
        super().__init__()
        self.config = unet.config
        self.class_embedding = unet.class_embedding
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.g = torch.Generator().manual_seed(0)

    def forward(self, x, t, class_labels=None):
        return type("Out", (), {"sample": 3 * torch.randn(x.shape, generator=self.g)})()


def test_a_noise_generator_fails_the_gate_and_its_models_leave_the_claims():
    profile = get_profile("smoke")
    b = pipeline.benchmark(profile)
    unet = NoiseUNet(build_unet(DDPMConfig(block_out_channels=(8, 16, 16)), b.n_classes))

    def judge(x):                                # a fixed judge: always class 0, pixel means as features
        return torch.zeros(len(x), dtype=torch.long), x.flatten(1)[:, :4]

    rows = pipeline.fidelity_rows(profile, unet, "ddpm", n_per_class=4, judge=judge)
    assert [r["setting"] for r in rows] == ["mixup", "sd", "w=0"]
    mixup = rows[0]
    assert not mixup["passed"] and mixup["text"].startswith("GENERATOR FAILED")
    assert mixup["degenerate"] > 0.5 and mixup["accuracy"] == pytest.approx(1 / b.n_classes)
    assert mixup["samples"].shape == (4 * b.n_classes, 1, 28, 28)

    # its models, as pipeline.mark_rows marks them: every table shows it, the claims leave them out
    def model(loss, generator, score, aurocs, failed):
        return [{"generator": generator, "loss": loss, "score": score, "seed": s, "ood_dataset": "near_set",
                 "ood_group": "near", "AUROC": a, "FPR95": 1 - a, "ID_acc": 0.99, "collapsed": False,
                 "generator_check": mixup["text"] if failed else "", "generator_failed": failed}
                for s, a in enumerate(aurocs)]
    df = pd.DataFrame(model("ce", "none", "msp", [0.90, 0.91, 0.92], False)
                      + model("oe", "mixup", "msp", [0.97, 0.98, 0.99], True))
    assert report.compact_table(df).loc[("mixup", "oe", "msp"), "marks"].startswith("GENERATOR FAILED")
    tables = {"paper1": df}
    assert ablations.failed_generator_rows(tables) == [f"paper1: oe/mixup seed {s} ({mixup['text']})" for s in range(3)]
    kept = ablations.evidence(tables)["paper1"]
    assert set(kept.generator) == {"none"}          # left out before any rule reads them
    r = claims.judge_all(ablations.evidence(tables)).set_index("id").loc["P1.mixup-improves-every-loss.v2"]
    assert r["verdict"] == "not run"               # without the failed generator there is nothing to compare
    passed = {"paper1": df.assign(generator_failed=False, generator_check="")}
    assert ablations.failed_generator_rows(passed) == []
    r = claims.judge_all(ablations.evidence(passed)).set_index("id").loc["P1.mixup-improves-every-loss.v2"]
    assert r["verdict"] == "yes"


def test_checking_a_generator_not_yet_trained_trains_it_first_without_deadlock(tmp_path, monkeypatch):
    """The check of a model not yet in the cache trains it, whose training prints the same check:
    the model is fetched before any setting's lock, so the nested check neither waits on its
    caller's lock nor computes twice."""
    import threading

    from ood_lib import get_profile, pipeline

    monkeypatch.setenv("OOD_CACHE", str(tmp_path))
    P = get_profile("smoke")
    done = {}
    worker = threading.Thread(target=lambda: done.update(rows=pipeline.generator_fidelity(P, "latent_ddpm")),
                              daemon=True)
    worker.start()
    worker.join(timeout=540)
    assert "rows" in done, "generator_fidelity waited on its own lock"
    assert [r["setting"] for r in done["rows"]] == list(pipeline.fidelity_settings(P, "latent_ddpm"))
    assert len(list((tmp_path / "generator_fidelity").glob("*/artifact.pt"))) == len(done["rows"])
