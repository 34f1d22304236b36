"""What makes a cached result trustworthy: complete stage keys, artefacts that prove they are
intact, the SD regime check, Table 4's control and the SD selection rule."""
import dataclasses
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from ood_lib import pipeline
from ood_lib.artifacts import atomic_save, cached, safe_load, stage_dir
from ood_lib.config import LOSS_FIELDS, ClassifierConfig, get_profile, override
from ood_lib.diagnostics import COPY_REGIME_BELOW, regime_text, sd_regime

P = get_profile("smoke")

# ----------------------------------------------------------------------------- artefact integrity


def test_a_damaged_artefact_is_refused_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_CACHE", str(tmp_path))
    weights = {"w": torch.linspace(0, 1, 4096)}
    cached("stage", {"k": 1}, lambda wd: weights, verbose=False)
    path = stage_dir("stage", {"k": 1}) / "artifact.pt"
    assert torch.equal(cached("stage", {"k": 1}, lambda wd: None, verbose=False)["w"], weights["w"])
    # 64 bytes zeroed in the middle: the file still unpickles, with one tensor changed
    blob = bytearray(path.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 64] = bytes(64)
    path.write_bytes(bytes(blob))
    with pytest.raises(RuntimeError, match="damaged") as err:
        cached("stage", {"k": 1}, lambda wd: None, verbose=False)
    assert str(path) in str(err.value) and "delete" in str(err.value) and "recomputes" in str(err.value)


def test_checkpoints_carry_a_checksum_and_a_file_without_one_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"step": 3}, path)
    assert (tmp_path / "checkpoint.pt.sha256").read_text().strip() and safe_load(path) == {"step": 3}
    (tmp_path / "checkpoint.pt.sha256").unlink()
    with pytest.raises(RuntimeError, match="no checksum"):
        safe_load(path)


