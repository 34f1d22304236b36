import math

import pytest
import torch

from ood_lib.config import ClassifierConfig
from ood_lib.losses import kl_to_uniform, outlier_exposure
from ood_lib.scores import KNNScorer, energy, msp
from ood_lib.train import load_classifier, train_classifier


def test_kl_to_uniform_zero_for_uniform_and_hand_value():
    assert kl_to_uniform(torch.full((3, 5), 2.7)).item() == pytest.approx(0.0, abs=1e-7)
    # p = (1/4, 3/4): KL(U||p) = 0.5*ln(0.5/0.25) + 0.5*ln(0.5/0.75)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert kl_to_uniform(logits).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-6)


def test_outlier_exposure_is_ce_plus_weighted_kl():
    logits_id = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    logits_out = torch.tensor([[0.0, math.log(3.0)]])
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.e / (math.e + 1))) / 2
    kl = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert outlier_exposure(logits_id, labels, logits_out, 0.5).item() == pytest.approx(ce + 0.5 * kl, rel=1e-6)
    assert outlier_exposure(logits_id, labels, None, 0.5).item() == pytest.approx(ce, rel=1e-6)


def test_msp_and_energy_hand_values_and_sign():
    logits = torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # confident (ID-like), flat (OOD-like)
    s = msp(logits)
    assert s[0].item() == pytest.approx(-math.exp(3) / (math.exp(3) + 2))
    assert s[1].item() == pytest.approx(-1 / 3)
    e = energy(logits)
    assert e[1].item() == pytest.approx(-(1 + math.log(3)))
    assert s[1] > s[0]  # the flat row scores as more OOD


