"""Hand-checked tests for ood_lib.losses (CPU, seconds)."""
import math

import pytest
import torch
import torch.nn.functional as F

from ood_lib.losses import (
    CLUB,
    MetricLoss,
    distillation_loss,
    energy,
    energy_oe,
    kl_to_uniform,
    metric_loss,
    metric_oe,
    three_head_loss,
)

torch.set_num_threads(1)


def lse(row):
    return math.log(sum(math.exp(v) for v in row))


def ce(row, y):
    """Cross-entropy of one row of logits, by hand."""
    return lse(row) - row[y]


def close(t, v, tol=1e-5):
    if isinstance(t, torch.Tensor):
        t = t.detach().item()
    return abs(float(t) - v) < tol


# ------------------------------------------------------------------------------------ energy
def test_energy_by_hand():
    logits = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    e = energy(logits)
    assert close(e[0], -math.log(math.e + math.e ** 2))
    assert close(e[1], -math.log(2.0))
    e2 = energy(logits, temperature=2.0)
    assert close(e2[0], -2.0 * math.log(math.exp(0.5) + math.exp(1.0)))
    assert close(e2[1], -2.0 * math.log(2.0))


def test_energy_oe_by_hand():
    logits_id = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    labels = torch.tensor([1, 0])
    logits_out = torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    ce_id = (ce([1, 2], 1) + ce([0, 0], 0)) / 2
    e_in = [-math.log(math.e + math.e ** 2), -math.log(2.0)]        # -2.3133, -0.6931
    e_out = [-math.log(1 + math.e ** 3), -(1 + math.log(2.0))]       # -3.0486, -1.6931
    m_in, m_out, lam = -1.0, -1.0, 0.5
    h_in = (max(e_in[0] - m_in, 0) ** 2 + max(e_in[1] - m_in, 0) ** 2) / 2   # (0 + 0.3069^2) / 2
    h_out = (max(m_out - e_out[0], 0) ** 2 + max(m_out - e_out[1], 0) ** 2) / 2  # (2.0486^2 + 0.6931^2) / 2
    want = ce_id + lam * (h_in + h_out)
    got = energy_oe(logits_id, labels, logits_out, lam=lam, m_in=m_in, m_out=m_out)
    assert close(got, want)
    assert h_in > 0 and h_out > 0
    # energies inside the margins (E_in <= m_in, E_out >= m_out): both hinges are zero -> plain CE
    inside = energy_oe(logits_id, labels, logits_out, lam=lam, m_in=0.0, m_out=-10.0)
    assert close(inside, ce_id)
    assert close(energy_oe(logits_id, labels, None, lam=lam, m_in=0.0), ce_id)


# ------------------------------------------------------------------------------------ OE
def test_kl_to_uniform():
    assert close(kl_to_uniform(torch.full((3, 4), 2.5)), 0.0, 1e-6)
    logits = torch.tensor([[1.0, 0.0, 0.0]])
    log_p = [v - lse([1, 0, 0]) for v in (1.0, 0.0, 0.0)]
    want = -math.log(3) - sum(log_p) / 3
    got = kl_to_uniform(logits)
    assert got > 0 and close(got, want)


# ------------------------------------------------------------------------------------ metric
@pytest.mark.parametrize("name", ["arcface", "cosface", "supcon", "proxyanchor"])
def test_metric_losses_finite_and_grads(name):
    torch.manual_seed(0)
    m = metric_loss(name, n_classes=3, embedding_size=8)
    assert isinstance(m, MetricLoss)
    emb = torch.randn(12, 8, requires_grad=True)
    labels = torch.arange(12) % 3
    loss = m(emb, labels)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert m.class_weights().shape == (3, 8)
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    w = {"arcface": m.loss.W if name == "arcface" else None, "cosface": getattr(m.loss, "W", None),
         "proxyanchor": getattr(m.loss, "proxies", None), "supcon": m.proxies}[name]
    assert isinstance(w, torch.nn.Parameter)
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert m.logits(emb).shape == (12, 3)


def _set_weights(m, rows):
    """Class weights given as rows (n_classes x embedding_size)."""
    w = torch.tensor(rows)
    with torch.no_grad():
        if m.name in ("arcface", "cosface"):
            m.loss.W.copy_(w.t())          # pml stores W as embedding_size x n_classes
        elif m.name == "proxyanchor":
            m.loss.proxies.copy_(w)
        else:
            m.proxies.copy_(w)


@pytest.mark.parametrize("name,scale", [("arcface", 64.0), ("cosface", 64.0), ("proxyanchor", 16.0),
                                        ("supcon", 16.0)])
