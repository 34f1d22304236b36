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
import torch.nn.functional as F

from .config import ClassifierConfig
from torch.func import functional_call

from .losses import (CLUB, METRIC_LOSSES, distillation_loss, energy_oe, kl_to_uniform, metric_loss, metric_oe,
                     outlier_exposure, three_head_loss)
from .models import MetricNet, MultiHeadNet, OALNet, build_backbone
from .runtime import progress, seed_everything

LOSSES = ("ce", "oe", "energy_oe", *METRIC_LOSSES, "sd_three_head", "oal")
NEEDS_OUTLIERS = ("oe", "energy_oe", "sd_three_head", "oal")   # metric losses: outliers optional


def loss_family(loss: str) -> str:
    """The ``LOSS_FIELDS`` family of a loss: which config fields it reads."""
    return "metric" if loss in METRIC_LOSSES else loss


def build_model(loss: str, n_classes: int, in_channels: int, cfg: ClassifierConfig,
                outlier_dim: int = 0) -> torch.nn.Module:
    """The network a loss trains: a plain backbone (softmax family), a three-head network
    (SD), a backbone with an embedding and metric proxies (metric family) or a backbone with
    a CLUB estimator over ``outlier_dim``-dimensional outlier embeddings (OAL)."""
    backbone = build_backbone(cfg.backbone, n_classes, in_channels, cfg.width)
    if loss == "oal":
        return OALNet(backbone, CLUB(backbone.feature_dim, outlier_dim))
    if loss in METRIC_LOSSES:
        return MetricNet(backbone, metric_loss(loss, n_classes, cfg.embedding_size), cfg.embedding_size)
    if loss == "sd_three_head":
        return MultiHeadNet(backbone, n_classes, heads=("bin", "in", "out"))
    return backbone


def batch_loss(loss: str, model, xb, yb, ob, cfg: ClassifierConfig, extra: dict | None = None):
    """(loss value, ID logits) for an ID batch and an optional outlier batch ``ob``.

    ``extra`` carries what single families read about the outlier batch: ``labels`` (source
    labels, SD three-head loss); ``embeddings``, ``sources`` (the ID images the outliers were
    made from) and ``teacher`` (OAL)."""
    extra = extra or {}
    n = len(xb)
    inputs = xb if ob is None else torch.cat([xb, ob])
    if loss in METRIC_LOSSES:
        emb = model.embed(model.features(inputs))
        value = metric_oe(model.metric, emb[:n], yb, emb[n:] if ob is not None else None, cfg.oe_lambda)
        return value, model.metric.logits(emb[:n])
    if loss == "sd_three_head":
        out = model(inputs)
        is_out = torch.arange(len(inputs), device=inputs.device) >= n
        value = three_head_loss(out["bin"], out["in"], out["out"], torch.cat([yb, extra["labels"]]), is_out,
                                cfg.sd_lambda)
        return value, out["in"][:n]
    if loss == "oal":
        return oal_loss(model, xb, yb, ob, extra["embeddings"], extra["sources"], extra["teacher"], cfg)
    logits = model(inputs)
    lid, lout = logits[:n], (logits[n:] if ob is not None else None)
    if loss == "energy_oe":
        return energy_oe(lid, yb, lout, cfg.energy_lambda, cfg.m_in, cfg.m_out), lid
    if loss == "oe":
        return outlier_exposure(lid, yb, lout, cfg.oe_lambda), lid
    return F.cross_entropy(lid, yb), lid


