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


def progress(iterable=None, main: bool = True, **kwargs):
    """tqdm bar, off when ``TQDM_DISABLE=1`` (tests) or on non-main processes."""
    if not main or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
