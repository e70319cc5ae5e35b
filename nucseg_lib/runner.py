"""Run the whole study: execute the notebooks with papermill in order, then build the Jupyter Book.

Usage::

    python -m nucseg_lib.runner run --dataset synthetic --profile quick --out runs/synthetic-quick
    python -m nucseg_lib.runner run --dataset coelho2009 --data-root ../shared/data/coelho2009 --profile cpu \\
        --out runs/coelho2009-cpu
    python -m nucseg_lib.runner book --run runs/synthetic-quick          # (re)build the book of a run
    python -m nucseg_lib.runner publish --run runs/coelho2009-cpu        # copy a run to reference/ (the published study)

A run folder holds ``notebooks/`` (executed), ``results/`` (``summary.csv``,
``run.json``, tidy tables), ``models/`` (cached models) and ``_build/html``
(the book). A notebook that already finished with the same parameters is
skipped on a second call, and models are cached and checkpointed, so an
interrupted run loses little: run the same command again. A failing notebook
stops the run with a message naming it; results written before are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .machine import hardware

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["01_data", "02_baseline", "03_transfer", "04_topk", "05_boundary", "06_stardist",
             "07_receptive_field", "08_beyond_instances"]
PACKAGES = ["nucseg", "torch", "torchvision", "tensorflow", "keras", "stardist", "csbdeep", "numpy", "scipy",
            "scikit-image", "pandas", "papermill", "jupyter-book"]
REFERENCE = REPO / "reference"
SCRATCH_NOTEBOOKS = ("*.partial.ipynb", "*.failed.ipynb")  # notebooks of unfinished or failed executions


def versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


class RunError(SystemExit):
    """A run cannot start or stopped; the message says why and what to do (exit status 1)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


def select_notebooks(only: list[str] | None) -> list[str]:
    """Notebook names matching the prefixes in ``only`` (all when empty); an unknown prefix is an error."""
    if not only:
        return list(NOTEBOOKS)
    unknown = [o for o in only if not any(n.startswith(o) for n in NOTEBOOKS)]
    if unknown:
        raise RunError(f"--only {' '.join(unknown)}: no notebook starts with that; notebooks are {', '.join(NOTEBOOKS)}")
    return [n for n in NOTEBOOKS if any(n.startswith(o) for o in only)]


