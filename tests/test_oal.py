"""OAL as its authors train it (loss "oal") and this library's source-paired variant (CPU, seconds).

What is pinned here comes from the official trainer (HengGao12/OAL, openood/trainers/oal_trainer.py):
random pairing of outlier embeddings with the batch's ID features, no OE term, logit-KL and
feature-KL at T = 1 with weights 4 and 8, CLUB minimised by the same total loss.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import ood_lib.train as train
from ood_lib.ablations import OAL_VARIANTS
from ood_lib.config import LOSS_FIELDS, ClassifierConfig
from ood_lib.losses import CLUB, oal_distillation, softmax_kl
from ood_lib.models import OALNet, SmallCNN, predict
from ood_lib.train import (batch_loss, build_model, load_classifier, needs_teacher, oal_pairing, oal_source_paired_loss,
                           oal_teacher, param_groups, train_classifier)

torch.set_num_threads(1)


# ------------------------------------------------------------------------------ the variant
def _old_example():
    torch.manual_seed(0)
    student = OALNet(SmallCNN(3, 1, width=4), CLUB(16, 8))
    teacher = SmallCNN(3, 1, width=4).eval()
    g = torch.Generator().manual_seed(1)
    xb = torch.rand(6, 1, 28, 28, generator=g)
    yb = torch.tensor([0, 1, 2, 0, 1, 2])
    ob = torch.rand(4, 1, 28, 28, generator=g)
    emb = torch.randn(4, 8, generator=g)
    return student, teacher, xb, yb, ob, emb, xb[[0, 2, 3, 5]]


def test_source_paired_variant_reproduces_the_old_oal_loss():
    """Values computed with the library's former ``oal_loss`` (CE + OE + source-paired MICL +
    Hinton KD, commit b5212d9) on this fixed example, before the official recipe took the name."""
    student, teacher, xb, yb, ob, emb, src = _old_example()
    cfg = ClassifierConfig(oe_lambda=0.5, micl_weight=0.1, kd_weight=1.0, kd_temperature=4.0)
    value, logits = oal_source_paired_loss(student, xb, yb, ob, emb, src, teacher, cfg)
    value.backward()
    grad_norm = sum(p.grad.pow(2).sum() for p in student.parameters() if p.grad is not None).sqrt()
    assert value.item() == pytest.approx(14.359482765197754, rel=1e-5)
    assert logits.sum().item() == pytest.approx(3.1553966999053955, rel=1e-5)
    assert grad_norm.item() == pytest.approx(4.616611003875732, rel=1e-4)
    # the variant's network is the old one: CLUB from source features (16) to latents (8)
    net = build_model("oal_source_paired", 3, 1, ClassifierConfig(width=4), outlier_dim=8)
    assert net.club.mu[0].in_features == 16 and net.club.mu[-1].out_features == 8 and net.projection is None


# ------------------------------------------------------------------------------ distillation
def test_softmax_kl_and_oal_distillation_by_hand():
    # logits: student (0, 0) uniform, teacher (1, 0): KL(p_t || p_s) = sum p_t log(p_t / 0.5)
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    pt = [math.e / (1 + math.e), 1 / (1 + math.e)]
    kl_logits = sum(p * math.log(p / 0.5) for p in pt)                       # 0.0601
    assert softmax_kl(s, t).item() == pytest.approx(kl_logits, rel=1e-6)
    # the direction is teacher-first: KL(p_s || p_t) differs on an asymmetric pair
    s2, t2 = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    ps, pt2 = F.softmax(s2, 1)[0].tolist(), F.softmax(t2, 1)[0].tolist()
    teacher_first = sum(p * math.log(p / q) for p, q in zip(pt2, ps))
    student_first = sum(q * math.log(q / p) for p, q in zip(pt2, ps))
    assert abs(teacher_first - student_first) > 0.05                          # 0.840 vs 0.779
    assert softmax_kl(s2, t2).item() == pytest.approx(teacher_first, rel=1e-6)
    # the official call: nn.KLDivLoss(reduction="batchmean")(log_softmax(student), softmax(target))
    official = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s2, 1), F.softmax(t2, 1))
    assert softmax_kl(s2, t2).item() == pytest.approx(official.item(), rel=1e-6)
    # features: two rows, batchmean; student feature rows (0, 0, 0) and (ln 2, 0, 0),
    # projected teacher rows (0, 0, 0) (KL 0 against uniform) and (0, 0, 0) against (2, 1, 1)/4
    f = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    pf = torch.zeros(2, 3)
    kl_feat = (0.0 + sum((1 / 3) * math.log((1 / 3) / q) for q in (0.5, 0.25, 0.25))) / 2
    ls, lt = torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    kl_log2 = (kl_logits + 0.0) / 2
    got = oal_distillation(ls, lt, f, pf, logit_weight=4.0, feature_weight=8.0)
    assert got.item() == pytest.approx(4 * kl_log2 + 8 * kl_feat, rel=1e-6)
    assert oal_distillation(ls, lt, f, pf, 4.0, 0.0).item() == pytest.approx(4 * kl_log2, rel=1e-6)
    assert oal_distillation(ls, lt, f, pf, 0.0, 8.0).item() == pytest.approx(8 * kl_feat, rel=1e-6)


def test_distillation_trains_the_projection_not_the_teacher():
    f = torch.randn(4, 3, requires_grad=True)
    proj = torch.randn(4, 3, requires_grad=True)        # output of the learned projection
    s, t = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    oal_distillation(s, t, f, proj).backward()
    assert proj.grad.abs().sum() > 0 and f.grad.abs().sum() > 0 and s.grad.abs().sum() > 0
    assert t.grad is None                                # teacher logits are detached


# ------------------------------------------------------------------------------ pairing
def test_pairing_is_a_random_draw_from_the_pool():
    draw = lambda seed, n_pool=50, n=16: oal_pairing(n_pool, n, torch.Generator().manual_seed(seed))
    a = draw(0)
    assert len(a) == 16 and len(set(a.tolist())) == 16 and 0 <= a.min() and a.max() < 50   # without replacement
    assert torch.equal(a, draw(0)) and not torch.equal(a, draw(1))                         # reproducible, random
    assert not torch.equal(a, torch.arange(16))
    # a pool smaller than the batch: every outlier used, none more than once more than another
    small = draw(0, n_pool=5, n=12)
    counts = torch.bincount(small, minlength=5)
    assert len(small) == 12 and counts.min() >= 2 and counts.max() <= 3


def _data(n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.2
    x[y == 1, :, :14] += 0.8
    return x, y


def test_training_pairs_id_images_with_random_outliers_not_their_sources(monkeypatch):
    """Every outlier i is made from ID image i; in training, the outlier paired with an ID image
    is a fresh random draw (distinct within a batch), almost never that image's own outlier."""
    x, y = _data(48)
    n_pool = 40
    emb = torch.eye(n_pool)                               # embedding row i names outlier i
    sources = torch.arange(n_pool)                        # outlier i was made from x[i]
    seen = []
    real = train.oal_loss

    def spy(model, xb, yb, emb_out, teacher, cfg, ob=None):
        ids = [int(torch.nonzero((x == row).flatten(1).all(1))[0]) for row in xb]
        seen.append((ids, emb_out.argmax(1).tolist()))
        return real(model, xb, yb, emb_out, teacher, cfg, ob)

    monkeypatch.setattr(train, "oal_loss", spy)
    cfg = ClassifierConfig(width=4, epochs=1, batch_size=16, oal_kd_logit_weight=0.0, oal_kd_feature_weight=0.0)
    train_classifier(x, y, 2, cfg, loss="oal", outlier_embeddings=emb, outlier_sources=sources)
    assert len(seen) == 3
    same, total = 0, 0
    for ids, paired in seen:
        assert len(paired) == len(ids) and len(set(paired)) == len(paired)      # one per ID image, no repeats
        same += sum(int(sources[o]) == i for i, o in zip(ids, paired))
        total += len(ids)
    assert same <= total // 4, f"{same} of {total} pairs are (source image, its outlier)"
    assert len({o for _, paired in seen for o in paired}) > 20                  # draws spread over the pool


