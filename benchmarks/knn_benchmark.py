"""k-NN OOD scoring: faiss (the library's KNNScorer) vs brute-force torch vs scikit-learn.

Measures three ways of computing the k-NN OOD score of Sun et al. (ICML 2022) -- the
Euclidean distance from each L2-normalised query to its k-th nearest neighbour among the
L2-normalised ID training features (the "bank") -- on the same seeded random Gaussian
float32 features:

* ``faiss``:   :class:`ood_lib.scores.KNNScorer`, exactly as the library uses it
               (``faiss.IndexFlatL2`` over the normalised bank);
* ``torch``:   brute force in query chunks, ``d^2 = 2 - 2 q.b^T`` (unit vectors, clamped at 0),
               ``torch.topk(k, largest=False)``, k-th value, ``sqrt``; ``--device cpu|cuda``;
* ``sklearn``: ``NearestNeighbors(n_neighbors=k, algorithm="brute").kneighbors``.

For each method it reports the wall time of the best of ``--repeats`` runs (build = index
build / fit / bank normalisation, search = query normalisation + neighbour search; total =
build + search of that best run) and the *peak-RSS increase*: every method runs in its own
fresh subprocess (this script re-invoked with a hidden ``--worker METHOD`` flag), which
creates the features, records its current RSS, runs the method ``--repeats`` times and
reports ``ru_maxrss`` (peak RSS) minus that RSS. The increase also holds one-time costs of
the libraries (code pages touched for the first time, thread-pool buffers), which matter only
at small sizes. With ``--device cuda`` the worker creates the CUDA context and loads cuBLAS
before the baseline; GPU memory is not in RSS and is reported separately
(``torch.cuda.max_memory_allocated``) in the notes.

The k-th distances of the three methods must agree within ``--atol`` (default 1e-3, max abs
difference); the script records the differences and exits with status 1 if they do not.

Writes ``<out>/knn_scoring.csv`` and ``<out>/knn_scoring.md`` (default
``results/benchmarks``). Run from the repository root, e.g.

    python benchmarks/knn_benchmark.py                      # 10,000 queries, 50,000 bank, 512-d, k=50
    python benchmarks/knn_benchmark.py --n-queries 1000 --n-bank 5000 --dim 128 --repeats 1 --out /tmp/knn
    python benchmarks/knn_benchmark.py --device cuda        # torch brute force on the GPU

Timings depend on what else runs on the machine: the .md records the CPU count, thread
counts and the load average at the start.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# torch, faiss, scikit-learn and pandas are imported lazily, inside functions: the parent
# process must stay small because on Linux a child's ru_maxrss starts at the parent's peak
# RSS (the kernel carries the old address space's high-water mark across exec), which
# would otherwise put a floor under the workers' peak-RSS measurements.

METHODS = ("faiss", "torch", "sklearn")
RESULT_PREFIX = "KNN_BENCHMARK_RESULT "
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- methods
def _check_k(k: int, n_bank: int) -> None:
    if k < 1 or k > n_bank:
        raise ValueError(f"k={k} must be in [1, {n_bank}] (the bank size)")


def _clock(device=None) -> float:
    """perf_counter, after waiting for queued CUDA work when ``device`` is a GPU."""
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
    return time.perf_counter()


def _record(timings: dict | None, t0: float, t1: float, t2: float) -> None:
    if timings is not None:
        timings["build_s"] = t1 - t0
        timings["search_s"] = t2 - t1


def knn_faiss(bank, queries, k: int, timings: dict | None = None):
    """k-th NN distance with the library's :class:`ood_lib.scores.KNNScorer` (faiss)."""
    from ood_lib.scores import KNNScorer

    t0 = _clock()
    scorer = KNNScorer(bank, k)
    t1 = _clock()
    out = scorer(queries)
    t2 = _clock()
    _record(timings, t0, t1, t2)
    return out.float()


