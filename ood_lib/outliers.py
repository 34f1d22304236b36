"""The three synthetic-outlier generators and the outlier store.

* **Semantic-discrepant (SD)** outliers (paper 3): an ID image x_0 with label y is diffused
  to DDPM timestep S, then denoised with classifier-free guidance toward a random *other*
  class c_r ~ U({0..C-1} minus {y}): eps_t = (1 + w) * eps(x_t, c_r) - w * eps(x_t). The
  outlier keeps its source label y (the SD three-head loss trains its out-head on it).
* **Label-mixup** outliers (paper 1): pixel DDPM samples from noise, conditioned on
  lam * e(a) + (1 - lam) * e(b) with a != b, so that they belong to no single class.
* **Latent boundary** outliers (paper 2, after Dream-OOD): ID images are embedded in the
  latent DDPM's conditioning space; the embeddings with the largest K-th-neighbour distance
  are perturbed with Gaussian noise, the perturbed points farthest from the data are kept,
  and the latent DDPM turns them into outlier latents (decoded only for viewing or for
  pixel-space losses).

Every generator returns an :class:`OutlierSet`, which the pipeline caches and which loads
as a training dataset (images or latents) or as an OOD test set.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch.utils.data import TensorDataset

from .images import ImageSet
from .models import SmallCNN
from .diffusion import denoise, diffuse, generate, mix_labels, to_image_space, to_model_space, unet_schedule
from .runtime import progress as progress_bar

GENERATORS = ("sd", "mixup", "latent")


@dataclass
class OutlierSet:
    """Synthetic outliers with their provenance.

    ``x`` holds images in [0, 1]; ``latents`` the latent generator's outputs (scaled latent
    space of its autoencoder). ``y_source`` is the source class (SD: label of the source
    image; mixup: class a; latent: the class whose boundary was perturbed), ``y_target``
    the other class (SD: c_r; mixup: b), ``lam`` the mixup weights, ``source_index`` the
    index of the source ID training image (SD) or boundary embedding (latent).
    """

    generator: str
    x: torch.Tensor
    y_source: torch.Tensor
    params: dict = field(default_factory=dict)
    y_target: torch.Tensor | None = None
    lam: torch.Tensor | None = None
    source_index: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    seconds: float = float("nan")      # generation wall time, all parts
    timings: dict = field(default_factory=dict)  # seconds per part (e.g. sampling, decoding)
    unet_evals: int = 0                # UNet image-evaluations (guidance counts two per step)

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return f"OutlierSet({self.generator!r}, n={len(self)}, params={self.params})"

    def to_dict(self) -> dict:
        """Plain dict for the artefact store (loads with ``weights_only=True``)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "OutlierSet":
        return cls(**d)

    def dataset(self, kind: str = "images") -> TensorDataset:
        """(outlier, source label) pairs for training; ``kind`` is "images" or "latents"."""
        if kind not in ("images", "latents"):
            raise ValueError(f"kind must be 'images' or 'latents', not {kind!r}")
        data = self.x if kind == "images" else self.latents
        if data is None:
            raise ValueError(f"the {self.generator!r} outliers have no latents; use kind='images'")
        return TensorDataset(data, self.y_source)

    def as_ood_set(self, name: str | None = None) -> ImageSet:
        """The outliers as an OOD *test* set (group "synthetic")."""
        return ImageSet(name or f"synthetic_{self.generator}", self.x, None, group="synthetic")


