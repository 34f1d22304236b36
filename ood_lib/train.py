"""One training loop for classifiers: ID data plus an optional outlier set.

Runs through Accelerate (CPU, one GPU or ``accelerate launch`` on several), logs per
epoch, and checkpoints after every epoch so an interrupted run resumes where it stopped.
The randomness of each epoch depends only on (seed, epoch), so a resumed run follows the
same loss curve as an uninterrupted one.
"""
from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from .artifacts import atomic_save, safe_load
from .config import ClassifierConfig
from .losses import LOSSES, outlier_exposure
from .models import SmallCNN
from .runtime import progress, seed_everything


def train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: ClassifierConfig,
                     loss: str = "ce", outliers: torch.Tensor | None = None, seed: int = 0,
                     workdir: Path | None = None, stop_after_epochs: int | None = None) -> dict:
    """Train a :class:`SmallCNN` with ``loss`` in :data:`LOSSES`.

    ``"oe"`` needs ``outliers`` (images in [0, 1]). Returns ``{"state", "n_classes",
    "width", "log"}`` where ``log`` holds per-epoch mean loss and train accuracy.
    """
    if loss not in LOSSES:
        raise KeyError(f"unknown loss {loss!r}; valid losses: {list(LOSSES)}")
    if loss == "oe" and (outliers is None or len(outliers) == 0):
        raise ValueError("loss 'oe' needs an outlier set (outliers=...)")
    seed_everything(seed)
    accelerator = Accelerator()
    model = SmallCNN(n_classes, x.shape[1], cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(x) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    epoch, log = 0, {"epoch": [], "loss": [], "train_acc": []}
    ckpt = Path(workdir) / "checkpoint.pt" if workdir is not None else None
    if ckpt is not None and ckpt.exists():
        state = safe_load(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["lr_scheduler"])
        epoch, log = state["epoch"], state["log"]
        accelerator.print(f"resuming classifier training from epoch {epoch}")
    model, opt = accelerator.prepare(model, opt)
    dev = accelerator.device
    done_here = 0
    for epoch in range(epoch, cfg.epochs):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(len(x), generator=g)
        model.train()
        total, correct, n = 0.0, 0, 0
        for i in progress(range(steps_per_epoch), desc=f"{loss} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                           main=accelerator.is_main_process):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            if loss == "oe":
                oidx = torch.randint(len(outliers), (cfg.outlier_batch_size,), generator=g)
                logits = model(torch.cat([xb, outliers[oidx].to(dev)]))
                logits_id, logits_out = logits[: len(xb)], logits[len(xb):]
            else:
                logits_id, logits_out = model(xb), None
            value = outlier_exposure(logits_id, yb, logits_out, cfg.oe_lambda if loss == "oe" else 0.0)
            if not torch.isfinite(value):
                raise FloatingPointError(f"classifier loss is {value.item()} in epoch {epoch}; lower lr ({cfg.lr})")
            opt.zero_grad(set_to_none=True)
            accelerator.backward(value)
            opt.step()
            sched.step()
            total += value.item() * len(idx)
            correct += (logits_id.argmax(1) == yb).sum().item()
            n += len(idx)
        log["epoch"].append(epoch + 1)
        log["loss"].append(total / n)
        log["train_acc"].append(correct / n)
        if ckpt is not None and accelerator.is_main_process:
            atomic_save({"model": accelerator.unwrap_model(model).state_dict(), "optimizer": opt.state_dict(),
                         "lr_scheduler": sched.state_dict(), "epoch": epoch + 1, "log": log}, ckpt)
        done_here += 1
        if stop_after_epochs is not None and done_here >= stop_after_epochs and epoch + 1 < cfg.epochs:
            raise KeyboardInterrupt(f"stopped after {done_here} epochs (stop_after_epochs)")
    state = {k: v.cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    return {"state": state, "n_classes": n_classes, "width": cfg.width, "in_channels": x.shape[1], "log": log}


def load_classifier(artifact: dict) -> SmallCNN:
    model = SmallCNN(artifact["n_classes"], artifact.get("in_channels", 1), artifact["width"])
    model.load_state_dict(artifact["state"])
    return model.eval()
