"""The GPU-efficient loops (data on the device, batches and noise drawn there, losses copied to
the host in blocks, bf16 only on a GPU) leave the CPU path exactly as it was: these losses were
recorded with the loops as they stood before that change (commit 8ceb00c) and must not move."""
import pytest
import torch

from ood_lib.autoencoder import train_autoencoder
from ood_lib.config import AutoencoderConfig, ClassifierConfig, DDPMConfig
from ood_lib.diffusion import train_ddpm
from ood_lib.train import train_classifier


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 16, 16, generator=g)
    return x, torch.arange(24) % 3, torch.rand(10, 1, 16, 16, generator=g)


def _close(values, pinned):
    assert [round(float(v), 6) for v in values] == pytest.approx(pinned, abs=2e-6)


def test_ddpm_and_autoencoder_losses_are_pinned(data, tmp_path):
    x, y, _ = data
    art = train_ddpm(x * 2 - 1, y, 3, DDPMConfig(block_out_channels=(8, 16), steps=4, batch_size=8, warmup_steps=1,
                                                 checkpoint_every=2), tmp_path / "ddpm")
    _close(art["losses"], [1.092356, 1.079901, 0.844918, 0.81211])
    art = train_autoencoder(x, AutoencoderConfig(block_out_channels=(4, 8, 8), steps=3, batch_size=8,
                                                 checkpoint_every=2), tmp_path / "ae")
    _close(art["losses"], [0.575823, 0.566578, 0.569094])


def test_classifier_logs_are_pinned(data):
    x, y, ox = data
    art = train_classifier(x, y, 3, ClassifierConfig(width=4, epochs=2, batch_size=8), "ce")
    _close(art["log"]["loss"], [1.140348, 1.109463])
    assert art["log"]["train_acc"] == pytest.approx([1 / 3, 1 / 3])
    art = train_classifier(x, y, 3, ClassifierConfig(width=4, epochs=2, batch_size=8, outlier_batch_size=4), "oe",
                           outliers=ox)
    _close(art["log"]["loss"], [1.162908, 1.12671])
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(24, 3, 8, 8, generator=g)
    art = train_classifier(rgb, y, 3, ClassifierConfig(width=4, epochs=2, batch_size=8, augment=True), "ce")
    _close(art["log"]["loss"], [1.139862, 1.132853])


def test_gpu_knn_search_matches_faiss():
    """The matrix-product search (the GPU path, run here on the CPU) finds faiss's neighbours."""
    import numpy as np

    from ood_lib.scores import KNNScorer

    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(500, 16, generator=g), torch.randn(70, 16, generator=g)
    exact = KNNScorer(bank, 5, backend="faiss")
    mm = KNNScorer(bank, 5, backend="torch", chunk_size=32)
    (d_f, i_f), (d_t, i_t) = exact.search(queries), mm.search(queries)
    assert np.array_equal(i_f, i_t) and np.allclose(d_f, d_t, atol=1e-5)
    assert torch.allclose(exact(queries), mm(queries), atol=1e-4)