def _copy_artifact(src: Path, dst: Path) -> None:
    """What a person who moves cache folders by hand does: the artefact and its checksum."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("artifact.pt", "artifact.pt.sha256"):
        (dst / name).write_bytes((src / name).read_bytes())


def test_an_artefact_of_another_config_copied_into_a_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_CACHE", str(tmp_path))
    cached("ddpm", {"steps": 300}, lambda wd: {"steps": 300}, verbose=False)
    target = stage_dir("ddpm", {"steps": 30})
    _copy_artifact(stage_dir("ddpm", {"steps": 300}), target)
    with pytest.raises(RuntimeError, match="copied or moved") as err:
        cached("ddpm", {"steps": 30}, lambda wd: {"steps": 30}, verbose=False)
    assert str(target) in str(err.value) and "Delete" in str(err.value)
    assert cached("ddpm", {"steps": 300}, lambda wd: None, verbose=False) == {"steps": 300}


def test_an_artefact_of_another_stage_copied_into_a_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_CACHE", str(tmp_path))
    cached("autoencoder", {"k": 1}, lambda wd: {"ae_config": {}}, verbose=False)
    # same key, other stage: the folder name alone would match
    _copy_artifact(stage_dir("autoencoder", {"k": 1}), stage_dir("ddpm", {"k": 1}))
    with pytest.raises(RuntimeError, match="stored by stage 'autoencoder'"):
        cached("ddpm", {"k": 1}, lambda wd: {"unet_config": {}}, verbose=False)


def test_a_damaged_checkpoint_is_dropped_saying_so_and_training_restarts(tmp_path, capsys):
    from ood_lib.artifacts import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    assert load_checkpoint(path) is None
    atomic_save({"step": 3}, path)
    assert load_checkpoint(path) == {"step": 3}
    path.write_bytes(path.read_bytes()[:-10])                 # stopped mid-write, old checksum beside it
    assert load_checkpoint(path, "DDPM training") is None
    said = capsys.readouterr().out
    assert "dropping checkpoint.pt" in said and "DDPM training starts from the beginning" in said
    assert not path.exists() and not (tmp_path / "checkpoint.pt.sha256").exists()


def test_the_file_lands_before_its_checksum(tmp_path, monkeypatch):
    import os

    order = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(Path(b).name), real(a, b)))
    atomic_save({"step": 1}, tmp_path / "checkpoint.pt")
    assert order == ["checkpoint.pt", "checkpoint.pt.sha256"]


# ----------------------------------------------------------------------------- stage keys
# What each stage's key must depend on, field by field (sections whole with "*"); the data
# splits are checked separately. Written out here, apart from the declarations in pipeline.STAGES.
CLF_COMMON = {f"clf.{f.name}" for f in dataclasses.fields(ClassifierConfig)} - {
    f"clf.{x}" for fields in LOSS_FIELDS.values() for x in fields}
EXPECTED = {
    "autoencoder": (lambda p: pipeline.autoencoder_key(p), {"autoencoder.*"}),
    "pseudo_labels": (lambda p: pipeline.pseudo_labels_key(p), {"autoencoder.*", "sd.seed"}),
    "ddpm": (lambda p: pipeline.ddpm_key(p), {"ddpm.*"}),
    "ddpm_pseudo": (lambda p: pipeline.ddpm_key(p, "pseudo"), {"ddpm.*", "autoencoder.*", "sd.seed"}),
    "latent_ddpm": (lambda p: pipeline.latent_ddpm_key(p), {"autoencoder.*", "latent_ddpm.*"}),
    "sd": (lambda p: pipeline.sd_key(p), {"ddpm.*", "sd.*", "autoencoder.*"}),   # sd.labels="pseudo" reads the autoencoder
    "mixup": (lambda p: pipeline.mixup_key(p), {"ddpm.*", "mixup.*"}),
    "latent": (lambda p: pipeline.latent_key(p), {"autoencoder.*", "latent_ddpm.*", "latent.*"}),
    "ce": (lambda p: pipeline.classifier_key(p, "ce", 0), CLF_COMMON),
    "oe_sd": (lambda p: pipeline.classifier_key(p, "oe", 0, "sd"),
              CLF_COMMON | {f"clf.{f}" for f in LOSS_FIELDS["oe"]} | {"ddpm.*", "sd.*", "autoencoder.*"}),
    "scores_ce": (lambda p: pipeline.scores_key(p, "ce", 0, "val"), CLF_COMMON | {"scores.*"}),
}
ALTERNATIVE = {"labels": "pseudo", "sampler": "ddpm", "backbone": "resnet18", "pretrained": "some/vae",
               "normalise": "id_train", "optimizer": "sgd", "prediction_type": ("v_prediction", "epsilon"),
               "beta_schedule": ("squaredcos_cap_v2", "linear")}   # a pair: whichever the profile does not use


def _perturbed(profile, section, name):
    value = getattr(getattr(profile, section), name)
    if isinstance(value, bool):
        new = not value
    elif isinstance(value, int):
        new = value + 1
    elif isinstance(value, float):
        new = value * 0.9 if value else 0.1      # stays in range (probabilities, 0 <= lam_low <= lam_high <= 1)
    elif isinstance(value, tuple):
        new = value + value[-1:]
    else:
        new = ALTERNATIVE.get(name, f"{value}_other")
        if isinstance(new, tuple):
            new = next(v for v in new if v != value)
    return override(profile, **{section: {name: new}})


def _fields(profile):
    for section in ("ddpm", "sd", "mixup", "autoencoder", "latent_ddpm", "latent", "clf", "scores"):
        for f in dataclasses.fields(getattr(profile, section)):
            yield section, f.name


@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_a_stage_key_changes_with_every_field_it_reads_and_no_other(stage):
    key_of, reads = EXPECTED[stage]
    base = json.dumps(key_of(P), sort_keys=True)
    changed = set()
    for section, name in _fields(P):
        if json.dumps(key_of(_perturbed(P, section, name)), sort_keys=True) != base:
            changed.add(f"{section}.{name}")
    expected = {f"{s}.{n}" for s, n in _fields(P) if f"{s}.{n}" in reads or f"{s}.*" in reads}
    if stage in ("sd", "oe_sd"):   # the autoencoder only matters once sd.labels is "pseudo"
        expected -= {f"autoencoder.{f.name}" for f in dataclasses.fields(P.autoencoder)}
    assert changed == expected, (f"reads but not in key: {sorted(expected - changed)}; "
                                 f"in key but not read: {sorted(changed - expected)}")
    assert json.dumps(key_of(override(P, seeds=(5, 6))), sort_keys=True) == base


def test_pseudo_label_seed_and_the_stage_version_enter_the_keys(monkeypatch):
    pseudo = override(P, sd={"labels": "pseudo"})
    assert pipeline.ddpm_key(pseudo, "pseudo") != pipeline.ddpm_key(override(pseudo, sd={"seed": 1}), "pseudo")
    before = pipeline.classifier_key(P, "oe", 0, "sd")
    monkeypatch.setitem(pipeline.STAGES, "ddpm", dataclasses.replace(pipeline.STAGES["ddpm"], version=99))
    assert pipeline.classifier_key(P, "oe", 0, "sd") != before   # a DDPM fix invalidates what it made


def test_data_found_enters_only_the_keys_of_stages_that_read_it(monkeypatch):
    ddpm, ce, scores = pipeline.ddpm_key(P), pipeline.classifier_key(P, "ce", 0), pipeline.scores_key(P, "ce", 0)
    prints = pipeline._fingerprints(P.data, pipeline._data_location())
    fake = json.loads(json.dumps(prints))
    fake["ood_test"]["skipped"] = fake["ood_test"]["skipped"] + ["notmnist"]
    monkeypatch.setattr(pipeline, "_fingerprints", lambda cfg, location: fake)
    assert pipeline.ddpm_key(P) == ddpm and pipeline.classifier_key(P, "ce", 0) == ce
    assert pipeline.scores_key(P, "ce", 0) != scores                  # a missing OOD set changes the suite
    fake["id_train"]["content"] = "0" * 16                             # other training images
    assert pipeline.ddpm_key(P) != ddpm and pipeline.classifier_key(P, "ce", 0) != ce


# ----------------------------------------------------------------------------- SD regime check
def test_regime_check_counts_class_changes_and_labels_the_copy_regime():
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    target = (y + 1) % 6
    x_src = torch.zeros(8, 1, 2, 2)
    x_out = x_src + 0.5                                       # each moved by sqrt(4 * 0.25) = 1
    pred = y.clone()
    pred[:1] = target[:1]                                     # one of eight left its class, to c_r
    r = sd_regime(pred, y, target, x_out, x_src, torch.full((8,), 4.0), 0.1, 0.2)
    assert r["left_source"] == pytest.approx(1 / 8) and r["to_target"] == pytest.approx(1 / 8)
    assert r["l2_to_source"] == pytest.approx(1.0) and r["l2_source_to_nearest_other"] == pytest.approx(4.0)
    assert r["copy_regime"] and 1 / 8 < COPY_REGIME_BELOW and regime_text(r, short=True).endswith("COPY REGIME")
    pred[:4] = (y[:4] + 2) % 6                                # half left, none to c_r
    r = sd_regime(pred, y, target, x_out, x_src, torch.full((8,), 4.0), 0.1, 0.2)
    assert r["left_source"] == 0.5 and r["to_target"] == 0 and not r["copy_regime"]
    assert regime_text(r, short=True) == "50 % left source, 0 % to c_r"


# ----------------------------------------------------------------------------- Table 4 control
class _Config(dict):
    __getattr__ = dict.__getitem__


class _ToClass(torch.nn.Module):
    """A hand-made 'UNet' whose noise prediction points at a constant image per class, so a
    denoising toward class c ends on that image (all pixels at -1 + c / 3)."""

    def __init__(self):
        super().__init__()
        from diffusers import DDPMScheduler

        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = _Config(num_train_timesteps=1000, num_class_embeds=7)     # 6 classes + the null label
        self.abar = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod

    def forward(self, sample, timestep, class_labels=None):
        target = (-1 + class_labels.float() / 3).view(-1, 1, 1, 1).expand_as(sample)
        abar = self.abar[torch.as_tensor(timestep).long().clamp(0, 999)].view(-1, 1, 1, 1)
        eps = (sample - abar.sqrt() * target) / (1 - abar).sqrt()
        return type("Out", (), {"sample": eps})()


def test_table4_control_regenerates_toward_the_source_class_with_the_same_noise():
    from ood_lib.outliers import semantic_discrepant

    unet = _ToClass()
    x0 = torch.rand(6, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    sd = semantic_discrepant(unet, x0, y, 6, S=400, w=0.0, stride=100, seed=3, progress=False)
    control = semantic_discrepant(unet, x0, y, 6, S=400, w=0.0, stride=100, seed=3, progress=False, target=y)
    assert (sd["y_target"] != y).all() and torch.equal(control["y_target"], y)
    level = lambda out: (out["x"].mean(dim=(1, 2, 3)) * 2 - 1)       # back to [-1, 1]
    # the control lands on the source class's image, the SD outlier on c_r's
    assert torch.allclose(level(control), -1 + y.float() / 3, atol=0.05)
    assert torch.allclose(level(sd), -1 + sd["y_target"].float() / 3, atol=0.05)


# ----------------------------------------------------------------------------- SD selection rule
def _sweep(rows):
    return pd.DataFrame([{"setting": json.dumps({"sd": {"S": S, "w": w}}, sort_keys=True), "loss": "sd_three_head",
                          "score": "dod_distance", "ood_group": "near", "seed": 0, "AUROC": a, "copy_regime": c}
                         for S, w, a, c in rows])


def test_sd_setting_is_chosen_outside_the_copy_regime_ties_to_the_smaller_S():
    df = _sweep([(100, 1.0, 0.990, True), (400, 1.0, 0.975, False), (200, 2.0, 0.9745, False),
                 (600, 3.0, 0.960, False)])
    choice = pipeline.choose_sd_setting(df)
    # S = 100 is best but a copy; S = 200 ties S = 400 within 0.1 point: the smaller S wins
    assert choice["setting"] == {"sd": {"S": 200, "w": 2.0}} and choice["auroc"] == pytest.approx(0.9745)
    assert choice["excluded"] == [json.dumps({"sd": {"S": 100, "w": 1.0}}, sort_keys=True)]
    with pytest.raises(ValueError, match="copy regime"):
        pipeline.choose_sd_setting(_sweep([(100, 1.0, 0.99, True)]))


def test_table4_control_uses_the_same_noise_as_the_sd_set():
    from ood_lib.outliers import semantic_discrepant

    class Blind(_ToClass):          # ignores the class: the output depends on x_0 and the noise only
        def forward(self, sample, timestep, class_labels=None):
            return type("Out", (), {"sample": torch.zeros_like(sample)})()

    x0, y = torch.rand(6, 1, 4, 4), torch.arange(6)
    a = semantic_discrepant(Blind(), x0, y, 6, S=300, w=1.0, stride=100, seed=5, progress=False)
    b = semantic_discrepant(Blind(), x0, y, 6, S=300, w=1.0, stride=100, seed=5, progress=False, target=y)
    c = semantic_discrepant(Blind(), x0, y, 6, S=300, w=1.0, stride=100, seed=6, progress=False, target=y)
    assert torch.equal(a["x"], b["x"]) and not torch.equal(a["x"], c["x"])


# ----------------------------------------------------------------------------- DOD voting weight
def test_dod_alpha_rule_and_reweighting():
    table = pd.DataFrame({"alpha=0": [97.0], "alpha=0.01": [97.0], "alpha=0.1": [97.55], "alpha=1": [97.6],
                          "alpha=10": [90.0]})
    assert pipeline.choose_dod_alpha(table) == 0.1          # 0.1 is within 0.1 point of the best (1): smaller wins
    assert pipeline.choose_dod_alpha(table.drop(columns="alpha=0.1")) == 1.0
    dist, votes = torch.tensor([0.5, 1.0]), torch.tensor([3.0, 0.0])
    scored = {"id": {"dod_distance": dist, "dod": dist + 0.01 * votes, "msp": dist},
              "ood": {"x": {"dod_distance": dist, "dod": dist + 0.01 * votes}}, "groups": {"x": "near"}}
    r = pipeline.with_dod_alpha(scored, 2.0, 0.01)
    assert torch.allclose(r["id"]["dod"], torch.tensor([6.5, 1.0])) and r["id"]["msp"] is dist
    with pytest.raises(ValueError, match="no votes"):
        pipeline.with_dod_alpha(scored, 2.0, 0.0)


def test_collapse_is_read_against_the_ce_model_of_the_same_seed():
    from ood_lib.evaluation import mark_collapse

    df = pd.DataFrame({"loss": ["ce", "ce", "oe", "oe", "energy_oe"], "generator": ["none", "none", "sd", "sd", "sd"],
                       "seed": [0, 1, 0, 1, 1], "ID_acc": [0.99, 0.95, 0.97, 0.91, 0.925]})
    m = mark_collapse(df)
    # 0.97 vs 0.99 is 2 points below CE (kept); 0.91 vs 0.95 is 4 points (collapsed); 0.925 vs 0.95 is 2.5
    assert m.collapsed.tolist() == [False, False, False, True, False]
    assert m.ID_acc_vs_ce.round(3).tolist() == [0.0, 0.0, -0.02, -0.04, -0.025]
    assert mark_collapse(df.iloc[2:], {0: 0.99, 1: 0.95}).collapsed.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="no CE rows"):
        mark_collapse(df.iloc[2:])


# ----------------------------------------------------------------------------- same seed, same numbers
SMOKE_CE = """
import dataclasses, hashlib, torch
from ood_lib import get_profile, pipeline, runtime
from ood_lib.train import train_classifier
P = get_profile("smoke")
b = pipeline.benchmark(P)
runtime.set_threads()
art = train_classifier(b.id_train.x, b.id_train.y, b.n_classes, dataclasses.replace(P.clf, epochs=3), "ce", seed=0)
print(torch.get_num_threads(), hashlib.sha256(b"".join(t.numpy().tobytes() for t in art["state"].values())).hexdigest())
"""


def test_a_smoke_classifier_trained_in_two_fresh_processes_is_bit_for_bit_the_same(tmp_path):
    """Same commit, profile, seed and thread count (set explicitly, runtime.compute_threads): the
    same weights, to the bit (the smoke CE model, 3 of its 12 epochs to keep the test short)."""
    import subprocess
    import sys

    runs = []
    for i in range(2):
        env = {**os.environ, "OOD_CACHE": str(tmp_path / f"cache{i}"), "OOD_THREADS": "2", "TQDM_DISABLE": "1"}
        env.pop("OMP_NUM_THREADS", None)
        done = subprocess.run([sys.executable, "-c", SMOKE_CE], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(done.stdout.split()[-2:])
    assert runs[0] == runs[1] and runs[0][0] == "2"


def test_the_thread_count_is_explicit_and_recorded(tmp_path, monkeypatch):
    from ood_lib import runtime
    from ood_lib.artifacts import load_artifact

    monkeypatch.setenv("OOD_THREADS", "1")
    assert runtime.compute_threads() == 1
    monkeypatch.delenv("OOD_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.compute_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cores = len(os.sched_getaffinity(0))
    assert runtime.compute_threads() == max(1, cores // 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("OOD_THREADS", "1")
    monkeypatch.setenv("OOD_CACHE", str(tmp_path))
    before = torch.get_num_threads()
    try:
        cached("stage", {"k": 2}, lambda wd: {"n": torch.get_num_threads()}, verbose=False)
        stored = torch.load(stage_dir("stage", {"k": 2}) / "artifact.pt", weights_only=True)
        assert stored["__artifact__"]["threads"] == 1 and stored["value"] == {"n": 1}
        assert load_artifact(stage_dir("stage", {"k": 2}) / "artifact.pt", "stage") == {"n": 1}
    finally:
        torch.set_num_threads(before)


def test_a_resumed_stage_records_its_whole_time(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("OOD_CACHE", str(tmp_path / "cache"))
    log = tmp_path / "stages.tsv"
    monkeypatch.setenv("OOD_STAGE_LOG", str(log))

    def interrupted(workdir):
        time.sleep(0.3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached("slow", {"k": 1}, interrupted, verbose=False)
    cached("slow", {"k": 1}, lambda wd: (time.sleep(0.1), {"done": True})[1], verbose=False)
    stage, _, seconds = log.read_text().split()
    assert stage == "slow" and 0.4 <= float(seconds) < 1.5
