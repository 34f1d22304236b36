"""One training loop for classifiers: ID data plus an optional outlier set.

Runs through Accelerate (CPU, one GPU or ``accelerate launch`` on several), logs per
epoch, and checkpoints after every epoch so an interrupted run resumes where it stopped.
The randomness of each epoch depends only on (seed, epoch), so a resumed run follows the
same loss curve as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .artifacts import atomic_save, load_checkpoint
import torch.nn.functional as F

from .config import LOSS_FIELDS, ClassifierConfig
from torch.func import functional_call

from .losses import (CLUB, ENERGY_MARGIN_RULES, METRIC_LOSSES, distillation_loss, energy_margins, energy_oe,
                     kl_to_uniform, metric_loss, metric_oe, oal_distillation, outlier_exposure, three_head_loss)
from .models import FeatureProjection, MetricNet, MultiHeadNet, OALNet, build_backbone
from .runtime import make_accelerator, progress, seed_everything, shard, sync_gradients

# "oal": OAL as its authors train it; "oal_source_paired": this library's earlier variant (see oal_loss).
OAL_LOSSES = ("oal", "oal_source_paired")
# CLUB hidden width of the official recipe (``CLUB(768, 512, 512)`` / ``DEEP_CLUB(64, 512, 512)``: 512 // 2).
OAL_CLUB_HIDDEN = 256


@dataclass(frozen=True)
class Loss:
    """A loss family as one registry entry (:func:`register_loss`).

    ``batch(model, xb, yb, ob, cfg, extra)`` returns (loss value, ID logits) for an ID batch
    ``xb, yb`` and an outlier batch ``ob`` (``None`` without outliers); ``extra`` holds what some
    built-in families read (source labels, OAL embeddings, the teacher). ``build(backbone,
    n_classes, cfg, outlier_dim, teacher_dim)`` wraps the backbone (default: the plain backbone,
    whose ``features`` and ``head`` every score reads). ``outliers`` is the outlier source it
    trains with by default ("none", "sd", "mixup", "latent"), ``needs_outliers`` whether it
    must have one, ``fields`` the :class:`ClassifierConfig` fields it reads beyond the common
    ones (they enter its models' cache keys)."""

    name: str
    batch: Callable
    build: Callable | None = None
    outliers: str = "none"
    needs_outliers: bool = False
    fields: tuple = ()


LOSSES: dict[str, Loss] = {}


def register_loss(loss: Loss, replace: bool = False) -> Loss:
    """Make ``loss`` trainable everywhere a loss name is accepted (``pipeline.classifier``, the grid)."""
    if loss.name in LOSSES and not replace:
        raise ValueError(f"loss {loss.name!r} is already registered (replace=True to replace it)")
    if loss.needs_outliers and loss.outliers == "none":
        raise ValueError(f"loss {loss.name!r} needs outliers: name its default source (outliers='sd', ...)")
    LOSSES[loss.name] = loss
    return loss


def oal_teacher(cfg: ClassifierConfig) -> str:
    """The loss whose model (same profile and seed) teaches the OAL losses: ``cfg.oal_teacher``,
    checked. Any non-OAL loss of this library; "ce" by default (the official teacher is a
    ViT-B/16 fine-tuned on the ID set, which is not available offline here)."""
    name = cfg.oal_teacher
    if name not in LOSSES or name in OAL_LOSSES:
        raise ValueError(f"oal_teacher {name!r} is not a teacher; pick a non-OAL loss from "
                         f"{[l for l in LOSSES if l not in OAL_LOSSES]}")
    return name


def needs_teacher(loss: str, cfg: ClassifierConfig) -> bool:
    """Whether ``loss`` with ``cfg``'s weights distils from a teacher (an OAL loss with KD on)."""
    if loss == "oal":
        return bool(cfg.oal_kd_logit_weight or cfg.oal_kd_feature_weight)
    return loss == "oal_source_paired" and bool(cfg.kd_weight)


def build_model(loss: str, n_classes: int, in_channels: int, cfg: ClassifierConfig,
                outlier_dim: int = 0, teacher_dim: int = 0, norm: tuple | None = None) -> torch.nn.Module:
    """The network a loss trains: a plain backbone (softmax family), a three-head network
    (SD), a backbone with an embedding and metric proxies (metric family) or a backbone with
    a CLUB estimator over ``outlier_dim``-dimensional outlier embeddings (OAL). For ``"oal"``
    the CLUB predicts ID features from outlier embeddings, as the official code calls it, and
    a projection maps ``teacher_dim``-dimensional teacher features to the student's (none when
    ``teacher_dim`` is 0); ``"oal_source_paired"`` predicts latents from source features."""
    if loss not in LOSSES:
        raise KeyError(f"unknown loss {loss!r}; valid losses: {list(LOSSES)}")
    backbone = build_backbone(cfg.backbone, n_classes, in_channels, cfg.width, norm)
    build = LOSSES[loss].build
    return build(backbone, n_classes, cfg, outlier_dim, teacher_dim) if build else backbone


def batch_loss(loss: str, model, xb, yb, ob, cfg: ClassifierConfig, extra: dict | None = None):
    """(loss value, ID logits) for an ID batch and an optional outlier batch ``ob``: the
    registered family's ``batch``.

    ``extra`` carries what single families read about the outlier batch: ``labels`` (source
    labels, SD three-head loss); ``embeddings`` and ``teacher`` (OAL: one embedding per ID
    image for ``"oal"``, one per outlier for ``"oal_source_paired"``) and ``sources`` (the ID
    images the outliers were made from, ``"oal_source_paired"``)."""
    return LOSSES[loss].batch(model, xb, yb, ob, cfg, extra or {})


# ----------------------------------------------------------------------------- the built-in families
def _softmax_batch(objective):
    """A loss on the logits of the ID and outlier images (``objective(lid, yb, lout, cfg)``)."""
    def batch(model, xb, yb, ob, cfg, extra):
        n = len(xb)
        logits = model(xb if ob is None else torch.cat([xb, ob]))
        lid = logits[:n]
        return objective(lid, yb, logits[n:] if ob is not None else None, cfg), lid
    return batch


def _metric_batch(model, xb, yb, ob, cfg, extra):
    n = len(xb)
    emb = model.embed(model.features(xb if ob is None else torch.cat([xb, ob])))
    value = metric_oe(model.metric, emb[:n], yb, emb[n:] if ob is not None else None, cfg.oe_lambda)
    return value, model.metric.logits(emb[:n])


def _metric_build(name):
    def build(backbone, n_classes, cfg, outlier_dim, teacher_dim):
        own = {"oe_target": cfg.supcon_oe} if name == "supcon" else {}
        return MetricNet(backbone, metric_loss(name, n_classes, cfg.embedding_size, **own), cfg.embedding_size)
    return build


def _three_head_batch(model, xb, yb, ob, cfg, extra):
    n = len(xb)
    inputs = torch.cat([xb, ob])
    out = model(inputs)
    is_out = torch.arange(len(inputs), device=inputs.device) >= n
    value = three_head_loss(out["bin"], out["in"], out["out"], torch.cat([yb, extra["labels"]]), is_out, cfg.sd_lambda)
    return value, out["in"][:n]


def _oal_build(backbone, n_classes, cfg, outlier_dim, teacher_dim):
    d = backbone.feature_dim
    projection = FeatureProjection(teacher_dim, d) if teacher_dim else None
    return OALNet(backbone, CLUB(outlier_dim, d, hidden=OAL_CLUB_HIDDEN, deep=True), projection)


def oal_pairing(n_pool: int, n: int, g: torch.Generator) -> torch.Tensor:
    """Indices of the outlier embeddings paired, by position, with a batch of ``n`` ID images:
    a random draw from the pool without replacement (``randperm(n_pool)[:n]``, as the official
    trainer draws them), from the training generator ``g`` so runs are reproducible and resume
    exactly. A pool smaller than the batch is cycled through in fresh permutations."""
    if n_pool <= 0:
        raise ValueError("OAL needs at least one outlier embedding")
    perms = [torch.randperm(n_pool, generator=g) for _ in range(-(-n // n_pool))]
    return torch.cat(perms)[:n]


def oal_loss(model: OALNet, xb, yb, emb_out, teacher, cfg: ClassifierConfig, ob=None):
    """OAL as its authors train it (Gao et al. 2024; HengGao12/OAL ``openood/trainers/oal_trainer.py``):

    CE(ID) + w_micl * CLUB(z_out -> f(x)) + w_logit * KL(p_teacher || p) + w_feat * KL(softmax(P(t(x))) || softmax(f(x)))

    ``emb_out`` holds one outlier embedding per ID image, drawn at random (:func:`oal_pairing`)
    and paired by position: the pair carries no information about which image an outlier came
    from, and the CLUB estimate, q(f(x) | z_out) as the official code calls it, is minimised by
    the whole model, the estimator's layers included (no separate likelihood step; their lr is
    scaled by ``cfg.oal_club_lr_scale``). Distillation runs at T = 1 on logits and on the
    penultimate features through the learned projection ``model.projection``. There is no OE
    term unless ``cfg.oal_oe_lambda`` > 0 (then on the decoded outlier images ``ob``, a deviation).

    What differs from the official code: one outlier source here (the latent DDPM's outputs,
    flattened; the official code averages its diffusion latents over one axis to 64-d and adds a
    second CLUB term, weight 0.1, on k-NN boundary embeddings), hence one CLUB term, weighted as
    the official one for diffusion latents (0.2); the teacher is a model of this library (CE of
    the same size by default) instead of a ViT-B/16; the optimiser and schedule are this
    library's (AdamW, one-cycle) for every loss, where the official trainer uses SGD, cosine.
    """
    n = len(xb)
    if len(emb_out) != n:
        raise ValueError(f"OAL pairs one outlier embedding with each ID image: got {len(emb_out)} for {n}")
    use_oe = ob is not None and len(ob) > 0 and cfg.oal_oe_lambda != 0
    feats = model.features(torch.cat([xb, ob]) if use_oe else xb)
    logits = model.head(feats)
    f_id, l_id = feats[:n], logits[:n]
    value = F.cross_entropy(l_id, yb)
    if use_oe:
        value = value + cfg.oal_oe_lambda * kl_to_uniform(logits[n:])
    if cfg.oal_micl_weight:
        value = value + cfg.oal_micl_weight * model.club(emb_out, f_id)
    if cfg.oal_kd_logit_weight or cfg.oal_kd_feature_weight:
        if teacher is None:
            raise ValueError("OAL's distillation needs a teacher (or set both oal_kd_*_weight to 0)")
        with torch.no_grad():
            t_feats = teacher.features(xb)
            t_logits = teacher.head(t_feats)
        projected = model.projection(t_feats) if cfg.oal_kd_feature_weight else None
        value = value + oal_distillation(l_id, t_logits, f_id, projected, cfg.oal_kd_logit_weight,
                                         cfg.oal_kd_feature_weight)
    return value, l_id


def oal_source_paired_loss(model: OALNet, xb, yb, ob, emb_out, sources, teacher, cfg: ClassifierConfig):
    """This library's OAL variant, not the authors' recipe (that is :func:`oal_loss`): CE on
    ID + OE on the (decoded) latent outliers + source-paired MICL + Hinton KD.

    MICL is the CLUB estimate of I(f(source); z_out) between the classifier's features of the
    ID image each outlier was made from and the outlier's latent embedding; the classifier
    minimises it (through the estimator's frozen parameters) so that ID features carry no
    information about the boundary outliers, while the estimator is fitted to the same
    pairs on detached inputs. KD keeps the logits and features of ID images close to those
    of the teacher, a cross-entropy model trained without outliers (Hinton et al.: logits KL at
    ``cfg.kd_temperature``, feature MSE)."""
    n, m = len(xb), len(ob)
    feats = model.features(torch.cat([xb, ob, sources]))
    logits = model.head(feats)
    f_id, f_src = feats[:n], feats[n + m:]
    value = F.cross_entropy(logits[:n], yb) + cfg.oe_lambda * kl_to_uniform(logits[n:n + m])
    frozen = {k: v.detach() for k, v in model.club.named_parameters()}
    value = value + cfg.micl_weight * functional_call(model.club, frozen, (f_src, emb_out))
    value = value + model.club.learning_loss(f_src.detach(), emb_out)
    if cfg.kd_weight:
        with torch.no_grad():
            t_feats = teacher.features(xb)
            t_logits = teacher.head(t_feats)
        value = value + cfg.kd_weight * distillation_loss(logits[:n], t_logits, f_id, t_feats, T=cfg.kd_temperature)
    return value, logits[:n]


for _loss in (
    Loss("ce", _softmax_batch(lambda lid, yb, lout, cfg: F.cross_entropy(lid, yb))),
    Loss("oe", _softmax_batch(lambda lid, yb, lout, cfg: outlier_exposure(lid, yb, lout, cfg.oe_lambda)),
         outliers="sd", needs_outliers=True, fields=LOSS_FIELDS["oe"]),
    Loss("energy_oe", _softmax_batch(lambda lid, yb, lout, cfg: energy_oe(lid, yb, lout, cfg.energy_lambda, cfg.m_in,
                                                                        cfg.m_out)),
         outliers="sd", needs_outliers=True, fields=LOSS_FIELDS["energy_oe"]),
    *(Loss(m, _metric_batch, _metric_build(m), fields=LOSS_FIELDS["metric"]) for m in METRIC_LOSSES),
    Loss("sd_three_head", _three_head_batch, lambda backbone, n_classes, *_: MultiHeadNet(
        backbone, n_classes, heads=("bin", "in", "out")), outliers="sd", needs_outliers=True,
         fields=LOSS_FIELDS["sd_three_head"]),
    Loss("oal", lambda model, xb, yb, ob, cfg, extra: oal_loss(model, xb, yb, extra["embeddings"],
                                                               extra.get("teacher"), cfg, ob),
         _oal_build, outliers="latent", needs_outliers=True, fields=LOSS_FIELDS["oal"]),
    Loss("oal_source_paired", lambda model, xb, yb, ob, cfg, extra: oal_source_paired_loss(
        model, xb, yb, ob, extra["embeddings"], extra["sources"], extra.get("teacher"), cfg),
         lambda backbone, n_classes, cfg, outlier_dim, teacher_dim: OALNet(backbone, CLUB(backbone.feature_dim,
                                                                                          outlier_dim)),
         outliers="latent", needs_outliers=True,
         fields=LOSS_FIELDS["oal_source_paired"]),
):
    register_loss(_loss)


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation: a random crop of the zero-padded image (same size)
    and a random horizontal flip, per image, drawn from ``g``."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(2 * pad + 1, (2, n), generator=g).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(-1, x.shape[1], -1, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(-1, x.shape[1], h, -1)
    out = out.gather(3, cols)
    flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
    out[flip] = out[flip].flip(-1)
    return out


def train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: ClassifierConfig,
                     loss: str = "ce", outliers: torch.Tensor | None = None, seed: int = 0,
                     workdir: Path | None = None, stop_after_epochs: int | None = None,
                     outlier_labels: torch.Tensor | None = None, outlier_embeddings: torch.Tensor | None = None,
                     outlier_sources: torch.Tensor | None = None, teacher: torch.nn.Module | None = None,
                     snapshot_epochs: tuple = (1,), energy_margins: tuple | None = None) -> dict:
    """Train ``cfg.backbone`` with ``loss`` in :data:`LOSSES` on ID images plus optional
    ``outliers`` (images in [0, 1]; ``outlier_labels``: their source labels, needed by the
    SD three-head loss). The OAL losses also need ``outlier_embeddings`` (N x D, e.g. flattened
    latents) and, with distillation on (:func:`needs_teacher`), a ``teacher`` trained without
    outliers; ``"oal"`` reads the images ``outliers`` only when ``cfg.oal_oe_lambda`` > 0 and
    pairs each ID image with a random embedding (:func:`oal_pairing`), ``"oal_source_paired"``
    also needs ``outlier_sources`` (index into ``x`` of each outlier's source image).
    Returns ``{"state", "n_classes", "in_channels", "loss", "backbone", "width", "embedding_size",
    "outlier_dim", "teacher_dim", "log", "snapshots"}``; ``log`` holds per-epoch mean loss and train accuracy,
    ``snapshots`` the weights after each epoch of ``snapshot_epochs`` (early checkpoints for figures).

    ``"energy_oe"`` with ``cfg.energy_margins == "from_ce"`` reads its margins ``(m_in, m_out)``
    from ``energy_margins`` (:func:`ce_energy_margins` of a CE model trained on the same data,
    as ``pipeline.classifier`` passes them); when it is None a CE model is trained here first
    (same data, ``cfg`` and seed). With ``"fixed"`` the margins are ``cfg.m_in`` / ``cfg.m_out``.
    The margins used are returned as ``"energy_margins"``.
    """
    if loss not in LOSSES:
        raise KeyError(f"unknown loss {loss!r}; valid losses: {list(LOSSES)}")
    oal_images = loss != "oal" or cfg.oal_oe_lambda != 0     # "oal" trains on embeddings only, unless OE is on
    if LOSSES[loss].needs_outliers and oal_images and (outliers is None or len(outliers) == 0):
        raise ValueError(f"loss {loss!r} needs an outlier set (outliers=...)")
    if loss == "sd_three_head" and outlier_labels is None:
        raise ValueError("the SD three-head loss needs the outliers' source labels (outlier_labels=...)")
    if loss in OAL_LOSSES:
        if outlier_embeddings is None or len(outlier_embeddings) == 0 or (needs_teacher(loss, cfg) and teacher is None):
            raise ValueError(f"{loss} needs outlier_embeddings and a teacher model (teacher=...)")
        if loss == "oal_source_paired" and outlier_sources is None:
            raise ValueError("oal_source_paired needs outlier_sources (each outlier's source image in x)")
    if not needs_teacher(loss, cfg):
        teacher = None
    margins = None
    if loss == "energy_oe":
        cfg, margins = _with_energy_margins(x, y, n_classes, cfg, seed, energy_margins)
    elif energy_margins is not None:
        raise ValueError(f"energy_margins is an energy_oe setting; loss {loss!r} does not read it")
    seed_everything(seed)
    accelerator = make_accelerator()
    outlier_dim = outlier_embeddings.flatten(1).shape[1] if outlier_embeddings is not None else 0
    teacher_dim = teacher.feature_dim if loss == "oal" and teacher is not None and cfg.oal_kd_feature_weight else 0
    norm = input_normalisation(x, cfg)
    model = build_model(loss, n_classes, x.shape[1], cfg, outlier_dim, teacher_dim, norm)
    if accelerator.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher = teacher.to(accelerator.device).eval()
    groups = param_groups(model, loss, cfg)
    steps_per_epoch = -(-len(x) // cfg.batch_size)
    opt, sched = optimiser(groups, cfg, cfg.epochs * steps_per_epoch)
    epoch, log, snapshots = 0, {"epoch": [], "loss": [], "train_acc": []}, {}
    ckpt = Path(workdir) / "checkpoint.pt" if workdir is not None else None
    state = load_checkpoint(ckpt, f"{loss} training") if ckpt is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["lr_scheduler"])
        epoch, log, snapshots = state["epoch"], state["log"], state.get("snapshots", {})
        accelerator.print(f"resuming classifier training from epoch {epoch}")
    dev = accelerator.device
    if accelerator.num_processes > 1 and dev.type == "cuda":   # BatchNorm over the global batch, as one GPU
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(dev)
    # Everything the loop indexes stays on the device; indices are drawn on the host from the
    # epoch's generator (cheap), so the CPU path draws exactly what it always drew.
    on = (lambda t: t.to(dev) if t is not None else None)
    xd, yd, od, ld, sd = on(x), on(y), on(outliers), on(outlier_labels), on(outlier_sources)
    ed = on(outlier_embeddings.flatten(1)) if outlier_embeddings is not None else None
    done_here = 0
    for epoch in progress(range(epoch, cfg.epochs), desc=f"{loss} training (epochs)", initial=epoch, total=cfg.epochs,
                          main=accelerator.is_main_process):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(len(x), generator=g)
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=dev)   # summed on the device: no per-step host sync
        correct = torch.zeros((), dtype=torch.long, device=dev)
        n = 0
        for i in progress(range(steps_per_epoch), desc=f"{loss} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                           main=accelerator.is_main_process):
            # Every process draws the same global batch (and augmentation) and takes its shard.
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size].to(dev)
            xb, yb = (augment(xd[idx], g) if cfg.augment else xd[idx]), yd[idx]
            ob, extra = None, {"teacher": teacher}
            if loss == "oal":
                oidx = oal_pairing(len(outlier_embeddings), len(idx), g).to(dev)
                extra["embeddings"] = shard(ed[oidx], accelerator)
                if cfg.oal_oe_lambda:
                    ob = augment(od[oidx], g) if cfg.augment else od[oidx]
            elif loss != "ce" and od is not None and len(od):
                oidx = torch.randint(len(od), (cfg.outlier_batch_size,), generator=g).to(dev)
                ob = augment(od[oidx], g) if cfg.augment else od[oidx]
                for key, source in (("labels", ld), ("embeddings", ed), ("sources", sd)):
                    if source is not None:
                        extra[key] = shard(source[oidx] if key != "sources" else xd[source[oidx]], accelerator)
            xb, yb = shard(xb, accelerator), shard(yb, accelerator)
            ob = shard(ob, accelerator) if ob is not None else None
            with accelerator.autocast():
                value, logits_id = batch_loss(loss, model, xb, yb, ob, cfg, extra)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(value)
            sync_gradients(model.parameters(), accelerator, len(xb), len(idx))
            opt.step()
            sched.step()
            total += value.detach().double() * len(xb)
            correct += (logits_id.argmax(1) == yb).sum()
            n += len(idx)
        if accelerator.num_processes > 1:
            total, correct = accelerator.reduce(total, "sum"), accelerator.reduce(correct, "sum")
        if not math.isfinite(total.item()):
            raise FloatingPointError(f"classifier loss became {total.item()} in epoch {epoch + 1}; lower lr ({cfg.lr})")
        log["epoch"].append(epoch + 1)
        log["loss"].append(total.item() / n)
        log["train_acc"].append(correct.item() / n)
        if epoch + 1 in snapshot_epochs:
            snapshots[epoch + 1] = {k: v.detach().cpu().clone()
                                    for k, v in model.state_dict().items()}
        if ckpt is not None and accelerator.is_main_process:
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "lr_scheduler": sched.state_dict(), "epoch": epoch + 1, "log": log,
                         "snapshots": snapshots}, ckpt)
        done_here += 1
        if stop_after_epochs is not None and done_here >= stop_after_epochs and epoch + 1 < cfg.epochs:
            raise KeyboardInterrupt(f"stopped after {done_here} epochs (stop_after_epochs)")
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    return {"state": state, "n_classes": n_classes, "in_channels": x.shape[1], "loss": loss,
            "backbone": cfg.backbone, "width": cfg.width, "embedding_size": cfg.embedding_size,
            "outlier_dim": outlier_dim, "teacher_dim": teacher_dim, "log": log, "snapshots": snapshots,
            **({"norm": norm} if norm is not None else {}),
            **({"energy_margins": margins} if margins is not None else {})}