def oal_loss(model: OALNet, xb, yb, ob, emb_out, sources, teacher, cfg: ClassifierConfig):
    """OAL (Gao et al. 2024): CE on ID + OE on the (decoded) latent outliers + MICL + KD.

    MICL is the CLUB estimate of I(f(source); z_out) between the classifier's features of the
    ID image each outlier was made from and the outlier's latent embedding; the classifier
    minimises it (through the estimator's frozen parameters) so that ID features carry no
    information about the boundary outliers, while the estimator is fitted to the same
    pairs on detached inputs. KD keeps the logits and features of ID images close to those
    of the teacher, a cross-entropy model trained without outliers."""
    n, m = len(xb), len(ob)
    feats = model.features(torch.cat([xb, ob, sources]))
    logits = model.head(feats)
    f_id, f_src = feats[:n], feats[n + m:]
    value = F.cross_entropy(logits[:n], yb) + cfg.oe_lambda * kl_to_uniform(logits[n:n + m])
    frozen = {k: v.detach() for k, v in model.club.named_parameters()}
    value = value + cfg.micl_weight * functional_call(model.club, frozen, (f_src, emb_out))
    value = value + model.club.learning_loss(f_src.detach(), emb_out)
    with torch.no_grad():
        t_feats = teacher.features(xb)
        t_logits = teacher.head(t_feats)
    value = value + cfg.kd_weight * distillation_loss(logits[:n], t_logits, f_id, t_feats, T=cfg.kd_temperature)
    return value, logits[:n]


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation: a random crop of the zero-padded image (same size)
    and a random horizontal flip, per image, drawn from ``g``."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(2 * pad + 1, (2, n), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(-1, x.shape[1], -1, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(-1, x.shape[1], h, -1)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: ClassifierConfig,
                     loss: str = "ce", outliers: torch.Tensor | None = None, seed: int = 0,
                     workdir: Path | None = None, stop_after_epochs: int | None = None,
                     outlier_labels: torch.Tensor | None = None, outlier_embeddings: torch.Tensor | None = None,
                     outlier_sources: torch.Tensor | None = None, teacher: torch.nn.Module | None = None,
                     snapshot_epochs: tuple = (1,)) -> dict:
    """Train ``cfg.backbone`` with ``loss`` in :data:`LOSSES` on ID images plus optional
    ``outliers`` (images in [0, 1]; ``outlier_labels``: their source labels, needed by the
    SD three-head loss). OAL also needs ``outlier_embeddings`` (N x D, e.g. flattened
    latents), ``outlier_sources`` (index into ``x`` of each outlier's source image) and a
    ``teacher`` trained without outliers. Returns ``{"state", "n_classes", "in_channels", "loss", "backbone",
    "width", "embedding_size", "log", "snapshots"}``; ``log`` holds per-epoch mean loss and train accuracy,
    ``snapshots`` the weights after each epoch of ``snapshot_epochs`` (early checkpoints for figures).
    """
    if loss not in LOSSES:
        raise KeyError(f"unknown loss {loss!r}; valid losses: {list(LOSSES)}")
    if loss in NEEDS_OUTLIERS and (outliers is None or len(outliers) == 0):
        raise ValueError(f"loss {loss!r} needs an outlier set (outliers=...)")
    if loss == "sd_three_head" and outlier_labels is None:
        raise ValueError("the SD three-head loss needs the outliers' source labels (outlier_labels=...)")
    if loss == "oal" and (outlier_embeddings is None or outlier_sources is None or teacher is None):
        raise ValueError("OAL needs outlier_embeddings, outlier_sources and a teacher model")
    seed_everything(seed)
    accelerator = Accelerator()
    outlier_dim = outlier_embeddings.flatten(1).shape[1] if outlier_embeddings is not None else 0
    model = build_model(loss, n_classes, x.shape[1], cfg, outlier_dim)
    if teacher is not None:
        teacher = teacher.to(accelerator.device).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(x) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    epoch, log, snapshots = 0, {"epoch": [], "loss": [], "train_acc": []}, {}
    ckpt = Path(workdir) / "checkpoint.pt" if workdir is not None else None
    if ckpt is not None and ckpt.exists():
        state = safe_load(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["lr_scheduler"])
        epoch, log, snapshots = state["epoch"], state["log"], state.get("snapshots", {})
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
            xb, yb = (augment(x[idx], g) if cfg.augment else x[idx]).to(dev), y[idx].to(dev)
            ob, extra = None, {"teacher": teacher}
            if loss != "ce" and outliers is not None and len(outliers):
                oidx = torch.randint(len(outliers), (cfg.outlier_batch_size,), generator=g)
                ob = (augment(outliers[oidx], g) if cfg.augment else outliers[oidx]).to(dev)
                if outlier_labels is not None:
                    extra["labels"] = outlier_labels[oidx].to(dev)
                if outlier_embeddings is not None:
                    extra["embeddings"] = outlier_embeddings[oidx].flatten(1).to(dev)
                if outlier_sources is not None:
                    extra["sources"] = x[outlier_sources[oidx]].to(dev)
            value, logits_id = batch_loss(loss, model, xb, yb, ob, cfg, extra)
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
        if epoch + 1 in snapshot_epochs:
            snapshots[epoch + 1] = {k: v.detach().cpu().clone()
                                    for k, v in accelerator.unwrap_model(model).state_dict().items()}
        if ckpt is not None and accelerator.is_main_process:
            atomic_save({"model": accelerator.unwrap_model(model).state_dict(), "optimizer": opt.state_dict(),
                         "lr_scheduler": sched.state_dict(), "epoch": epoch + 1, "log": log,
                         "snapshots": snapshots}, ckpt)
        done_here += 1
        if stop_after_epochs is not None and done_here >= stop_after_epochs and epoch + 1 < cfg.epochs:
            raise KeyboardInterrupt(f"stopped after {done_here} epochs (stop_after_epochs)")
    state = {k: v.cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    return {"state": state, "n_classes": n_classes, "in_channels": x.shape[1], "loss": loss,
            "backbone": cfg.backbone, "width": cfg.width, "embedding_size": cfg.embedding_size,
            "outlier_dim": outlier_dim, "log": log, "snapshots": snapshots}


def load_classifier(artifact: dict, epoch: int | None = None) -> torch.nn.Module:
    """Rebuild a trained network from a :func:`train_classifier` artefact, in eval mode:
    the final weights, or those of the snapshot after ``epoch``."""
    cfg = ClassifierConfig(backbone=artifact.get("backbone", "small_cnn"), width=artifact["width"],
                           embedding_size=artifact.get("embedding_size", 128))
    model = build_model(artifact.get("loss", "ce"), artifact["n_classes"], artifact.get("in_channels", 1), cfg,
                        artifact.get("outlier_dim", 0))
    if epoch is None:
        state = artifact["state"]
    elif epoch in artifact.get("snapshots", {}):
        state = artifact["snapshots"][epoch]
    else:
        raise KeyError(f"no snapshot after epoch {epoch}; this model has {sorted(artifact.get('snapshots', {}))}")
    model.load_state_dict(state)
    return model.eval()
