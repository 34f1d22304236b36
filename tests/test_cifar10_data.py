"""The `cifar10` benchmark's data pipeline, on tiny files fabricated in every official format
(CIFAR pickles, SVHN .mat, image folders, .tar.gz image folders, IDX) and on ../shared/data."""
import dataclasses
import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from ood_lib.config import DataConfig
from ood_lib.data import CIFAR10_CLASSES, CIFAR10_SETS, DOWNLOADS, _to_array, describe_locations, load_benchmark
from ood_lib.images import data_root

SMALL = DataConfig(dataset="cifar10", n_train_per_class=8, n_val_per_class=2, n_test_per_class=3, n_near_val=2, n_far=5)
N_TRAIN, N_TEST = 12, 4                      # fabricated CIFAR-10 images per class
OOD_NAMES = [n for n, (g, _) in CIFAR10_SETS.items() if g != "id"]


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    monkeypatch.delenv("OOD_DOWNLOAD", raising=False)


# --------------------------------------------------------------------------- fabrication
def _cifar(n_per_class, seed):
    """Random uint8 images (N,3,32,32), labels interleaved 0..9 as in the real batches."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(10 * n_per_class, 3, 32, 32), dtype=np.uint8)
    return x, np.tile(np.arange(10), n_per_class)


CIFAR_TRAIN, CIFAR_TEST = _cifar(N_TRAIN, 0), _cifar(N_TEST, 1)


def _png(chw):
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))).save(buf, "PNG")
    return buf.getvalue()


def _solid_jpeg(rgb, w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), tuple(int(v) for v in rgb)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def write_cifar10_pickles(root):
    folder = root / "cifar-10-batches-py"
    (x, y), (xt, yt) = CIFAR_TRAIN, CIFAR_TEST
    for i, part in enumerate(np.array_split(np.arange(len(x)), 5), start=1):
        _dump(folder / f"data_batch_{i}", {b"data": x[part].reshape(len(part), -1), b"labels": y[part].tolist()})
    _dump(folder / "test_batch", {b"data": xt.reshape(len(xt), -1), b"labels": yt.tolist()})
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})


def _cifar10_members(split):
    """ImageFolder members <split>/<class>/<index>.png, named by index in the pickle order."""
    x, y = CIFAR_TRAIN if split == "train" else CIFAR_TEST
    return {f"{split}/{CIFAR10_CLASSES[y[i]]}/{i:05d}.png": _png(x[i]) for i in range(len(x))}


def write_cifar10_folder(root):
    for split in ("train", "test"):
        for name, data in _cifar10_members(split).items():
            (root / "cifar10" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "cifar10" / name).write_bytes(data)


def write_cifar10_targz(root):
    for split in ("train", "test"):
        with tarfile.open(root / f"cifar10-{split}.tar.gz", "w:gz") as tar:
            for name, data in sorted(_cifar10_members(split).items(), reverse=True):  # unsorted on purpose
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _write_idx_gz(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


TIN_COLOURS = np.array([[20 * i + 10, 200 - 20 * i, 40 + 15 * i] for i in range(9)])
MNIST_GRAYS = np.array([0, 50, 100, 150, 200, 255])


def write_ood_sets(root):
    """Every OOD set of the suite, each in an official layout, with known pixels."""
    from scipy.io import savemat

    rng = np.random.default_rng(7)
    ood = {}
    ood["cifar100"] = rng.integers(0, 256, size=(7, 3, 32, 32), dtype=np.uint8)
    _dump(root / "cifar-100-python" / "test",
          {b"data": ood["cifar100"].reshape(7, -1), b"fine_labels": list(range(7)), b"coarse_labels": [0] * 7})
    ood["svhn"] = rng.integers(0, 256, size=(6, 3, 32, 32), dtype=np.uint8)
    (root / "svhn").mkdir()
    savemat(root / "svhn" / "test_32x32.mat",
            {"X": ood["svhn"].transpose(2, 3, 1, 0), "y": np.array([[10], [1], [2], [3], [4], [5]], np.uint8)})
    ood["places365"] = rng.integers(0, 256, size=(8, 3, 32, 32), dtype=np.uint8)
    (root / "places365" / "val_256").mkdir(parents=True)
    for i, img in enumerate(ood["places365"]):
        (root / "places365" / "val_256" / f"Places365_val_{i + 1:08d}.png").write_bytes(_png(img))
    tin = root / "tiny-imagenet-200" / "test" / "images"
    tin.mkdir(parents=True)
    for i, rgb in enumerate(TIN_COLOURS):
        (tin / f"test_{i}.JPEG").write_bytes(_solid_jpeg(rgb, 64, 64))
    for cls, rgb in (("banded", (200, 30, 30)), ("cobwebbed", (30, 200, 30))):
        (root / "dtd" / "dtd" / "images" / cls).mkdir(parents=True)
        for j in range(3):
            (root / "dtd" / "dtd" / "images" / cls / f"{cls}_{j:04d}.jpg").write_bytes(_solid_jpeg(rgb, 48, 40 + j))
    _write_idx_gz(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz",
                  np.repeat(MNIST_GRAYS, 28 * 28).reshape(-1, 28, 28))
    _write_idx_gz(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", np.arange(6))
    return ood


def _index_of(images_u8, x):
    """Index of each loaded image (float in [0,1]) among fabricated uint8 images (exact match)."""
    lookup = {img.tobytes(): i for i, img in enumerate(images_u8)}
    u8 = (x * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(u8.astype(np.float32) / 255, x.numpy()), "values are not k/255"
    return [lookup[img.tobytes()] for img in u8]   # KeyError = a pixel differs


def _nearest_colour(x, colours):
    mean = (x.mean(dim=(2, 3)) * 255).numpy()
    return [int(np.argmin(np.abs(colours - m).sum(1))) for m in mean]


def _check_set(s):
    assert s.x.dtype == torch.float32 and s.x.shape[1:] == (3, 32, 32)
    assert 0 <= s.x.min() and s.x.max() <= 1


# --------------------------------------------------------------------------- fabricated data
@pytest.fixture
def full_root(tmp_path, monkeypatch):
    write_cifar10_pickles(tmp_path)
    ood = write_ood_sets(tmp_path)
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path))
    return tmp_path, ood


def test_id_splits_are_stratified_exact_and_deterministic(full_root):
    b = load_benchmark(SMALL, verbose=False)
    assert b.name == "cifar10" and b.classes == list(CIFAR10_CLASSES) and b.n_classes == 10
    (x, y), (xt, yt) = CIFAR_TRAIN, CIFAR_TEST
    for s, n in ((b.id_train, 8), (b.id_val, 2), (b.id_test, 3)):
        _check_set(s)
        assert s.group == "id" and s.y.dtype == torch.int64
        assert torch.bincount(s.y, minlength=10).tolist() == [n] * 10
    tr, va, te = _index_of(x, b.id_train.x), _index_of(x, b.id_val.x), _index_of(xt, b.id_test.x)
    # Pixels equal the fabricated ones and labels follow the official class order.
    assert b.id_train.y.tolist() == y[tr].tolist() and b.id_val.y.tolist() == y[va].tolist()
    assert b.id_test.y.tolist() == yt[te].tolist()
    assert tr == sorted(tr) and len(set(tr)) == len(tr) and not set(tr) & set(va)
    again = load_benchmark(SMALL, verbose=False)
    assert torch.equal(b.id_train.x, again.id_train.x) and torch.equal(b.id_test.x, again.id_test.x)
    assert torch.equal(b.ood_test["tin"].x, again.ood_test["tin"].x)
    other = load_benchmark(dataclasses.replace(SMALL, seed=1), verbose=False)
    assert set(_index_of(x, other.id_train.x)) != set(tr)


def test_ood_suite_groups_caps_and_pixels(full_root):
    root, ood = full_root
    b = load_benchmark(SMALL, verbose=False)
    assert b.skipped == {}
    assert list(b.ood_test) == OOD_NAMES == ["cifar100", "tin", "mnist", "svhn", "textures", "places365"]
    assert {n: s.group for n, s in b.ood_test.items()} == {
        "cifar100": "near", "tin": "near", "mnist": "far", "svhn": "far", "textures": "far", "places365": "far"}
    for s in [*b.ood_test.values(), *b.ood_val.values()]:
        _check_set(s)
    assert {n: len(s) for n, s in b.ood_test.items()} == {n: 5 for n in OOD_NAMES}   # n_far cap
    for name in ("cifar100", "svhn", "places365"):          # lossless sources: exact pixels, sorted subset
        idx = _index_of(ood[name], b.ood_test[name].x)
        assert idx == sorted(set(idx))
    # Tiny-ImageNet: 64x64 JPEGs resized to 32x32; validation images are not in the test set.
    assert list(b.ood_val) == ["tin"] and b.ood_val["tin"].group == "near" and len(b.ood_val["tin"]) == 2
    val, test = (_nearest_colour(s.x, TIN_COLOURS) for s in (b.ood_val["tin"], b.ood_test["tin"]))
    assert len(set(val)) == 2 and len(set(test)) == 5 and not set(val) & set(test)
    assert torch.allclose(b.ood_test["tin"].x * 255, torch.tensor(TIN_COLOURS[test], dtype=torch.float32)
                          [:, :, None, None].expand(-1, -1, 32, 32), atol=3)
    # MNIST: gray replicated to three channels, 28 -> 32.
    m = b.ood_test["mnist"].x
    assert torch.equal(m[:, 0], m[:, 1]) and torch.equal(m[:, 0], m[:, 2])
    grays = (m[:, 0].mean(dim=(1, 2)) * 255).round()
    assert set(grays.tolist()) <= set(MNIST_GRAYS.astype(float).tolist()) and len(set(grays.tolist())) == 5
    assert (m[:, 0] * 255 - grays[:, None, None]).abs().max() <= 1
    # DTD: non-square JPEGs, each one solid colour after resize + centre crop.
    t = b.ood_test["textures"].x * 255
    assert (t - t.mean(dim=(2, 3), keepdim=True)).abs().max() <= 3
    assert b.sources["svhn"] == str(root / "svhn" / "test_32x32.mat")
    assert b.sources["textures"] == str(root / "dtd" / "dtd" / "images")


def test_resize_is_shorter_side_then_centre_crop():
    """OpenOOD's test transform: Resize(32) (shorter side) then CenterCrop(32)."""
    cols = np.tile(np.arange(64, dtype=np.uint8) * 3, (32, 1))           # 32 rows x 64 columns
    img = Image.fromarray(np.stack([cols, cols, cols], axis=-1))
    out = _to_array(img)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert np.array_equal(out[0], cols[:, 16:48])
    assert _to_array(Image.new("L", (28, 28), 77)).shape == (3, 32, 32)


