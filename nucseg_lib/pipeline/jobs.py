"""What one job of the study's workflow (``workflow/Snakefile``) does, as small functions and a CLI.

Snakemake schedules the jobs, runs independent ones in parallel (locally or on SLURM),
resumes from what is complete and names a failed job with its log. The jobs are:

- ``model``: train (or reuse) one model that several notebooks share, into the run's
  ``models/`` folder, so that two notebooks running at once never train the same model;
- ``notebook``: execute one notebook with papermill; it writes its own results fragment
  ``results/parts/<experiment>.csv`` and tidy tables, and its executed copy appears only
  when it finished (written to ``<name>.partial.ipynb`` first, then moved into place);
- ``curve``: train one long run of the learning curves (method, scale, training seed) with
  snapshots, evaluate them, and write ``results/curves/<method>-<scale>x-seed<seed>.csv``;
- ``cv``: one fold of the cross-validation (method, fold): train without the fold, predict it, and write
  its per-image table ``results/cv/<method>-fold<k>.csv`` (:mod:`nucseg_lib.study.cross_validation`);
- ``assemble``: join the fragments into ``results/summary.csv`` and the jobs' timings into
  ``results/run.json`` (the results contract of :mod:`nucseg_lib.study.results`).

Each model, notebook and curve job first writes ``results/machines/<job>.json``: the CPU, GPU and
precision it ran on, and the commit of the code it ran (:func:`code_version`). A run resumed on another
machine, or spread over a cluster's nodes, then says which job ran where (``run.json``'s ``job_machines``),
instead of naming only the assembling machine, and ``run.json``'s ``code`` says which commit made its numbers.

Usage (what the Snakefile's rules run)::

    python -m nucseg_lib.pipeline.jobs model --run R --params JSON unet_dice
    python -m nucseg_lib.pipeline.jobs notebook --run R --params JSON 02_baseline
    python -m nucseg_lib.pipeline.jobs curve --run R --params JSON unet_boundary 4 0   # method, scale, seed
    python -m nucseg_lib.pipeline.jobs cv --run R --params JSON stardist 2              # method, fold
    python -m nucseg_lib.pipeline.jobs assemble --run R --params JSON --benchmarks DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ..study.parameters import OVERRIDES, PARAMETERS
from .folders import REPO

NOTEBOOK_DIR = REPO / "notebooks"
# notebook -> (experiment name of its results fragment, shared models it uses)
NOTEBOOKS = {
    "01_data": ("data", []),
    "02_baseline": ("baseline", ["unet_dice"]),
    "03_transfer": ("transfer", []),
    "04_topk": ("topk", ["unet_dice", "unet_combo"]),
    "05_boundary": ("boundary", ["unet_dice", "unet_combo"]),
    "06_stardist": ("stardist", ["unet_dice", "stardist"]),
    "07_receptive_field": ("receptive_field", ["unet_dice"]),
    "08_beyond_instances": ("beyond", ["unet_dice", "stardist"]),
    "09_learning_curves": ("curves", []),
    "10_cross_validation": ("cross_validation", []),
}
# notebooks that 'all' leaves out: runs of their own (make cv), each model trained once per fold
OPT_IN_NOTEBOOKS = ("10_cross_validation",)
PACKAGES = [
    "nucseg",
    "torch",
    "torchvision",
    "tensorflow",
    "keras",
    "stardist",
    "csbdeep",
    "numpy",
    "scipy",
    "scikit-image",
    "pandas",
    "papermill",
    "snakemake",
    "jupyter-book",
]
SCRATCH_NOTEBOOKS = ("*.partial.ipynb", "*.failed.ipynb")  # notebooks of unfinished or failed executions
STUDY_KEYS = PARAMETERS + OVERRIDES  # the parameters that make a run (every notebook's parameters cell)


class JobError(SystemExit):
    """A job cannot run; the message says why and what to do (exit status 1)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