# ------------------------------------------------------------------------------ the loss
def _oal_example(cfg, teacher_dim=8):
    torch.manual_seed(0)
    model = build_model("oal", 2, 1, cfg, outlier_dim=6, teacher_dim=teacher_dim)
    teacher = SmallCNN(2, 1, width=2).eval()               # a narrower teacher: 8-d features
    g = torch.Generator().manual_seed(1)
    xb, yb = torch.rand(5, 1, 28, 28, generator=g), torch.tensor([0, 1, 0, 1, 1])
    emb = torch.randn(5, 6, generator=g)
    ob = torch.rand(5, 1, 28, 28, generator=g)
    return model, teacher, xb, yb, emb, ob


def test_official_loss_has_no_oe_term():
    cfg = ClassifierConfig(width=4)
    model, teacher, xb, yb, emb, ob = _oal_example(cfg)
    run = lambda ob, emb=emb, cfg=cfg: batch_loss("oal", model, xb, yb, ob, cfg, {"embeddings": emb, "teacher": teacher})[0]
    base = run(None)
    other = run(torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(run(ob), base) and torch.equal(other, base)   # outlier images never reach the loss
    assert not torch.allclose(run(None, emb=emb + 1.0), base)           # the embeddings do, through MICL
    no_micl = ClassifierConfig(width=4, oal_micl_weight=0.0)
    assert torch.equal(run(None, emb=emb + 1.0, cfg=no_micl), run(None, cfg=no_micl))
    # OE only when asked for (a deviation from the official recipe): then the images count
    with_oe = ClassifierConfig(width=4, oal_oe_lambda=0.5)
    assert not torch.allclose(run(ob, cfg=with_oe), run(torch.full_like(ob, 0.5), cfg=with_oe))


def test_official_loss_is_ce_plus_club_plus_distillation():
    cfg = ClassifierConfig(width=4)
    model, teacher, xb, yb, emb, _ = _oal_example(cfg)
    # CLUB as the official code calls it: q(ID features | outlier embedding), DEEP_CLUB layout
    assert model.club.mu[0].in_features == 6 and model.club.mu[-1].out_features == model.feature_dim
    assert len(model.club.mu) == 7 and model.projection is not None
    value, logits = batch_loss("oal", model, xb, yb, None, cfg, {"embeddings": emb, "teacher": teacher})
    f = model.features(xb)
    with torch.no_grad():
        t_feats = teacher.features(xb)
    want = (F.cross_entropy(model.head(f), yb) + 0.2 * model.club(emb, f)
            + 4 * softmax_kl(model.head(f), teacher.head(t_feats)) + 8 * softmax_kl(f, model.projection(t_feats)))
    assert value.item() == pytest.approx(want.item(), rel=1e-5)
    # one loss trains everything: backbone, CLUB layers (minimising the estimate) and projection
    model.zero_grad()
    value.backward()
    for part in (model.backbone, model.club, model.projection):
        assert sum(p.grad.abs().sum() for p in part.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="one outlier embedding with each ID image"):
        batch_loss("oal", model, xb, yb, None, cfg, {"embeddings": emb[:3], "teacher": teacher})


def test_param_groups_scale_club_and_projection_lr():
    cfg = ClassifierConfig(width=4, lr=0.005)
    model = build_model("oal", 2, 1, cfg, outlier_dim=6, teacher_dim=8)
    groups = param_groups(model, "oal", cfg)
    assert [g.get("lr") for g in groups] == [None, pytest.approx(1e-4), pytest.approx(0.01)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    assert len(param_groups(model, "oal_source_paired", cfg)) == 1


def test_teacher_choice_and_config_families():
    assert oal_teacher(ClassifierConfig()) == "ce"
    assert oal_teacher(ClassifierConfig(oal_teacher="oe")) == "oe"
    for bad in ("oal", "oal_source_paired", "vit_b16"):
        with pytest.raises(ValueError, match="oal_teacher"):
            oal_teacher(ClassifierConfig(oal_teacher=bad))
    assert needs_teacher("oal", ClassifierConfig()) and needs_teacher("oal_source_paired", ClassifierConfig())
    assert not needs_teacher("oal", ClassifierConfig(oal_kd_logit_weight=0, oal_kd_feature_weight=0))
    assert not needs_teacher("oe", ClassifierConfig())
    cfg = ClassifierConfig()
    assert (cfg.oal_micl_weight, cfg.oal_kd_logit_weight, cfg.oal_kd_feature_weight, cfg.oal_oe_lambda) == (0.2, 4.0, 8.0, 0.0)
    # the ablation switches off fields the official loss reads, and every weight of MICL / KD
    oal_fields = set(LOSS_FIELDS["oal"])
    assert all(set(v) <= oal_fields for v in OAL_VARIANTS.values())
    assert OAL_VARIANTS["no MICL"] == {"oal_micl_weight": 0.0}
    assert OAL_VARIANTS["no KD"] == {"oal_kd_logit_weight": 0.0, "oal_kd_feature_weight": 0.0}
    assert {"micl_weight", "kd_weight", "oe_lambda"} <= set(LOSS_FIELDS["oal_source_paired"])
    assert "outlier_batch_size" not in oal_fields and "oal_teacher" in LOSS_FIELDS["oal_source_paired"]


# ------------------------------------------------------------------------------ training
@pytest.mark.parametrize("loss", ["oal", "oal_source_paired"])
def test_one_epoch_of_each_oal_loss_on_random_images(loss, tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 28, 28, generator=g), torch.randint(0, 3, (40,), generator=g)
    out, emb = torch.rand(12, 1, 28, 28, generator=g), torch.randn(12, 4, 2, 2, generator=g)
    cfg = ClassifierConfig(width=4, epochs=1, batch_size=16, outlier_batch_size=8)
    teacher = load_classifier(train_classifier(x, y, 3, cfg, loss="ce"))
    art = train_classifier(x, y, 3, cfg, loss=loss, outliers=out, outlier_embeddings=emb,
                           outlier_sources=torch.arange(12), teacher=teacher, workdir=tmp_path)
    acc, value = art["log"]["train_acc"][0], art["log"]["loss"][0]
    assert math.isfinite(acc) and 0.0 <= acc <= 1.0 and math.isfinite(value)
    assert art["outlier_dim"] == 16 and art["teacher_dim"] == (teacher.feature_dim if loss == "oal" else 0)
    model = load_classifier(art)                        # rebuilds CLUB (and projection) from the artefact
    assert predict(model, x)[0].shape == (40, 3)


def test_oal_resumes_the_same_loss_curve_and_needs_its_inputs(tmp_path):
    x, y = _data(48)
    emb = torch.randn(20, 6, generator=torch.Generator().manual_seed(2))
    cfg = ClassifierConfig(width=4, epochs=2, batch_size=16)
    teacher = load_classifier(train_classifier(x, y, 2, ClassifierConfig(width=4, epochs=1, batch_size=16)))
    kw = dict(loss="oal", outlier_embeddings=emb, teacher=teacher)
    full = train_classifier(x, y, 2, cfg, workdir=tmp_path / "a", **kw)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(x, y, 2, cfg, workdir=tmp_path / "b", stop_after_epochs=1, **kw)
    resumed = train_classifier(x, y, 2, cfg, workdir=tmp_path / "b", **kw)
    assert resumed["log"]["loss"] == pytest.approx(full["log"]["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="teacher"):
        train_classifier(x, y, 2, cfg, loss="oal", outlier_embeddings=emb)
    with pytest.raises(ValueError, match="outlier_embeddings"):
        train_classifier(x, y, 2, cfg, loss="oal", teacher=teacher)
    with pytest.raises(ValueError, match="outlier_sources"):
        train_classifier(x, y, 2, cfg, loss="oal_source_paired", outliers=x[:4], outlier_embeddings=emb[:4],
                         teacher=teacher)