def test_metric_logits_are_scaled_cosines(name, scale):
    m = metric_loss(name, n_classes=2, embedding_size=2)
    _set_weights(m, [[1.0, 0.0], [0.0, 2.0]])
    emb = torch.tensor([[3.0, 4.0], [-1.0, 0.0]])
    # cos([3,4],[1,0]) = 0.6, cos([3,4],[0,1]) = 0.8; cos([-1,0], .) = -1, 0
    want = scale * torch.tensor([[0.6, 0.8], [-1.0, 0.0]])
    assert torch.allclose(m.logits(emb), want, atol=1e-5)
    assert torch.allclose(m.logits(emb), scale * F.normalize(emb, dim=1) @ F.normalize(m.class_weights(), dim=1).t())


def test_arcface_pml_shape_convention():
    m = metric_loss("arcface", n_classes=5, embedding_size=3)
    assert m.loss.W.shape == (3, 5) and m.class_weights().shape == (5, 3)


def test_arcface_equals_hand_additive_angular_margin():
    s, m_deg = 4.0, 28.6
    m = metric_loss("arcface", n_classes=2, embedding_size=2, margin=m_deg, scale=s)
    _set_weights(m, [[1.0, 0.0], [0.0, 1.0]])
    emb = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1])
    marg = math.radians(m_deg)
    # row 0: cos = (0.6, 0.8), true class 0 -> logit s*cos(acos(0.6) + m)
    row0 = [s * math.cos(math.acos(0.6) + marg), s * 0.8]
    # row 1: cos = (1, 0), true class 1 -> theta = pi/2, logit s*cos(pi/2 + m)
    row1 = [s * 1.0, s * math.cos(math.pi / 2 + marg)]
    want = (ce(row0, 0) + ce(row1, 1)) / 2
    assert close(m(emb, labels), want)
    # the same with torch ops on the cosine matrix
    cos = F.normalize(emb, dim=1) @ F.normalize(m.class_weights(), dim=1).t()
    theta_y = torch.acos(cos.gather(1, labels[:, None]))
    logits = cos.scatter(1, labels[:, None], torch.cos(theta_y + marg)) * s
    assert close(m(emb, labels), F.cross_entropy(logits, labels).item())


def test_cosface_equals_hand_additive_cosine_margin():
    s, marg = 4.0, 0.35
    m = metric_loss("cosface", n_classes=2, embedding_size=2, margin=marg, scale=s)
    _set_weights(m, [[1.0, 0.0], [0.0, 1.0]])
    emb = torch.tensor([[3.0, 4.0]])
    want = ce([s * (0.6 - marg), s * 0.8], 0)
    assert close(m(emb, torch.tensor([0])), want)


@pytest.mark.parametrize("name", ["arcface", "supcon"])
def test_metric_oe(name):
    torch.manual_seed(0)
    m = metric_loss(name, n_classes=2, embedding_size=2)
    _set_weights(m, [[1.0, 0.0], [0.0, 1.0]])
    emb_id = torch.tensor([[3.0, 4.0], [1.0, 0.2], [0.1, 1.0], [2.0, 0.5]])
    labels = torch.tensor([1, 0, 1, 0])
    base = m(emb_id, labels)
    # an outlier at equal angle to both class weights -> uniform softmax -> zero OE term
    assert close(metric_oe(m, emb_id, labels, torch.tensor([[1.0, 1.0]]), lam=0.5), base.item())
    emb_out = torch.tensor([[1.0, 0.0], [0.2, 1.0]])
    want = base + 0.5 * kl_to_uniform(m.logits(emb_out))
    got = metric_oe(m, emb_id, labels, emb_out, lam=0.5)
    assert close(got, want.item()) and got > base
    assert close(metric_oe(m, emb_id, labels, None, lam=0.5), base.item())


# ------------------------------------------------------------------------------------ SD three heads
def _three_head_batch():
    bin_logits = torch.tensor([[2.0, 0.0], [0.5, 1.0], [0.0, 1.0], [1.0, 3.0]])
    in_logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0], [5.0, 5.0, 5.0], [0.0, 0.0, 9.0]])
    out_logits = torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 7.0], [1.0, 2.0, 0.0], [0.5, 0.0, 1.5]])
    labels = torch.tensor([0, 1, 1, 2])
    is_outlier = torch.tensor([False, False, True, True])
    return bin_logits, in_logits, out_logits, labels, is_outlier


