import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ood_lib.metrics import (aupr_in, aupr_out, auroc, fpr_at_tpr, id_accuracy,
                             ood_metrics)

EXACT = dict(abs=1e-12)


def _labels(id_s, ood_s):
    return np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))]  # OOD = 1


def _sk_fpr(id_s, ood_s, tpr):
    # reference recipe: ID positive, negated scores, first index with tpr >= target
    y = 1 - _labels(id_s, ood_s)
    fpr, tprs, _ = roc_curve(y, -np.r_[id_s, ood_s], drop_intermediate=False)
    return fpr[np.argmax(tprs >= tpr)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rounded", [False, True])
def test_against_sklearn(seed, rounded):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(5, 300, size=2)
    id_s, ood_s = rng.normal(0, 1, n_id), rng.normal(0.7, 1.3, n_ood)
    if rounded:  # deliberate ties, within and across the two sets
        id_s, ood_s = id_s.round(1), ood_s.round(1)
    y, s = _labels(id_s, ood_s), np.r_[id_s, ood_s]
    assert auroc(id_s, ood_s) == pytest.approx(roc_auc_score(y, s), **EXACT)
    assert aupr_out(id_s, ood_s) == pytest.approx(average_precision_score(y, s), **EXACT)
    assert aupr_in(id_s, ood_s) == pytest.approx(average_precision_score(1 - y, -s), **EXACT)
    for t in (0.95, 0.9, 0.8, 0.5, 0.99, 1.0):
        assert fpr_at_tpr(id_s, ood_s, t) == pytest.approx(_sk_fpr(id_s, ood_s, t), **EXACT)


def test_hand_computed_small():
    id_s, ood_s = [0.1, 0.2, 0.3, 0.4], [0.35, 0.5, 0.6]
    # pairs ood > id: 0.35 beats 3, 0.5 beats 4, 0.6 beats 4 -> 11 of 12, no ties
    assert auroc(id_s, ood_s) == pytest.approx(11 / 12, **EXACT)
    # AUPR-Out, descending: .6(O) P=1 R=1/3; .5(O) P=1 R=2/3; .4(I) dR=0;
    # .35(O) P=3/4 R=1  -> 1/3 + 1/3 + 1/3*3/4 = 11/12
    assert aupr_out(id_s, ood_s) == pytest.approx(11 / 12, **EXACT)
    # AUPR-In, ascending: .1 .2 .3 (I) P=1 up to R=3/4; .35(O) dR=0;
    # .4(I) P=4/5 R=1 -> 3/4 + 1/4*4/5 = 0.95
    assert aupr_in(id_s, ood_s) == pytest.approx(0.95, **EXACT)
    # FPR95: ceil(0.95*4)=4 -> tau=0.4; OOD <= 0.4 is {0.35} -> 1/3
    assert fpr_at_tpr(id_s, ood_s) == pytest.approx(1 / 3, **EXACT)
    # with a cross tie: ood 0.3 beats 0.1, 0.2 and ties 0.3 -> 2.5 + 4 + 4 = 10.5 / 12
    assert auroc(id_s, [0.3, 0.5, 0.6]) == pytest.approx(10.5 / 12, **EXACT)


def test_perfect_separation():
    m = ood_metrics([0.0, 1.0, 2.0], [3.0, 4.0])
    assert m == {"AUROC": 1.0, "AUPR_In": 1.0, "AUPR_Out": 1.0, "FPR95": 0.0}


def test_reversed():
    id_s, ood_s = [3.0, 4.0], [0.0, 1.0, 2.0]
    assert auroc(id_s, ood_s) == 0.0
    # tau = ceil(0.95*2)=2nd smallest ID = 4 -> every OOD accepted
    assert fpr_at_tpr(id_s, ood_s) == 1.0
    # AUPR-Out, descending: 4,3 (I); 2(O) P=1/3; 1(O) P=2/4; 0(O) P=3/5, each dR=1/3
    assert aupr_out(id_s, ood_s) == pytest.approx((1 / 3 + 1 / 2 + 3 / 5) / 3, **EXACT)


def test_all_tied():
    id_s, ood_s = [1.0] * 5, [1.0] * 3
    assert auroc(id_s, ood_s) == 0.5
    assert fpr_at_tpr(id_s, ood_s) == 1.0  # tau = 1, OOD ties count as accepted
    # one single threshold: precision = prevalence, recall = 1
    assert aupr_out(id_s, ood_s) == pytest.approx(3 / 8, **EXACT)
    assert aupr_in(id_s, ood_s) == pytest.approx(5 / 8, **EXACT)


def test_fpr95_ties_and_no_interpolation():
    id_s = np.arange(1, 21, dtype=float)  # 1..20
    # ceil(0.95*20) = 19 -> tau = 19 (an interpolated 95th percentile would be 19.05)
    ood_s = [18.5, 19.0, 19.03, 19.5, 25.0]
    # accepted (<= 19): 18.5 and 19.0 (tie counts) -> 2/5.
    # strict "<" would give 1/5; interpolated tau=19.05 would also accept 19.03 -> 3/5
    assert fpr_at_tpr(id_s, ood_s) == pytest.approx(0.4, **EXACT)
    assert fpr_at_tpr(id_s, ood_s, tpr=0.9) == 0.0  # tau = 18
    assert fpr_at_tpr(id_s, ood_s, tpr=1.0) == pytest.approx(0.8, **EXACT)  # tau = 20
    assert fpr_at_tpr(id_s, ood_s) == pytest.approx(_sk_fpr(id_s, ood_s, 0.95), **EXACT)


def test_torch_inputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    id_s, ood_s = rng.normal(size=50), rng.normal(1, 1, size=40)
    ref = ood_metrics(id_s, ood_s)
    got = ood_metrics(torch.tensor(id_s, requires_grad=True), torch.tensor(ood_s).float())
    assert got == pytest.approx(ref, abs=1e-6)  # float32 copy may reorder near-ties
    assert ood_metrics(torch.tensor(id_s), torch.tensor(ood_s)) == ref
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0]])
    assert id_accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("fn", [auroc, aupr_in, aupr_out, fpr_at_tpr, ood_metrics])
def test_invalid_inputs(fn):
    with pytest.raises(ValueError, match=r"ood_scores contains 2 NaN"):
        fn([0.1, 0.2], [0.3, np.nan, np.nan])
    with pytest.raises(ValueError, match=r"id_scores contains 0 NaN and 1 inf"):
        fn([0.1, np.inf], [0.3])
    with pytest.raises(ValueError, match="id_scores is empty"):
        fn([], [0.3])
    with pytest.raises(ValueError, match="ood_scores is empty"):
        fn([0.3], np.array([]))


def test_fpr_bad_tpr():
    for t in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="tpr"):
            fpr_at_tpr([1.0, 2.0], [3.0], tpr=t)


def test_id_accuracy():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [5.0, -1.0, 0.0], [0.0, 0.0, 9.0]])
    labels = [0, 1, 1, 2]  # argmax = [0, 1, 0, 2] -> 3/4
    assert id_accuracy(logits, labels) == 0.75
    assert id_accuracy([0, 1, 0, 2], labels) == 0.75
    assert id_accuracy(np.array(labels), labels) == 1.0
    with pytest.raises(ValueError, match="labels"):
        id_accuracy([0, 1], labels)
    with pytest.raises(ValueError, match="empty"):
        id_accuracy([], [])
