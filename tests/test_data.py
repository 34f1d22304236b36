import gzip
import struct

import numpy as np
import pytest
import torch

from ood_lib.config import DataConfig
from ood_lib.data import get_ood_set, load_benchmark, ood_catalogue
from ood_lib.images import data_root, load_idx_folder, read_idx

SMALL = DataConfig(n_train_per_class=20, n_val_per_class=5, n_test_per_class=10,
                   n_near_val_per_class=5, n_near_test_per_class=10, n_far=12)


def test_digits_splits_are_stratified_disjoint_and_deterministic(monkeypatch, tmp_path):
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path))  # no optional sets
    b = load_benchmark(SMALL, verbose=False)
    assert b.classes == ["0", "1", "2", "3", "4", "5"]
    assert torch.bincount(b.id_train.y).tolist() == [20] * 6
    assert torch.bincount(b.id_test.y).tolist() == [10] * 6
    assert set(b.ood_test["digits_6to9"].y.tolist()) == {6, 7, 8, 9}
    flat = lambda s: {tuple(v) for v in (s.x.flatten(1) * 255).round().int().tolist()}  # noqa: E731
    assert not flat(b.id_train) & flat(b.id_test) and not flat(b.id_val) & flat(b.id_test)
    assert not flat(b.ood_val["digits_6to9"]) & flat(b.ood_test["digits_6to9"])
    again = load_benchmark(SMALL, verbose=False)
    assert torch.equal(b.id_train.x, again.id_train.x)
    for s in [b.id_train, *b.ood_test.values()]:
        assert s.x.shape[1:] == (1, 28, 28) and s.x.dtype == torch.float32
        assert 0 <= s.x.min() and s.x.max() <= 1
    assert {"textures", "lfw_crops", "gaussian_noise", "uniform_noise"} <= set(b.ood_test)
    assert set(b.skipped) == {"mnist_test_6to9", "notmnist"}
    assert "OOD_DATA_ROOT" in b.skipped["notmnist"]


def test_unknown_ood_set_lists_valid_names():
    with pytest.raises(KeyError) as err:
        get_ood_set("nope", 10)
    for name in ood_catalogue():
        assert name in str(err.value)


def _write_idx(path, array, code):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(data)


def test_idx_reader_on_fabricated_files(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs, 0x08)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, 0x08)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), imgs)
    x, y = load_idx_folder(tmp_path)
    assert x.shape == (7, 1, 28, 28) and torch.allclose(x[3, 0] * 255, torch.from_numpy(imgs[3]).float())
    assert y.tolist() == list(range(7))
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")


@pytest.mark.skipif(not (data_root() / "notmnist-test").exists(), reason="../shared/data not present")
def test_optional_sets_from_shared_data():
    s = get_ood_set("notmnist", 50)
    assert len(s) == 50 and s.x.shape[1:] == (1, 28, 28)
    m = get_ood_set("mnist_test_heldout", 30, held=["6", "7", "8", "9"])
    assert len(m) == 30


def test_the_benchmark_follows_the_data_root_within_one_process(monkeypatch, tmp_path):
    """A notebook that points OOD_DATA_ROOT elsewhere without restarting its kernel gets the sets
    found there, in both directions (the per-process cache is keyed on the data location)."""
    from ood_lib import get_profile, pipeline

    P = get_profile("smoke")
    found = pipeline.benchmark(P)
    if not {"mnist_test_6to9", "notmnist"} & set(found.ood_test):
        pytest.skip("no optional set under the data root")
    with_sets = pipeline.data_fingerprint(P, "ood_test")
    monkeypatch.setenv("OOD_DATA_ROOT", str(tmp_path))
    empty = pipeline.benchmark(P)
    assert set(empty.skipped) > set(found.skipped) and set(empty.ood_test) < set(found.ood_test)
    assert pipeline.data_fingerprint(P, "ood_test") != with_sets       # the keys see it too
    monkeypatch.delenv("OOD_DATA_ROOT")
    assert set(pipeline.benchmark(P).ood_test) == set(found.ood_test)


def test_an_idx_folder_takes_names_for_its_label_numbers(tmp_path):
    """Fashion-MNIST and other IDX sets label by number; classes= names them, so the held-out
    set reads fashion_boot, not fashion_9."""
    from ood_lib.data import register_dataset

    imgs = np.random.default_rng(0).integers(0, 256, size=(60, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs, 0x08)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(60, dtype=np.uint8) % 3, 0x08)
    ds = register_dataset("fashion3", str(tmp_path), classes=["shirt", "trouser", "boot"], id_classes=["shirt", "trouser"])
    pool = ds.read()["train"]
    assert pool.classes == ["shirt", "trouser", "boot"] and pool.labels[:4].tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="classes must name each of them, in order"):
        register_dataset("fashion2", str(tmp_path), classes=["shirt", "trouser"]).read()
