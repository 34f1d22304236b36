"""Backbones with a penultimate-feature hook: ``model.features(x)`` and ``model(x)``."""
from __future__ import annotations

import torch
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

    def __init__(self, n_classes: int, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            _block(in_channels, width), nn.MaxPool2d(2),
            _block(width, 2 * width), nn.MaxPool2d(2),
            _block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, n_classes)
        self.feature_dim = 4 * width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - 0.5) / 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and penultimate features of ``x`` (eval mode, batched, returned on CPU)."""
    model.eval()
    device = next(model.parameters()).device
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
        f = model.features(x[i:i + batch_size].to(device))
        feats.append(f.cpu())
        logits.append(model.head(f).cpu())
    return torch.cat(logits), torch.cat(feats)