def test_knn_equals_brute_force_kth_distance():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(200, 16, generator=g), torch.randn(30, 16, generator=g)
    got = KNNScorer(bank, k=7)(queries)
    nb, nq = torch.nn.functional.normalize(bank, dim=1), torch.nn.functional.normalize(queries, dim=1)
    ref = torch.cdist(nq, nb).sort(dim=1).values[:, 6]
    torch.testing.assert_close(got.float(), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        KNNScorer(bank, k=0)


def _toy(n=48):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.2
    x[y == 1, :, :14] += 0.8
    return x, y


def test_classifier_resumes_the_same_loss_curve(tmp_path):
    x, y = _toy()
    cfg = ClassifierConfig(width=4, epochs=3, batch_size=16, outlier_batch_size=8)
    out = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    full = train_classifier(x, y, 2, cfg, loss="oe", outliers=out, workdir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train_classifier(x, y, 2, cfg, loss="oe", outliers=out, workdir=tmp_path / "b", stop_after_epochs=1)
    resumed = train_classifier(x, y, 2, cfg, loss="oe", outliers=out, workdir=tmp_path / "b")
    assert resumed["log"]["epoch"] == [1, 2, 3]
    assert resumed["log"]["loss"] == pytest.approx(full["log"]["loss"], rel=1e-5)
    for k, v in full["state"].items():
        torch.testing.assert_close(resumed["state"][k], v, msg=k)
    # the epoch-1 snapshot survives the interruption and differs from the final weights
    for k, v in full["snapshots"][1].items():
        torch.testing.assert_close(resumed["snapshots"][1][k], v, msg=k)
    early, final = load_classifier(resumed, epoch=1), load_classifier(resumed)
    assert not torch.equal(early(x[:4]), final(x[:4]))
    with pytest.raises(KeyError, match="no snapshot after epoch 2"):
        load_classifier(resumed, epoch=2)


def test_oe_needs_outliers_and_unknown_loss_is_named():
    x, y = _toy(8)
    with pytest.raises(ValueError, match="outlier"):
        train_classifier(x, y, 2, ClassifierConfig(epochs=1), loss="oe")
    with pytest.raises(KeyError, match="valid losses"):
        train_classifier(x, y, 2, ClassifierConfig(epochs=1), loss="focal")


ALL_LOSSES = ("ce", "oe", "energy_oe", "arcface", "cosface", "supcon", "proxyanchor", "sd_three_head")


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_every_loss_family_learns_the_toy_task_and_reloads(loss, tmp_path):
    """Each family trains the same small CNN; the reloaded model predicts like the trained one."""
    from ood_lib.models import predict
    from ood_lib.train import load_classifier
    x, y = _toy(64)
    out = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 0.5
    cfg = ClassifierConfig(width=4, epochs=6, batch_size=16, lr=1e-2, outlier_batch_size=8, embedding_size=16)
    art = train_classifier(x, y, 2, cfg, loss=loss, outliers=out, outlier_labels=torch.arange(16) % 2)
    assert art["log"]["train_acc"][-1] >= 0.9, art["log"]
    model = load_classifier(art)
    logits, feats = predict(model, x)
    assert logits.shape == (64, 2) and (logits.argmax(1) == y).float().mean() >= 0.9


@pytest.mark.parametrize("loss", ["arcface", "sd_three_head"])
def test_new_families_resume_the_same_loss_curve(loss, tmp_path):
    x, y = _toy()
    cfg = ClassifierConfig(width=4, epochs=3, batch_size=16, outlier_batch_size=8, embedding_size=8)
    out, oy = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(2)), torch.arange(10) % 2
    kw = dict(loss=loss, outliers=out, outlier_labels=oy)
    full = train_classifier(x, y, 2, cfg, workdir=tmp_path / "a", **kw)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(x, y, 2, cfg, workdir=tmp_path / "b", stop_after_epochs=1, **kw)
    resumed = train_classifier(x, y, 2, cfg, workdir=tmp_path / "b", **kw)
    assert resumed["log"]["loss"] == pytest.approx(full["log"]["loss"], rel=1e-5)


def test_three_head_loss_needs_source_labels():
    x, y = _toy(8)
    with pytest.raises(ValueError, match="source labels"):
        train_classifier(x, y, 2, ClassifierConfig(epochs=1), loss="sd_three_head", outliers=x)


def test_oal_trains_with_micl_and_distillation_and_reloads():
    """OAL: CE teacher, latent embeddings paired with their source images; the student learns
    the task, reloads with its CLUB estimator, and refuses to run without its inputs."""
    from ood_lib.models import predict
    from ood_lib.train import load_classifier
    x, y = _toy(64)
    cfg = ClassifierConfig(width=4, epochs=6, batch_size=16, lr=1e-2, outlier_batch_size=8)
    teacher = load_classifier(train_classifier(x, y, 2, cfg, loss="ce"))
    g = torch.Generator().manual_seed(3)
    out, emb, src = torch.rand(12, 1, 28, 28, generator=g) * 0.5, torch.randn(12, 4, 2, 2, generator=g), torch.arange(12)
    kw = dict(loss="oal", outliers=out, outlier_embeddings=emb, outlier_sources=src, teacher=teacher)
    art = train_classifier(x, y, 2, cfg, **kw)
    assert art["outlier_dim"] == 16 and art["log"]["train_acc"][-1] >= 0.9
    model = load_classifier(art)
    assert (predict(model, x)[0].argmax(1) == y).float().mean() >= 0.9
    with pytest.raises(ValueError, match="teacher"):
        train_classifier(x, y, 2, cfg, loss="oal", outliers=out)


def test_openood_recipe_is_sgd_nesterov_with_cosine_to_zero():
    from ood_lib.config import ClassifierConfig, get_profile
    from ood_lib.train import optimiser

    cfg = get_profile("cifar10").clf
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs) == ("sgd", 0.1, 0.9, 5e-4,
                                                                                                   128, 100)
    w = torch.nn.Parameter(torch.zeros(3))
    opt, sched = optimiser([{"params": [w]}], cfg, total_steps=10)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.1 and abs(lrs[5] - 0.05) < 1e-9 and opt.param_groups[0]["lr"] < 1e-12
    adam, onecycle = optimiser([{"params": [w]}], ClassifierConfig(), total_steps=10)
    assert isinstance(adam, torch.optim.AdamW) and isinstance(onecycle, torch.optim.lr_scheduler.OneCycleLR)