def notebook_path(path) -> str:
    """``path`` as the notebooks (which run in ``notebooks/``) should see it: relative when it lies
    beside or inside the repository, so executed notebooks carry no machine's absolute paths."""
    path = Path(path).resolve()
    if REPO.parent in [path, *path.parents]:
        return os.path.relpath(path, NOTEBOOK_DIR)
    return str(path)


def study_from_params(params: dict):
    """The :class:`~nucseg_lib.study.study.Study` a notebook with these parameters creates (paths from ``notebooks/``)."""
    from ..study.study import Study

    cwd = os.getcwd()
    os.chdir(NOTEBOOK_DIR)
    try:
        kw = {k: params.get(k) for k in STUDY_KEYS}
        study = Study(
            kw.pop("dataset"),
            kw.pop("profile"),
            kw.pop("data_root"),
            kw.pop("out_dir"),
            kw.pop("seed"),
            experiment="",
            **kw,
        )
        study.out_dir = study.out_dir.resolve()
        study.results.folder, study.models_dir = study.out_dir / "results", study.out_dir / "models"
        if study.data_root is not None:
            study.data_root = str(Path(study.data_root).resolve())
        return study
    finally:
        os.chdir(cwd)


def shared_model_loss(model: str, params: dict) -> str | None:
    """Loss specification of a shared U-Net model (``None`` for StarDist): :data:`nucseg_lib.methods.SHARED_MODELS`."""
    from ..methods import SHARED_MODELS

    if model not in SHARED_MODELS:
        raise JobError(f"unknown shared model {model!r}; known: {', '.join(SHARED_MODELS)}")
    return SHARED_MODELS[model](params)


def train_shared_model(run: Path, params: dict, model: str) -> Path:
    """Train (or reuse) a shared model and write the marker ``models/<model>.json`` naming its folder."""
    study = study_from_params(params)
    loss = shared_model_loss(model, params)
    if loss is None:
        folder = Path(study.stardist(verbose=2).logdir)
    else:
        _, _, folder = study.unet(loss)
    marker = Path(run) / "models" / f"{model}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"model": model, "loss": loss, "folder": str(Path(folder).name)}))
    os.replace(tmp, marker)
    return marker


def curve_run(run: Path, params: dict, method: str, scale: float, seed: int) -> Path:
    """Train and evaluate one learning-curve run (notebook 09's data); writes ``results/curves/<run>.csv``."""
    from ..study.curves import learning_curve, plan, run_name, run_variant

    study = study_from_params(params)
    p = plan(
        study.profile, study.dataset, params.get("budgets"), params.get("curve_seeds"), params.get("stardist_scales")
    )
    rows = learning_curve(run_variant(study, p, float(scale), int(seed)), method, p["budgets"])
    out = Path(run) / "results" / "curves" / f"{run_name(method, float(scale), int(seed))}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    rows.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return out


def cv_run(run: Path, params: dict, method: str, k: int) -> Path:
    """One fold of the cross-validation (notebook 10's data): writes ``results/cv/<method>-fold<k>.csv``."""
    from ..study.cross_validation import fold_file, run_fold

    out = fold_file(run, method, k)
    run_fold(study_from_params(params), method, k, int(params["cv_folds"]), out)
    return out


