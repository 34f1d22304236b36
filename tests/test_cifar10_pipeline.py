"""The cifar10 code path end to end at smoke sizes (profile ``cifar10_smoke``) on the offline
CIFAR-10 copy in ../shared/data: 3-channel 32x32 DDPM, SD / label-mixup / latent outliers,
ResNet-18 with augmentation, every score. Skipped when the data root lacks CIFAR-10."""
import pytest
import torch

from ood_lib import ablations, get_profile, pipeline
from ood_lib.images import data_root

P = get_profile("cifar10_smoke")
needs_cifar = pytest.mark.skipif(not (data_root() / "cifar10-jpeg-train.tar.gz").exists()
                                 and not (data_root() / "cifar-10-batches-py").exists(),
                                 reason=f"no CIFAR-10 under {data_root()} (see tests/test_cifar10_data.py)")


@needs_cifar
def test_generators_make_rgb_outliers_at_32px():
    b = pipeline.benchmark(P)
    assert b.id_train.x.shape[1:] == (3, 32, 32) and b.n_classes == 10
    for generator in ("sd", "mixup", "latent"):
        out = pipeline.outliers(P, generator)
        assert out.x.shape[1:] == (3, 32, 32), generator
        assert 0 <= out.x.min() and out.x.max() <= 1
        assert len(out) == getattr(P, generator).n_outliers


@needs_cifar
def test_resnet18_trains_and_scores():
    loss, generator = "oe", "sd"
    df = pipeline.evaluate(P, [(loss, generator)])
    assert set(df.ood_dataset) >= {"tin", "mnist", "textures"}
    assert {"knn", "dod", "mahalanobis"} <= set(df.score)
    assert df[["AUROC", "FPR95"]].apply(lambda c: c.between(0, 1)).all().all()
    model_art = pipeline.classifier(P, loss, 0, generator)
    assert model_art["backbone"] == "resnet18" and model_art["in_channels"] == 3


@needs_cifar
def test_sd_test_set_is_made_from_held_out_test_images():
    test = ablations.sd_test_set(P)
    b = pipeline.benchmark(P)
    assert test.x.shape == b.id_test.x.shape and test.group == "sd_test"
    assert not torch.equal(test.x, b.id_test.x)