def ce_energy_margins(ce_model: torch.nn.Module, x: torch.Tensor, cfg: ClassifierConfig) -> tuple[float, float]:
    """The ``"from_ce"`` margins (:func:`ood_lib.losses.energy_margins` at
    ``cfg.energy_margin_quantiles``) from a CE model's energies on the ID training images ``x``
    (eval mode)."""
    from .models import predict
    from .scores import energy

    q_in, q_out = cfg.energy_margin_quantiles
    return energy_margins(energy(predict(ce_model, x)[0]), q_in, q_out)


def _with_energy_margins(x, y, n_classes, cfg: ClassifierConfig, seed: int, given: tuple | None):
    """``cfg`` with the energy-OE margins it trains with, and those margins (see train_classifier)."""
    import dataclasses

    if cfg.energy_margins not in ENERGY_MARGIN_RULES:
        raise ValueError(f"unknown energy_margins rule {cfg.energy_margins!r}; valid: {list(ENERGY_MARGIN_RULES)}")
    if cfg.energy_margins == "fixed":
        if given is not None:
            raise ValueError("energy_margins were passed but cfg.energy_margins is 'fixed' (cfg.m_in, cfg.m_out); "
                             "set cfg.energy_margins='from_ce' to train with them")
        return cfg, (cfg.m_in, cfg.m_out)
    if given is None:
        ce = train_classifier(x, y, n_classes, cfg, loss="ce", seed=seed, snapshot_epochs=())
        given = ce_energy_margins(load_classifier(ce), x, cfg)
    m_in, m_out = (float(v) for v in given)
    if not m_in < m_out:
        raise ValueError(f"energy margins need m_in < m_out, got ({m_in}, {m_out})")
    return dataclasses.replace(cfg, m_in=m_in, m_out=m_out), (m_in, m_out)


