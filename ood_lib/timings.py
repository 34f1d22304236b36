"""A run's stage seconds: what it expects (its plan) and what each stage took.

The plan comes from ``benchmarks/profile_cost.py``, which times a few training steps and
generator evaluations of every model at the profile's sizes on one device and writes
``results/benchmarks/cost_<profile>_<device>.csv`` (one row per piece of work: ``stage`` is the
artefact cache's stage name, ``seconds`` its expected cost). :func:`plan` sums those rows
per stage. While a run goes, :func:`ood_lib.artifacts.cached` calls its ``record_stage`` for every
stage it computes (its own seconds, without the stages computed inside it), into the file
``$OOD_STAGE_LOG`` names (``./run_all.sh`` sets it); :func:`timings_table` puts expected and
actual side by side (``results/<profile>/timings.{md,csv}``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .artifacts import project_root

COST_COLUMNS = ("stage", "what", "unit_seconds", "units", "seconds")


def device_kind() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``: the suffix of the cost files."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cost_path(profile_name: str, device: str | None = None, root: Path | None = None) -> Path:
    """Where ``benchmarks/profile_cost.py --profile <name>`` writes a device's cost figures."""
    root = root if root is not None else project_root() / "results" / "benchmarks"
    return Path(root) / f"cost_{profile_name}_{device or device_kind()}.csv"


def expected_seconds(profile_name: str, device: str | None = None, root: Path | None = None) -> pd.Series | None:
    """Expected seconds per stage (``stage`` -> seconds) from the cost figures, or None
    when no figures exist for this profile and device."""
    path = cost_path(profile_name, device, root)
    if not path.exists():
        return None
    costs = pd.read_csv(path)
    missing = [c for c in ("stage", "seconds") if c not in costs.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing; rerun benchmarks/profile_cost.py --profile {profile_name}")
    return costs.groupby("stage", sort=False)["seconds"].sum()


def plan(profile_name: str, device: str | None = None, root: Path | None = None) -> str:
    """The run's plan as text: each stage's expected seconds on this device, or how to get them."""
    device = device or device_kind()
    expected = expected_seconds(profile_name, device, root)
    if expected is None:
        return (f"plan: no cost figures for profile {profile_name!r} on {device} "
                f"({cost_path(profile_name, device, root).name}); "
                f"`python benchmarks/profile_cost.py --profile {profile_name}` measures them")
    lines = [f"plan for profile {profile_name!r} on {device} "
             f"(from {cost_path(profile_name, device, root).name}; training and generation only):"]
    lines += [f"  {stage:<18} {seconds:8.0f} s" for stage, seconds in expected.items()]
    lines.append(f"  {'total':<18} {expected.sum():8.0f} s ({expected.sum() / 60:.1f} min)")
    return "\n".join(lines)


def read_stage_log(path) -> pd.DataFrame:
    """The rows ``artifacts.record_stage`` wrote: stage, key, seconds."""
    path = Path(path)
    if not path.exists() or not path.read_text().strip():
        return pd.DataFrame(columns=["stage", "key", "seconds"])
    return pd.read_csv(path, sep="\t", names=["stage", "key", "seconds"])


def timings_table(stage_log, profile_name: str, device: str | None = None, root: Path | None = None) -> pd.DataFrame:
    """Per stage: expected seconds (the plan; NaN without cost figures), actual seconds computed
    in this run (cached stages cost nothing and are not counted) and how many artefacts."""
    log = read_stage_log(stage_log)
    actual = log.groupby("stage", sort=False).agg(actual_s=("seconds", "sum"), computed=("key", "count"))
    expected = expected_seconds(profile_name, device, root)
    table = actual if expected is None else actual.join(expected.rename("expected_s"), how="outer")
    if "expected_s" not in table:
        table["expected_s"] = float("nan")
    table = table[["expected_s", "actual_s", "computed"]].fillna({"actual_s": 0.0, "computed": 0})
    table.loc["total"] = [table.expected_s.sum(min_count=1), table.actual_s.sum(), table.computed.sum()]
    table["computed"] = table.computed.astype(int)
    return table.round(1).rename_axis("stage")
