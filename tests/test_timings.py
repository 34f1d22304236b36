"""The run's plan and stage timings (ood_lib.timings): each computed stage records its own
seconds (not those of the stages computed inside it), the table sets them beside the plan,
and benchmarks/profile_cost.py writes the plan's figures under the cache's stage names."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ood_lib import artifacts, pipeline, timings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clock(monkeypatch):
    """A fake perf_counter that moves only when a test says so."""
    now = {"t": 100.0}
    monkeypatch.setattr(artifacts.time, "perf_counter", lambda: now["t"])
    return now


def test_nested_stages_record_their_own_seconds(tmp_path, monkeypatch, clock):
    monkeypatch.setenv("OOD_CACHE", str(tmp_path / "cache"))
    log = tmp_path / "stages.tsv"
    monkeypatch.setenv(artifacts.STAGE_LOG_ENV, str(log))

    def inner(_):
        clock["t"] += 5
        return {"x": 1}

    def outer(_):
        clock["t"] += 1
        artifacts.cached("inner_stage", {"k": 1}, inner, verbose=False)
        clock["t"] += 2
        return {"y": 2}

    artifacts.cached("outer_stage", {"k": 2}, outer, verbose=False)
    rows = timings.read_stage_log(log).set_index("stage").seconds
    assert rows["inner_stage"] == pytest.approx(5.0)
    assert rows["outer_stage"] == pytest.approx(3.0)      # 8 s in all, 5 of them the inner stage's
    artifacts.cached("outer_stage", {"k": 2}, outer, verbose=False)   # cached now: costs nothing, not logged
    assert len(timings.read_stage_log(log)) == 2


def test_no_log_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(artifacts.STAGE_LOG_ENV, raising=False)
    artifacts.cached("some_stage", {"k": 3}, lambda _: {"z": 0}, verbose=False)
    assert not list(tmp_path.glob("*.tsv"))


def test_timings_table_and_plan(tmp_path):
    pd.DataFrame({"stage": ["ddpm", "classifier", "classifier", "sd_outliers"],
                  "what": ["a", "b", "c", "d"], "unit_seconds": [0.1, 0.01, 0.02, 0.001],
                  "units": [100, 1000, 500, 2000], "seconds": [10.0, 10.0, 10.0, 2.0]}
                 ).to_csv(tmp_path / "cost_p_cuda.csv", index=False)
    log = tmp_path / "stages.tsv"
    log.write_text("ddpm\tk1\t12.5\nclassifier\tk2\t4\nclassifier\tk3\t6\nscores\tk4\t1.5\n")
    table = timings.timings_table(log, "p", device="cuda", root=tmp_path)
    assert table.loc["ddpm"].tolist() == [10.0, 12.5, 1]
    assert table.loc["classifier"].tolist() == [20.0, 10.0, 2]
    assert table.loc["sd_outliers", "actual_s"] == 0 and table.loc["sd_outliers", "computed"] == 0  # planned, cached
    assert pd.isna(table.loc["scores", "expected_s"]) and table.loc["scores", "actual_s"] == 1.5   # not planned
    assert table.loc["total"].tolist() == [32.0, 24.0, 4]
    text = timings.plan("p", device="cuda", root=tmp_path)
    assert "classifier" in text and "20 s" in text and "32 s" in text
    assert "profile_cost.py --profile q" in timings.plan("q", device="cuda", root=tmp_path)
    without = timings.timings_table(log, "q", device="cuda", root=tmp_path)
    assert without.expected_s.isna().all() and without.loc["total", "actual_s"] == 24.0


def test_profile_cost_writes_the_plan_under_stage_names(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_cost.py"), "--profile", "smoke", "--steps", "1",
                    "--out", str(tmp_path)], check=True, capture_output=True, cwd=ROOT)
    costs = pd.read_csv(tmp_path / "cost_smoke_cpu.csv")
    assert set(costs.stage) == {"ddpm", "autoencoder", "latent_ddpm", "classifier", "sd_outliers", "mixup_outliers",
                                "latent_outliers"}
    assert set(costs.stage) <= set(pipeline.STAGES)
    assert costs.seconds.to_numpy() == pytest.approx((costs.unit_seconds * costs.units).to_numpy(), rel=1e-4)
    assert (costs.seconds > 0).all()
    units = costs.set_index("stage").units
    assert units["ddpm"] == 30                                   # smoke's ddpm.steps
    assert units["sd_outliers"] == 60 * 2 * (200 // 50 + 1)      # n_outliers x 2 evaluations x (S / stride + 1)
    assert timings.expected_seconds("smoke", "cpu", tmp_path).sum() == pytest.approx(costs.seconds.sum())
