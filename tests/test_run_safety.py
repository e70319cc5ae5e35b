"""Nothing lost, nothing silently wrong: model folders, checkpoints, divergence, and the runner's records."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nucseg_lib.train.unet import ModelFolderError, TrainConfig, TrainingDiverged, load_trained, train, train_or_load

TINY = dict(epochs=1, steps_per_epoch=1, batch_size=2, patch_size=32, decoder_base=8)


class _Marker:
    """Pickles to a call that creates a file: what a crafted checkpoint could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# ---------------------------------------------------------------- checkpoints and model folders
def test_crafted_checkpoint_runs_no_code(tmp_path, small_synthetic):
    folder = tmp_path / "m"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    torch.save({"model": _Marker(marker), "epoch": 1}, folder / "checkpoint.pt")
    with pytest.raises(ModelFolderError, match=r"checkpoint.pt: cannot load"):
        train(TrainConfig(**TINY), small_synthetic[:4], small_synthetic[4:5], folder, progress=False)
    assert not marker.exists()


def test_resume_still_works_with_weights_only_checkpoints(tmp_path, small_synthetic):
    cfg = TrainConfig(**{**TINY, "epochs": 2})
    train(cfg, small_synthetic[:4], small_synthetic[4:5], tmp_path / "m", progress=False, stop_after_epoch=1)
    ckpt = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["key"] == cfg.key()
    _, hist = train(cfg, small_synthetic[:4], small_synthetic[4:5], tmp_path / "m", progress=False)
    assert list(hist.epoch) == [1, 2]


def test_folder_of_another_configuration_is_not_resumed(tmp_path, small_synthetic):
    folder = tmp_path / "m"
    train(TrainConfig(**TINY), small_synthetic[:4], small_synthetic[4:5], folder, progress=False)
    before = (folder / "config.json").read_text()
    with pytest.raises(ModelFolderError, match="config.json: this folder holds a model of another configuration"):
        train(TrainConfig(**{**TINY, "lr": 1e-3}), small_synthetic[:4], small_synthetic[4:5], folder, progress=False)
    assert (folder / "config.json").read_text() == before  # not rewritten


@pytest.mark.parametrize(
    "name, content, msg",
    [
        ("weights.pt", b"not a zip", "weights.pt: cannot load"),
        ("config.json", b"{broken", "config.json: cannot read"),
        ("history.csv", b'"unclosed\n1,2', "history.csv: cannot read"),
    ],
)
def test_corrupt_model_files_are_named(tmp_path, small_synthetic, name, content, msg):
    folder = tmp_path / "m"
    train(TrainConfig(**TINY), small_synthetic[:4], small_synthetic[4:5], folder, progress=False)
    (folder / name).write_bytes(content)
    with pytest.raises(ModelFolderError, match=msg):
        load_trained(folder, "cpu")


def test_weights_of_another_shape_are_named(tmp_path, small_synthetic):
    folder = tmp_path / "m"
    train(TrainConfig(**TINY), small_synthetic[:4], small_synthetic[4:5], folder, progress=False)
    torch.save({"x": torch.zeros(2)}, folder / "weights.pt")
    with pytest.raises(ModelFolderError, match="weights.pt: weights do not fit"):
        load_trained(folder, "cpu")


# ---------------------------------------------------------------- divergence and untrained models
def test_untrained_configurations_are_refused():
    for bad in (
        dict(epochs=0),
        dict(steps_per_epoch=0),
        dict(time_budget_s=0),
        dict(lr=float("nan")),
        dict(loss="dice:foo"),
    ):
        with pytest.raises(ValueError):
            TrainConfig(**{**TINY, **bad})