def _cause(exc: Exception) -> str:
    """The error inside a failed notebook (papermill keeps the kernel's exception name and message)."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


def run_study(dataset: str, profile: str, out: Path, data_root: str | None = None, seed: int = 0,
              only: list[str] | None = None, extra: dict | None = None, force: bool = False) -> dict:
    """Execute the notebooks into ``out``; returns the run record (also written to ``results/run.json``).

    A notebook is executed into ``<name>.partial.ipynb`` and moved into place only when it
    finished, and ``run.json`` marks it ``running`` meanwhile, so a run killed mid-notebook
    never leaves a half-executed notebook that the next call takes as done. A run folder
    belongs to one set of parameters: running other parameters (another seed, dataset,
    profile or data) into it is refused, so one ``summary.csv`` never mixes two runs.
    """
    import papermill as pm

    out = Path(out).resolve()
    if REFERENCE.resolve() in [out, *out.parents]:
        raise RunError(f"{out} is inside reference/: run into another folder and use 'publish' to replace the reference run")
    names = select_notebooks(only)
    params = {"dataset": dataset, "profile": profile, "seed": seed, "out_dir": str(out),
              "data_root": str(Path(data_root).resolve()) if data_root else None, **(extra or {})}
    run_path = out / "results" / "run.json"
    record = _read_record(run_path)
    if record.get("parameters", params) != params:
        old = record["parameters"]
        diff = ", ".join(f"{k} {old.get(k)!r} -> {params.get(k)!r}" for k in sorted(set(old) | set(params))
                         if old.get(k) != params.get(k))
        raise RunError(f"{out} holds a run with other parameters ({diff}); its summary.csv would mix the two. "
                       f"Use another --out folder (seed replicates go to <run>-seed<N>)")
    if not record and (out / "results" / "summary.csv").exists():
        raise RunError(f"{out / 'results' / 'summary.csv'} exists but run.json does not: cannot tell which run wrote "
                       f"it; use another --out folder")
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(parents=True, exist_ok=True)
    record = record or {"parameters": params, "notebooks": {}}
    record.update({"dataset": dataset, "profile": profile, "hardware": hardware(), "versions": versions()})
    record.setdefault("start", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    for i, name in enumerate(names, 1):
        done = record["notebooks"].get(name, {})
        target = out / "notebooks" / f"{name}.ipynb"
        if done.get("status") == "ok" and target.exists() and not force:
            print(f"[{i}/{len(names)}] {name}: already done ({done['seconds']:.0f} s), skipped", flush=True)
            continue
        print(f"[{i}/{len(names)}] {name}: running ...", flush=True)
        partial = target.with_name(f"{name}.partial.ipynb")
        record["notebooks"][name] = {"status": "running", "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write_json(run_path, record)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(partial), parameters=params,
                                cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
        except Exception as exc:
            failed = target.with_name(f"{name}.failed.ipynb")
            if partial.exists():
                os.replace(partial, failed)
            cause = _cause(exc)
            record["notebooks"][name] = {"status": "failed", "seconds": time.perf_counter() - t0,
                                         "error": cause[-2000:]}
            _write_json(run_path, record)
            print(f"\nFAILED: notebook {name}\n  cause: {cause[-2000:]}\n  the executed notebook with the error: "
                  f"{failed}\n  results of earlier notebooks are kept in {out / 'results'}", file=sys.stderr)
            raise SystemExit(1) from None
        os.replace(partial, target)
        seconds = time.perf_counter() - t0
        record["notebooks"][name] = {"status": "ok", "seconds": round(seconds, 1)}
        record["end"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record["duration_s"] = round(sum(v.get("seconds", 0) for v in record["notebooks"].values()), 1)
        _write_json(run_path, record)
        print(f"[{i}/{len(names)}] {name}: done in {seconds:.0f} s", flush=True)
    return record


def _read_record(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: cannot read the run record ({type(exc).__name__}: {exc}); move it away to start "
                       f"the run afresh") from exc


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
        raise RunError(f"publish: --run {run} and --to {to} overlap; publish a run folder into another place")
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
        raise RunError(f"publish: {run} is not a finished run ({'; '.join(problems)}); {to} is left as it was")
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
    r = sub.add_parser("run", help="execute the notebooks, then build the book")
    r.add_argument("--dataset", default="synthetic", choices=["synthetic", "coelho2009", "kromp2020"])
    r.add_argument("--profile", default="quick", choices=["smoke", "quick", "cpu", "full"])
    r.add_argument("--data-root", default=None, help="folder of a real dataset (default $NUCSEG_DATA/<dataset>)")
    r.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<profile>)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 01 02")
    r.add_argument("--force", action="store_true", help="re-execute notebooks that already finished")
    r.add_argument("--no-book", action="store_true")
    b = sub.add_parser("book", help="build the book of a run folder")
    b.add_argument("--run", default=str(REFERENCE / "coelho2009-cpu"))
    p = sub.add_parser("publish", help="copy a run to reference/ (the study the book publishes)")
    p.add_argument("--run", required=True)
    p.add_argument("--to", default=str(REFERENCE / "coelho2009-cpu"))
    a = ap.parse_args(argv)
    try:
        _main(a)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _main(a):
    if a.cmd == "run":
        out = Path(a.out or REPO / "runs" / f"{a.dataset}-{a.profile}")
        t0 = time.perf_counter()
        run_study(a.dataset, a.profile, out, a.data_root, a.seed, a.only, force=a.force)
        print(f"notebooks finished in {time.perf_counter() - t0:.0f} s; results in {out / 'results'}")
        if not a.no_book:
            build_book(out)
    elif a.cmd == "book":
        run = Path(a.run)
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
        build_book(run, replicates=replicates)
    elif a.cmd == "publish":
        publish(Path(a.run), Path(a.to))


if __name__ == "__main__":
    main()
