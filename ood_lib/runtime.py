"""Runtime helpers shared by every loop: seeding and progress bars."""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from tqdm.auto import tqdm


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """Randomness of one training step depends only on (seed, step, rank): resuming from a
    checkpoint replays exactly the same batches and noise."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 7919 + rank)


def progress(iterable=None, main: bool = True, **kwargs):
    """tqdm bar, off when ``TQDM_DISABLE=1`` (tests) or on non-main processes. With
    ``OOD_PROGRESS=log`` (``./run_all.sh``, whose log is often a file) a plain-text bar
    that writes a line at most every 30 s, so a log stays readable."""
    if not main or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        kwargs["disable"] = True
    if os.environ.get("OOD_PROGRESS") == "log":
        import sys

        from tqdm import tqdm as text_tqdm

        kwargs = {"mininterval": 30, "ascii": True, "file": sys.stdout, "leave": True, **kwargs}
        return text_tqdm(iterable, **kwargs)
    return tqdm(iterable, **kwargs)
