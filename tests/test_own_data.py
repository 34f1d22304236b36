"""Your own data: a dataset registered from a config file runs through every notebook, another
class split of `digits` runs through the same API, the package works when installed from its
wheel, and bad input stops before any work with a message that names the fix."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ood_lib import get_profile, pipeline
from ood_lib.data import check_data, load_benchmark, register_dataset

REPO = Path(__file__).resolve().parent.parent


def write_sklearn_digits(root: Path) -> None:
    """scikit-learn's 1,797 8x8 digits as an ImageFolder (``<class>/*.png``): a dataset the test makes."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        (root / f"digit{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).astype(np.uint8)).save(root / f"digit{label}" / f"{i:04d}.png")


# What a user writes (README: "Use your own data"), at the smallest sizes that exercise every stage.
OWN_CONFIG = """
name = "sk8"
base = "smoke"
[dataset]
name = "sk8"
source = "images"
id_classes = ["digit0", "digit1", "digit2", "digit3", "digit4", "digit5"]
image_size = 16
channels = 1
far_ood = ["gaussian_noise", "skimage_textures"]
[data]
n_train_per_class = 20
n_val_per_class = 8
n_test_per_class = 12
n_near_val_per_class = 8
n_near_test_per_class = 12
n_far = 40
[clf]
epochs = 2
"""