def test_every_cifar10_format_gives_the_same_benchmark(tmp_path, monkeypatch):
    loaded = {}
    for fmt, write in (("pickle", write_cifar10_pickles), ("folder", write_cifar10_folder),
                       ("targz", write_cifar10_targz)):
        root = tmp_path / fmt
        root.mkdir()
        write(root)
        monkeypatch.setenv("OOD_DATA_ROOT", str(root))
        loaded[fmt] = load_benchmark(SMALL, verbose=False)
    targz = tmp_path / "targz"
    assert loaded["targz"].sources["cifar10"] == f"{targz / 'cifar10-train.tar.gz'} | {targz / 'cifar10-test.tar.gz'}"
    for split in ("id_train", "id_val", "id_test"):
        sets = [getattr(b, split) for b in loaded.values()]
        # pickles interleave classes, folders group them: same images once ordered by label
        order = [torch.sort(s.y, stable=True).indices for s in sets]
        for s, o in zip(sets[1:], order[1:]):
            assert torch.equal(s.y[o], sets[0].y[order[0]]) and torch.equal(s.x[o], sets[0].x[order[0]])


def test_missing_ood_sets_are_skipped_with_reasons(tmp_path, monkeypatch, capsys):
    write_cifar10_pickles(tmp_path)
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path))
    b = load_benchmark(SMALL, verbose=True)
    assert b.ood_test == {} and b.ood_val == {} and list(b.skipped) == OOD_NAMES
    assert "svhn/test_32x32.mat" in b.skipped["svhn"] and "OOD_DATA_ROOT" in b.skipped["svhn"]
    assert "OOD_DOWNLOAD=1" in b.skipped["svhn"] and "OOD_DOWNLOAD" not in b.skipped["tin"]
    assert "tiny-imagenet-200.zip" in b.skipped["tin"] and str(tmp_path) in b.skipped["places365"]
    assert capsys.readouterr().out.count("skipping OOD set") == len(OOD_NAMES)


