"""What maintainers rely on: lint, the GitHub workflows, the citation file, the book's build step."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, **kw)


def test_ruff_lints_and_formats_the_code_and_lints_the_notebooks():
    r = run([str(BIN / "ruff"), "check", "nucseg_lib", "tests", "benchmarks", "--output-format", "concise"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([str(BIN / "ruff"), "format", "--check", "nucseg_lib", "tests", "benchmarks"])
    assert r.returncode == 0, r.stdout + r.stderr  # formatted: `ruff format nucseg_lib tests benchmarks`
    r = run([str(BIN / "nbqa"), "ruff", "notebooks", "--output-format", "concise"])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_github_workflows_are_valid(tmp_path):
    assert {w.name for w in WORKFLOWS} == {"tests.yml", "book.yml"}
    check = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    r = run(check + [str(w) for w in WORKFLOWS])
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: echo hi\n")  # no runs-on
    assert run(check + [str(broken)]).returncode != 0  # the check can fail
    book = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    uses = [s.get("uses", "") for job in book["jobs"].values() for s in job["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    tests = yaml.safe_load((REPO / ".github" / "workflows" / "tests.yml").read_text())
    assert "pull_request" in tests[True] and any(".ci/run" in s.get("run", "") for s in tests["jobs"]["test"]["steps"])


@pytest.mark.slow
def test_the_pages_workflow_build_step_builds_the_reference_book(tmp_path_factory):
    """The deploy workflow's build step, run exactly as written, makes the folder it uploads."""
    from tests.conftest import one_worker_at_a_time

    with one_worker_at_a_time(tmp_path_factory, "reference-book"):  # tests/test_book_browser.py reads that folder
        _build_the_reference_book_as_the_pages_workflow_does()


def _build_the_reference_book_as_the_pages_workflow_does():
    book = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    steps = book["jobs"]["build"]["steps"]
    build = next(s for s in steps if s.get("name") == "Build the reference book")
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    results_page = (REPO / "book" / "results.md").read_text()
    r = run(shlex.split(build["run"]))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    html = REPO / upload["with"]["path"]
    assert (html / "index.html").is_file() and (html / "notebooks" / "08_beyond_instances.html").is_file()
    # the build regenerates the committed results page from the reference run: nothing changes
    assert (REPO / "book" / "results.md").read_text() == results_page


@pytest.mark.slow
def test_citation_file_is_valid_cff(tmp_path):
    """CITATION.cff passes cffconvert's validation (in its own environment: it pins an old jsonschema)."""
    import yaml as _yaml

    cff = _yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["license"] == "MIT" and any("Nuclei Segmentation" in r["title"] for r in cff["references"])
    venv = tmp_path / "cff"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "cffconvert==2.0.0"], capture_output=True, text=True
    )
    if pip.returncode != 0:
        pytest.skip(f"cffconvert could not be installed (no package registry?): {pip.stderr[-300:]}")
    r = run([str(venv / "bin" / "cffconvert"), "--validate", "-i", "CITATION.cff"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_licence_matches_the_package_metadata():
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"]["text"] == "MIT" and (REPO / "LICENSE").read_text().startswith("MIT License")


def test_repository_url_is_the_one_setting_for_the_books_buttons():
    from nucseg_lib.pipeline.runner import book_config

    base = yaml.safe_load((REPO / "_config.yml").read_text())
    assert base["repository"]["url"] == ""  # unset here: no dead buttons
    off = book_config(base)
    assert not off["html"]["use_repository_button"] and "launch_buttons" not in off and "repository" not in off
    on = book_config({**base, "repository": {**base["repository"], "url": "https://github.com/me/nucseg"}})
    assert on["html"]["use_repository_button"] and on["html"]["use_issues_button"]
    assert on["launch_buttons"] == {"colab_url": "https://colab.research.google.com", "notebook_interface": "classic"}
    assert "binderhub_url" not in on["launch_buttons"]


def test_each_book_says_what_its_run_is(tmp_path):
    import json

    from nucseg_lib.pipeline.runner import run_description

    (tmp_path / "run.json").write_text(
        json.dumps(
            {
                "dataset": "synthetic",
                "profile": "quick",
                "parameters": {"seed": 0},
                "assembled": "2026-11-25T06:00:00+00:00",
                "hardware": {"cpu": "AMD EPYC"},
            }
        )
    )
    text = run_description(tmp_path)
    assert "synthetic nuclei" in text and "`quick` profile" in text and "AMD EPYC" in text and "2026-11-25" in text
    assert "Coelho" not in text


def test_published_files_name_no_machine_paths():
    from nucseg_lib.pipeline.runner import REFERENCE, relative_paths

    machine = str(REPO.parent.resolve())
    for f in sorted(REFERENCE.rglob("*")):
        if f.is_file() and f.suffix in (".ipynb", ".json", ".csv", ".md"):
            assert machine not in f.read_text(), f"{f.relative_to(REPO)} names {machine}"
    text = f'out_dir = "{REPO}/runs/x"; data_root: {REPO.parent}/shared/data/coelho2009, nb {REPO}/notebooks/a.ipynb'
    assert relative_paths(text) == 'out_dir = "../runs/x"; data_root: ../../shared/data/coelho2009, nb a.ipynb'


def test_published_notebooks_keep_only_the_final_state_of_their_progress_bars():
    import nbformat

    from nucseg_lib.pipeline.runner import REFERENCE, collapse_streams

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("train()")
    bar = [f"\rtrain dice: {p:3d}%|{'#' * (p // 10):10s}| {p * 16}/1600" for p in (0, 50, 100)]
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=bar[0]),
        nbformat.v4.new_output("stream", name="stderr", text=bar[1]),
        nbformat.v4.new_output("stream", name="stdout", text="epoch 1\n"),
        nbformat.v4.new_output("stream", name="stderr", text=bar[2] + "\n"),
    ]
    nb.cells.append(cell)
    out = nbformat.reads(collapse_streams(nbformat.writes(nb)), as_version=4).cells[0].outputs
    assert [(o.name, o.text) for o in out] == [
        ("stderr", "train dice:  50%|#####     | 800/1600"),  # a bar interrupted by stdout: its last state there
        ("stdout", "epoch 1\n"),
        ("stderr", "train dice: 100%|##########| 1600/1600\n"),
    ]
    assert collapse_streams('{"good": true}') == '{"good": true}'  # not a notebook: left as it is
    # the published notebooks: no progress-bar redraws, and publishing them again changes nothing
    for f in sorted(REFERENCE.rglob("*.ipynb")):
        text = f.read_text()
        assert "\\r" not in text and collapse_streams(text) == text, f"{f.relative_to(REPO)} keeps its redraws"