def knn_torch(bank, queries, k: int, device: str = "cpu", chunk_size: int = 1024,
              timings: dict | None = None):
    """k-th NN distance by brute force in torch: per chunk of ``chunk_size`` queries,
    ``d^2 = 2 - 2 q.b^T`` for unit vectors (clamped at 0), ``topk(k, largest=False)``,
    k-th value, ``sqrt``. Returns a float32 CPU tensor.

    (``2 - 2 q.b`` assumes unit rows; an all-zero feature row, which ``F.normalize`` leaves at
    zero, would get d^2 = 2 here instead of 1 -- irrelevant for real features.)
    """
    import torch
    import torch.nn.functional as F

    _check_k(k, len(bank))
    dev = torch.device(device)
    t0 = _clock(dev)
    b = F.normalize(bank.to(dev, torch.float32), dim=1)
    t1 = _clock(dev)
    out = torch.empty(len(queries), dtype=torch.float32, device=dev)
    for start in range(0, len(queries), chunk_size):
        q = F.normalize(queries[start:start + chunk_size].to(dev, torch.float32), dim=1)
        d2 = q @ b.T  # a transposed view: BLAS reads it in place, no copy of the bank
        d2.mul_(-2.0).add_(2.0).clamp_(min=0.0)
        out[start:start + len(q)] = d2.topk(k, dim=1, largest=False, sorted=True).values[:, -1]
        del d2
    out = out.sqrt_().cpu()
    t2 = _clock(dev)
    _record(timings, t0, t1, t2)
    return out


def knn_sklearn(bank, queries, k: int, timings: dict | None = None):
    """k-th NN distance with ``sklearn.neighbors.NearestNeighbors(algorithm="brute")`` on the
    L2-normalised features. Returns a float32 CPU tensor."""
    import torch
    import torch.nn.functional as F
    from sklearn.neighbors import NearestNeighbors

    _check_k(k, len(bank))
    t0 = _clock()
    b = F.normalize(bank.float(), dim=1).numpy()
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(b)
    t1 = _clock()
    dist, _ = nn.kneighbors(F.normalize(queries.float(), dim=1).numpy())
    t2 = _clock()
    _record(timings, t0, t1, t2)
    return torch.from_numpy(np.ascontiguousarray(dist[:, -1], dtype=np.float32))


def make_features(n_queries: int, n_bank: int, dim: int, seed: int = 0):
    """Seeded standard-Gaussian float32 (bank, queries)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(n_bank, dim, generator=g, dtype=torch.float32)
    queries = torch.randn(n_queries, dim, generator=g, dtype=torch.float32)
    return bank, queries


def run_method(method: str, bank, queries, k: int, device: str = "cpu", chunk_size: int = 1024,
               timings: dict | None = None):
    if method == "faiss":
        return knn_faiss(bank, queries, k, timings=timings)
    if method == "torch":
        return knn_torch(bank, queries, k, device=device, chunk_size=chunk_size, timings=timings)
    if method == "sklearn":
        return knn_sklearn(bank, queries, k, timings=timings)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


# ----------------------------------------------------------------------------- worker
def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_hwm_kib() -> int | None:
    """Peak RSS of this address space (VmHWM), which unlike ru_maxrss is not inherited."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def worker(args: argparse.Namespace) -> None:
    """Runs one method in this (fresh) process and prints a JSON result line."""
    import torch

    method = args.worker
    info: dict = {"method": method, "torch_version": torch.__version__,
                  "torch_threads": torch.get_num_threads()}
    device = args.device if method == "torch" else "cpu"
    # Import / initialise everything the method needs *before* the RSS baseline.
    if method == "faiss":
        import faiss

        import ood_lib.scores  # noqa: F401
        info["faiss_version"] = faiss.__version__
        info["faiss_omp_threads"] = faiss.omp_get_max_threads()
    elif method == "sklearn":
        import sklearn
        import sklearn.neighbors  # noqa: F401
        info["sklearn_version"] = sklearn.__version__
    elif device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda requested but torch.cuda.is_available() is False")
        # Create the CUDA context and load cuBLAS / the top-k kernels now, on a tiny problem:
        # their host memory (hundreds of MiB) is a one-time runtime cost, not the method's.
        x = torch.randn(8, 8, device="cuda")
        (x @ x.T).topk(2, dim=1, largest=False)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        info["cuda_device"] = torch.cuda.get_device_name()

    bank, queries = make_features(args.n_queries, args.n_bank, args.dim, args.seed)
    rss_base = _current_rss_bytes()
    maxrss_base_kib = _maxrss_kib()
    hwm_base_kib = _vm_hwm_kib()

    best, out = None, None
    for _ in range(args.repeats):
        t: dict = {}
        out = run_method(method, bank, queries, args.k, device=device,
                         chunk_size=args.chunk_size, timings=t)
        t["total_s"] = t["build_s"] + t["search_s"]
        if best is None or t["total_s"] < best["total_s"]:
            best = t
    maxrss_end_kib = _maxrss_kib()
    hwm_end_kib = _vm_hwm_kib()

    result_path = Path(args.result_dir) / f"{method}.npy"
    np.save(result_path, out.numpy())
    info.update(best, device=device, result=str(result_path), rss_base_bytes=rss_base,
                maxrss_base_kib=maxrss_base_kib, maxrss_end_kib=maxrss_end_kib,
                vmhwm_base_kib=hwm_base_kib, vmhwm_end_kib=hwm_end_kib,
                peak_rss_increase_MiB=max(0, maxrss_end_kib * 1024 - rss_base) / 2**20)
    if device == "cuda":
        info["cuda_max_allocated_MiB"] = torch.cuda.max_memory_allocated() / 2**20
    print(RESULT_PREFIX + json.dumps(info), flush=True)


