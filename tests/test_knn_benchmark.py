"""The three k-NN scoring methods of benchmarks/knn_benchmark.py agree with a direct cdist."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "knn_benchmark.py"
_spec = importlib.util.spec_from_file_location("knn_benchmark", _PATH)
kb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kb)

N_QUERIES, N_BANK, DIM = 200, 1000, 16


@pytest.fixture(scope="module")
def feats():
    return kb.make_features(N_QUERIES, N_BANK, DIM, seed=0)


def reference(bank, queries, k):
    d = torch.cdist(F.normalize(queries.double(), dim=1), F.normalize(bank.double(), dim=1))
    return d.topk(k, dim=1, largest=False).values[:, -1]


@pytest.mark.parametrize("method", kb.METHODS)
def test_matches_cdist(feats, method):
    bank, queries = feats
    timings = {}
    out = kb.run_method(method, bank, queries, 5, chunk_size=64, timings=timings)
    assert out.shape == (N_QUERIES,) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(bank, queries, 5), atol=1e-4, rtol=0)
    assert timings["build_s"] >= 0 and timings["search_s"] >= 0


@pytest.mark.parametrize("method", kb.METHODS)
def test_kth_distance_non_decreasing_in_k(feats, method):
    bank, queries = feats
    outs = [kb.run_method(method, bank, queries, k, chunk_size=64) for k in (1, 2, 5, 10, 50)]
    for smaller, larger in zip(outs, outs[1:]):
        assert (larger >= smaller - 1e-6).all()


def test_k_out_of_range(feats):
    bank, queries = feats
    for method in kb.METHODS:
        with pytest.raises(ValueError):
            kb.run_method(method, bank, queries, N_BANK + 1)