def test_missing_cifar10_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        load_benchmark(SMALL, verbose=False)
    msg = str(err.value)
    for part in ("CIFAR-10", "cifar-10-batches-py", "cifar10-jpeg-train.tar.gz", str(tmp_path),
                 "OOD_DATA_ROOT", "OOD_DOWNLOAD=1"):
        assert part in msg


def test_bad_class_folder_and_oversized_split_are_errors(tmp_path, monkeypatch):
    write_cifar10_folder(tmp_path)
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path))
    with pytest.raises(ValueError, match="n_train_per_class"):
        load_benchmark(dataclasses.replace(SMALL, n_train_per_class=11), verbose=False)
    (tmp_path / "cifar10" / "train" / "cat").rename(tmp_path / "cifar10" / "train" / "kitten")
    with pytest.raises(ValueError, match="kitten"):
        load_benchmark(SMALL, verbose=False)


def test_downloads_only_with_ood_download(tmp_path, monkeypatch):
    """torchvision is faked: never a network call; the fake SVHN writes where torchvision does."""
    import torchvision.datasets as tvd
    from scipy.io import savemat

    calls = []

    class Offline:
        def __init__(self, root, *args, **kwargs):
            calls.append((type(self).__name__, root))
            raise RuntimeError("no network here")

    class FakeSVHN:
        def __init__(self, root, split, download):
            calls.append(("SVHN", root))
            assert split == "test" and download
            os.makedirs(root, exist_ok=True)
            savemat(os.path.join(root, "test_32x32.mat"),
                    {"X": np.full((32, 32, 3, 3), 9, np.uint8), "y": np.ones((3, 1), np.uint8)})

    for name in ("CIFAR10", "CIFAR100", "MNIST", "DTD", "Places365"):
        monkeypatch.setattr(tvd, name, type(name, (Offline,), {}))
    monkeypatch.setattr(tvd, "SVHN", FakeSVHN)
    write_cifar10_pickles(tmp_path)
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path))
    b = load_benchmark(SMALL, verbose=False)
    assert calls == [] and "svhn" in b.skipped                       # OOD_DOWNLOAD unset: nothing runs
    monkeypatch.setenv("OOD_DOWNLOAD", "1")
    b = load_benchmark(SMALL, verbose=False)
    assert sorted(n for n, _ in calls) == sorted(["CIFAR100", "MNIST", "SVHN", "DTD", "Places365"])
    assert torch.all(b.ood_test["svhn"].x == 9 / 255) and len(b.ood_test["svhn"]) == 3
    assert b.sources["svhn"] == str(tmp_path / "svhn" / "test_32x32.mat")
    assert "download with torchvision" in b.skipped["cifar100"] and "tin" in b.skipped
    assert set(DOWNLOADS) == {"cifar10", "cifar100", "mnist", "svhn", "textures", "places365"}