def test_three_head_by_hand():
    b, i, o, y, out = _three_head_batch()
    lam, n = 0.7, 4
    l_bin = (ce([2, 0], 0) + ce([0.5, 1], 0) + ce([0, 1], 1) + ce([1, 3], 1)) / n
    l_in = (ce([1, 0, 0], 0) + ce([0, 2, 1], 1)) / n                 # ID rows only, / batch size
    l_out = lam * (ce([1, 2, 0], 1) + ce([0.5, 0, 1.5], 2)) / n      # outlier rows only, / batch size
    total, parts = three_head_loss(b, i, o, y, out, lam=lam, parts=True)
    assert close(total, l_bin + l_in + l_out)
    assert close(parts["bin"], l_bin) and close(parts["in"], l_in) and close(parts["out"], l_out)
    assert close(sum(parts.values()), total.item())
    assert close(three_head_loss(b, i, o, y, out, lam=lam), total.item())


def test_three_head_ignores_other_heads():
    b, i, o, y, out = _three_head_batch()
    ref = three_head_loss(b, i, o, y, out, lam=1.0)
    o2 = o.clone(); o2[:2] = torch.tensor([[-30.0, 50.0, 3.0], [100.0, -4.0, 0.0]])   # out-head, ID rows
    i2 = i.clone(); i2[2:] = torch.tensor([[40.0, -40.0, 0.0], [7.0, 1.0, -8.0]])     # in-head, outlier rows
    assert torch.equal(three_head_loss(b, i, o2, y, out, lam=1.0), ref)
    assert torch.equal(three_head_loss(b, i2, o, y, out, lam=1.0), ref)
    assert torch.equal(three_head_loss(b, i2, o2, y, out, lam=1.0), ref)
    # and it does see the heads it should: in-head on ID rows, out-head on outlier rows
    i3 = i.clone(); i3[0, 0] = -5.0
    o3 = o.clone(); o3[3, 2] = -5.0
    assert three_head_loss(b, i3, o, y, out) > ref and three_head_loss(b, i, o3, y, out) > ref


def test_three_head_all_id_and_single_logit_bin():
    b, i, o, y, _ = _three_head_batch()
    none_out = torch.zeros(4, dtype=torch.bool)
    total, parts = three_head_loss(b, i, o, y, none_out, parts=True)
    assert parts["out"] == 0 and torch.isfinite(total)
    # (N,) binary logit uses BCE: log(1 + e^{-z}) for outliers, log(1 + e^{z}) for ID rows
    z = torch.tensor([0.0, 1.0, 2.0, -1.0])
    out = torch.tensor([False, False, True, True])
    _, p = three_head_loss(z, i, o, y, out, parts=True)
    want = (math.log(2) + math.log(1 + math.e) + math.log(1 + math.exp(-2)) + math.log(1 + math.e)) / 4
    assert close(p["bin"], want)


# ------------------------------------------------------------------------------------ OAL
def _fit_club(x, y, steps=300):
    torch.manual_seed(0)
    club = CLUB(2, 2, hidden=32)
    opt = torch.optim.Adam(club.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        club.learning_loss(x, y).backward()
        opt.step()
    with torch.no_grad():
        return club, club(x, y).item()


def test_club_independent_vs_dependent():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 2, generator=g)
    y_ind = torch.randn(1024, 2, generator=g)
    y_dep = x + 0.1 * torch.randn(1024, 2, generator=g)
    tr, te = slice(0, 512), slice(512, 1024)
    # q is fitted on 512 samples and the estimate is taken on 512 fresh ones: in-sample the MLP
    # overfits noise and the independent estimate is biased up (measured 0.35 with hidden=32).
    # Measured (seed 0, 1 thread, hidden=32, 300 Adam steps, lr 1e-2), held-out estimates:
    # independent -0.020, dependent 5.525 (true I = 2 * 0.5 * ln(1 + 1/0.01) = 4.615; CLUB is an
    # upper bound).
    club_ind, _ = _fit_club(x[tr], y_ind[tr])
    club, _ = _fit_club(x[tr], y_dep[tr])
    with torch.no_grad():
        mi_ind, mi_dep = club_ind(x[te], y_ind[te]).item(), club(x[te], y_dep[te]).item()
    assert abs(mi_ind) < 0.1
    assert mi_dep > 0.5


def test_club_forward_cancels_constants():
    torch.manual_seed(0)
    club = CLUB(3, 2, hidden=8)
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    with torch.no_grad():
        pos = torch.stack([club.log_likelihood(x, y)]).mean()
        neg = torch.stack([club.log_likelihood(x, y[j].expand(5, 2)) for j in range(5)]).mean()
        assert close(club(x, y), (pos - neg).item(), 1e-4)
        assert close(club.learning_loss(x, y), -pos.item(), 1e-5)