def test_own_dataset_runs_through_every_notebook(tmp_path):
    write_sklearn_digits(tmp_path / "images")
    (tmp_path / "sk8.toml").write_text(OWN_CONFIG)
    env = {**os.environ, "OOD_CACHE": str(tmp_path / "cache"), "OOD_RESULTS": str(tmp_path / "results")}
    run = subprocess.run(["bash", str(REPO / "run_all.sh"), "--config", str(tmp_path / "sk8.toml")], env=env,
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "results" / "sk8"
    assert len(list((out / "notebooks").glob("*.ipynb"))) == len(list((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics.ood_dataset) == {"sk8_digit6-digit7-digit8-digit9", "gaussian_noise", "skimage_textures"}
    assert set(metrics[metrics.ood_dataset.str.startswith("sk8_")].ood_group) == {"near"}
    assert (out / "paper_claims.md").exists() and (out / "timings_last_run.tsv").exists()
    assert "sk8.toml" not in run.stderr


def test_digits_with_odd_digits_as_id(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_CACHE", str(tmp_path))
    P = get_profile("smoke", data={"id_classes": [1, 3, 5, 7, 9]}, clf={"epochs": 15})
    b = load_benchmark(P.data, verbose=False)
    assert b.classes == ["1", "3", "5", "7", "9"] and b.id_train.name == "digits_1-3-5-7-9_train"
    assert torch.bincount(b.id_train.y).tolist() == [30] * 5                 # labels 0..4, stratified
    assert set(b.ood_test["digits_0-2-4-6-8"].y.tolist()) == {0, 2, 4, 6, 8}
    df = pipeline.evaluate(P, [("ce", "none")])
    near = df[(df.ood_group == "near") & (df.score == "msp")]
    assert "digits_0-2-4-6-8" in set(near.ood_dataset) and near.AUROC.notna().all()
    assert df.ID_acc.iloc[0] > 0.9                                           # 5 classes: chance is 0.2


def test_register_tensors_and_conformed_ood_sets():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(90, 3, 12, 12, generator=g)
    y = torch.arange(90) % 3
    register_dataset("tiny_rgb", (x, y), classes=["a", "b", "c"], id_classes=["a", "b"], far_ood=["lfw_crops"])
    P = get_profile("smoke", data={"dataset": "tiny_rgb", "n_train_per_class": 10, "n_val_per_class": 5,
                                   "n_test_per_class": 5, "n_near_val_per_class": 5, "n_near_test_per_class": 10})
    b = load_benchmark(P.data, verbose=False)
    assert b.ood_test["lfw_crops"].x.shape[1:] == (3, 12, 12)                # grey 28x28 -> RGB 12x12
    assert b.ood_test["tiny_rgb_c"].x.shape == (10, 3, 12, 12) and b.classes == ["a", "b"]


def test_an_unknown_far_ood_name_is_refused_by_the_check():
    x, y = torch.rand(60, 1, 8, 8), torch.arange(60) % 3
    register_dataset("tiny_zzz", (x, y), classes=["a", "b", "c"], id_classes=["a", "b"], far_ood=["uniform_noise", "zzz"])
    P = get_profile("smoke", data={"dataset": "tiny_zzz"})
    with pytest.raises(ValueError, match=r"OOD sets \['zzz \(zzz\)'\] are not in the OOD catalogue; valid names: .*svhn"):
        check_data(P.data)


@pytest.mark.parametrize("overrides, message", [
    (dict(data={"dataset": "nope"}), "unknown dataset 'nope'; registered: .*register_dataset"),
    (dict(data={"id_classes": ["0", "1", "x"]}), r"\['x'\] not among digits's classes"),
    (dict(data={"id_classes": [str(c) for c in range(10)]}), "leaves no class of digits out"),
    (dict(data={"n_train_per_class": 600}), r"fewer images than the splits ask for .*lower those data sizes"),
])
def test_bad_data_settings_fail_before_any_work(overrides, message):
    with pytest.raises((KeyError, ValueError), match=message):
        check_data(get_profile("digits", **overrides).data)


@pytest.mark.parametrize("overrides, message", [
    (dict(sd={"S": -5}), r"sd.S = -5 is out of range: S is the timestep"),
    (dict(sd={"S": 1001}), r"sd.S = 1001 is out of range: .* ddpm.num_train_timesteps = 1000"),
    (dict(sd={"w": -1.0}), r"sd.w = -1.0 is out of range: the guidance weight"),
    (dict(data={"n_far": -3}), r"data.n_far = -3 is out of range: it must be >= 1"),
    (dict(clf={"epochs": 0}), r"clf.epochs = 0 is out of range"),
    (dict(sd={"strid": 5}), r"sd: unknown setting\(s\) \['strid'\]; valid: .*stride"),
    (dict(sd={"S": "abc"}), r"sd.S = 'abc' has the wrong type: expected int \(the default is 300\)"),
    (dict(sd={"w": True}), r"sd.w = True has the wrong type: expected int or float"),
    (dict(seeds=3), r"seeds = 3 has the wrong type: expected list or tuple"),
])
def test_out_of_range_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_profile("digits", **overrides)


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path):
    from ood_lib.config_files import load_config

    bad = tmp_path / "broken.toml"
    bad.write_text('name = "broken"\n[sd]\nS = = 3\n')
    with pytest.raises(ValueError, match=r"broken.toml is not valid TOML: .*line 3"):
        load_config(bad)


def test_a_config_run_names_the_command_that_reproduces_it(tmp_path):
    from ood_lib.config import profile_arg, run_command
    from ood_lib.config_files import load_config

    cfg = tmp_path / "fashion.toml"
    cfg.write_text('name = "fashion"\n[sd]\nS = 100\n')
    P = load_config(cfg)
    assert run_command(P) == f"./run_all.sh --config {cfg}" and run_command(P, True).endswith(" --full")
    assert profile_arg(P) == str(cfg) and get_profile(profile_arg(P)).sd.S == 100
    assert run_command(get_profile("digits")) == "./run_all.sh --profile digits"


def test_check_decodes_the_images_and_names_a_corrupt_file(tmp_path, capsys):
    from ood_lib.__main__ import main
    from ood_lib.config_files import load_config
    from ood_lib.data import verify_images

    write_sklearn_digits(tmp_path / "images")
    (tmp_path / "sk8.toml").write_text(OWN_CONFIG)
    P = load_config(tmp_path / "sk8.toml")
    assert verify_images(P.data) == 1797                            # every image: the pool is under 5,000
    bad = tmp_path / "images" / "digit3" / "0003.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot decode .*digit3/0003.png .*corrupt"):
        verify_images(P.data)
    with pytest.raises(SystemExit) as stop:                          # what ./run_all.sh runs first
        main(["check", "--profile", str(tmp_path / "sk8.toml")])
    assert stop.value.code == 2 and "digit3/0003.png" in capsys.readouterr().err


def test_run_all_refuses_a_bad_profile_and_writes_nothing(tmp_path):
    env = {**os.environ, "OOD_RESULTS": str(tmp_path / "results")}
    run = subprocess.run(["bash", str(REPO / "run_all.sh"), "--profile", "nope"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2 and "unknown profile 'nope'" in run.stderr and "digits" in run.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[sd]\nS = -5\n')
    run = subprocess.run(["bash", str(REPO / "run_all.sh"), "--config", str(bad)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2 and "sd.S = -5 is out of range" in run.stderr
    assert not (tmp_path / "results").exists()


def test_installed_wheel_works_from_another_folder(tmp_path):
    """Build the wheel, install it (no dependencies) into a fresh virtual environment that sees this
    environment's packages but not the editable install, and run a stage from a folder outside the
    repository: caches and results land in that folder, never in the package's location."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("ood_lib-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "parent_env.pth").write_text("\n".join(ours) + "\n")      # dependencies, not their .pth files
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, str(wheel)],
                   check=True, capture_output=True, timeout=600)
    work = tmp_path / "work"
    work.mkdir()
    script = textwrap.dedent("""
        import ood_lib, pathlib
        from ood_lib import get_profile, pipeline
        print(pathlib.Path(ood_lib.__file__).parent)
        art = pipeline.classifier(get_profile("smoke", clf={"epochs": 1}), "ce", 0)
        print(sorted(art))
        from ood_lib import report
        print(report.results_dir("smoke"))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOD_")}
    run = subprocess.run([py, "-c", script], cwd=work, env={**env, "TQDM_DISABLE": "1"}, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    package, results = lines[0], lines[-1]
    assert package.startswith(site) and not package.startswith(str(REPO))
    assert (work / ".cache" / "classifier").is_dir() and results == str(work / "results" / "smoke")


def test_a_new_score_and_a_new_loss_are_one_registry_entry_each(tmp_path, monkeypatch):
    """The README's "Add a score or a loss" example: entries used by the pipeline like the built-ins."""
    import torch.nn.functional as F

    from ood_lib import scores, train

    monkeypatch.setenv("OOD_CACHE", str(tmp_path))
    entropy = scores.Score("entropy", lambda c: -(F.softmax(c.out["logits"], 1) * F.log_softmax(c.out["logits"], 1)
                                                  ).sum(1))
    smooth = train.Loss("ce_smooth", lambda model, xb, yb, ob, cfg, extra: (
        F.cross_entropy(model(xb), yb, label_smoothing=0.1), model(xb)))
    monkeypatch.setitem(scores.SCORES, "entropy", entropy)
    monkeypatch.setitem(train.LOSSES, "ce_smooth", smooth)
    df = pipeline.evaluate(get_profile("smoke", clf={"epochs": 15}), ["ce_smooth"])
    assert set(df.loss) == {"ce_smooth"} and "entropy" in set(df.score) and df.ID_acc.iloc[0] > 0.9
    row = df[(df.score == "entropy")].iloc[0]
    assert 0 <= row.AUROC <= 1 and ("ce_smooth", "none") in pipeline.grid_runs()
    with pytest.raises(ValueError, match="already registered"):
        scores.register_score(entropy)


def test_id_train_normalisation_is_measured_stored_and_reloaded():
    from ood_lib.config import ClassifierConfig
    from ood_lib.train import load_classifier, train_classifier

    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.1 * torch.rand(40, 3, 8, 8, generator=g)
    x[:, 1] += 0.5
    y = torch.arange(40) % 2
    cfg = ClassifierConfig(backbone="small_cnn", width=4, epochs=1, batch_size=20, normalise="id_train")
    art = train_classifier(x, y, 2, cfg)
    mean, std = art["norm"]
    assert abs(mean[0] - 0.25) < 0.02 and abs(mean[1] - 0.75) < 0.02 and all(0.02 < s < 0.04 for s in std)
    model = load_classifier(art)
    assert torch.allclose(model.norm.mean.flatten(), torch.tensor(mean)) and "norm" not in train_classifier(
        x, y, 2, ClassifierConfig(backbone="small_cnn", width=4, epochs=1, batch_size=20))