def test_divergence_is_recorded_and_never_cached_as_a_model(tmp_path, small_synthetic, monkeypatch):
    import nucseg_lib.train.unet as T

    class NaNLoss(torch.nn.Module):
        def forward(self, logits, target):
            return logits.mean() * float("nan")

    monkeypatch.setattr(T, "make_loss", lambda spec: NaNLoss())
    with pytest.raises(TrainingDiverged, match="diverged at epoch 1, step 1"):
        train_or_load(
            TrainConfig(**TINY), small_synthetic[:4], small_synthetic[4:5], tmp_path, name="nan", progress=False
        )
    folder = next(tmp_path.glob("nan-*"))
    assert not (folder / "weights.pt").exists()
    record = json.loads((folder / "diverged.json").read_text())
    assert record["step"] == 1 and "training loss nan" in record["what"]
    calls = []
    monkeypatch.setattr(T, "PatchSampler", lambda *a, **k: calls.append(1))
    with pytest.raises(TrainingDiverged):  # asked again: the recorded divergence, no retraining
        train_or_load(
            TrainConfig(**TINY), small_synthetic[:4], small_synthetic[4:5], tmp_path, name="nan", progress=False
        )
    assert calls == []


def test_results_page_shows_divergence_not_a_dice_of_zero():
    from nucseg_lib.pipeline.book import claims_table
    from nucseg_lib.study.results import SUMMARY_COLUMNS

    rows = pd.DataFrame(
        [["topk", "synthetic", "smoke", "unet_topk_0.1", "diverged_at_step", 37, np.nan, np.nan, 0]],
        columns=SUMMARY_COLUMNS,
    )
    row = claims_table(rows).set_index("claim").loc["Top-K alone, K = 10% of a patch: does not converge"]
    assert row["ours [95% CI]"] == "diverged at step 37" and "diverged" in row["verdict"]


# ---------------------------------------------------------------- publishing and the workflow
def _finished_run(root: Path, seed: int = 0) -> Path:
    """A run folder as the workflow leaves it after notebook 01 (content made up, format real)."""
    out = root / "run"
    (out / "notebooks").mkdir(parents=True)
    (out / "results").mkdir()
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("good = True", execution_count=1)])
    nb.metadata["papermill"] = {"end_time": "2026-12-03T10:00:00", "exception": None}  # executed to its end
    nbformat.write(nb, out / "notebooks" / "01_data.ipynb")
    (out / "results" / "summary.csv").write_text("experiment,dataset\ndata,synthetic\n")
    params = {
        "dataset": "synthetic",
        "profile": "smoke",
        "seed": seed,
        "out_dir": str(out.resolve()),
        "data_root": None,
        "epochs": None,
        "steps_per_epoch": None,
        "batch_size": None,
        "patch_size": None,
    }
    (out / "results" / "parameters.json").write_text(json.dumps(params))
    (out / "results" / "run.json").write_text(
        json.dumps({"parameters": params, "notebooks": {"01_data": {"status": "ok", "seconds": 1.0}}})
    )
    return out


def test_publish_checks_the_run_before_touching_the_target(tmp_path):
    from nucseg_lib.pipeline.jobs import JobError
    from nucseg_lib.pipeline.runner import publish

    run = _finished_run(tmp_path)
    to = tmp_path / "reference"
    publish(run, to)
    assert "".join(json.loads((to / "notebooks" / "01_data.ipynb").read_text())["cells"][0]["source"]) == "good = True"
    with pytest.raises(JobError, match="not a finished run"):
        publish(tmp_path / "typo", to)
    with pytest.raises(JobError, match="overlap"):
        publish(to, to)
    with pytest.raises(JobError, match="overlap"):
        publish(run, run / "results")
    assert (to / "notebooks" / "01_data.ipynb").exists() and (run / "results" / "summary.csv").exists()
    record = json.loads((run / "results" / "run.json").read_text())
    record["notebooks"]["02_baseline"] = {"status": "failed"}
    (run / "results" / "run.json").write_text(json.dumps(record))
    with pytest.raises(JobError, match="notebook 02_baseline is failed"):
        publish(run, to)
    assert (to / "notebooks" / "01_data.ipynb").exists()


def test_publish_from_the_shell_keeps_the_target_on_a_typo(tmp_path):
    import subprocess
    import sys

    run = _finished_run(tmp_path)
    to = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "nucseg_lib.pipeline.runner", "publish", "--run", str(run), "--to", str(to)],
        check=True,
        capture_output=True,
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nucseg_lib.pipeline.runner",
            "publish",
            "--run",
            str(tmp_path / "rnu"),
            "--to",
            str(to),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "not a finished run" in r.stderr and "Traceback" not in r.stderr
    assert (to / "results" / "summary.csv").exists()


