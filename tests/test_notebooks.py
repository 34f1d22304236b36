"""The notebooks as files and as a reader sees them: the smoke copies the tests execute, the
committed copies (default-run outputs, no machine's paths), and a notebook executed on smoke
showing its figures inline with one cache line per cell."""
import json
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from ood_lib import notebook_files

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# where a machine's files live: a path like these in a committed output leaks the machine that ran it
MACHINE_PATH = re.compile(r"(/work/|/home/|/root/|/Users/|/tmp/|/private/var/|[A-Z]:\\\\Users)")


def _tiny(tmp_path, outputs=True):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "digits"  # which profile\nseed = 0\nfull = False  # costly parts')
    params.metadata["tags"] = ["parameters"]
    code = nbformat.v4.new_code_cell("print(profile)")
    if outputs:
        code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="digits\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params, code]
    path = tmp_path / "01_t.ipynb"
    nbformat.write(nb, path)
    return path


def test_set_parameter_rewrites_the_literal_and_keeps_the_comment(tmp_path):
    nb = nbformat.read(_tiny(tmp_path), as_version=4)
    notebook_files.set_parameter(nb, "profile", "smoke")
    notebook_files.set_parameter(nb, "full", True)
    assert notebook_files.parameters_cell(nb).source == 'profile = "smoke"  # which profile\nseed = 0\nfull = True  # costly parts'
    with pytest.raises(KeyError, match="width"):
        notebook_files.set_parameter(nb, "width", 3)


def test_smoke_copies_are_set_to_smoke_without_outputs(tmp_path):
    _tiny(tmp_path)
    (written,) = notebook_files.smoke_copies(tmp_path, tmp_path / "smoke")
    nb = nbformat.read(written, as_version=4)
    assert notebook_files.parameters_cell(nb).source.startswith('profile = "smoke"  # which profile')
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")


def test_committed_copy_drops_the_injected_cell_and_heads_the_outputs(tmp_path):
    dest = _tiny(tmp_path, outputs=False)
    executed = nbformat.read(dest, as_version=4)
    injected = nbformat.v4.new_code_cell('profile = "digits"\nfull = True')
    injected.metadata["tags"] = ["injected-parameters"]
    executed.cells.insert(2, injected)
    executed.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="digits\n")]
    executed.metadata["papermill"] = {"parameters": {"profile": "digits"}}
    nbformat.write(executed, tmp_path / "executed.ipynb")
    notebook_files.committed_copy(tmp_path / "executed.ipynb", dest, "digits", commit="abc1234", date="2026-12-07")
    nb = nbformat.read(dest, as_version=4)
    assert [c.cell_type for c in nb.cells] == ["markdown", "markdown", "code", "code"]
    assert "`digits`" in nb.cells[0].source and "abc1234" in nb.cells[0].source and "2026-12-07" in nb.cells[0].source
    assert "full = False" in nb.cells[2].source               # the reader's defaults, not the run's
    assert nb.cells[3].outputs[0]["text"] == "digits\n" and "papermill" not in nb.metadata
    # committing again replaces the header rather than adding a second
    notebook_files.committed_copy(tmp_path / "executed.ipynb", dest, "digits", commit="def5678", date="2026-12-08")
    nb = nbformat.read(dest, as_version=4)
    assert sum(notebook_files.HEADER_TAG in c.metadata.get("tags", []) for c in nb.cells) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_defaults_to_digits_and_shows_no_machine_path(path):
    nb = nbformat.read(path, as_version=4)
    assert notebook_files.parameters_cell(nb).source.startswith('profile = "digits"')
    for cell in nb.cells:
        if cell.cell_type == "code":
            text = json.dumps([{k: v for k, v in o.items() if k != "data" or "image/png" not in v} for o in cell.outputs])
            assert not MACHINE_PATH.search(text), (path.name, MACHINE_PATH.search(text).group(0))


def test_tracked_results_show_no_machine_path():
    files = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True).stdout.split()
    own = str(REPO)
    for name in files:
        if name.endswith((".md", ".csv", ".tex", ".tsv")):
            text = (REPO / name).read_text(errors="replace")
            assert own not in text, name
            assert not re.search(r"(/work/|/home/|/root/|/Users/)", text), name


FIGURE_CALLS = ("report.score_histograms(", "report.roc_curves(", "report.embedding_maps(")


def test_scoring_notebook_on_smoke_shows_its_figures_inline_and_one_cache_line_per_cell(tmp_path, monkeypatch):
    import papermill

    out = tmp_path / "07.ipynb"
    # the kernel inherits this environment: the inline backend a reader's kernel has, not the
    # test command's Agg; results in tmp_path
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("OOD_RESULTS", str(tmp_path / "results"))
    papermill.execute_notebook(str(REPO / "notebooks" / "07_scoring.ipynb"), str(out), kernel_name="python3",
                               parameters={"profile": "smoke", "full": False}, cwd=str(REPO / "notebooks"),
                               progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    figure_cells = [c for c in nb.cells if c.cell_type == "code" and any(f in c.source for f in FIGURE_CALLS)]
    assert len(figure_cells) == 3
    for cell in figure_cells:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source[:60]
    for cell in nb.cells:
        printed = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        assert printed.count("[cache]") <= 1 and "cached artefact" not in printed, printed[:300]
        assert not MACHINE_PATH.search(printed), printed[:300]
    assert (tmp_path / "results" / "smoke" / "figures" / "roc_sd_three_head_sd.png").stat().st_size > 0