def optimiser(groups: list[dict], cfg: ClassifierConfig, total_steps: int):
    """The optimiser and per-step schedule of ``cfg``: AdamW with one-cycle (this library's
    default, tuned on `digits`), or OpenOOD's recipe, SGD (momentum, Nesterov) with cosine
    annealing to zero (``cfg.optimizer == "sgd"``: their ResNet-18 baselines' training)."""
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                              weight_decay=cfg.weight_decay)
        return opt, torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    max_lr = [grp["lr"] for grp in opt.param_groups] if len(groups) > 1 else cfg.lr
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr, total_steps=total_steps)


def input_normalisation(x: torch.Tensor, cfg: ClassifierConfig) -> tuple | None:
    """(mean, std) per channel of the ID training images with ``cfg.normalise == "id_train"``;
    ``None`` with ``"fixed"`` (each backbone's constants: 0.5 / 0.5, CIFAR-10's for the RGB
    backbones). Stored in the artefact, so a reloaded model normalises as it was trained."""
    if cfg.normalise == "fixed":
        return None
    mean = x.float().mean(dim=(0, 2, 3))
    std = x.float().std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def param_groups(model: torch.nn.Module, loss: str, cfg: ClassifierConfig) -> list[dict]:
    """The optimiser's parameter groups: one for every loss but ``"oal"``, whose CLUB layers and
    teacher-feature projection train at ``cfg.lr`` times ``oal_club_lr_scale`` and
    ``oal_projection_lr_scale``, as the official trainer gives them their own learning rates
    (1e-4 and 0.01 beside the backbone's 0.005) in the same optimiser and the same loss."""
    if loss != "oal":
        return [{"params": list(model.parameters())}]
    groups = [{"params": list(model.backbone.parameters())},
              {"params": list(model.club.parameters()), "lr": cfg.lr * cfg.oal_club_lr_scale}]
    if model.projection is not None:
        groups.append({"params": list(model.projection.parameters()), "lr": cfg.lr * cfg.oal_projection_lr_scale})
    return groups


def load_classifier(artifact: dict, epoch: int | None = None) -> torch.nn.Module:
    """Rebuild a trained network from a :func:`train_classifier` artefact, in eval mode:
    the final weights, or those of the snapshot after ``epoch``."""
    cfg = ClassifierConfig(backbone=artifact.get("backbone", "small_cnn"), width=artifact["width"],
                           embedding_size=artifact.get("embedding_size", 128))
    model = build_model(artifact.get("loss", "ce"), artifact["n_classes"], artifact.get("in_channels", 1), cfg,
                        artifact.get("outlier_dim", 0), artifact.get("teacher_dim", 0), artifact.get("norm"))
    if epoch is None:
        state = artifact["state"]
    elif epoch in artifact.get("snapshots", {}):
        state = artifact["snapshots"][epoch]
    else:
        raise KeyError(f"no snapshot after epoch {epoch}; this model has {sorted(artifact.get('snapshots', {}))}")
    model.load_state_dict(state)
    return model.eval()