def test_docstring_examples_of_the_public_metrics_and_instances_run():
    import doctest

    import nucseg_lib.instances
    import nucseg_lib.metrics

    for module in (nucseg_lib.metrics, nucseg_lib.instances):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted >= 3 and result.failed == 0, module.__name__


# the functions a reader of the notebooks calls: each says what its arguments and its result are, in units
DOCUMENTED_API = {
    "metrics": [
        "dice",
        "boundary_band",
        "boundary_dice",
        "evaluate_instances",
        "instance_summary",
        "bootstrap_ci",
        "mean_with_ci",
        "paired_difference",
    ],
    "instances": ["connected_components", "watershed_boundary", "tune_watershed", "tune_components"],
    "erf": ["effective_receptive_field", "erf_radius"],
    "inference": ["predict_probabilities"],
    "train.unet": ["train", "train_or_load"],
    "model": ["build_model"],
    "predict.segmenter": ["export_model", "Segmenter.segment"],
    "data": ["load_dataset"],
    "train.stardist": ["train_stardist", "predict_stardist"],
    "study.study": ["Study.unet"],
    "study.results": ["Results", "Results.score_instances"],
}


def test_docstrings_of_the_api_have_one_style():
    """numpydoc throughout (no Google-style ``Args:``); the notebooks' API has Parameters and Returns sections."""
    import ast
    import importlib
    import inspect

    for path in sorted((REPO / "nucseg_lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node) or ""
                assert "Args:" not in doc, f"{path.name}: {node.name}: use numpydoc sections, not Args:"
    for module, names in DOCUMENTED_API.items():
        mod = importlib.import_module(f"nucseg_lib.{module}")
        for name in names:
            obj = mod
            for part in name.split("."):
                obj = getattr(obj, part)
            doc = inspect.getdoc(obj) or ""
            assert "Parameters\n----------" in doc, f"nucseg_lib.{module}.{name}: no Parameters section"
            assert "Returns\n-------" in doc or inspect.isclass(obj), f"nucseg_lib.{module}.{name}: no Returns section"


def test_the_book_wraps_long_lines():
    """Outputs such as "What we found" and wide tables wrap rather than scroll sideways: the book's CSS
    (``_static/wrap.css``; every build stages it, and the smoke book's contract test finds it in the HTML)."""
    css = (REPO / "_static" / "wrap.css").read_text()
    assert "white-space: pre-wrap" in css and "overflow-wrap: anywhere" in css
