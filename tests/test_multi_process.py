"""Several processes through Accelerate: two CPU processes (``accelerate.debug_launcher``, gloo)
each train on their shard of the same global batch with averaged gradients, and end where one
process ends. Tolerances: 1e-4 on the DDPM's losses and 1e-3 on its weights (GroupNorm: the runs
differ only in the order of floating-point sums, which Adam's normalised steps of size lr = 2e-3
can magnify for near-zero gradients); 0.01 on the classifier's epoch losses, whose BatchNorm
normalises each process's shard by its own statistics, as DDP does on the CPU (on GPUs the loop
converts BatchNorm to SyncBatchNorm)."""
import pickle
from pathlib import Path

import pytest
import torch

from ood_lib.config import ClassifierConfig, DDPMConfig
from ood_lib.diffusion import train_ddpm
from ood_lib.train import train_classifier

TOL = 1e-4
TOL_WEIGHTS = 1e-3
TOL_BATCHNORM = 0.01


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 16, 16, generator=g)
    return x, torch.arange(24) % 3, torch.rand(12, 1, 16, 16, generator=g)


def _train(out: str) -> None:
    """What both runs do; the main process writes the result to ``out``."""
    from accelerate import PartialState

    torch.set_num_threads(1)
    x, y, ox = _data()
    work = Path(out).parent / f"work{PartialState().process_index}"
    ddpm = train_ddpm(x * 2 - 1, y, 3, DDPMConfig(block_out_channels=(8, 16), steps=4, batch_size=8, warmup_steps=1,
                                                  checkpoint_every=2), work)
    sd = train_classifier(x, y, 3, ClassifierConfig(width=4, epochs=2, batch_size=8, outlier_batch_size=4),
                          "sd_three_head", outliers=ox, outlier_labels=torch.arange(12) % 3)
    if PartialState().is_main_process:
        with open(out, "wb") as fh:
            pickle.dump({"ddpm_losses": ddpm["losses"], "ddpm": ddpm["ema_state"], "sd_log": sd["log"],
                         "sd": sd["state"]}, fh)


def _run_two(out: str) -> None:
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)   # forked from the one-process run's state
    assert PartialState(cpu=True).num_processes == 2
    _train(out)
    if PartialState().is_main_process:
        Path(out).with_suffix(".ranks").write_text(str(PartialState().num_processes))


def _assert_close(a: dict, b: dict) -> None:
    assert a["ddpm_losses"] == pytest.approx(b["ddpm_losses"], abs=TOL)
    for name, t in a["ddpm"].items():
        assert torch.allclose(t, b["ddpm"][name], atol=TOL_WEIGHTS), (name, (t - b["ddpm"][name]).abs().max())
    assert a["sd_log"]["loss"] == pytest.approx(b["sd_log"]["loss"], abs=TOL_BATCHNORM)
    head = "heads.bin.weight"   # a layer after the last BatchNorm: moved by the same steps
    assert torch.allclose(a["sd"][head], b["sd"][head], atol=TOL_BATCHNORM)


def test_two_processes_match_one(tmp_path):
    from accelerate import debug_launcher

    one = tmp_path / "one" / "result.pkl"
    one.parent.mkdir()
    _train(str(one))
    two = tmp_path / "two" / "result.pkl"
    two.parent.mkdir()
    debug_launcher(_run_two, args=(str(two),), num_processes=2)
    assert two.with_suffix(".ranks").read_text() == "2"
    assert (two.parent / "work0" / "checkpoint.pt").exists() and not (two.parent / "work1").exists()  # main writes
    _assert_close(pickle.loads(one.read_bytes()), pickle.loads(two.read_bytes()))


def _cache_two(root: str) -> None:
    import os

    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    from ood_lib import artifacts

    AcceleratorState._reset_state(reset_partial_state=True)
    rank = PartialState(cpu=True).process_index
    os.environ["OOD_CACHE"] = root
    art = artifacts.cached("toy", {"a": 1}, lambda wd: {"value": torch.tensor([3.0]), "rank": rank}, verbose=False)
    Path(root, f"seen{rank}").write_text(str(art["rank"]))


def test_every_process_computes_only_the_main_one_writes_and_all_return_what_it_stored(tmp_path):
    from accelerate import debug_launcher

    from ood_lib import artifacts

    debug_launcher(_cache_two, args=(str(tmp_path),), num_processes=2)
    # rank 1 computed its own {"rank": 1}, and returns the stored artefact of rank 0
    assert (tmp_path / "seen0").read_text() == "0" and (tmp_path / "seen1").read_text() == "0"
    stored = list(tmp_path.glob("toy/*/artifact.pt"))
    assert len(stored) == 1 and artifacts.load_artifact(stored[0], "toy")["rank"] == 0
    assert not list(tmp_path.glob("toy/*/work"))


# ----------------------------------------------------------------------------- the launchers, end to end
RANK_SCRIPT = '''
import hashlib, json, os, sys
import torch
from ood_lib import get_profile, pipeline
P = get_profile("smoke")
art = pipeline.classifier(P, "ce", 0)
h = hashlib.sha256(b"".join(t.numpy().tobytes() for t in art["state"].values())).hexdigest()
acc = float(pipeline.score_sets(P, "ce", 0, "val", "none")["id_acc"])
with open(os.path.join(sys.argv[1], f"rank{os.environ.get('RANK', '0')}.json"), "w") as fh:
    json.dump({"hash": h, "loss": art["log"]["loss"], "acc": acc}, fh)
'''
# Two CPU processes normalise each half-batch by its own BatchNorm statistics (torch 2.14's
# SyncBatchNorm refuses CPU tensors; on GPUs the loop converts to it): measured on the smoke CE model
# (12 epochs, 98.3 % ID validation accuracy both ways), the epoch losses differ by up to 0.075 and
# the accuracy not at all.
TOL_LAUNCHED_LOSS = 0.1
TOL_LAUNCHED_ACC = 0.05


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cmd: list, out: Path, cache: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OOD_CACHE": str(cache), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    script = out / "ranks.py"
    script.write_text(RANK_SCRIPT)
    bindir = Path(sys.executable).parent
    done = subprocess.run([str(bindir / cmd[0]), *cmd[1:], str(script), str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_a_launcher_with_two_processes_finishes_with_one_artefact_and_the_same_model_on_every_rank(tmp_path, launcher):
    """The deadlock of issue 31: every rank took the cache lock before the process group existed.
    Now the group is joined first, only the main rank locks and writes, and every rank returns the
    stored model; the model trains as one process does, within the stated tolerance."""
    import json

    port = str(_free_port())
    cmd = (["torchrun", "--nproc_per_node", "2", "--master_port", port] if launcher == "torchrun" else
           ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port])
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir(), one.mkdir()
    _launch(cmd, two, tmp_path / "cache2")
    _launch(["python"], one, tmp_path / "cache1")
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["hash"] == ranks[1]["hash"]                             # the stored model on every rank
    stored = list((tmp_path / "cache2" / "classifier").glob("*/artifact.pt"))
    assert len(stored) == 1 and not list((tmp_path / "cache2").glob("*/*/work"))
    single = json.loads((one / "rank0.json").read_text())
    assert ranks[0]["loss"] == pytest.approx(single["loss"], abs=TOL_LAUNCHED_LOSS)
    assert single["acc"] >= 0.8 and abs(ranks[0]["acc"] - single["acc"]) <= TOL_LAUNCHED_ACC
