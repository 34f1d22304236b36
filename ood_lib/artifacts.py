"""Content-addressed artefact store: every stage caches its output by config hash.

Layout: ``<cache>/<stage>/<hash>/artifact.pt`` plus ``config.json`` beside it, and a
``work/`` folder for resumable checkpoints while the stage runs. The artefact file is
written to a temporary name and renamed into place, so a file that exists is complete.
The cache root is ``$OOD_CACHE`` or ``<repo>/.cache`` (ignored by git).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .config import config_hash, to_dict

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    return Path(os.environ.get("OOD_CACHE", REPO_ROOT / ".cache")).expanduser()


def stage_dir(stage: str, config) -> Path:
    return cache_root() / stage / config_hash(config)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def safe_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, pickle mismatch, ...
        raise RuntimeError(
            f"cannot read artefact {path} ({type(err).__name__}: {err}). It is corrupt or "
            f"was written by an incompatible version: delete {path.parent} and run again."
        ) from err


def cached(stage: str, config, compute: Callable[[Path], Any], *, verbose: bool = True) -> Any:
    """Load the artefact of ``stage`` for ``config``, or compute and store it.

    ``compute(workdir)`` gets a folder for resumable checkpoints (kept if it is
    interrupted, removed once the artefact is stored) and returns a torch-saveable object
    of tensors, numbers, strings, lists and dicts.
    """
    folder = stage_dir(stage, config)
    path = folder / "artifact.pt"
    if path.exists():
        if verbose:
            print(f"[{stage}] loaded cached artefact {folder.name}")
        return safe_load(path)
    workdir = folder / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(to_dict(config), indent=1, sort_keys=True))
    start = time.perf_counter()
    result = compute(workdir)
    atomic_save(result, path)
    shutil.rmtree(workdir, ignore_errors=True)
    if verbose:
        print(f"[{stage}] computed and cached {folder.name} "
              f"in {time.perf_counter() - start:.0f} s")
    return result