def test_distillation():
    s = torch.tensor([[0.3, -1.0, 2.0], [1.0, 1.0, 0.0]])
    f = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    assert close(distillation_loss(s, s.clone(), f, f.clone()), 0.0, 1e-6)
    assert distillation_loss(s, s + torch.tensor([1.0, 0, 0])) > 0
    assert distillation_loss(s, s.clone(), f, f + 0.5) > 0
    # 1x2 hand example, T=1: KL(p_t || p_s) with p_s uniform, p_t = (e, 1) / (1 + e)
    st, te = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    pt = [math.e / (1 + math.e), 1 / (1 + math.e)]
    kl = sum(p * math.log(p / 0.5) for p in pt)
    assert close(distillation_loss(st, te, T=1.0), kl)
    # T=2: T^2 * KL with p_t = softmax((0.5, 0)), plus alpha_feats * MSE
    pt2 = [math.exp(0.5) / (1 + math.exp(0.5)), 1 / (1 + math.exp(0.5))]
    kl2 = 4.0 * sum(p * math.log(p / 0.5) for p in pt2)
    sf, tf = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert close(distillation_loss(st, te, sf, tf, T=2.0, alpha_logits=0.5, alpha_feats=2.0),
                 0.5 * kl2 + 2.0 * (1 + 4) / 2)


def test_unknown_metric_loss_is_named():
    with pytest.raises(KeyError):
        metric_loss("triplet", 2, 2)


# ------------------------------------------------------------------------------------ collapse fixes
def test_energy_margins_rule_by_hand():
    from ood_lib.losses import energy_margins
    e = torch.arange(-20.0, 1.0)                 # 21 CE energies -20 .. 0, shuffled
    e = e[torch.randperm(21, generator=torch.Generator().manual_seed(0))]
    # linear-interpolated quantiles: median at position 10 -> -10; 95 % at 19 -> -1
    assert energy_margins(e) == pytest.approx((-10.0, -1.0))
    assert energy_margins(e, 0.25, 0.75) == pytest.approx((-15.0, -5.0))
    assert energy_margins(e, 0.0, 1.0) == pytest.approx((-20.0, 0.0))
    assert energy_margins(torch.tensor([-3.0, -1.0]), 0.5, 0.75) == pytest.approx((-2.0, -1.5))
    with pytest.raises(ValueError, match="q_in < q_out"):
        energy_margins(e, 0.9, 0.5)
    with pytest.raises(ValueError, match="finite"):
        energy_margins(torch.tensor([-1.0, float("nan")]))


def _init_like_logits(n=64, k=6, seed=0):
    """Logits of a freshly initialised network: small, so E ~ -log K for every input."""
    return 0.1 * torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def _ce_and_hinge_grads(m_in, m_out, lam=0.1):
    lid, lout = _init_like_logits().requires_grad_(), _init_like_logits(seed=1).requires_grad_()
    y = torch.arange(64) % 6
    g_ce = torch.autograd.grad(F.cross_entropy(lid, y), lid)[0]
    total = energy_oe(lid, y, lout, lam=lam, m_in=m_in, m_out=m_out)
    g_id, g_out = torch.autograd.grad(total, (lid, lout))
    return g_ce, g_id - g_ce, g_out, total.item() - F.cross_entropy(lid, y).item()


def test_energy_oe_from_ce_margins_keep_ce_dominant_at_init():
    from ood_lib.losses import energy_margins
    # CE energies of the kind a small CNN reaches on the digits' ID training set (measured:
    # median -5.15, 95th percentile -3.87): margins median / 95th percentile
    ce_energies = torch.linspace(-6.5, -3.5, 31)
    m_in, m_out = energy_margins(ce_energies)
    assert (m_in, m_out) == pytest.approx((-5.0, -3.65))
    g_ce, g_hinge, g_out, reg = _ce_and_hinge_grads(m_in, m_out)
    # E ~ -log 6 = -1.79 at init: the ID hinge is lam * (3.2)^2 ~ 1.0, below CE's log 6 = 1.79 ...
    assert reg == pytest.approx(0.1 * (-math.log(6) - m_in) ** 2, rel=0.02)
    assert reg < math.log(6)
    # ... its gradient on the logits is a third of CE's, and the outlier hinge is off (E_out > m_out)
    assert g_hinge.norm() < 0.4 * g_ce.norm()
    assert g_out.abs().max() == 0
    # Liu et al.'s fine-tuning constants: the hinge is 30x CE and its gradient twice CE's
    g_ce, g_hinge, _, reg = _ce_and_hinge_grads(-25.0, -7.0)
    assert reg > 25 * math.log(6)
    assert g_hinge.norm() > 2 * g_ce.norm()


