import json

import pytest
import torch

from ood_lib.artifacts import cached, stage_dir
from ood_lib.config import config_hash, get_profile


def test_config_hash_ignores_key_order_and_tuple_vs_list():
    assert config_hash({"a": 1, "b": (1, 2)}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash(get_profile("digits"))) == 12


def test_get_profile_overrides_and_errors():
    p = get_profile("digits", sd={"S": 300}, scores={"knn_k": 5})
    assert p.sd.S == 300 and p.sd.w == get_profile("digits").sd.w and p.scores.knn_k == 5
    with pytest.raises(KeyError, match="valid profiles"):
        get_profile("nope")


def test_cached_computes_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_CACHE", str(tmp_path))
    calls = []

    def compute(workdir):
        calls.append(workdir)
        return {"x": torch.arange(3)}

    a = cached("stage", {"k": 1}, compute, verbose=False)
    b = cached("stage", {"k": 1}, compute, verbose=False)
    assert len(calls) == 1 and torch.equal(a["x"], b["x"])
    folder = stage_dir("stage", {"k": 1})
    assert json.loads((folder / "config.json").read_text()) == {"k": 1}
    assert not (folder / "work").exists()  # checkpoints removed once the artefact is stored


def test_interrupted_stage_leaves_no_artefact_and_corrupt_one_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_CACHE", str(tmp_path))

    def boom(workdir):
        (workdir / "checkpoint.pt").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached("stage", {"k": 2}, boom, verbose=False)
    folder = stage_dir("stage", {"k": 2})
    assert not (folder / "artifact.pt").exists() and (folder / "work" / "checkpoint.pt").exists()
    (folder / "artifact.pt").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="delete"):
        cached("stage", {"k": 2}, boom, verbose=False)


_SHARED_CACHE_RUN = """
import sys, time, torch
from pathlib import Path
from ood_lib.artifacts import cached

def compute(workdir):
    with open(Path(sys.argv[1]) / "computed", "a") as fh:
        fh.write(sys.argv[2] + "\\n")
    time.sleep(1.5)     # long enough for the other run to arrive while this one computes
    return {"value": torch.tensor([7.0]), "by": sys.argv[2]}

art = cached("toy", {"a": 1}, compute, verbose=False)
print(art["by"], float(art["value"]))
"""


def test_two_runs_sharing_a_cache_compute_a_stage_once(tmp_path):
    """Two processes asking for the same uncomputed stage: one computes, the other waits for
    its lock and loads the stored artefact (no shared checkpoint folder, no second training)."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "OOD_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-c", _SHARED_CACHE_RUN, str(tmp_path)]
    first = subprocess.Popen([*cmd, "first"], env=env, stdout=subprocess.PIPE, text=True)
    while not (tmp_path / "computed").exists():    # the first run holds the lock now
        assert first.poll() is None, "the first run ended before computing"
        time.sleep(0.01)
    second = subprocess.run([*cmd, "second"], env=env, stdout=subprocess.PIPE, text=True, check=True)
    assert first.wait() == 0
    assert (tmp_path / "computed").read_text() == "first\n"
    assert first.stdout.read().split() == second.stdout.split() == ["first", "7.0"]
