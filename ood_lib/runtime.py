"""Runtime helpers shared by every loop: seeding and progress bars."""
from __future__ import annotations

import math
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


def compute_threads() -> int:
    """The CPU threads every stage computes with. Set explicitly because the count changes a model's
    floating-point sums: a smoke classifier trained with 1 and with 2 threads ends with different
    weights, with the same count bit for bit the same. ``$OOD_THREADS``, else ``$OMP_NUM_THREADS``,
    else the cores this process may use, shared among the processes of a launched run."""
    for var in ("OOD_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").strip():
            return max(1, int(os.environ[var]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def set_threads() -> int:
    """Apply :func:`compute_threads` to torch; returns the count (recorded with each artefact)."""
    n = compute_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def step_generator(seed: int, step: int, device="cpu") -> torch.Generator:
    """Randomness of one training step depends only on (seed, step): resuming from a checkpoint
    replays exactly the same batches and noise, and every process of a multi-process run draws
    the same global batch (each then takes its :func:`shard`). On a GPU the generator lives
    there, so batches and noise are drawn where the data is (a different stream from the CPU's)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step * 7919)


def shard(t: torch.Tensor, accelerator) -> torch.Tensor:
    """This process's share of a batch that every process drew identically (rows rank, rank + n, ...)."""
    n = accelerator.num_processes
    return t if n == 1 else t[accelerator.process_index::n]


def global_mean(loss: torch.Tensor, accelerator) -> torch.Tensor:
    """The loss over the whole batch, for logs: the processes' shard means averaged (shards of a
    batch are equal in size up to one row)."""
    return loss.detach() if accelerator.num_processes == 1 else accelerator.reduce(loss.detach(), reduction="mean")


def sync_gradients(params, accelerator, local: int, total: int) -> None:
    """Average the gradients of the processes, each weighted by its share ``local`` of the global
    batch ``total``, so that N processes take the step one process takes on the whole batch.
    (The models are not wrapped in DDP: the loops call models' own methods, which DDP would not
    see; one flattened all-reduce per step does its job.)"""
    n = accelerator.num_processes
    if n == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads]) * (local * n / total)
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def make_accelerator():
    """The Accelerator of every training loop: bf16 mixed precision on a GPU that supports it,
    full precision on the CPU (the reproducible path); ``accelerate launch --mixed_precision``
    (``ACCELERATE_MIXED_PRECISION``) overrides."""
    from accelerate import Accelerator

    cpu = not torch.cuda.is_available()   # so that processes launched on a CPU machine share the work (gloo)
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return Accelerator(cpu=cpu)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=cpu)


class LossLog:
    """Per-step losses kept on the device and copied to the host only every ``every`` steps
    (and at checkpoints), so a GPU loop does not wait for the host after each step."""

    def __init__(self, losses: list, every: int = 50):
        self.values, self.pending, self.every = losses, [], every

    def add(self, loss: torch.Tensor, step: int) -> list:
        """Record ``loss`` of ``step``; returns the values copied to the host now (maybe none)."""
        self.pending.append(loss.detach().float())
        return self.flush(step) if len(self.pending) >= self.every else []

    def record(self, loss: torch.Tensor, step: int, checkpoint: bool, bar, what: str, fix: str) -> None:
        """Add ``loss``, copy to the host at checkpoints too, move ``bar`` by what was copied; a
        non-finite loss stops with ``what`` and the ``fix``."""
        try:
            new = self.add(loss, step) + (self.flush(step) if checkpoint else [])
        except FloatingPointError as err:
            raise FloatingPointError(f"{what} {err}: {fix}") from None
        if new:
            recent = self.values[-50:]
            bar.update(len(new))
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")

    def flush(self, step: int) -> list:
        if not self.pending:
            return []
        new = torch.stack(self.pending).tolist()
        self.pending = []
        bad = [v for v in new if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"loss became {bad[0]} by step {step}")
        self.values.extend(new)
        return new


def progress(iterable=None, main: bool = True, **kwargs):
    """tqdm bar, off when ``TQDM_DISABLE=1`` (tests) or on non-main processes. With
    ``OOD_PROGRESS=log`` (``./run_all.sh``, whose log is often a file) a plain-text bar
    that writes a line at most every 30 s, and none for inner loops (``leave=False``), so a
    log stays readable."""
    if not main or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        kwargs["disable"] = True
    if os.environ.get("OOD_PROGRESS") == "log":
        import sys

        if kwargs.get("leave") is False:   # inner, short loops (an epoch): their outer loop reports
            kwargs["disable"] = True

        from tqdm import tqdm as text_tqdm

        kwargs = {"mininterval": 30, "ascii": True, "file": sys.stdout, "leave": True, **kwargs}
        return text_tqdm(iterable, **kwargs)
    return tqdm(iterable, **kwargs)