def test_a_killed_notebook_never_leaves_a_half_executed_copy(tmp_path, monkeypatch):
    import papermill as pm

    from nucseg_lib.pipeline.jobs import execute_notebook

    run = _finished_run(tmp_path)
    finished = (run / "notebooks" / "01_data.ipynb").read_text()

    def killed(src, dst, **kw):
        Path(dst).write_text('{"half": true}')
        raise KeyboardInterrupt  # the kill arrives mid-notebook

    monkeypatch.setattr(pm, "execute_notebook", killed)
    with pytest.raises(KeyboardInterrupt):
        execute_notebook(run, {}, "01_data")
    assert (run / "notebooks" / "01_data.ipynb").read_text() == finished
    monkeypatch.setattr(pm, "execute_notebook", lambda src, dst, **kw: Path(dst).write_text('{"new": true}'))
    execute_notebook(run, {}, "01_data")
    assert (run / "notebooks" / "01_data.ipynb").read_text() == '{"new": true}'
    assert not list((run / "notebooks").glob("*.partial.ipynb"))


def test_notebook_jobs_import_papermill_without_the_iri_grammars():
    """A notebook job imports papermill without rfc3987_syntax (2-4 s of grammar building per job), and
    nbformat still validates: a notebook without its required fields is refused."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from nucseg_lib.pipeline.jobs import import_papermill\n"
        "import_papermill()\n"
        "import nbformat\n"
        "nbformat.validate(nbformat.v4.new_notebook())\n"
        "try:\n"
        "    nbformat.validate({'cells': []}, version=4)\n"
        "except nbformat.ValidationError:\n"
        "    print('refused')\n"
        "print(sys.modules.get('rfc3987_syntax') is None, 'lark' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == ["refused", "True False"]


def test_a_notebook_jobs_own_process_records_its_machine_without_torch(tmp_path):
    """A notebook job's process (papermill's, not the kernel's) records its machine and imports papermill without
    importing torch (about 3 s per job on a 2-core CPU; the kernel imports it), pandas or the study's data and models
    (about 1 s: the kernel imports them too): the workflow sets the precision, and without a GPU driver's device
    files no GPU is asked for."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from nucseg_lib import machine\n"
        f"machine.GPU_DRIVER_FILES = ({str(tmp_path / 'no-driver')!r},)\n"
        "from nucseg_lib.pipeline import jobs\n"
        f"jobs.record_machine({str(tmp_path)!r}, 'notebook-01_data')\n"
        "jobs.import_papermill()\n"
        f"jobs.record_finished({str(tmp_path)!r}, 'notebook-01_data')\n"
        "print([m for m in ('torch', 'pandas', 'scipy', 'nucseg_lib.study.study') if m in sys.modules])\n"
    )
    env = {**os.environ, "NUCSEG_PRECISION": "fp32"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[0] == "[]"
    record = json.loads((tmp_path / "results" / "machines" / "notebook-01_data.json").read_text())
    assert record["precision"] == "fp32" and record["gpu"] is None and record["finished"]


def _executed(run: Path) -> list[Path]:
    """Finished executed notebooks of a run folder (not .partial or .failed ones)."""
    return [p for p in (run / "notebooks").glob("*.ipynb") if p.suffixes == [".ipynb"]]


@pytest.mark.slow
def test_a_killed_run_resumes_without_re_executing_finished_notebooks(tmp_path):
    """Kill the whole workflow while a notebook runs; the next call runs only what had not finished."""
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import REPO, snakemake, snakemake_command

    out = tmp_path / "run"
    cmd = snakemake_command(tmp_path, "profile=smoke", f"out={out}", "notebooks=[01,02,03]", "book=false", cores=1)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until one notebook finished and another one runs
        done = _executed(out) if (out / "notebooks").exists() else []
        running = list((out / "notebooks").glob("*.partial.ipynb")) if (out / "notebooks").exists() else []
        if done and running:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the workflow never had one notebook done and another running")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in _executed(out)}
    assert finished and not (out / "notebooks" / running[0].name.replace(".partial", "")).exists()
    # a SIGKILL leaves Snakemake's lock behind; Snakemake says so and --unlock removes it (book/reproduce.md)
    r = snakemake(tmp_path, "profile=smoke", f"out={out}", "notebooks=[01,02,03]", "book=false", check=False)
    assert r.returncode != 0 and "--unlock" in r.stdout
    snakemake(tmp_path, "profile=smoke", f"out={out}", "notebooks=[01,02,03]", "book=false", args=["--unlock"])
    snakemake(tmp_path, "profile=smoke", f"out={out}", "notebooks=[01,02,03]", "book=false")
    for name, mtime in finished.items():  # nothing finished was executed again
        assert (out / "notebooks" / name).stat().st_mtime_ns == mtime, name
    assert {p.name for p in (out / "notebooks").glob("*.ipynb")} == {
        "01_data.ipynb",
        "02_baseline.ipynb",
        "03_transfer.ipynb",
    }
    record = json.loads((out / "results" / "run.json").read_text())
    assert set(record["notebooks"]) == {"01_data", "02_baseline", "03_transfer"}
    # the notebook that was running when the run was killed is recorded as resumed
    assert record["interrupted_jobs"] == {running[0].name.replace(".partial.ipynb", ""): 1}


def test_a_run_folder_never_mixes_two_seeds(tmp_path):
    from tests.conftest import snakemake

    run = _finished_run(tmp_path, seed=0)
    r = snakemake(tmp_path, "profile=smoke", f"out={run}", "seeds=[1]", args=["-n"], check=False)
    assert r.returncode != 0 and "seed 0 -> 1" in r.stdout
    assert json.loads((run / "results" / "parameters.json").read_text())["seed"] == 0


def test_a_run_folder_never_mixes_two_learning_rates(tmp_path):
    """``lr``, ``ema`` and ``stardist_lr`` reach the jobs' parameters (only where given: older runs keep theirs) and are part
    of a run."""
    from tests.conftest import snakemake

    run = _finished_run(tmp_path, seed=0)
    assert "lr" not in json.loads((run / "results" / "parameters.json").read_text())
    r = snakemake(tmp_path, "profile=smoke", f"out={run}", "lr=3e-4", args=["-n"], check=False)
    assert r.returncode != 0 and "lr None -> 0.0003" in r.stdout
    r = snakemake(tmp_path, "profile=smoke", f"out={run}", "ema=0.995", args=["-n"], check=False)
    assert r.returncode != 0 and "ema None -> 0.995" in r.stdout
    r = snakemake(tmp_path, "profile=smoke", f"out={run}", "stardist_lr=1e-3", args=["-n"], check=False)
    assert r.returncode != 0 and "stardist_lr None -> 0.001" in r.stdout


def test_notebook_parameters_set_the_learning_rate_and_weight_average(tmp_path):
    from nucseg_lib.study.notebook import setup

    params = {"dataset": "synthetic", "profile": "smoke", "data_root": None, "out_dir": str(tmp_path), "seed": 0}
    assert setup("x", {**params, "lr": 3e-4}).unet_config().lr == 3e-4
    assert setup("x", {**params, "lr": None}).unet_config().lr == setup("x", params).profile.lr == 1e-4
    assert setup("x", {**params, "ema": 0.99}).unet_config().ema == 0.99
    assert setup("x", {**params, "ema": None}).unet_config().ema == setup("x", params).profile.ema == 0.0
    assert setup("x", {**params, "stardist_lr": 1e-3}).stardist_config().lr == 1e-3
    assert setup("x", {**params, "stardist_lr": None}).stardist_config().lr == 3e-4


def test_unknown_notebook_prefix_fails(tmp_path):
    from tests.conftest import snakemake

    r = snakemake(tmp_path, "profile=smoke", f"out={tmp_path / 'x'}", "notebooks=[99]", args=["-n"], check=False)
    assert r.returncode != 0 and "no notebook starts with that" in r.stdout


@pytest.mark.parametrize(
    "given", ["notebooks=8", "notebooks=08", "notebooks=[8]", "notebooks=[1,8]", "notebooks=[01,08]"]
)
def test_notebook_numbers_select_notebooks_however_written(tmp_path, given):
    from tests.conftest import snakemake

    r = snakemake(tmp_path, "profile=smoke", f"out={tmp_path / 'x'}", given, "book=false", args=["-n"])
    planned = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("nb_")}
    assert "nb_08_beyond_instances" in planned and planned <= {"nb_01_data", "nb_08_beyond_instances"}
    assert ("nb_01_data" in planned) == ("1" in given.split("=")[1].replace("08", ""))