def test_train_classifier_energy_margins_arguments():
    import dataclasses
    from ood_lib.config import ClassifierConfig
    from ood_lib.train import train_classifier
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 1, 28, 28, generator=g), torch.arange(16) % 2
    cfg = ClassifierConfig(width=4, epochs=1, batch_size=8, outlier_batch_size=4)
    assert cfg.energy_margins == "from_ce"
    art = train_classifier(x, y, 2, cfg, loss="energy_oe", outliers=x[:4], energy_margins=(-3.0, -1.0))
    assert art["energy_margins"] == (-3.0, -1.0)
    fixed = dataclasses.replace(cfg, energy_margins="fixed")
    assert train_classifier(x, y, 2, fixed, loss="energy_oe", outliers=x[:4])["energy_margins"] == (-25.0, -7.0)
    with pytest.raises(ValueError, match="fixed"):
        train_classifier(x, y, 2, fixed, loss="energy_oe", outliers=x[:4], energy_margins=(-3.0, -1.0))
    with pytest.raises(ValueError, match="m_in < m_out"):
        train_classifier(x, y, 2, cfg, loss="energy_oe", outliers=x[:4], energy_margins=(-1.0, -3.0))
    with pytest.raises(ValueError, match="unknown energy_margins"):
        train_classifier(x, y, 2, dataclasses.replace(cfg, energy_margins="liu"), loss="energy_oe", outliers=x[:4])


def test_supcon_oe_acts_on_the_probe_only():
    from pytorch_metric_learning.losses import SupConLoss
    torch.manual_seed(0)
    emb_id = torch.randn(8, 4, requires_grad=True)
    emb_out = torch.randn(5, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    grads = {}
    for target in ("probe", "joint"):
        m = metric_loss("supcon", 3, 4, oe_target=target)
        with torch.no_grad():
            m.proxies.copy_(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)))
        value = metric_oe(m, emb_id, y, emb_out, lam=0.5)
        g_id, g_out, g_p = torch.autograd.grad(value, (emb_id, emb_out, m.proxies), allow_unused=True)
        grads[target] = (value.item(), g_id, g_out, g_p)
    # same value either way; with "probe" the outliers' embeddings get no gradient ...
    assert grads["probe"][0] == pytest.approx(grads["joint"][0])
    assert grads["probe"][2] is None or grads["probe"][2].abs().max() == 0
    assert grads["joint"][2].abs().max() > 0
    # ... the ID embeddings get exactly SupCon's gradient, and the proxies CE's + OE's
    g_supcon = torch.autograd.grad(SupConLoss()(emb_id, y), emb_id)[0]
    torch.testing.assert_close(grads["probe"][1], g_supcon)
    torch.testing.assert_close(grads["probe"][3], grads["joint"][3])
    with pytest.raises(ValueError, match="oe_target"):
        metric_loss("supcon", 3, 4, oe_target="backbone")


def _supcon_toy(target, steps=100, seed=0):
    """A 2-layer 'backbone' trained with SupCon + proxy probe + OE on near copies of the ID points
    (the character of the digits SD outliers); returns the probe's ID accuracy."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(3, 16, generator=g) * 2
    y = torch.arange(48) % 3
    x = means[y] + 0.5 * torch.randn(48, 16, generator=g)
    x_out = x + 0.1 * torch.randn(48, 16, generator=g)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    m = metric_loss("supcon", 3, 8, oe_target=target)
    opt = torch.optim.Adam([*net.parameters(), *m.parameters()], lr=1e-2)
    for _ in range(steps):
        value = metric_oe(m, net(x), y, net(x_out), lam=0.5)
        opt.zero_grad()
        value.backward()
        opt.step()
    with torch.no_grad():
        return (m.logits(net(x)).argmax(1) == y).float().mean().item()


def test_supcon_oe_on_the_probe_keeps_id_accuracy():
    """With the OE gradient in the backbone ("joint") the embeddings turn away from the proxies
    and the probe's accuracy falls (the digits collapse in miniature); "probe" keeps it."""
    assert _supcon_toy("probe") == 1.0
    assert _supcon_toy("joint") < 0.85