def test_describe_locations_lists_every_candidate():
    text = describe_locations()
    for name, (group, locations) in CIFAR10_SETS.items():
        assert f"{name} ({group})" in text
        assert all(loc.path in text for loc in locations)


def test_load_benchmark_dispatches_on_dataset(tmp_path, monkeypatch):
    write_cifar10_pickles(tmp_path)
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path))
    c = load_benchmark(SMALL, verbose=False)
    assert c.name == "cifar10" and len(c.id_train) == 80
    d = load_benchmark(DataConfig(n_train_per_class=5, n_val_per_class=2, n_test_per_class=2,
                                  n_near_val_per_class=2, n_near_test_per_class=2, n_far=3), verbose=False)
    assert d.name == "digits" and d.id_train.x.shape == (30, 1, 28, 28)

    with pytest.raises(KeyError, match="imagenet.*cifar10.*digits.*register_dataset"):
        load_benchmark(DataConfig(dataset="imagenet"))


# --------------------------------------------------------------------------- ../shared/data
OFFLINE = ("cifar10-jpeg-train.tar.gz", "cifar10-jpeg-test.tar.gz", "tinyimagenet-test.tar.gz",
           "dtd-10class-96px.tar.gz", "mnist-test")


@pytest.mark.skipif(not all((data_root() / f).exists() for f in OFFLINE),
                    reason=f"offline data ({', '.join(OFFLINE)}) not under {data_root()}")
def test_offline_shared_data():
    cfg = DataConfig(dataset="cifar10", n_train_per_class=3, n_val_per_class=1, n_test_per_class=2, n_near_val=5, n_far=10)
    b = load_benchmark(cfg, verbose=False)
    assert torch.bincount(b.id_train.y, minlength=10).tolist() == [3] * 10
    assert torch.bincount(b.id_val.y, minlength=10).tolist() == [1] * 10
    assert torch.bincount(b.id_test.y, minlength=10).tolist() == [2] * 10
    assert {n: len(s) for n, s in b.ood_test.items()} == {"tin": 10, "mnist": 10, "textures": 10}
    assert len(b.ood_val["tin"]) == 5
    assert set(b.skipped) == {"cifar100", "svhn", "places365"}
    for s in [b.id_train, b.id_val, b.id_test, *b.ood_test.values(), *b.ood_val.values()]:
        _check_set(s)
        assert s.x.std() > 0.05                                   # real images, not blank
    m = b.ood_test["mnist"].x
    assert torch.equal(m[:, 0], m[:, 2])
    assert b.sources["cifar10"].endswith("cifar10-jpeg-test.tar.gz")


def test_cifar10_six_vs_four_open_set_split(full_root):
    """The usual open-set split: six CIFAR-10 classes ID, the other four near-OOD (from the same
    training pool for validation and the test pool for test), with the suite's other sets."""
    cfg = dataclasses.replace(SMALL, id_classes=CIFAR10_CLASSES[:6], n_near_val_per_class=2, n_near_test_per_class=3)
    b = load_benchmark(cfg, verbose=False)
    held = "cifar10_frog-horse-ship-truck"
    assert b.classes == list(CIFAR10_CLASSES[:6]) and sorted(b.id_train.y.unique().tolist()) == list(range(6))
    assert torch.bincount(b.ood_test[held].y, minlength=10)[6:].tolist() == [3] * 4
    assert torch.bincount(b.ood_val[held].y, minlength=10)[6:].tolist() == [2] * 4
    assert list(b.ood_val) == [held] and "tin" in b.ood_test      # held-out classes validate; tin keeps all its images
    assert len(b.id_test) == 6 * 3
