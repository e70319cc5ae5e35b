"""Build the book of a run folder, and publish a run as the study the book shows.

The study itself runs on Snakemake (``workflow/Snakefile``; see ``book/reproduce.md``)::

    snakemake -s workflow/Snakefile --cores 2 --config profile=quick out=runs/synthetic-quick

This module does what the workflow engine does not::

    python -m nucseg_lib.runner book --run runs/synthetic-quick          # (re)build the book of a run
    python -m nucseg_lib.runner publish --run runs/coelho2009-cpu        # copy a run to reference/

A run folder holds ``notebooks/`` (executed), ``results/`` (``summary.csv``,
``run.json``, tidy tables), ``models/`` (cached models) and ``_build/html`` (the book).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .jobs import SCRATCH_NOTEBOOKS, JobError, _read_record

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference"


def find_replicates(run: Path) -> list[Path]:
    """Results folders of the same run with other training seeds: sibling folders ``<run>-seed<N>``."""
    run = Path(run).resolve()
    return sorted(d / "results" for d in run.parent.glob(f"{run.name}-seed*") if (d / "results" / "summary.csv").exists())


def build_book(run: Path, strict: bool = True, replicates=None) -> Path:
    """Build the Jupyter Book of a run folder into ``<run>/_build/html``; returns that folder.

    ``replicates`` (default: :func:`find_replicates`) go into the results page's seed table.
    """
    from .book import write_results_page

    run = Path(run).resolve()
    replicates = find_replicates(run) if replicates is None else replicates
    stage = run / "_book_src"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / f, stage / f)
    shutil.copytree(REPO / "book", stage / "book")
    shutil.copytree(run / "notebooks", stage / "notebooks", ignore=shutil.ignore_patterns(*SCRATCH_NOTEBOOKS))
    write_results_page(run / "results", stage / "book" / "results.md", replicates)
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


def publish(run: Path, to: Path = REFERENCE / "coelho2009-cpu") -> Path:
    """Copy a run's executed notebooks and results (not its models or build) to ``to``.

    The run is checked first (``results/summary.csv`` and ``run.json`` with every notebook
    ``ok``, each executed notebook present), the copy is made beside ``to`` and swapped in
    only when complete, and publishing a folder onto itself or into itself is refused: a
    typo in ``--run`` cannot empty the published study.
    """
    run, to = Path(run).resolve(), Path(to).resolve()
    if run == to or run in to.parents or to in run.parents:
        raise JobError(f"publish: --run {run} and --to {to} overlap; publish a run folder into another place")
    record = _read_record(run / "results" / "run.json")
    problems = []
    if not (run / "results" / "summary.csv").is_file():
        problems.append("no results/summary.csv")
    if not record:
        problems.append("no results/run.json")
    for name, rec in record.get("notebooks", {}).items():
        if rec.get("status") != "ok":
            problems.append(f"notebook {name} is {rec.get('status')}")
        elif not (run / "notebooks" / f"{name}.ipynb").is_file():
            problems.append(f"notebooks/{name}.ipynb is missing")
    if record and not record.get("notebooks"):
        problems.append("no notebook has run")
    if problems:
        raise JobError(f"publish: {run} is not a finished run ({'; '.join(problems)}); {to} is left as it was")
    stage = to.with_name(f".{to.name}.publishing")
    old = to.with_name(f".{to.name}.old")
    for d in (stage, old):
        if d.exists():
            shutil.rmtree(d)
    stage.mkdir(parents=True)
    shutil.copytree(run / "notebooks", stage / "notebooks", ignore=shutil.ignore_patterns(*SCRATCH_NOTEBOOKS))
    shutil.copytree(run / "results", stage / "results")
    if to.exists():
        os.replace(to, old)
    os.replace(stage, to)
    shutil.rmtree(old, ignore_errors=True)
    print(f"published {run} to {to}")
    return to


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m nucseg_lib.runner", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("book", help="build the book of a run folder")
    b.add_argument("--run", default=str(REFERENCE / "coelho2009-cpu"))
    p = sub.add_parser("publish", help="copy a run to reference/ (the study the book publishes)")
    p.add_argument("--run", required=True)
    p.add_argument("--to", default=str(REFERENCE / "coelho2009-cpu"))
    a = ap.parse_args(argv)
    try:
        if a.cmd == "book":
            book(Path(a.run))
        elif a.cmd == "publish":
            publish(Path(a.run), Path(a.to))
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def book(run: Path) -> Path:
    """Build the book of ``run``; for the reference run, also regenerate the repository's results page."""
    replicates = find_replicates(run)
    if run.resolve() == (REFERENCE / "coelho2009-cpu").resolve():
        from .book import write_results_page

        # the committed results page of the repository's book follows the reference run
        write_results_page(run / "results", REPO / "book" / "results.md", replicates)
        # build the reference book outside the reference folder, so the repository stays clean
        tmp = REPO / "runs" / "reference-book"
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(run, tmp)
        run = tmp
    return build_book(run, replicates=replicates)


if __name__ == "__main__":
    main()