# ----------------------------------------------------------------------------- parent
def _worker_cmd(args: argparse.Namespace, method: str, result_dir: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", method,
            "--result-dir", result_dir, "--n-queries", str(args.n_queries),
            "--n-bank", str(args.n_bank), "--dim", str(args.dim), "--k", str(args.k),
            "--repeats", str(args.repeats), "--device", args.device,
            "--chunk-size", str(args.chunk_size), "--seed", str(args.seed)]


def _run_worker(args: argparse.Namespace, method: str, result_dir: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(_worker_cmd(args, method, result_dir), capture_output=True, text=True,
                          env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"worker {method!r} failed (exit status {proc.returncode})")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n-queries", type=int, default=10_000, help="query features")
    parser.add_argument("--n-bank", type=int, default=50_000, help="ID training features")
    parser.add_argument("--dim", type=int, default=512, help="feature dimension")
    parser.add_argument("--k", type=int, default=50, help="neighbour whose distance is the score")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; best kept")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="device of the brute-force torch method")
    parser.add_argument("--chunk-size", type=int, default=1024, help="torch method: queries per chunk")
    parser.add_argument("--seed", type=int, default=0, help="torch.Generator seed of the features")
    parser.add_argument("--atol", type=float, default=1e-3,
                        help="max abs difference allowed between methods' k-th distances")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks",
                        help="output directory")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--result-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n_queries < 1 or args.dim < 1 or args.repeats < 1 or args.chunk_size < 1:
        parser.error("--n-queries, --dim, --repeats and --chunk-size must be positive")
    try:
        _check_k(args.k, args.n_bank)
    except ValueError as e:
        parser.error(str(e))
    if args.worker:
        worker(args)
        return 0

    # the command a reader reruns: no machine-specific interpreter or absolute path
    command = shlex.join(["python", "benchmarks/knn_benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    load = os.getloadavg()
    print(f"k-NN scoring: {args.n_queries:,} queries x {args.n_bank:,} bank, dim {args.dim}, "
          f"k={args.k}, best of {args.repeats}; torch on {args.device}; "
          f"load average {load[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    infos, dists = {}, {}
    with tempfile.TemporaryDirectory(prefix="knn_bench_") as tmp:
        for method in METHODS:
            print(f"  running {method} in a fresh subprocess ...", flush=True)
            infos[method] = _run_worker(args, method, tmp)
            dists[method] = np.load(infos[method]["result"])

    # Correctness: every pair of methods, plus each against faiss for the table.
    pair_diffs = {f"{a} vs {b}": float(np.max(np.abs(dists[a].astype(np.float64) - dists[b])))
                  for i, a in enumerate(METHODS) for b in METHODS[i + 1:]}
    worst = max(pair_diffs.values())
    ok = bool(worst <= args.atol) and all(np.isfinite(d).all() for d in dists.values())

    import pandas as pd

    f = infos["faiss"]
    rows = []
    for method in METHODS:
        r = infos[method]
        rows.append({
            "method": method, "device": r["device"], "build_s": r["build_s"],
            "search_s": r["search_s"], "total_s": r["total_s"],
            "peak_rss_increase_MiB": r["peak_rss_increase_MiB"],
            "time_vs_faiss": _ratio(r["total_s"], f["total_s"]),
            "memory_vs_faiss": _ratio(r["peak_rss_increase_MiB"], f["peak_rss_increase_MiB"]),
            "max_abs_diff_vs_faiss": float(np.max(np.abs(dists[method].astype(np.float64)
                                                         - dists["faiss"]))),
        })
    df = pd.DataFrame(rows)
    table = df.to_markdown(index=False, floatfmt=".4g")

    notes = []
    for method in METHODS:
        r = infos[method]
        # ru_maxrss can only be trusted if it equals this address space's own high-water mark.
        if r["vmhwm_end_kib"] is not None and r["maxrss_end_kib"] > r["vmhwm_end_kib"] + 1024:
            notes.append(f"WARNING: {method}: ru_maxrss ({r['maxrss_end_kib']} KiB) exceeds VmHWM "
                         f"({r['vmhwm_end_kib']} KiB): peak inherited from the parent; "
                         "its peak-RSS increase is unreliable.")
        if r["maxrss_end_kib"] <= r["maxrss_base_kib"]:
            notes.append(f"{method}: peak RSS was not raised above the pre-method peak; its "
                         "peak-RSS increase is an upper bound.")
        if "cuda_max_allocated_MiB" in r:
            notes.append(f"{method} on {r['cuda_device']}: peak GPU memory allocated "
                         f"{r['cuda_max_allocated_MiB']:.1f} MiB (not included in RSS).")
    verdict = "PASS" if ok else "FAIL"
    correctness = (f"Correctness ({verdict}, tolerance {args.atol:g}): max |k-th distance "
                   "difference| " + ", ".join(f"{p}: {d:.3g}" for p, d in pair_diffs.items()))

    header = [
        "# k-NN OOD scoring benchmark: faiss (ood_lib.scores.KNNScorer) vs brute-force torch vs scikit-learn",
        "",
        f"Command: `{command}`",
        "",
        f"Sizes: {args.n_queries:,} queries, {args.n_bank:,} bank vectors, dim {args.dim}, k={args.k}, "
        f"best of {args.repeats} run(s), torch chunk {args.chunk_size} queries, seed {args.seed} "
        "(standard Gaussian float32, L2-normalised by every method).",
        "",
        f"Versions: torch {f['torch_version']}, faiss {f['faiss_version']}, scikit-learn "
        f"{infos['sklearn']['sklearn_version']}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"Python {sys.version.split()[0]}. CPUs: os.cpu_count()={os.cpu_count()}, "
        f"usable {len(os.sched_getaffinity(0))}; torch.get_num_threads()={f['torch_threads']}, "
        f"faiss OpenMP threads {f['faiss_omp_threads']}; load average at start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "",
        "Times in seconds (best run; build = normalise bank + index build / fit, search = "
        "normalise queries + search). peak_rss_increase_MiB = peak-RSS increase: ru_maxrss at "
        "the end minus the RSS right after the features were created, each method in its own "
        "fresh subprocess (it includes one-time library costs, which dominate at small sizes). "
        "*_vs_faiss = ratio to the faiss row.",
        "",
        correctness,
    ]
    if notes:
        header += [""] + [f"- {n}" for n in notes]

    print()
    print(table)
    print()
    print(correctness)
    for n in notes:
        print(n)

    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "knn_scoring.csv", index=False)
    (args.out / "knn_scoring.md").write_text("\n".join(header) + "\n\n" + table + "\n")
    print(f"\nwrote {args.out / 'knn_scoring.csv'} and {args.out / 'knn_scoring.md'}")
    if not ok:
        print(f"FAIL: the methods disagree by up to {worst:.3g} > {args.atol:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
