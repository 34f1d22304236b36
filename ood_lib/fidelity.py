"""Generator fidelity: does a class-conditional diffusion model draw its class?

Every outlier source here rests on a generator that can draw an ID image of a chosen class:
label-mixup interpolates between classes the DDPM must know, SD guidance moves an image toward
a class, latent outliers decode the latent DDPM's samples. A generator that draws noise makes
"outliers" that are noise, and every table built on them tests nothing (issue 29: the 16-32-32
epsilon-prediction pixel DDPM drew its class 29-38 % of the time and 64-69 % of its samples were
degenerate; results/benchmarks/generator_recipes_digits.md).

The check: N samples per class from pure noise at the sampler settings an outlier generator
uses, judged by an independent classifier. It reports

* the conditional accuracy (the judge's verdict equals the class the sample was conditioned
  on), overall and per class;
* the share of **degenerate** samples (:func:`degenerate`): noise-like, saturated or blank;
* the Fréchet distance to ID validation in the judge's features, beside ID test's own
  distance at the same n (the value a perfect generator would get).

:func:`gate` turns it into a verdict: a generator fails when its conditional accuracy at
its outlier settings is below :data:`MIN_ACCURACY` or more than :data:`MAX_DEGENERATE` of its
samples are degenerate. A failed generator is marked :data:`FAILED` in every table that uses
its outliers, and ``ablations.evidence`` drops its models before the claims' rules read them.
"""
from __future__ import annotations

import torch

from .diagnostics import frechet_distance

MIN_ACCURACY = 0.90      # conditional accuracy below this fails the gate
MAX_DEGENERATE = 0.05    # a degenerate share above this fails the gate
FAILED = "GENERATOR FAILED"


def image_stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image statistics of images in [0, 1] (N x C x H x W) that separate images from
    noise and blanks: ``roughness`` (mean absolute difference between neighbouring pixels:
    large for noise), ``bright`` (share of pixels above 0.5: large for saturated noise) and
    ``std`` (pixel standard deviation: near 0 for a blank or constant image)."""
    x = x.float()
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    return {"roughness": (dx + dy) / 2, "bright": (x > 0.5).flatten(1).float().mean(1), "std": x.flatten(1).std(1)}


def degenerate(x: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """Which samples are degenerate, judged against real images of the same data (``reference``,
    e.g. ID validation): ``noise`` when rougher than the roughest reference image, ``saturated``
    when brighter than the brightest, ``blank`` when its pixel spread is under half the smallest
    reference spread. Thresholds come from the data, so the rule holds for dark MNIST digits and
    for natural images alike. Returns the three boolean masks and their union, ``any``."""
    s, r = image_stats(x), image_stats(reference)
    masks = {"noise": s["roughness"] > r["roughness"].max(), "saturated": s["bright"] > r["bright"].max(),
             "blank": s["std"] < 0.5 * r["std"].min()}
    masks["any"] = masks["noise"] | masks["saturated"] | masks["blank"]
    return masks


def fidelity(pred: torch.Tensor, labels: torch.Tensor, x: torch.Tensor, reference_x: torch.Tensor,
             feats: torch.Tensor, val_feats: torch.Tensor, test_feats: torch.Tensor, n_classes: int) -> dict:
    """The fidelity of one set of conditional samples.

    ``pred``: the judge's class verdicts on the samples ``x`` conditioned on ``labels``;
    ``reference_x``: real ID images for the degenerate thresholds; ``feats``, ``val_feats``,
    ``test_feats``: the judge's features of the samples, of ID validation and of ID test.
    ``frechet_id_test`` is ID test's distance to ID validation with as many images as samples
    (a Fréchet distance on n samples is biased upward as n shrinks)."""
    correct = (pred == labels).float()
    per_class = [correct[labels == c].mean().item() if (labels == c).any() else float("nan")
                 for c in range(n_classes)]
    bad = degenerate(x, reference_x)
    n = min(len(feats), len(test_feats))
    # a random n of ID test (splits are stored sorted by class: the first n would hold a few classes)
    test_feats = test_feats[torch.randperm(len(test_feats), generator=torch.Generator().manual_seed(0))]
    return {"n": len(x), "accuracy": correct.mean().item(), "min_class_accuracy": min(per_class),
            "per_class": per_class, **{f"degenerate_{k}" if k != "any" else "degenerate": v.float().mean().item()
                                        for k, v in bad.items()},
            "frechet_id_val": frechet_distance(feats, val_feats),
            "frechet_id_test": frechet_distance(test_feats[:n], val_feats)}


def gate(result: dict, min_accuracy: float = MIN_ACCURACY, max_degenerate: float = MAX_DEGENERATE) -> dict:
    """The verdict on a :func:`fidelity` result: ``{"passed", "text"}``, the text naming what
    failed (e.g. "GENERATOR FAILED: 41 % on-class (gate 90 %), 36 % degenerate (gate 5 %)")."""
    acc, bad = result["accuracy"], result["degenerate"]
    why = []
    if not acc >= min_accuracy:
        why.append(f"{100 * acc:.0f} % on-class (gate {100 * min_accuracy:.0f} %)")
    if not bad <= max_degenerate:
        why.append(f"{100 * bad:.0f} % degenerate (gate {100 * max_degenerate:.0f} %)")
    if why:
        return {"passed": False, "text": f"{FAILED}: " + ", ".join(why)}
    return {"passed": True, "text": f"ok: {100 * acc:.0f} % on-class, {100 * bad:.0f} % degenerate"}
