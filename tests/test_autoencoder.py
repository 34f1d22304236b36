import dataclasses

import pytest
import torch

from ood_lib.autoencoder import (build_autoencoder, decode, encode, from_ae_space,
                                 from_pretrained_autoencoder, load_autoencoder, reconstruction_error,
                                 to_ae_space, train_autoencoder)
from ood_lib.config import AutoencoderConfig, DataConfig
from ood_lib.data import load_benchmark

TINY = dataclasses.replace(AutoencoderConfig(), block_out_channels=(8, 16, 16), steps=150, batch_size=16,
                           checkpoint_every=50)
SHORT = dataclasses.replace(TINY, steps=6, checkpoint_every=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tiny models gain nothing from threads; with other jobs on the cores, two OpenMP
    threads made a step 100x slower (4.4 s instead of 0.03 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(DataConfig(n_train_per_class=30, n_val_per_class=10, n_test_per_class=20,
                                  n_near_val_per_class=10, n_near_test_per_class=20, n_far=40), verbose=False)


@pytest.fixture(scope="module")
def trained(bench, tmp_path_factory):
    return train_autoencoder(bench.id_train.x, TINY, tmp_path_factory.mktemp("ae"))


def test_padding_round_trip_and_black_frame():
    x = torch.rand(3, 1, 28, 28)
    padded = to_ae_space(x, n_blocks=3)
    assert padded.shape == (3, 1, 32, 32)
    assert (padded[..., :2, :] == -1).all() and (padded[..., :, -2:] == -1).all()
    torch.testing.assert_close(from_ae_space(padded, 28), x)
    assert to_ae_space(torch.rand(1, 1, 33, 20), n_blocks=3).shape[-2:] == (48, 32)


def test_latent_and_image_shapes(bench, trained, tmp_path):
    torch.save(trained, tmp_path / "artifact.pt")  # artefacts are read back with weights_only=True
    ae = load_autoencoder(torch.load(tmp_path / "artifact.pt", weights_only=True))
    z = encode(ae, bench.id_test.x[:10], batch_size=4)
    assert z.shape == (10, 4, 8, 8)
    assert torch.equal(z, encode(ae, bench.id_test.x[:10]))  # posterior mean: deterministic, batch-free
    x = decode(ae, z, batch_size=3)
    assert x.shape == (10, 1, 28, 28) and x.min() >= 0 and x.max() <= 1


def test_training_reduces_reconstruction_error(bench, trained):
    torch.manual_seed(0)
    untrained = reconstruction_error(build_autoencoder(TINY).eval(), bench.id_test.x)
    err = reconstruction_error(load_autoencoder(trained), bench.id_test.x)
    # measured on held-out digits: untrained 0.429, after 150 steps 0.056 (0.045 after 300)
    assert untrained > 0.3
    assert err < 0.08 and err < untrained / 4
    assert trained["losses"][-20:].mean() < trained["losses"][:20].mean() / 4


def test_interrupted_training_resumes_exactly(bench, tmp_path):
    x = bench.id_train.x[:48]
    full = train_autoencoder(x, SHORT, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(x, SHORT, tmp_path / "b", stop_after=3)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 2
    resumed = train_autoencoder(x, SHORT, tmp_path / "b")
    assert resumed["steps"] == full["steps"] == SHORT.steps
    assert torch.equal(resumed["losses"], full["losses"])
    for k, v in full["state"].items():
        assert torch.equal(resumed["state"][k], v), k


def test_same_seed_same_weights_other_seed_differs(bench, tmp_path):
    x = bench.id_train.x[:48]
    a = train_autoencoder(x, SHORT, tmp_path / "a")
    b = train_autoencoder(x, SHORT, tmp_path / "b")
    c = train_autoencoder(x, dataclasses.replace(SHORT, seed=1), tmp_path / "c")
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert not torch.equal(a["losses"], c["losses"])


def test_unloadable_pretrained_weights_say_how_to_go_on(tmp_path):
    with pytest.raises(RuntimeError, match="(?s)could not load .* hub.*AutoencoderConfig.pretrained empty"):
        from_pretrained_autoencoder(str(tmp_path / "no_such_vae"))


def test_grey_images_go_through_an_rgb_autoencoder(bench):
    """A pretrained diffusers VAE is RGB: grey digits are repeated in, averaged out."""
    torch.manual_seed(0)
    rgb = build_autoencoder(dataclasses.replace(TINY, block_out_channels=(8, 8, 8)), channels=3).eval()
    x = bench.id_test.x[:4]
    z = encode(rgb, x)
    assert z.shape == (4, 4, 8, 8)
    assert decode(rgb, z).shape == (4, 1, 28, 28)
    assert decode(rgb, z, channels=None).shape == (4, 3, 28, 28)
