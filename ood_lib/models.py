"""Backbones with a penultimate-feature hook: ``model.features(x)`` and ``model(x)``.

Every backbone takes images in [0, 1], normalises them itself, and exposes
``features(x)`` (pooled penultimate features, ``feature_dim`` wide) and ``head``
(the linear classifier), so ``predict`` and the feature-based scores work on any of them.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv stages (width, 2w, 4w), global average pooling, linear head.

    Inputs are images in [0, 1]; ``features`` returns the pooled 4w-dim penultimate
    features used by distance scores such as k-NN.
    """

    def __init__(self, n_classes: int, in_channels: int = 1, width: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.norm = _Normalise(in_channels, mean if mean is not None else (0.5,) * in_channels,
                               std if std is not None else (0.5,) * in_channels)
        self.body = nn.Sequential(
            _block(in_channels, width), nn.MaxPool2d(2),
            _block(width, 2 * width), nn.MaxPool2d(2),
            _block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, n_classes)
        self.feature_dim = 4 * width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def model_outputs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """What the scores read, in one pass (eval mode, on CPU): ``logits`` and ``features``,
    plus ``embeddings`` for metric models and ``bin`` for models with a binary head."""
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list] = {}
    heads = getattr(model, "heads", {})
    for i in range(0, len(x), batch_size):
        f = model.features(x[i:i + batch_size].to(device))
        batch = {"features": f, "logits": model.head(f)}
        if hasattr(model, "metric"):
            batch["embeddings"] = model.embed(f)
        if "bin" in heads:
            batch["bin"] = heads["bin"](f)
        for k, v in batch.items():
            parts.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and penultimate features of ``x`` (eval mode, batched, returned on CPU)."""
    out = model_outputs(model, x, batch_size)
    return out["logits"], out["features"]


# --------------------------------------------------------------------------- standard backbones

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class _Normalise(nn.Module):
    """Per-channel ``(x - mean) / std`` on [0, 1] images.

    Buffers are non-persistent: they follow ``.to(device)`` but stay out of the state
    dict, so checkpoints hold only learned weights and the statistics come from the
    constructor. Defaults: CIFAR-10 statistics for 3 channels, 0.5/0.5 otherwise
    (e.g. 1-channel MNIST-like data, matching ``SmallCNN``).
    """

    def __init__(self, in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        if mean is None:
            mean = CIFAR10_MEAN if in_channels == 3 else (0.5,) * in_channels
        if std is None:
            std = CIFAR10_STD if in_channels == 3 else (0.5,) * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ResNet18(nn.Module):
    """torchvision ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool).

    The ImageNet stem (7x7/2 conv + max-pool) shrinks a 32x32 image to 8x8 before the
    first block and costs several points of accuracy; the CIFAR stem is the one used by
    the OOD literature's ResNet-18 baselines. Blocks come from torchvision unchanged
    (the field's reference implementation); ``fc`` is lifted out as ``head`` and
    ``features`` returns the 512-d globally pooled features.
    """

    def __init__(self, n_classes: int, in_channels: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        from torchvision.models import resnet18  # imported lazily: only needed for this backbone

        net = resnet18(num_classes=n_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        net.maxpool = nn.Identity()
        self.head = net.fc
        net.fc = nn.Identity()
        self.body = net
        self.norm = _Normalise(in_channels, mean, std)
        self.feature_dim = self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _WideBasic(nn.Module):
    """Pre-activation WRN basic block: BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3 + shortcut.

    As in Zagoruyko & Komodakis (2016) and the OE code: when the width changes, the
    shortcut is a 1x1 conv applied to the pre-activated input.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal = c_in == c_out and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        return y + (x if self.equal else self.shortcut(o))


class WideResNet(nn.Module):
    """Standard Wide ResNet (WRN-depth-k) for 32x32 inputs.

    torchvision ships only ImageNet-style wide ResNets, not WRN-40-2, the backbone of
    the OE / Energy / many CIFAR OOD baselines. Layout: 3x3 conv to 16 channels, three
    groups of (depth-4)/6 pre-activation basic blocks of widths 16k, 32k, 64k (strides
    1, 2, 2), BN-ReLU, global average pooling, linear head. WRN-40-2 with 10 classes has
    2,243,546 parameters, as in the OE paper's code.
    """

    def __init__(self, depth: int = 40, widen_factor: int = 2, n_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.norm = _Normalise(in_channels, mean, std)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                layers.append(_WideBasic(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                         stride if i == 0 else 1, dropout))
        layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(widths[3], n_classes)
        self.feature_dim = widths[3]
        for m in self.modules():  # initialisation of the reference implementation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


BACKBONES = ("small_cnn", "resnet18", "wrn40_2")


def build_backbone(name: str, n_classes: int, in_channels: int = 1, width: int = 32,
                   norm: tuple | None = None) -> nn.Module:
    """Backbone by name, so configs and CLIs pick architectures by string.

    ``width`` applies to ``small_cnn`` only; the standard backbones keep their
    published widths so results compare with the literature. ``norm`` = (mean, std) per
    channel of the input normalisation (default: each backbone's own, see :class:`_Normalise`).
    """
    mean, std = norm if norm is not None else (None, None)
    if name == "small_cnn":
        return SmallCNN(n_classes, in_channels=in_channels, width=width, mean=mean, std=std)
    if name == "resnet18":
        return ResNet18(n_classes, in_channels=in_channels, mean=mean, std=std)
    if name == "wrn40_2":
        return WideResNet(40, 2, n_classes=n_classes, in_channels=in_channels, mean=mean, std=std)
    raise KeyError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")


# --------------------------------------------------------------------------- multi-head wrapper

HEAD_NAMES = ("bin", "in", "out", "embed")


class MultiHeadNet(nn.Module):
    """A backbone plus named linear heads on its features.

    Needed by losses that read several outputs from one trunk: the SD three-head loss
    uses ``"bin"`` (2 logits, ID vs outlier), ``"in"`` (C-way ID classifier) and
    ``"out"`` (C-way head for outliers); metric-learning losses use ``"embed"`` (a
    linear projection to ``embedding_size``). ``forward`` returns a dict of the heads'
    outputs plus ``"features"``.

    The ``"in"`` head is always built (``predict`` and ID accuracy need it) and is
    the backbone's own ``head`` when that is a ``Linear`` with ``n_classes`` outputs, so
    wrapping a trained classifier keeps its predictions. ``features`` and ``head``
    (the ``"in"`` head) make ``predict(model, x)`` work unchanged.
    """

    def __init__(self, backbone: nn.Module, n_classes: int, heads: Sequence[str] = ("in",),
                 embedding_size: int = 128):
        super().__init__()
        if isinstance(heads, str):
            heads = (heads,)
        unknown = [h for h in heads if h not in HEAD_NAMES]
        if unknown:
            raise ValueError(f"unknown heads {unknown}; valid names: {', '.join(HEAD_NAMES)}")
        names = list(dict.fromkeys(("in", *heads)))
        d = backbone.feature_dim
        own = getattr(backbone, "head", None)
        sizes = {"bin": 2, "in": n_classes, "out": n_classes, "embed": embedding_size}
        self.backbone = backbone
        self.heads = nn.ModuleDict()
        for h in names:
            if h == "in" and isinstance(own, nn.Linear) and own.in_features == d and own.out_features == n_classes:
                self.heads[h] = own
            else:
                self.heads[h] = nn.Linear(d, sizes[h])
        self.feature_dim = d
        self.n_classes = n_classes
        self.head_names = tuple(names)

    @property
    def head(self) -> nn.Module:
        return self.heads["in"]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        out = {h: m(f) for h, m in self.heads.items()}
        out["features"] = f
        return out


class MetricNet(nn.Module):
    """Backbone + linear embedding + a metric-learning loss's class weights (proxies).

    Metric losses (ArcFace, CosFace, SupCon, ProxyAnchor) train the embedding; prediction
    and outlier exposure use the scaled cosine logits to the class weights, so ``head``
    maps features to those logits and ``predict(model, x)`` works unchanged."""

    def __init__(self, backbone: nn.Module, metric: nn.Module, embedding_size: int):
        super().__init__()
        self.backbone = backbone
        self.embed = nn.Linear(backbone.feature_dim, embedding_size)
        self.metric = metric
        self.feature_dim = backbone.feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.metric.logits(self.embed(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureProjection(nn.Module):
    """Maps a teacher's penultimate features to the student's width for OAL's feature
    distillation: BatchNorm -> Linear -> ReLU -> BatchNorm, the layout of the official ``DT``
    module (HengGao12/OAL ``openood/networks/kd_model.py``, there 768-d ViT features to 512-d
    ResNet-18 features). It trains with the student and is stored in :class:`OALNet`."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(in_dim), nn.Linear(in_dim, out_dim), nn.ReLU(),
                                 nn.BatchNorm1d(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class OALNet(nn.Module):
    """A softmax classifier plus what an OAL loss trains beside it: ``club``, the CLUB
    estimator of the MICL term, and for the official recipe (loss ``"oal"``) ``projection``,
    the :class:`FeatureProjection` of the teacher's features (``None`` when there is none).
    Prediction and scores use the backbone only (``features``, ``head``)."""

    def __init__(self, backbone: nn.Module, club: nn.Module, projection: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.club = club
        self.projection = projection
        self.feature_dim = backbone.feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)

    @property
    def head(self) -> nn.Module:
        return self.backbone.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