def _cause(exc: Exception) -> str:
    """The error inside a failed notebook (papermill keeps the kernel's exception name and message)."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    return f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"


def import_papermill():
    """papermill, imported without jsonschema's IRI format checker.

    papermill imports nbformat, which imports jsonschema, whose format checkers import ``rfc3987_syntax`` when it
    is installed (nbformat's ``jsonschema[format-nongpl]`` installs it): that compiles some 35 Earley grammars at
    import, 2-4 s of every notebook job on a 2-core CPU (python-jsonschema/jsonschema#1428). No notebook schema
    uses the ``iri`` formats, so this process does without that checker.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # None in sys.modules: its import raises ImportError
    import papermill

    return papermill


def execute_notebook(run: Path, params: dict, name: str) -> Path:
    """Execute ``notebooks/<name>.ipynb`` into ``<run>/notebooks/<name>.ipynb``, atomically.

    On failure the partial notebook becomes ``<name>.failed.ipynb`` and the cause (the
    exception raised in the notebook, e.g. a ``DataError`` naming a missing file) is
    printed; the exit status is 1.
    """
    pm = import_papermill()

    if name not in NOTEBOOKS:
        raise JobError(f"unknown notebook {name!r}; notebooks are {', '.join(NOTEBOOKS)}")
    out = Path(run) / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    target, partial, failed = out / f"{name}.ipynb", out / f"{name}.partial.ipynb", out / f"{name}.failed.ipynb"
    for stale in (partial, failed):
        stale.unlink(missing_ok=True)
    try:
        pm.execute_notebook(
            str(NOTEBOOK_DIR / f"{name}.ipynb"),
            str(partial),
            parameters=params,
            cwd=str(NOTEBOOK_DIR),
            progress_bar=False,
            kernel_name="python3",
        )
    except Exception as exc:
        if partial.exists():
            os.replace(partial, failed)
        print(
            f"\nFAILED: notebook {name}\n  cause: {_cause(exc)[-2000:]}\n  the executed notebook with the "
            f"error: {failed}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    os.replace(partial, target)
    return target


def versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


# what a run's numbers depend on: a change elsewhere (docs, tests, the Makefile) does not mark the code modified
RESULT_CODE = ("nucseg_lib", "notebooks", "workflow")


def code_version(root: Path | None = None) -> dict:
    """The commit this library runs from, and whether the library, notebooks or workflow differ from it.

    ``{"commit": "<40 hex digits>", "modified": bool}``; ``{"commit": None}`` where the library does not run
    from a git checkout (an installed copy) or git cannot say. ``root``: the checkout (default: the one that
    holds this module).
    """
    import subprocess

    root = Path(root) if root else Path(__file__).resolve().parents[2]
    if not (root / ".git").exists() or not (root / "nucseg_lib").is_dir():
        return {"commit": None}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=60
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        modified = bool(git("status", "--porcelain", "--", *RESULT_CODE).strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}
    return {"commit": commit, "modified": modified}


def run_code(machines: dict) -> dict:
    """What ``run.json`` says of a run's code, from its jobs' machine records: ``commits`` (each commit its jobs
    ran, oldest record first), ``modified`` (some job ran code that differs from its commit) and
    ``unrecorded_jobs`` (jobs whose record has no commit: begun before commits were recorded, or not in git)."""
    code = {job: info.get("code") or {} for job, info in machines.items()}
    by_start = sorted(machines, key=lambda job: str(machines[job].get("started")))
    return {
        "commits": list(dict.fromkeys(code[job]["commit"] for job in by_start if code[job].get("commit"))),
        "modified": any(c.get("modified") for c in code.values()),
        "unrecorded_jobs": sorted(job for job, c in code.items() if not c.get("commit")),
    }


def job_name(job: str, names: list[str]) -> str:
    """A job's name as its benchmark file has it: ``model-unet_dice``, ``03_transfer``, ``curve-stardist-2x-seed1``."""
    if job == "notebook":
        return names[0]
    if job == "curve":
        from ..study.curves import run_name

        return f"curve-{run_name(names[0], float(names[1]), int(names[2]))}"
    if job == "cv":
        return f"cv-{names[0]}-fold{int(names[1])}"
    return f"{job}-{names[0]}"


def record_machine(run: Path, job: str) -> Path:
    """Write ``results/machines/<job>.json``: the CPU, cores, GPU and U-Net precision this job runs with, and
    the code's commit (:func:`code_version`).

    ``interrupted`` lists the start times of earlier attempts of the job that never finished (killed,
    or failed): Snakemake's timing of a resumed job covers its last attempt only.
    """
    from ..machine import hardware
    from ..train.model_folder import write_json_atomic

    out = Path(run) / "results" / "machines" / f"{job}.json"
    before = read_record(out)
    info = {k: v for k, v in hardware().items() if k in ("cpu", "cpu_bf16", "cores", "gpu", "precision")}
    info["code"] = code_version()
    info["started"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info["interrupted"] = (
        before.get("interrupted", []) + [before["started"]] if before and not before.get("finished") else []
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(info, out)
    return out


def record_finished(run: Path, job: str) -> None:
    """Mark the job's machine record finished (a later start is then a re-run, not a resume)."""
    from ..train.model_folder import write_json_atomic

    out = Path(run) / "results" / "machines" / f"{job}.json"
    write_json_atomic({**read_record(out), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}, out)


def machine_records(run: Path) -> dict:
    """``{job: record}`` from ``<run>/results/machines/*.json`` (empty for runs made before they were recorded)."""
    return {f.stem: read_record(f) for f in sorted((Path(run) / "results" / "machines").glob("*.json"))}


def machine_label(info: dict) -> str:
    """``'<CPU>, <precision>'`` (with the GPU where one was used): what makes two jobs' timings comparable."""
    return ", ".join(x for x in (info.get("cpu"), info.get("gpu"), info.get("precision")) if x)


def recorded_precision(runs) -> str | None:
    """The precision that the CPU jobs already recorded in these run folders ran at (``results/machines/``),
    so that a run resumed on another CPU goes on at the precision it began with: the precision is part of
    a model's cache key, and a notebook that found the others' models under another key would train its own.
    None when no CPU job ran yet, or when the records already disagree."""
    found = {
        info["precision"]
        for run in runs
        for info in machine_records(run).values()
        if not info.get("gpu") and info.get("precision")
    }
    return found.pop() if len(found) == 1 else None


def assemble(run: Path, params: dict, benchmarks: Path, notebooks: list[str]) -> dict:
    """Write ``results/summary.csv`` (fragments joined in notebook order) and ``results/run.json``.

    Per-notebook seconds come from Snakemake's benchmark files (``<benchmarks>/<name>.tsv``).
    """
    import pandas as pd

    from ..machine import hardware
    from ..study.profiles import resolve_profile, training_budget
    from ..study.results import SUMMARY_COLUMNS, read_summary

    run = Path(run)
    results = run / "results"
    parts = [read_summary(results / "parts" / f"{NOTEBOOKS[n][0]}.csv") for n in notebooks]
    parts = [p for p in parts if len(p)]
    summary = pd.concat(parts, ignore_index=True)[SUMMARY_COLUMNS] if parts else pd.DataFrame(columns=SUMMARY_COLUMNS)
    tmp = results / "summary.csv.tmp"
    summary.to_csv(tmp, index=False)
    os.replace(tmp, results / "summary.csv")
    record = {"parameters": params, "dataset": params["dataset"], "profile": params["profile"], "notebooks": {}}
    # every training override of the run (a run made with lr=1e-4 records 1e-4, not the profile's rate)
    record["budget"] = training_budget(resolve_profile(params["profile"], **{k: params.get(k) for k in OVERRIDES}))
    for n in notebooks:
        bench = Path(benchmarks) / f"{n}.tsv"
        seconds = float(pd.read_csv(bench, sep="\t")["s"].iloc[0]) if bench.exists() else float("nan")
        record["notebooks"][n] = {"status": "ok", "seconds": round(seconds, 1)}
    jobs = {}
    for kind in ("model", "curve", "cv"):  # shared models, learning-curve runs, cross-validation folds
        jobs[kind] = {
            f.stem[len(kind) + 1 :]: round(float(pd.read_csv(f, sep="\t")["s"].iloc[0]), 1)
            for f in sorted(Path(benchmarks).glob(f"{kind}-*.tsv"))
        }
    record["shared_models_seconds"], record["curve_runs_seconds"] = jobs["model"], jobs["curve"]
    if jobs["cv"]:
        record["cv_folds_seconds"] = jobs["cv"]
    record["duration_s"] = round(
        sum(v["seconds"] for v in record["notebooks"].values()) + sum(sum(j.values()) for j in jobs.values()), 1
    )
    record["assembled"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record.update({"hardware": hardware(), "versions": versions()})
    # the machines the jobs ran on; where they differ (a resumed run, a cluster), hardware says so too
    machines = machine_records(run)
    record["job_machines"] = {job: machine_label(info) for job, info in machines.items()}
    record["code"] = run_code(machines)
    # jobs resumed after an interruption: their seconds above count their last attempt only
    record["interrupted_jobs"] = {
        job: len(info["interrupted"]) for job, info in machines.items() if info.get("interrupted")
    }
    labels = sorted(set(record["job_machines"].values()))
    if len(labels) > 1:
        record["hardware"]["cpu"] = "several machines: " + "; ".join(labels)
        record["hardware"]["precision"] = "/".join(sorted({str(info.get("precision")) for info in machines.values()}))
    tmp = results / "run.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, results / "run.json")
    return record


def read_record(path: Path) -> dict:
    """A JSON record (``run.json``), empty when absent; JobError naming the file when unreadable."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise JobError(f"{path}: cannot read ({type(exc).__name__}: {exc}); move it away to start afresh") from exc


def check_out(run: Path) -> None:
    """Refuse a run folder that is the repository, above it, in its sources or in ``reference/``
    (:func:`nucseg_lib.pipeline.folders.check_run_folder`), as a JobError naming it."""
    from .folders import FolderError, check_run_folder

    try:
        check_run_folder(run)
    except FolderError as exc:
        raise JobError(str(exc)) from None


def check_parameters(run: Path, params: dict) -> None:
    """Refuse to run other parameters into a folder that holds a run (its summary would mix two runs)."""
    path = Path(run) / "results" / "parameters.json"
    if not path.exists():
        if (Path(run) / "results" / "summary.csv").exists():
            raise JobError(
                f"{Path(run) / 'results' / 'summary.csv'} exists but parameters.json does not: cannot "
                f"tell which run wrote it; use another output folder"
            )
        return
    old = read_record(path)
    study_old = {k: old.get(k) for k in STUDY_KEYS}
    study_new = {k: params.get(k) for k in STUDY_KEYS}
    if study_old != study_new:
        diff = ", ".join(
            f"{k} {study_old[k]!r} -> {study_new[k]!r}" for k in STUDY_KEYS if study_old[k] != study_new[k]
        )
        raise JobError(
            f"{run} holds a run with other parameters ({diff}); its summary.csv would mix the two. "
            f"Use another output folder (seed replicates go to <run>-seed<N>)"
        )


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m nucseg_lib.pipeline.jobs", description=__doc__.split("\n")[0])
    ap.add_argument("job", choices=["model", "notebook", "curve", "cv", "assemble", "parameters"])
    ap.add_argument("name", nargs="*")
    ap.add_argument("--run", required=True)
    ap.add_argument("--params", required=True, help="the notebooks' parameters as JSON")
    ap.add_argument("--benchmarks", default=None)
    a = ap.parse_args(argv)
    params = json.loads(a.params)
    run = Path(a.run)
    try:
        if a.job in ("model", "notebook", "curve", "cv"):  # the jobs that compute: each records where it ran
            job = job_name(a.job, a.name)
            record_machine(run, job)
            if a.job == "model":
                train_shared_model(run, params, a.name[0])
            elif a.job == "notebook":
                execute_notebook(run, params, a.name[0])
            elif a.job == "cv":
                cv_run(run, params, a.name[0], int(a.name[1]))
            else:
                curve_run(run, params, a.name[0], float(a.name[1]), int(a.name[2]))
            record_finished(run, job)
        elif a.job == "assemble":
            names = a.name or [n for n in NOTEBOOKS if (run / "notebooks" / f"{n}.ipynb").exists()]
            assemble(run, params, Path(a.benchmarks), names)
        elif a.job == "parameters":
            check_parameters(run, params)
            (run / "results").mkdir(parents=True, exist_ok=True)
            (run / "results" / "parameters.json").write_text(json.dumps(params, indent=2))
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
