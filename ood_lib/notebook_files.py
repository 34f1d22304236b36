"""The notebooks as files: the smoke copies the tests execute, and the committed copies a reader
opens, which carry the outputs of the default run.

``notebooks/*.ipynb`` default to the ``digits`` profile and hold its run's outputs (figures
included), under a first line naming profile, commit and date. The tests never compare those
outputs: ``./run_all.sh --test`` writes a copy of each notebook with its ``parameters`` cell set to
``smoke`` and no outputs (:func:`smoke_copies`) and nbval executes the copies, so a notebook that
breaks fails the tests. ``./run_all.sh --refresh-notebooks`` runs the default profile and writes
its executed copies back (:func:`committed_copy`).

    python -m ood_lib.notebook_files smoke-copies notebooks OUT_DIR
    python -m ood_lib.notebook_files commit results/digits/notebooks notebooks --profile digits
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
from pathlib import Path

import nbformat

HEADER_TAG = "run-header"


def parameters_cell(nb) -> nbformat.NotebookNode:
    """The notebook's one cell tagged ``parameters`` (papermill's convention)."""
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"a notebook needs exactly one cell tagged 'parameters'; found {len(cells)}")
    return cells[0]


def set_parameter(nb, name: str, value) -> None:
    """Rewrite ``name = ...`` in the parameters cell as a literal of ``value`` (strings in double
    quotes), keeping its comment."""
    cell = parameters_cell(nb)
    pattern = re.compile(rf"^({re.escape(name)}\s*=\s*)([^#\n]*?)(\s*(#.*)?)$", re.M)
    if not pattern.search(cell.source):
        raise KeyError(f"parameter {name!r} is not set in the parameters cell")
    literal = json.dumps(value) if isinstance(value, str) else repr(value)
    cell.source = pattern.sub(lambda m: f"{m.group(1)}{literal}{m.group(3)}", cell.source, count=1)


def without_outputs(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None


def smoke_copies(src: Path, dst: Path, profile: str = "smoke") -> list[Path]:
    """Each ``src/NN_*.ipynb`` into ``dst`` with ``profile`` set, no outputs and no run header:
    what nbval executes in the tests."""
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(Path(src).glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nb.cells = [c for c in nb.cells if HEADER_TAG not in c.metadata.get("tags", [])]
        set_parameter(nb, "profile", profile)
        without_outputs(nb)
        nbformat.write(nb, dst / path.name)
        written.append(dst / path.name)
    return written


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def committed_copy(executed: Path, dest: Path, profile: str, commit: str | None = None,
                   date: str | None = None) -> None:
    """``executed`` (papermill's output of ``dest`` on ``profile``) back into ``dest``: papermill's
    injected cell and metadata removed, the parameters cell as in ``dest`` (so a reader who runs it
    gets the defaults), and a first markdown cell naming the run that made the outputs."""
    source = nbformat.read(dest, as_version=4)
    nb = nbformat.read(executed, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])
                and HEADER_TAG not in c.metadata.get("tags", [])]
    parameters_cell(nb).source = parameters_cell(source).source
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nb.metadata.pop("papermill", None)
    commit = commit or _commit()
    date = date or datetime.date.today().isoformat()
    header = nbformat.v4.new_markdown_cell(
        f"*Outputs below: the `{profile}` profile's default run (`./run_all.sh --refresh-notebooks`), "
        f"commit `{commit}`, {date}. Run the cells to recompute them (cached stages load in seconds).*")
    header.metadata["tags"] = [HEADER_TAG]
    nb.cells.insert(0, header)
    nbformat.write(nb, dest)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ood_lib.notebook_files")
    sub = parser.add_subparsers(dest="command", required=True)
    smoke = sub.add_parser("smoke-copies", help="copies with the smoke profile and no outputs, for nbval")
    smoke.add_argument("src", type=Path)
    smoke.add_argument("dst", type=Path)
    commit = sub.add_parser("commit", help="executed copies back into the committed notebooks")
    commit.add_argument("executed_dir", type=Path)
    commit.add_argument("notebooks_dir", type=Path)
    commit.add_argument("--profile", default="digits")
    args = parser.parse_args(argv)
    if args.command == "smoke-copies":
        for path in smoke_copies(args.src, args.dst):
            print(path)
        return
    for dest in sorted(args.notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        executed = args.executed_dir / dest.name
        if not executed.exists():
            raise SystemExit(f"no executed copy {executed}: run ./run_all.sh --profile {args.profile} first")
        committed_copy(executed, dest, args.profile)
        print(f"{dest} <- {executed}")


if __name__ == "__main__":
    main()
