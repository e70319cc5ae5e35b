"""nbval on the executed notebooks of the smoke run (the notebooks in notebooks/ are stored without outputs).

nbval re-executes each executed copy and compares the outputs of the cells marked
``# NBVAL_CHECK_OUTPUT`` (deterministic ones: data tables, plans, file lists), after the
substitutions of ``tests/nbval_sanitize.cfg`` (CPU names, model-folder hashes).
"""

import subprocess
import sys

import nbformat

from tests.conftest import REPO


def test_notebooks_in_the_repository_carry_no_outputs():
    """Students open clean notebooks; executed copies (with outputs) live in run folders and reference/."""
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        with_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
        assert not with_outputs, f"{path.name}: cells {with_outputs} have outputs; strip them"
        assert "papermill" not in nb.metadata, f"{path.name}: papermill metadata of an executed copy"
        assert any(
            c.cell_type == "markdown" and "remove-cell" in c.metadata.get("tags", []) and "demo" in c.source
            for c in nb.cells[:3]
        ), f"{path.name}: no opening cell telling a student what the demo profile gives and where results are"
        checked = [c for c in nb.cells if "NBVAL_CHECK_OUTPUT" in c.source]
        assert path.name.startswith(("02", "03", "05", "06", "07")) or checked, f"{path.name}: no checked cell"


def test_nbval_on_the_executed_smoke_notebooks(smoke_run):
    notebooks = sorted(str(p) for p in (smoke_run / "notebooks").glob("0*.ipynb") if "." not in p.stem)
    assert len(notebooks) == 9
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "-p",
            "no:cacheprovider",
            "-q",
            "--nbval-sanitize-with",
            str(REPO / "tests" / "nbval_sanitize.cfg"),
            *notebooks,
        ],
        cwd=smoke_run,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-4000:]
    assert "passed" in r.stdout


def test_the_book_hides_the_default_parameters_and_stardists_training_log():
    """A reader of the book sees the parameters the run injected (papermill's cell), not the notebook's defaults
    (the demo profile); StarDist's Keras lines (one per epoch) sit behind a toggle. JupyterLab shows both."""
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        [params] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert "remove-cell" in params.metadata["tags"], path.name
        for c in nb.cells:
            if c.cell_type == "code" and "study.stardist(" in c.source:
                assert "hide-output" in c.metadata.get("tags", []), f"{path.name}: {c.source[:60]}"
