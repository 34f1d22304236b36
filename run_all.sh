#!/usr/bin/env bash
# The one entry point: bootstrap .venv, then run the notebooks (papermill) or the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

usage() {
  cat <<'TXT'
Usage: ./run_all.sh [--profile NAME | --config FILE.toml] [--full] [--test] [--refresh-notebooks] [--lab] [--help]

  (no flag)            execute notebooks/NN_*.ipynb in order with papermill on the profile
                       (default: digits); executed copies, tables and figures go to results/<profile>/
  --profile NAME       smoke (minutes) | digits (default, 22 min on an idle 2-core machine, budget 40) |
                       digits_nuisance (the digits on textured backdrops, paper 3's premise measured) |
                       cifar10 (GPU hours; data: README) | cifar10_quick (the cifar10 run in minutes
                       on one GPU: benchmarks/gpu_run.sh) | cifar10_smoke (the cifar10 code path, minutes)
  --config FILE.toml   your own dataset and sizes (README: "Use your own data"); results go to
                       results/<the config's name>/
  --full               also the optional, costly parts of the notebooks (their `full` parameter):
                       every loss x outlier source over the profile's seeds (06, 07: 81 models on
                       digits), the papers' full grids (08, 09: SD timestep x guidance, OAL
                       ablation) and SD outliers from a DDPM trained on pseudo labels (04);
                       not timed as one process; hours on 2 CPU cores (results/digits/README.md)
  --test               the test suite: unit tests + nbval of a smoke-profile copy of every notebook
  --refresh-notebooks  run the profile (default digits) as above, then write its executed copies
                       back into notebooks/ (what a reader opens first: the run's outputs and
                       figures, headed by profile, commit and date)
  --lab                open JupyterLab on notebooks/ in the project's environment (extra arguments
                       after --lab go to `jupyter lab`, e.g. --lab --no-browser --port 8890)
Environment: OOD_CACHE (artefact cache, default .cache/), OOD_RESULTS (default results/),
OOD_DATA_ROOT (optional data, default ../shared/data), OOD_DOWNLOAD=1 (let torchvision download the cifar10 sets into it),
PYTHON (interpreter used to create .venv, default python3), OOD_VENV=none (no .venv: run with
$PYTHON and the packages it has; benchmarks/gpu_run.sh uses this).
TXT
}

profile=digits
mode=run
full=False
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --config) profile="$(realpath "${2:?--config needs a .toml file}")"; shift 2 ;;
    --config=*) profile="$(realpath "${1#*=}")"; shift ;;
    --full) full=True; shift ;;
    --test) mode=test; shift ;;
    --refresh-notebooks) mode=refresh; shift ;;
    --lab) mode=lab; shift; break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

# --- bootstrap: (re)install when pyproject.toml or constraints.txt changed. OOD_VENV=none uses
# the interpreter as it is (${PYTHON:-python3}, its packages installed by the caller: the GPU
# script benchmarks/gpu_run.sh on a machine without internet).
if [ "${OOD_VENV:-}" = none ]; then
  shim="$(mktemp -d)"   # `python` runs $PYTHON (a wrapper, not a link: a venv's interpreter must keep its path)
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$(command -v "${PYTHON:-python3}")" > "$shim/python"; chmod +x "$shim/python"
  export PATH="$shim:$PATH"
else
  venv=.venv
  stamp="$venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "== bootstrapping $venv (first run: a few minutes)"
    [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
    rm -f "$venv"/.installed-*
    touch "$stamp"
  fi
  export PATH="$PWD/$venv/bin:$PATH"
fi
export PYTHONHASHSEED=0   # no MPLBACKEND here: a kernel a person or papermill runs shows figures inline

case "$mode" in
  lab)
    root=(); [ "$(id -u)" = 0 ] && root=(--allow-root)   # containers and Colab-like machines run as root
    exec jupyter lab --ServerApp.root_dir=notebooks "${root[@]}" "$@"
    ;;
  test)
    # Fresh artefact cache so the tests exercise every stage, removed afterwards. nbval executes
    # copies of the notebooks set to the smoke profile (ood_lib.notebook_files); the committed
    # notebooks hold the default run's outputs, which the tests never compare.
    OOD_CACHE="$(mktemp -d)"; export OOD_CACHE TQDM_DISABLE=1 MPLBACKEND=Agg OOD_HOME="$PWD"
    smoke_nb="$(mktemp -d)"
    trap 'rm -rf "$OOD_CACHE" "$smoke_nb"' EXIT
    python -m ood_lib.notebook_files smoke-copies notebooks "$smoke_nb" > /dev/null
    python -m pytest -q --durations=15 tests --nbval-lax "$smoke_nb"   # the slowest 15: the suite has a 20-min budget
    ;;
  refresh)
    # The committed notebooks from a default run of the profile (default digits): its executed
    # copies, outputs and figures included, written back without papermill's injected cell.
    again=(--profile "$profile"); [ "$full" = True ] && again+=(--full)
    "$0" "${again[@]}"
    python -m ood_lib.notebook_files commit "${OOD_RESULTS:-results}/$(python -m ood_lib check --profile "$profile")/notebooks" \
      notebooks --profile "$profile"
    ;;
  run)
    # Check the profile, its settings and its data before anything runs or is written.
    name="$(python -m ood_lib check --profile "$profile")" || exit 2
    export OOD_PROGRESS=log   # progress bars as plain lines, at most one per bar every 30 s
    out="${OOD_RESULTS:-results}/$name"
    mkdir -p "$out/notebooks"
    timings="$out/timings_last_run.tsv"
    printf 'notebook\tseconds\n' > "$timings.tmp"
    python -m ood_lib plan --profile "$profile"   # each stage's expected seconds on this device
    # every computed stage's seconds (ood_lib.timings); absolute, as notebooks run in notebooks/
    export OOD_STAGE_LOG="$(realpath -m "$out")/stage_seconds_last_run.tsv"
    : > "$OOD_STAGE_LOG"
    total_start=$(date +%s)
    for nb in notebooks/[0-9][0-9]_*.ipynb; do
      nb_name="$(basename "$nb")"
      echo "== $nb_name (profile $name)"
      t0=$(date +%s)
      params=(-p profile "$profile")
      grep -q '"full = ' "$nb" && params+=(-p full "$full")
      # A line every minute with the notebook's elapsed time, while it runs.
      ( while sleep 60; do echo "   ... $nb_name: $(( $(date +%s) - t0 )) s"; done ) &
      ticker=$!
      python -m papermill --cwd notebooks -k python3 "${params[@]}" "$nb" "$out/notebooks/$nb_name" \
        --no-progress-bar --log-output \
        || { kill $ticker; echo "run_all.sh: $nb_name failed; its executed copy is $out/notebooks/$nb_name" >&2; exit 1; }
      kill $ticker
      printf '%s\t%s\n' "$nb_name" "$(( $(date +%s) - t0 ))" >> "$timings.tmp"
    done
    printf 'total\t%s\n' "$(( $(date +%s) - total_start ))" >> "$timings.tmp"
    mv "$timings.tmp" "$timings"
    gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)"
    python -m ood_lib timings --profile "$profile" --stage-log "$OOD_STAGE_LOG" \
      --title "Command: \`./run_all.sh --profile $name\` ($(nproc) CPU cores${gpu:+, $gpu}); notebook seconds: $(basename "$timings")."
    echo "== done in $(( $(date +%s) - total_start )) s; tables and figures in $out/"
    ;;
esac