def other_class(y: torch.Tensor, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A class uniform over the classes different from y (shift by 1..C-1 modulo C)."""
    shift = torch.randint(1, n_classes, y.shape, generator=generator)
    return (y + shift) % n_classes


# --------------------------------------------------------------------- semantic-discrepant
@torch.no_grad()
def semantic_discrepant(unet: UNet2DModel, x0: torch.Tensor, y: torch.Tensor, n_classes: int,
                        S: int, w: float, stride: int, seed: int = 0, batch_size: int = 256,
                        target: torch.Tensor | None = None, progress: bool = True,
                        clip_sample: bool = False) -> dict:
    """SD outliers from images ``x0`` in [0, 1] with labels ``y``.

    Returns ``{"x": outliers in [0, 1], "y_source": y, "y_target": c_r}``. ``S=0`` returns
    the inputs unchanged. ``target`` overrides the random c_r (tests, figures and Table 4's
    control, ``target=y``); the noise is the same as without it, so the two are paired.
    """
    g = torch.Generator().manual_seed(seed)
    y = y.long()
    c_r = other_class(y, n_classes, g)            # drawn even when overridden: the noise stays paired
    if target is not None:
        c_r = target.long()
    noise = torch.randn(x0.shape, generator=g)
    if S == 0:
        return {"x": x0.clone(), "y_source": y.clone(), "y_target": c_r}
    device = next(unet.parameters()).device
    schedule = unet_schedule(unet)
    out = []
    for i in progress_bar(range(0, len(x0), batch_size), desc=f"SD outliers (S={S}, w={w})", main=progress):
        sl = slice(i, i + batch_size)
        x_S = diffuse(to_model_space(x0[sl]), S, noise[sl], schedule["num_train_timesteps"], schedule["beta_schedule"])
        x = denoise(unet, x_S.to(device), S, c_r[sl].to(device), w, stride, clip_sample)
        out.append(to_image_space(x.cpu()))
    return {"x": torch.cat(out), "y_source": y.clone(), "y_target": c_r}


def make_sd_outliers(unet: UNet2DModel, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                     cfg, progress: bool = True) -> OutlierSet:
    """Draw ``cfg.n_outliers`` source images (with repetition if needed) and make SD outliers
    (``cfg``: :class:`ood_lib.config.SDConfig`)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    reps = -(-cfg.n_outliers // len(x))
    idx = torch.cat([torch.randperm(len(x), generator=g) for _ in range(reps)])[: cfg.n_outliers]
    out = semantic_discrepant(unet, x[idx], y[idx], n_classes, cfg.S, cfg.w, cfg.stride,
                              seed=cfg.seed, batch_size=cfg.batch_size, progress=progress,
                              clip_sample=cfg.clip_sample)
    return OutlierSet("sd", out["x"], out["y_source"], dataclasses.asdict(cfg),
                      y_target=out["y_target"], source_index=idx)


# --------------------------------------------------------------------------- label-mixup
@torch.no_grad()
def label_mixup(unet: UNet2DModel, n: int, n_classes: int, cfg, progress: bool = True) -> OutlierSet:
    """``n`` label-mixup outliers (``cfg``: :class:`ood_lib.config.MixupConfig`).

    Labels and weights come from ``Generator(cfg.seed + 1)``, the starting noise from
    ``Generator(cfg.seed)`` as in :func:`ood_lib.diffusion.sample`, so lam = 1 reproduces
    plain class-conditional sampling of class a with the same seed."""
    if not 0.0 <= cfg.lam_low <= cfg.lam_high <= 1.0:
        raise ValueError(f"need 0 <= lam_low <= lam_high <= 1, got {cfg.lam_low}, {cfg.lam_high}")
    g = torch.Generator().manual_seed(cfg.seed + 1)
    a = torch.randint(n_classes, (n,), generator=g)
    b = other_class(a, n_classes, g)
    lam = cfg.lam_low + (cfg.lam_high - cfg.lam_low) * torch.rand(n, generator=g)
    cond = mix_labels(unet, a, b, lam)
    x = generate(unet, cond, cfg.w, cfg.stride, cfg.seed, cfg.sampler, batch_size=cfg.batch_size,
                 progress=progress, desc="label-mixup outliers")
    return OutlierSet("mixup", to_image_space(x), a, dataclasses.asdict(cfg), y_target=b, lam=lam)


def mixup_interpolation(unet: UNet2DModel, a: torch.Tensor, b: torch.Tensor, lams, w: float, stride: int,
                        seed: int = 0) -> dict:
    """Samples for each lam in ``lams`` from the *same* starting noise: lam=1 is class a,
    lam=0 class b. Returns ``{lam: images in [0, 1]}`` (for figures)."""
    return {float(lam): to_image_space(generate(unet, mix_labels(unet, a, b, torch.full((len(a),), float(lam))),
                                                w, stride, seed)) for lam in lams}


# ------------------------------------------------------------------------ latent boundary
def kth_neighbour_distance(query: torch.Tensor, bank: torch.Tensor, k: int,
                           exclude_self: bool = False) -> torch.Tensor:
    """Euclidean distance from each query row to its k-th nearest row of ``bank``.
    ``exclude_self`` (query is bank) skips each point's zero distance to itself."""
    extra = int(exclude_self)
    if k + extra > len(bank):
        raise ValueError(f"k={k} needs more than {len(bank)} bank points")
    d = torch.cdist(query.double(), bank.double())
    return d.topk(k + extra, dim=1, largest=False).values[:, -1].to(query.dtype)


def boundary_indices(emb: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Indices of the ``n`` points of ``emb`` with the largest k-th-neighbour distance
    (within ``emb``): the boundary of the set, most isolated first."""
    dist = kth_neighbour_distance(emb, emb, k, exclude_self=True)
    return dist.topk(min(n, len(emb))).indices


def boundary_outliers(emb: torch.Tensor, labels: torch.Tensor, n_classes: int, k: int, n_boundary: int,
                      sigma: float, n_candidates: int, n_keep: int, generator: torch.Generator) -> dict:
    """Outlier embeddings near each class's boundary (Dream-OOD / NPOS style).

    Per class: pick the ``n_boundary`` unit-norm embeddings with the largest k-th-neighbour
    distance, add N(0, sigma^2) noise ``n_candidates`` times to each (renormalised to the
    sphere), and keep the ``n_keep`` candidates farthest (k-th-neighbour distance) from the
    class's embeddings. Returns ``{"z", "y", "boundary_index", "distance"}``."""
    emb = F.normalize(emb.float(), dim=1)
    out = {"z": [], "y": [], "boundary_index": [], "distance": []}
    for c in range(n_classes):
        members = (labels == c).nonzero().flatten()
        e_c = emb[members]
        b = boundary_indices(e_c, k, n_boundary)
        seeds = b.repeat_interleave(n_candidates)
        cand = F.normalize(e_c[seeds] + sigma * torch.randn(len(seeds), emb.shape[1], generator=generator), dim=1)
        dist = kth_neighbour_distance(cand, e_c, k)
        keep = dist.topk(min(n_keep, len(cand))).indices
        out["z"].append(cand[keep])
        out["y"].append(torch.full((len(keep),), c))
        out["boundary_index"].append(members[seeds[keep]])
        out["distance"].append(dist[keep])
    return {k_: torch.cat(v) for k_, v in out.items()}


class EmbeddingEncoder(torch.nn.Module):
    """Image encoder aligned to the latent DDPM's class embeddings: its cosine similarity to
    e(c) is the logit of class c, so ID embeddings cluster around their class's embedding
    direction and perturbed points are meaningful conditioning vectors."""

    def __init__(self, class_vectors: torch.Tensor, width: int = 16, temperature: float = 0.1,
                 in_channels: int = 1):
        super().__init__()
        self.backbone = SmallCNN(len(class_vectors), in_channels, width)
        self.proj = torch.nn.Linear(self.backbone.feature_dim, class_vectors.shape[1])
        self.register_buffer("class_vectors", class_vectors.clone())
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.backbone.features(x)), dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_of(self(x))

    def logits_of(self, z: torch.Tensor) -> torch.Tensor:
        """Cosine logits of (unit-norm) embeddings ``z``."""
        return z @ F.normalize(self.class_vectors, dim=1).T / self.temperature


def train_embedding_encoder(x: torch.Tensor, y: torch.Tensor, class_vectors: torch.Tensor, epochs: int,
                            temperature: float, seed: int = 0, batch_size: int = 64,
                            lr: float = 3e-3, progress: bool = True) -> EmbeddingEncoder:
    """Fit :class:`EmbeddingEncoder` with cross-entropy on its cosine logits (the class
    vectors stay fixed)."""
    torch.manual_seed(seed)
    enc = EmbeddingEncoder(class_vectors, temperature=temperature, in_channels=x.shape[1])
    opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in progress_bar(range(epochs), desc="embedding encoder", main=progress):
        enc.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(enc.logits(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return enc.eval()


@torch.no_grad()
def embed(enc: EmbeddingEncoder, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([enc(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def id_embeddings(latent_unet: UNet2DModel, x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg,
                  progress: bool = True) -> tuple[torch.Tensor, float]:
    """Embed the ID images in the latent DDPM's conditioning space: train an
    :class:`EmbeddingEncoder` on its class embeddings e(0..C-1) and return the unit-norm
    embeddings with the encoder's training accuracy (``cfg``: LatentOutlierConfig)."""
    vectors = latent_unet.class_embedding.weight.detach()[:n_classes]
    enc = train_embedding_encoder(x, y, vectors, cfg.encoder_epochs, cfg.temperature, seed=cfg.seed,
                                  progress=progress)
    emb = embed(enc, x)
    return emb, (enc.logits_of(emb).argmax(1) == y).float().mean().item()


@torch.no_grad()
def latent_boundary_outliers(latent_unet: UNet2DModel, emb: torch.Tensor, labels: torch.Tensor,
                             n_classes: int, cfg, progress: bool = True) -> OutlierSet:
    """Outlier *latents* from boundary embeddings (``cfg``: :class:`ood_lib.config.LatentOutlierConfig`).

    ``emb`` are the ID training embeddings of an :class:`EmbeddingEncoder`; each kept
    direction is scaled to the norm of its class's embedding e(c) and used as the latent
    DDPM's conditioning vector. ``x`` is left empty here: the pipeline decodes the latents."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    n_keep = -(-cfg.n_outliers // n_classes)
    pts = boundary_outliers(emb, labels, n_classes, cfg.k, cfg.n_boundary, cfg.sigma, cfg.n_candidates, n_keep, g)
    keep = torch.randperm(len(pts["z"]), generator=g)[: cfg.n_outliers]
    table = latent_unet.class_embedding.weight.detach().cpu()
    y = pts["y"][keep]
    cond = pts["z"][keep] * table[y].norm(dim=1, keepdim=True)
    latents = generate(latent_unet, cond, cfg.w, cfg.stride, cfg.seed, cfg.sampler, batch_size=cfg.batch_size,
                       progress=progress, desc="latent outliers")
    return OutlierSet("latent", torch.empty(0), y, dataclasses.asdict(cfg),
                      source_index=pts["boundary_index"][keep], latents=latents)