def test_workflow_prints_the_cause_of_a_failed_notebook(tmp_path):
    from tests.conftest import snakemake

    missing = tmp_path / "no-such-coelho"
    r = snakemake(
        tmp_path,
        "dataset=coelho2009",
        f"data_root={missing}",
        "profile=smoke",
        "notebooks=[01]",
        f"out={tmp_path / 'run'}",
        "book=false",
        check=False,
    )
    assert r.returncode != 0
    assert "FAILED: notebook 01_data" in r.stdout
    assert "cause: DataError" in r.stdout and "no-such-coelho" in r.stdout
    assert (tmp_path / "run" / "notebooks" / "01_data.failed.ipynb").exists()
    assert not (tmp_path / "run" / "notebooks" / "01_data.ipynb").exists()


def test_a_resumed_run_keeps_the_precision_it_began_with(tmp_path, monkeypatch):
    """A run begun in bf16 (say) and resumed on a CPU where 'auto' picks fp32 goes on in bf16: its models'
    cache keys hold the precision, and notebooks would otherwise retrain the models the run already has."""
    import json

    from nucseg_lib.pipeline.jobs import recorded_precision
    from tests.conftest import snakemake

    out = tmp_path / "run"
    machines = out / "results" / "machines"
    machines.mkdir(parents=True)
    assert recorded_precision([out]) is None  # nothing ran yet: the workflow decides as usual
    (machines / "model-unet_dice.json").write_text(json.dumps({"cpu": "X", "gpu": None, "precision": "bf16"}))
    (machines / "02_baseline.json").write_text(json.dumps({"cpu": "G", "gpu": "H200", "precision": "fp32"}))
    assert recorded_precision([out, tmp_path / "run-seed1"]) == "bf16"  # a GPU job's precision is its own
    monkeypatch.delenv("NUCSEG_PRECISION", raising=False)
    dry = snakemake(tmp_path, "profile=smoke", f"out={out}", args=["-n"])
    assert "the run's finished jobs ran at bf16" in dry.stdout
    (machines / "03_transfer.json").write_text(json.dumps({"cpu": "Y", "gpu": None, "precision": "fp32"}))
    assert recorded_precision([out]) is None  # already mixed: no precision to keep


# ---------------------------------------------------------------- scheduling
def test_the_workflow_starts_the_longest_jobs_first(tmp_path):
    """make book keeps both cores busy to the end only if the shared models start first and then the notebooks that
    train models of their own (03, 04, 08; book/methods.md, "The quick profile"): a renamed notebook or a lost
    priority would leave notebook 04 to run alone at the end (five of 21 minutes on a Zen 1)."""
    import re

    from tests.conftest import snakemake

    r = snakemake(tmp_path, "profile=quick", f"out={tmp_path / 'run'}", args=["-n"])
    priority = {}
    for block in re.split(r"^\[.*\]$", r.stdout, flags=re.M):  # one block per job, each under its time stamp
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if rule:
            found = re.search(r"^\s+priority: (\d+)", block, re.M)
            priority.setdefault(rule.group(1), set()).add(int(found.group(1)) if found else 0)
    assert priority["model"] == {20}
    long = {n for n, p in priority.items() if p == {10}}
    assert long == {"nb_03_transfer", "nb_04_topk", "nb_08_beyond_instances"}
    assert all(p == {0} for n, p in priority.items() if n not in long | {"model"}), priority
    assert "curve" in priority and "nb_01_data" in priority
