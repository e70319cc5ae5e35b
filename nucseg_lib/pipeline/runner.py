"""Build the book of a run folder, and publish a run as the study the book shows.

The study itself runs on Snakemake (``workflow/Snakefile``; see ``book/reproduce.md``)::

    snakemake -s workflow/Snakefile --cores 2 --config profile=quick out=runs/synthetic-quick

This module does what the workflow engine does not::

    python -m nucseg_lib.pipeline.runner book --run runs/synthetic-quick          # (re)build the book of a run
    python -m nucseg_lib.pipeline.runner publish --run runs/coelho2009-cpu        # copy a run to reference/
    python -m nucseg_lib.pipeline.runner publish-model --run runs/coelho2009-curves   # the nucseg predict model

A run folder holds ``notebooks/`` (executed), ``results/`` (``summary.csv``,
``run.json``, tidy tables), ``models/`` (cached models) and ``_build/html`` (the book).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .folders import REPO
from .jobs import SCRATCH_NOTEBOOKS, JobError, read_record

REFERENCE = REPO / "reference"


def find_replicates(run: Path) -> list[Path]:
    """Results folders of the same run with other training seeds: sibling folders ``<run>-seed<N>``."""
    run = Path(run).resolve()
    return sorted(
        d / "results" for d in run.parent.glob(f"{run.name}-seed*") if (d / "results" / "summary.csv").exists()
    )


def book_config(config: dict) -> dict:
    """The book's ``_config.yml`` for a build: with ``repository.url`` set (the one setting), the book shows
    repository and issue buttons and a Colab launch button; without it, none of them (they would be dead).
    Binder gets no button: its 2 GB cannot hold torch and TensorFlow."""
    config = {**config, "html": dict(config.get("html") or {})}
    url = ((config.get("repository") or {}).get("url") or "").strip()
    config["html"]["use_repository_button"] = config["html"]["use_issues_button"] = bool(url)
    if url:
        config["launch_buttons"] = {"colab_url": "https://colab.research.google.com", "notebook_interface": "classic"}
    else:
        config.pop("repository", None)
        config.pop("launch_buttons", None)
    return config


def run_description(results: Path) -> str:
    """One paragraph saying what run a book shows: data, profile, seed, when, on which CPU."""
    record = read_record(Path(results) / "run.json")
    if not record:
        return "This book was built from a run without a run record."
    p = record.get("parameters", {})
    cpu = (record.get("hardware") or {}).get("cpu", "an unrecorded CPU")
    data = {
        "synthetic": "the synthetic nuclei (generated, exact labels)",
        "coelho2009": "Coelho et al. 2009",
        "kromp2020": "Kromp et al. 2020",
        "folder": "a folder of the reader's own images",
    }
    when = str(record.get("assembled") or record.get("end") or "")[:10]
    return (
        f"This book shows a run on **{data.get(record.get('dataset'), record.get('dataset'))}** with the "
        f"`{record.get('profile')}` profile (training seed {p.get('seed', 0)}), assembled {when} on {cpu}; "
        f"its settings, timings and package versions are on the results page."
    )


def find_companion(run: Path, suffix: str, notebook: str) -> Path | None:
    """The sibling run folder ``<run>-<suffix>`` that ran ``notebook`` on its own (``make curves``: ``-curves``
    with notebook 09; ``make cv``: ``-cv`` with notebook 10), if it holds that executed notebook."""
    other = Path(run).resolve().with_name(Path(run).resolve().name + f"-{suffix}")
    return other if (other / "notebooks" / f"{notebook}.ipynb").is_file() else None


def find_curves(run: Path) -> Path | None:
    """The learning-curve run that goes with ``run`` (notebook 09): :func:`find_companion`."""
    return find_companion(run, "curves", "09_learning_curves")


def find_cv(run: Path) -> Path | None:
    """The cross-validation run that goes with ``run`` (notebook 10): :func:`find_companion`."""
    return find_companion(run, "cv", "10_cross_validation")


def note_other_run(notebook: Path, its_results: Path, book_results: Path) -> bool:
    """Put a note under the title of a staged ``notebook`` that another run executed (its ``results/``),
    saying how that run differs from the book's (:func:`~nucseg_lib.pipeline.book.other_run_note`); returns whether
    it did (not when the two runs share their settings and CPU)."""
    import nbformat

    from .book import other_run_note

    note = other_run_note(
        "This notebook", read_record(its_results / "run.json"), read_record(book_results / "run.json")
    )
    if not note:
        return False
    nb = nbformat.read(notebook, as_version=4)
    title = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.lstrip().startswith("#"))
    nb.cells.insert(title + 1, nbformat.v4.new_markdown_cell(f"```{{note}}\n{note}\n```"))
    nbformat.write(nb, notebook)
    return True


def _stage_toc(stage: Path) -> None:
    """Keep in the staged ``_toc.yml`` only the notebooks the stage holds (a run of some notebooks builds),
    and turn the book pages' links to the others into plain text."""
    toc = yaml.safe_load((stage / "_toc.yml").read_text())
    missing = []
    for part in toc.get("parts", []):
        missing += [
            c["file"]
            for c in part["chapters"]
            if c["file"].startswith("notebooks/") and not (stage / f"{c['file']}.ipynb").is_file()
        ]
        part["chapters"] = [c for c in part["chapters"] if c["file"] not in missing]
    (stage / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    for page in (stage / "book").glob("*.md"):  # links to a notebook this run lacks become plain text
        text = page.read_text()
        for f in missing:
            text = text.replace(f"{{doc}}`../{f}`", f"notebook `{f.split('/')[-1]}` (not part of this run)")
        page.write_text(text)


def build_book(
    run: Path, strict: bool = True, replicates=None, curves: Path | None = None, cv: Path | None = None
) -> Path:
    """Build the Jupyter Book of a run folder into ``<run>/_build/html``; returns that folder.

    ``replicates`` (default: :func:`find_replicates`) go into the results page's seed table;
    ``curves`` (default: :func:`find_curves`) is a learning-curve run whose notebook 09 and table
    join the book when ``run`` has none of its own; ``cv`` (default: :func:`find_cv`) likewise a
    cross-validation run and its notebook 10. A notebook from another run says how that run differs.
    """
    from ..study.results import read_summary
    from .book import key_findings, run_caveat, write_results_page

    run = Path(run).resolve()
    replicates = find_replicates(run) if replicates is None else replicates
    curves = find_curves(run) if curves is None else curves
    cv = find_cv(run) if cv is None else cv
    stage = run / "_book_src"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    shutil.copy(REPO / "_toc.yml", stage / "_toc.yml")
    (stage / "_config.yml").write_text(
        yaml.safe_dump(book_config(yaml.safe_load((REPO / "_config.yml").read_text())), sort_keys=False)
    )
    shutil.copytree(REPO / "book", stage / "book")
    shutil.copytree(REPO / "_static", stage / "_static")  # the book's CSS (long lines wrap)
    intro = stage / "book" / "intro.md"
    record = read_record(run / "results" / "run.json")
    findings = key_findings(
        read_summary(run / "results" / "summary.csv"),
        read_summary(cv / "results" / "summary.csv") if cv else None,  # None: the run's own rows
        run_caveat(record),
        record,
        read_record(cv / "results" / "run.json") if cv else record,
    )
    intro.write_text(
        intro.read_text()
        .replace("<!-- run-description -->", run_description(run / "results"))
        .replace("<!-- key-findings -->", "\n".join(findings))
    )
    shutil.copytree(run / "notebooks", stage / "notebooks", ignore=shutil.ignore_patterns(*SCRATCH_NOTEBOOKS))
    curves_table = run / "results" / "time_to_accuracy.csv"
    for other, notebook in ((curves, "09_learning_curves"), (cv, "10_cross_validation")):
        if other and not (stage / "notebooks" / f"{notebook}.ipynb").exists():
            shutil.copy(other / "notebooks" / f"{notebook}.ipynb", stage / "notebooks")
            note_other_run(stage / "notebooks" / f"{notebook}.ipynb", other / "results", run / "results")
            if other == curves:
                curves_table = curves / "results" / "time_to_accuracy.csv"
    _stage_toc(stage)
    write_results_page(
        run / "results", stage / "book" / "results.md", replicates, curves_table, cv / "results" if cv else None
    )
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(stage), "--path-output", str(run), "--keep-going"]
    if strict:
        cmd.append("-W")
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if jb:
        cmd = [jb] + cmd[3:]
    print("building the book:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    html = run / "_build" / "html"
    print(f"book: {html / 'index.html'}")
    return html


def relative_paths(text: str) -> str:
    """``text`` with absolute paths under the repository's parent folder made relative to ``notebooks/``
    (where the notebooks run), so published files name no machine's folders."""
    import re

    from .jobs import notebook_path

    root = re.escape(str(REPO.parent.resolve()))
    return re.sub(root + r"/[^\s\"'\\,)\]}]*", lambda m: notebook_path(m.group(0)), text)


def final_stream_text(text: str) -> str:
    """What a terminal shows of ``text`` at the end: each line's text after its last carriage return.

    A progress bar redraws its line with ``\\r`` many times a second; kept as written, a training
    cell's stderr holds hundreds of copies of the bar. Its last state (100%, the steps, the time and
    the rate) is the part worth reading."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def collapse_streams(notebook_json: str) -> str:
    """A notebook (JSON text) whose consecutive stream outputs of one kind (stdout, stderr) in a cell are
    merged into one, with progress-bar redraws reduced to their final state (:func:`final_stream_text`).
    Text that is not a notebook (no ``cells``) is returned as it is."""
    import json

    import nbformat

    try:
        if not isinstance(json.loads(notebook_json).get("cells"), list):
            return notebook_json
    except (ValueError, AttributeError):
        return notebook_json
    nb = nbformat.reads(notebook_json, as_version=4)
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            same = merged and out.output_type == "stream" and merged[-1].output_type == "stream"
            if same and merged[-1].name == out.name:
                merged[-1].text += out.text
            else:
                merged.append(out)
        for out in merged:
            if out.output_type == "stream":
                out.text = final_stream_text(out.text)
        if "outputs" in cell:
            cell.outputs = merged
    return nbformat.writes(nb) + ("\n" if notebook_json.endswith("\n") else "")


def sanitize_published(folder: Path) -> int:
    """Rewrite machine paths in a published folder's notebooks and JSON/CSV files, and reduce the
    notebooks' progress bars to their final state; returns the number of files changed."""
    changed = 0
    for f in sorted(Path(folder).rglob("*")):
        if f.suffix in (".ipynb", ".json", ".csv", ".md") and f.is_file():
            text = f.read_text()
            new = relative_paths(text)
            if f.suffix == ".ipynb":
                new = collapse_streams(new)
            if new != text:
                f.write_text(new)
                changed += 1
    return changed


PUBLISHED_MARKER = ".nucseg-published"  # written into every published folder: publish replaces only such folders


def executed_notebook_problem(path: Path) -> str | None:
    """Why ``path`` is not a notebook that papermill executed to its end (None when it is): a source notebook
    copied into a run, or an execution that stopped, is not a result."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 (any unreadable file is a problem to report by name)
        return f"{path.name} cannot be read ({type(exc).__name__})"
    pm = nb.metadata.get("papermill") or {}
    if not pm.get("end_time"):
        return f"{path.name} is not an executed notebook (no papermill end time)"
    if pm.get("exception"):
        return f"{path.name} stopped with an error"
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    if any(c.get("execution_count") is None for c in code):
        return f"{path.name} has cells that never ran"
    return None


def publish(run: Path, to: Path = REFERENCE / "coelho2009-cpu") -> Path:
    """Copy a run's executed notebooks and results (not its models or build) to ``to``.

    The run is checked first (``results/summary.csv`` with rows, ``run.json`` with every notebook
    ``ok``, each notebook present and executed to its end by papermill), the copy is made beside
    ``to`` and swapped in only when complete, and publishing a folder onto itself or into itself
    is refused: a typo in ``--run`` cannot empty the published study. ``to`` is replaced only when
    it is new, empty or an earlier publication (it holds ``.nucseg-published``): a folder of the
    user's is refused, with nothing in it changed (:func:`nucseg_lib.pipeline.folders.replace_folder`).
    """
    import pandas as pd

    from .folders import FolderError, check_replaceable, replace_folder

    run, to = Path(run).resolve(), Path(to).resolve()
    if run == to or run in to.parents or to in run.parents:
        raise JobError(f"publish: --run {run} and --to {to} overlap; publish a run folder into another place")
    try:
        check_replaceable(to, PUBLISHED_MARKER, "publish --to")
    except FolderError as exc:
        raise JobError(f"publish: {exc}") from None
    record = read_record(run / "results" / "run.json")
    problems = []
    summary = run / "results" / "summary.csv"
    if not summary.is_file():
        problems.append("no results/summary.csv")
    elif pd.read_csv(summary).empty:
        problems.append("results/summary.csv has no rows")
    if not record:
        problems.append("no results/run.json")
    for name, rec in record.get("notebooks", {}).items():
        nb = run / "notebooks" / f"{name}.ipynb"
        if rec.get("status") != "ok":
            problems.append(f"notebook {name} is {rec.get('status')}")
        elif not nb.is_file():
            problems.append(f"notebooks/{name}.ipynb is missing")
        elif problem := executed_notebook_problem(nb):
            problems.append(f"notebooks/{problem}")
    if record and not record.get("notebooks"):
        problems.append("no notebook has run")
    if problems:
        raise JobError(f"publish: {run} is not a finished run ({'; '.join(problems)}); {to} is left as it was")
    stage = to.with_name(f".{to.name}.publishing")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    shutil.copytree(run / "notebooks", stage / "notebooks", ignore=shutil.ignore_patterns(*SCRATCH_NOTEBOOKS))
    shutil.copytree(run / "results", stage / "results")
    sanitize_published(stage)
    (stage / PUBLISHED_MARKER).write_text(
        "written by python -m nucseg_lib.pipeline.runner publish; replaced by the next one\n"
    )
    try:
        replace_folder(stage, to, PUBLISHED_MARKER, "publish --to")
    except FolderError as exc:
        raise JobError(f"publish: {exc}") from None
    print(f"published {run} to {to}")
    return to


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m nucseg_lib.pipeline.runner", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("book", help="build the book of a run folder")
    b.add_argument("--run", default=str(REFERENCE / "coelho2009-cpu"))
    p = sub.add_parser("publish", help="copy a run to reference/ (the study the book publishes)")
    p.add_argument("--run", required=True)
    p.add_argument("--to", default=str(REFERENCE / "coelho2009-cpu"))
    m = sub.add_parser("publish-model", help="export a learning-curve snapshot as the published nucseg predict model")
    m.add_argument("--run", required=True, help="a run folder whose notebook 09 has run")
    m.add_argument("--method", default="unet_boundary")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--steps", type=int, default=None, help="snapshot (default: the best validation F1@0.5)")
    m.add_argument("--to", default=str(REPO / "models" / "unet_boundary-coelho2009"))
    a = ap.parse_args(argv)
    try:
        if a.cmd == "publish-model":
            publish_model(Path(a.run), a.method, a.seed, a.steps, Path(a.to))
        elif a.cmd == "book":
            book(Path(a.run))
        elif a.cmd == "publish":
            publish(Path(a.run), Path(a.to))
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def publish_model(run: Path, method: str, seed: int, steps: int | None, to: Path) -> Path:
    """Export a learning-curve snapshot of ``run`` (parameters from its ``results/parameters.json``) to ``to``;
    without ``steps``, the snapshot whose post-processed validation F1 at IoU 0.5 is best."""
    from ..study.curves import export_snapshot, plan
    from .jobs import study_from_params

    params = read_record(Path(run) / "results" / "parameters.json")
    if not params:
        raise JobError(f"{run}: no results/parameters.json; run the workflow into it first")
    study = study_from_params(params)
    p = plan(
        study.profile, study.dataset, params.get("budgets"), params.get("curve_seeds"), params.get("stardist_scales")
    )
    if steps is None:  # the snapshot with the best validation F1 (never chosen by the test images)
        from ..study.curves import learning_curve, run_variant

        rows = learning_curve(run_variant(study, p, study.scale, seed), method, p["budgets"])
        steps = int(rows.sort_values(["val_f1@0.5", "steps"]).steps.iloc[-1])
    out = export_snapshot(study, p, method, study.scale, seed, steps, to)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"published {method} (seed {seed}, {steps} steps) to {out} ({size:.1f} MiB)")
    return out


def book(run: Path) -> Path:
    """Build the book of ``run``; for the reference run, also regenerate the repository's results page."""
    replicates, curves, cv = find_replicates(run), find_curves(run), find_cv(run)
    if run.resolve() == (REFERENCE / "coelho2009-cpu").resolve():
        from .book import write_results_page

        # the committed results page of the repository's book follows the reference run
        write_results_page(
            run / "results",
            REPO / "book" / "results.md",
            replicates,
            curves / "results" / "time_to_accuracy.csv" if curves else None,
            cv / "results" if cv else None,
        )
        # build the reference book outside the reference folder, so the repository stays clean
        tmp = REPO / "runs" / "reference-book"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(run, tmp)
        run = tmp
    return build_book(run, replicates=replicates, curves=curves, cv=cv)


if __name__ == "__main__":
    main()
