"""Backbones: shapes, parameter counts against references, state-dict stability, heads."""
import pytest
import torch
from torch import nn

from ood_lib.models import (BACKBONES, MultiHeadNet, ResNet18, SmallCNN, WideResNet, build_backbone,
                            predict)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_resnet18_shapes_and_param_count_match_torchvision_with_cifar_stem():
    from torchvision.models import resnet18

    m = ResNet18(10).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        f = m.features(x)
        logits = m(x)
    assert f.shape == (2, 512) and m.feature_dim == 512
    assert logits.shape == (2, 10)
    assert torch.allclose(logits, m.head(f))
    assert isinstance(m.head, nn.Linear) and (m.head.in_features, m.head.out_features) == (512, 10)

    ref = resnet18(num_classes=10)
    ref.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ref.maxpool = nn.Identity()
    assert n_params(m) == n_params(ref)
    # 7x7x3x64 ImageNet stem replaced by 3x3x3x64: 11,689,512 - 9,408 + 1,728 - (1000-10)*513
    assert n_params(m) == 11_173_962


def test_resnet18_normalises_inputs_with_given_stats():
    m = ResNet18(10).eval()
    assert torch.allclose(m.norm.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    assert torch.allclose(m.norm.std.flatten(), torch.tensor([0.2470, 0.2435, 0.2616]))
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(m.norm(x), (x - m.norm.mean) / m.norm.std)
    # Normalisation statistics are not checkpoint state.
    assert not any("norm" in k for k in m.state_dict())
    m1 = ResNet18(10, in_channels=1)
    assert m1.norm.mean.flatten().tolist() == [0.5] and m1.norm.std.flatten().tolist() == [0.5]
    m2 = ResNet18(10, mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 4.0))
    assert torch.allclose(m2.norm(torch.full((1, 3, 1, 1), 0.5)).flatten(), torch.tensor([0.4, 0.15, 0.05]))
    with pytest.raises(ValueError):
        ResNet18(10, in_channels=1, mean=(0.1, 0.2, 0.3))


def test_wrn40_2_param_count_and_shapes():
    m = WideResNet(40, 2, n_classes=10).eval()
    assert abs(n_params(m) - 2_243_546) <= 0.01 * 2_243_546
    assert n_params(m) == 2_243_546  # exact match with the OE paper's code
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        f, logits = m.features(x), m(x)
    assert f.shape == (2, 128) and m.feature_dim == 128
    assert logits.shape == (2, 10)
    assert torch.allclose(logits, m.head(f))
    with pytest.raises(ValueError):
        WideResNet(depth=41)


def test_wrn_dropout_only_in_training():
    m = WideResNet(10, 1, n_classes=3, dropout=0.3)
    x = torch.rand(2, 3, 16, 16)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
    m.train()
    with torch.no_grad():
        assert not torch.allclose(m(x), m(x))


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_runs_on_one_channel_28x28(name):
    m = build_backbone(name, n_classes=7, in_channels=1).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        f, logits = m.features(x), m(x)
    assert f.shape == (3, m.feature_dim)
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()


def test_build_backbone_types_and_width():
    assert BACKBONES == ("small_cnn", "resnet18", "wrn40_2")
    assert isinstance(build_backbone("small_cnn", 10, width=8), SmallCNN)
    assert build_backbone("small_cnn", 10, width=8).feature_dim == 32
    assert isinstance(build_backbone("resnet18", 10, in_channels=3), ResNet18)
    w = build_backbone("wrn40_2", 10, in_channels=3)
    assert isinstance(w, WideResNet) and n_params(w) == 2_243_546


def test_unknown_backbone_raises_keyerror_listing_valid_names():
    with pytest.raises(KeyError) as e:
        build_backbone("vgg16", 10)
    msg = str(e.value)
    assert "vgg16" in msg
    for name in BACKBONES:
        assert name in msg


def test_small_cnn_state_dict_keys_unchanged():
    keys = list(SmallCNN(10, in_channels=1, width=8).state_dict())
    expected = []
    for blk in (0, 2, 4):
        for conv, bn in ((0, 1), (3, 4)):
            expected.append(f"body.{blk}.{conv}.weight")
            expected += [f"body.{blk}.{bn}.{s}" for s in
                         ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    expected += ["head.weight", "head.bias"]
    assert keys == expected
    assert all(k.startswith(("body.", "head.")) for k in keys)
    m = SmallCNN(10, in_channels=1, width=8)
    assert m.feature_dim == 32 and m.head.in_features == 32
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(m.features(x), m.body((x - 0.5) / 0.5))


def test_multihead_returns_requested_heads():
    bb = build_backbone("small_cnn", 5, in_channels=1, width=8)
    m = MultiHeadNet(bb, 5, heads=("bin", "in", "out", "embed"), embedding_size=16).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        out = m(x)
    assert set(out) == {"bin", "in", "out", "embed", "features"}
    assert out["bin"].shape == (4, 2)
    assert out["in"].shape == (4, 5)
    assert out["out"].shape == (4, 5)
    assert out["embed"].shape == (4, 16)
    assert out["features"].shape == (4, 32)
    assert m.feature_dim == 32
    # Heads are distinct modules (except "in", which reuses the backbone's classifier).
    assert m.heads["in"] is bb.head and m.head is bb.head
    assert m.heads["out"] is not m.heads["in"]


def test_multihead_default_and_in_always_present():
    bb = build_backbone("small_cnn", 3, in_channels=1, width=8)
    m = MultiHeadNet(bb, 3)
    assert m.head_names == ("in",)
    m2 = MultiHeadNet(build_backbone("small_cnn", 3, in_channels=1, width=8), 3, heads=("bin",))
    assert m2.head_names == ("in", "bin")
    with torch.no_grad():
        assert set(m2(torch.rand(2, 1, 28, 28))) == {"in", "bin", "features"}
    with pytest.raises(ValueError):
        MultiHeadNet(bb, 3, heads=("nope",))
    # Different class count than the backbone's head: a fresh "in" head.
    m3 = MultiHeadNet(build_backbone("small_cnn", 3, in_channels=1, width=8), 4)
    assert m3.head.out_features == 4 and m3.head is not m3.backbone.head


def test_predict_on_multihead_equals_head_of_features():
    bb = build_backbone("small_cnn", 5, in_channels=1, width=8)
    m = MultiHeadNet(bb, 5, heads=("bin", "in", "out"))
    x = torch.rand(7, 1, 28, 28)
    logits, feats = predict(m, x, batch_size=3)
    assert logits.shape == (7, 5) and feats.shape == (7, 32)
    with torch.no_grad():
        assert torch.allclose(feats, m.features(x), atol=1e-6)
        assert torch.allclose(logits, m.head(m.features(x)), atol=1e-6)
        assert torch.allclose(logits, m(x)["in"], atol=1e-6)
    # Wrapping keeps the wrapped classifier's predictions.
    base_logits, _ = predict(bb, x)
    assert torch.allclose(logits, base_logits, atol=1e-6)


def test_multihead_backward_reaches_all_heads():
    m = MultiHeadNet(build_backbone("wrn40_2", 3, in_channels=1), 3, heads=("bin", "in", "out", "embed"),
                     embedding_size=8)
    out = m(torch.rand(2, 1, 28, 28))
    sum(out[h].sum() for h in ("bin", "in", "out", "embed")).backward()
    for h in ("bin", "in", "out", "embed"):
        assert m.heads[h].weight.grad is not None and m.heads[h].weight.grad.abs().sum() > 0
