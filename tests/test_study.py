"""The results contract, the runner (smoke profile, real papermill) and the generated results page."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nucseg_lib.pipeline.book import claims_table, verdict, write_results_page
from nucseg_lib.study.results import SUMMARY_COLUMNS, read_summary
from nucseg_lib.study.study import Study, method_name
from tests.conftest import REPO


def test_method_names():
    assert method_name("dice") == "unet_dice"
    assert method_name("topk:0.1") == "unet_topk_0.1"
    assert method_name("dice+topk:0.1") == "unet_dice+topk_0.1"
    assert method_name("dice", "imagenet") == "unet_dice_imagenet"


def test_summary_rows_are_upserted(tmp_path):
    st = Study("synthetic", "smoke", out_dir=tmp_path, experiment="e1")
    st.results.record("m", "dice", 0.5, 0.4, 0.6, 3)
    st.results.record("m", "dice", 0.7, 0.6, 0.8, 3)
    st.results.record("m", "f1@0.5", 0.9)
    s = read_summary(st.results.summary_path)
    assert list(s.columns) == SUMMARY_COLUMNS and len(s) == 2
    assert s.set_index("metric").loc["dice", "value"] == 0.7
    assert s.profile.unique().tolist() == ["smoke"] and s.dataset.unique().tolist() == ["synthetic"]


def test_profile_overrides_and_errors(tmp_path):
    st = Study("synthetic", "smoke", out_dir=tmp_path, epochs=5, patch_size=None)
    assert st.profile.epochs == 5 and st.profile.patch_size == 64
    # the profile's learning rate reaches every U-Net's configuration (and so its cache key)
    assert st.unet_config("dice").lr == st.profile.lr
    faster = Study("synthetic", "smoke", out_dir=tmp_path, lr=3e-4)
    assert faster.unet_config("dice").lr == 3e-4 and faster.unet_config().key() != st.unet_config().key()
    with pytest.raises(ValueError, match="unknown profile"):
        Study("synthetic", "huge", out_dir=tmp_path)
    assert len(st.train) and len(st.val) and len(st.test)
    assert not {s.name for s in st.train} & {s.name for s in st.val}


def test_verdicts():
    assert verdict(0.97, 0.95, 0.99, 0.98, "value") == "consistent"
    assert verdict(0.90, 0.88, 0.92, 0.98, "value").startswith("ours lower by 0.080")
    assert verdict(0.01, -0.02, 0.03, 0.0, "zero").startswith("consistent")
    assert verdict(np.nan, np.nan, np.nan, 0.5, "value") == "not run"


def test_runner_writes_the_contract(smoke_run):
    summary = pd.read_csv(smoke_run / "results" / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    for exp in ("baseline", "transfer", "topk", "boundary", "stardist", "receptive_field", "beyond"):
        assert exp in set(summary.experiment), exp
    methods = set(summary.method)
    # smoke_run is the documented re-run with its own top-K grid, K = 5% and 30% (book/reproduce.md)
    assert {m for m in methods if m.startswith("unet_topk_")} == {"unet_topk_0.05", "unet_topk_0.3"}
    assert {
        "unet_dice",
        "unet_dice+topk_0.1",
        "unet_oracle",
        "stardist",
        "unet_boundary",
        "unet_dice_cc",
    } <= methods
    assert {"dice", "boundary_dice", "f1@0.5", "ap@0.5:0.95", "pq@0.5", "merged", "split"} <= set(summary.metric)
    run = json.loads((smoke_run / "results" / "run.json").read_text())
    assert run["dataset"] == "synthetic" and run["profile"] == "smoke"
    from nucseg_lib.pipeline.jobs import OPT_IN_NOTEBOOKS

    notebooks = sorted(path.stem for path in (Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    study = [n for n in notebooks if n not in OPT_IN_NOTEBOOKS]  # the cross-validation runs only when named
    assert sorted(run["notebooks"]) == study, "run.json must list every notebook of the study"
    assert all(v["status"] == "ok" for v in run["notebooks"].values())
    assert run["hardware"]["cores"] >= 1 and run["versions"]["torch"]
    # every model and notebook job said where it ran: here, one machine at one precision
    assert set(study) | {"model-unet_dice", "model-stardist"} <= set(run["job_machines"])
    assert set(run["job_machines"].values()) == {f"{run['hardware']['cpu']}, {run['hardware']['precision']}"}
    assert run["interrupted_jobs"] == {}  # nothing was killed
    # the workflow's jobs run with the study's malloc settings (a GLIBC_TUNABLES of the caller's own is kept)
    from nucseg_lib.machine import MALLOC_TUNABLES

    assert run["hardware"]["glibc_tunables"] == (os.environ.get("GLIBC_TUNABLES") or MALLOC_TUNABLES)
    # the smoke profile's budget: 2 epochs of 2 steps, StarDist 1 epoch of 2 steps, batches of 2 patches of 64 px
    assert run["budget"] == {
        "unet_steps": 4,
        "unet_epochs": 2,
        "unet_lr": 1e-4,
        "unet_ema": 0.0,
        "stardist_steps": 2,
        "stardist_epochs": 1,
        "stardist_lr": 3e-4,
        "batch_size": 2,
        "patch_size_px": 64,
    }
    # the claims table reads every claim from the results, but the report's top-K alone at 10/20/50%: not trained
    table = claims_table(summary)
    untrained = table.claim.str.startswith("Top-K alone")
    assert untrained.sum() == 3 and (table["ours [95% CI]"][untrained] == "not run").all()
    assert (table["ours [95% CI]"][~untrained] != "not run").all()
    assert (smoke_run / "_build" / "html" / "book" / "results.html").exists()
    html = smoke_run / "_build" / "html"
    assert "wrap.css" in (html / "book" / "results.html").read_text()  # long lines wrap
    # formulas render offline: the methods page (it has formulas) loads the MathJax served with the book, and no
    # page loads anything from a CDN
    assert 'src="../_static/mathjax/tex-chtml.js"' in (html / "book" / "methods.html").read_text()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert not [p.name for p in html.rglob("*.html") if "cdn.jsdelivr.net" in p.read_text()]


def test_workflow_skips_finished_notebooks(smoke_run):
    """The command that made smoke_run, run again as a dry run, has nothing to do."""
    from tests.test_documented_commands import _run_for, synthetic_study_command

    run = _run_for(synthetic_study_command(), smoke_run.parent, 0)
    assert run[0].endswith("snakemake")
    r = subprocess.run([run[0], "-n", *run[1:]], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]


def test_workflow_refuses_to_write_into_the_reference(tmp_path):
    from nucseg_lib.pipeline.jobs import REPO
    from tests.conftest import snakemake

    r = snakemake(tmp_path, "profile=smoke", f"out={REPO / 'reference' / 'x'}", args=["-n"], check=False)
    assert r.returncode != 0 and "is inside reference/" in r.stdout
    assert not (REPO / "reference" / "x").exists()


def test_results_page(tmp_path, smoke_run):
    page = write_results_page(smoke_run / "results", tmp_path / "results.md")
    text = page.read_text()
    assert "The report's claims, checked" in text and "| U-Net with Dice loss: average test Dice | 0.980 |" in text
    assert "## Beyond the paper" in text and "paired difference" in text
    assert "Training seeds" not in text  # no replicates given
    assert (
        "- training budget per model: U-Nets 4 steps (2 epochs, Adam learning rate 0.0001, no weight average), StarDist 2 steps "
        "(Adam learning rate 0.0003); "
        "batches of 2 patches of 64x64 px" in text
    )


def test_learning_rate_of_runs_assembled_before_it_was_recorded():
    from nucseg_lib.pipeline.book import unet_lr

    assert unet_lr({"budget": {"unet_lr": 3e-4}}) == 3e-4
    assert unet_lr({"budget": {"unet_steps": 1600}}) == unet_lr({}) == 1e-4  # TrainConfig's default then


def test_the_cross_validation_states_both_methods_settings():
    from nucseg_lib.pipeline.book import compared_settings, cv_lines

    budget = {"unet_steps": 1600, "unet_lr": 1e-3, "unet_ema": 0.995, "stardist_steps": 1600, "stardist_lr": 1e-3}
    said = compared_settings({"budget": budget})
    assert said.startswith("Settings: the boundary U-Net 1600 steps at Adam learning rate 0.001, weights averaged")
    assert "StarDist 1600 steps at Adam learning rate 0.001, the one chosen on validation images" in said
    default = compared_settings({"budget": {k: v for k, v in budget.items() if k != "stardist_lr"}})
    assert "StarDist 1600 steps at Adam learning rate 0.0003, not the 0.001 chosen on Coelho 2009's" in default
    assert compared_settings({}) == ""
    cols = ["experiment", "method", "metric", "value", "ci_low", "ci_high", "n_images"]
    rows = pd.DataFrame(
        [
            ("cross_validation", "unet_boundary", "f1@0.5", 0.93, 0.92, 0.94, 87),
            ("cross_validation", "stardist", "f1@0.5", 0.92, 0.91, 0.93, 87),
            ("cross_validation", "unet_boundary", "f1@0.5_minus_stardist", 0.01, -0.01, 0.02, 87),
            ("cross_validation", "unet_boundary", "merged", 57, 38, 77, 87),
            ("cross_validation", "stardist", "merged", 21, 12, 30, 87),
        ],
        columns=cols,
    )
    text = "\n".join(cv_lines(rows, settings=said))
    assert said in text and "| all (87) | 0.930 [0.920, 0.940] | 0.920 [0.910, 0.930] |" in text
    assert "cannot be told apart" in text
    assert "`unet_boundary` 57 [38, 77], `stardist` 21 [12, 30]." in text
    assert "Merged" not in "\n".join(cv_lines(rows[rows.metric != "merged"], settings=said))


def test_budget_line_names_the_weight_average_only_when_used():
    from nucseg_lib.pipeline.book import _budget_lines

    b = {"unet_steps": 1600, "unet_epochs": 80, "unet_lr": 1e-3, "stardist_steps": 1600, "batch_size": 8}
    b["patch_size_px"] = 128
    assert "averaged" not in _budget_lines({"budget": b})[0]
    line = _budget_lines({"budget": {**b, "unet_ema": 0.995}})[0]
    assert "(80 epochs, Adam learning rate 0.001, weights averaged (decay 0.995 per step))" in line


def test_run_json_records_the_runs_own_training_overrides(tmp_path):
    """A run made with lr=, ema= and epochs= overrides records those in run.json's budget, not the profile's."""
    from nucseg_lib.pipeline.jobs import assemble

    (tmp_path / "results").mkdir()
    params = {"dataset": "synthetic", "profile": "cpu", "lr": 1e-4, "ema": 0.99, "epochs": 10, "batch_size": None}
    budget = assemble(tmp_path, params, tmp_path / "benchmarks", [])["budget"]
    assert budget["unet_lr"] == 1e-4 and budget["unet_epochs"] == 10 and budget["unet_steps"] == 200
    assert budget["unet_ema"] == 0.99
    assert budget["batch_size"] == 8  # None keeps the profile's


def test_run_json_names_each_machine_when_the_jobs_ran_on_several(tmp_path):
    """A run resumed on another CPU (or spread over a cluster) says which job ran where, not just one CPU."""
    from nucseg_lib.pipeline.jobs import assemble, job_name

    machines = tmp_path / "results" / "machines"
    machines.mkdir(parents=True)
    assert job_name("curve", ["stardist", "2", "1"]) == "curve-stardist-2x-seed1"
    assert (
        job_name("model", ["unet_dice"]) == "model-unet_dice" and job_name("notebook", ["03_transfer"]) == "03_transfer"
    )
    (machines / "model-unet_dice.json").write_text(json.dumps({"cpu": "CPU A", "gpu": None, "precision": "fp32"}))
    (machines / "03_transfer.json").write_text(json.dumps({"cpu": "CPU B", "gpu": None, "precision": "bf16"}))
    params = {"dataset": "synthetic", "profile": "cpu"}
    record = assemble(tmp_path, params, tmp_path / "benchmarks", [])
    assert record["job_machines"] == {"03_transfer": "CPU B, bf16", "model-unet_dice": "CPU A, fp32"}
    assert record["hardware"]["cpu"] == "several machines: CPU A, fp32; CPU B, bf16"
    assert record["hardware"]["precision"] == "bf16/fp32"
    (machines / "03_transfer.json").write_text(json.dumps({"cpu": "CPU A", "gpu": None, "precision": "fp32"}))
    assert assemble(tmp_path, params, tmp_path / "benchmarks", [])["hardware"]["cpu"].startswith("several") is False


def test_a_job_that_never_finished_is_recorded_as_interrupted(tmp_path):
    """A start after a start without a finish is a resume; a start after a finish is a re-run."""
    from nucseg_lib.pipeline.book import write_results_page
    from nucseg_lib.pipeline.jobs import assemble, record_finished, record_machine

    record_machine(tmp_path, "03_transfer")  # killed: never finished
    first = json.loads((tmp_path / "results" / "machines" / "03_transfer.json").read_text())["started"]
    record_machine(tmp_path, "03_transfer")
    record_finished(tmp_path, "03_transfer")
    record_machine(tmp_path, "02_baseline")
    record_finished(tmp_path, "02_baseline")
    record_machine(tmp_path, "02_baseline")  # re-run with new parameters after it had finished
    info = json.loads((tmp_path / "results" / "machines" / "03_transfer.json").read_text())
    assert info["interrupted"] == [first] and info["finished"]
    record = assemble(tmp_path, {"dataset": "synthetic", "profile": "smoke"}, tmp_path / "benchmarks", [])
    assert record["interrupted_jobs"] == {"03_transfer": 1}
    page = write_results_page(tmp_path / "results", tmp_path / "results.md").read_text()
    assert (
        "resumed after an interruption (their seconds count the last attempt only): 03_transfer (1 unfinished" in page
    )
    if (REPO / ".git").exists():  # the jobs recorded this checkout's commit
        assert record["code"]["commits"] and "- code: commit " in page


def test_code_version_names_the_commit_and_uncommitted_changes_to_what_makes_the_numbers(tmp_path):
    """A checkout's commit; modified when the library, notebooks or workflow differ from it, not for a README;
    no commit outside a git checkout (an installed copy)."""
    import subprocess

    from nucseg_lib.pipeline.jobs import code_version

    def git(*args):
        cmd = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    assert code_version(tmp_path) == {"commit": None}
    (tmp_path / "nucseg_lib").mkdir()
    (tmp_path / "nucseg_lib" / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("hello\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = git("rev-parse", "HEAD")
    assert len(head) == 40 and code_version(tmp_path) == {"commit": head, "modified": False}
    (tmp_path / "README.md").write_text("changed\n")
    assert code_version(tmp_path)["modified"] is False
    (tmp_path / "nucseg_lib" / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path) == {"commit": head, "modified": True}
    if (REPO / ".git").exists():  # this checkout: the library the tests import runs from it
        assert (
            code_version()["commit"]
            == subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
        )


def test_run_json_and_the_results_page_name_the_commits_the_jobs_ran():
    from nucseg_lib.pipeline.book import code_lines
    from nucseg_lib.pipeline.jobs import run_code

    a, b = "a" * 40, "b" * 40
    machines = {
        "02_baseline": {"started": "2026-12-04T10:00:00", "code": {"commit": b, "modified": False}},
        "model-unet_dice": {"started": "2026-12-04T09:00:00", "code": {"commit": a, "modified": True}},
        "03_transfer": {"started": "2026-12-04T08:00:00"},  # recorded before commits were
    }
    code = run_code(machines)
    assert code == {"commits": [a, b], "modified": True, "unrecorded_jobs": ["03_transfer"]}
    (line,) = code_lines({"code": code})
    assert line == (
        "- code: commits aaaaaaaaaa, bbbbbbbbbb of this repository (its jobs ran at different commits), with "
        "uncommitted changes to the library, notebooks or workflow; 1 job began before commits were recorded"
    )
    one = run_code({"02_baseline": machines["02_baseline"]})
    assert code_lines({"code": one}) == ["- code: commit bbbbbbbbbb of this repository"]
    assert code_lines({}) == [] and code_lines({"code": run_code({"x": {}})}) == []


def test_results_page_tabulates_seed_replicates(tmp_path, smoke_run):
    import shutil

    from nucseg_lib.pipeline.runner import find_replicates

    run = tmp_path / "study"
    shutil.copytree(smoke_run / "results", run / "results")
    rep = tmp_path / "study-seed7" / "results"
    shutil.copytree(smoke_run / "results", rep)
    record = json.loads((rep / "run.json").read_text())
    record["parameters"]["seed"] = 7
    (rep / "run.json").write_text(json.dumps(record))
    assert find_replicates(run) == [rep.resolve()]
    text = write_results_page(run / "results", tmp_path / "results.md", find_replicates(run)).read_text()
    assert "Training seeds" in text
    seed_rows = [line for line in text.splitlines() if line.startswith("| 0 |") or line.startswith("| 7 |")]
    assert len(seed_rows) == 2


def test_workflow_refuses_an_unknown_profile_before_running_anything(tmp_path):
    from tests.conftest import snakemake

    out = tmp_path / "bad"
    r = snakemake(tmp_path, "profile=no-such-profile", f"out={out}", "notebooks=[01]", "book=false", check=False)
    assert r.returncode != 0 and "unknown profile 'no-such-profile'" in r.stdout
    assert not out.exists()


@pytest.mark.slow
def test_topk_notebook_reruns_with_new_k_through_papermill(tmp_path):
    import papermill as pm

    from nucseg_lib.pipeline.jobs import REPO

    pm.execute_notebook(
        str(REPO / "notebooks" / "04_topk.ipynb"),
        str(tmp_path / "04.ipynb"),
        parameters={"out_dir": str(tmp_path), "k_fractions": [0.05], "seed": 1, "profile": "smoke"},
        cwd=str(REPO / "notebooks"),
        progress_bar=False,
        kernel_name="python3",
    )
    summary = pd.read_csv(tmp_path / "results" / "parts" / "topk.csv")
    methods = set(summary[summary.experiment == "topk"].method)
    assert "unet_topk_0.05" in methods and "unet_topk_0.2" not in methods


def test_notebook_8_targets_are_undetermined_on_degenerate_numbers():
    from nucseg_lib.study.claims import f1_target, merged_target

    assert f1_target(0.0, 0.0).startswith("undetermined") and f1_target(float("nan"), 0.8).startswith("undetermined")
    assert f1_target(0.9, 0.8) == "met" and f1_target(0.7, 0.8) == "not met, short by 0.100"
    assert f1_target(0.0, 0.5).startswith("not met")  # StarDist found nuclei, the U-Net none: a real loss
    assert merged_target(0, 0).startswith("undetermined") and merged_target(2, 4) == "cut at least in half"
    assert merged_target(3, 4).startswith("not halved (75%")


def test_instances_are_scored_at_native_resolution(tmp_path):
    """Ground truth downscaled 2x and scored: at the model's scale every IoU would be exactly 1; brought back
    to native size (nearest neighbour) the outlines are blocky, so the nuclei still match but with IoU < 1."""
    study = Study("synthetic", "smoke", out_dir=tmp_path, scale={"synthetic": 2})
    assert study.test[0].image.shape[0] * 2 == study.native_test()[0].image.shape[0]
    per_image, summary = study.score_instances({"truth": [s.labels for s in study.test]}, "truth_per_image")
    at05 = per_image[per_image.thresh == 0.5]
    assert (at05.f1 == 1).all() and (at05.n_true == [len(np.unique(s.labels)) - 1 for s in study.native_test()]).all()
    assert 0.8 < at05.sum_iou.sum() / at05.n_true.sum() < 0.99
    with pytest.raises(ValueError, match="predictions for {'truth': 1} images"):
        study.score_instances({"truth": [study.test[0].labels]}, "x")


def test_notebook_7_findings_give_the_erf_verdict(tmp_path):
    """Notebook 07 tests the report's design check: its closing cell says so, with the verdict."""
    from types import SimpleNamespace

    from nucseg_lib.study.notebook import findings

    rows = [
        ("receptive_field", "coelho2009", "cpu", "unet_dice", "erf_diameter95_px", 46.0, None, None, 32),
        ("receptive_field", "coelho2009", "cpu", "data", "largest_nucleus_feret_px", 60.0, None, None, 55),
    ]
    cols = ["experiment", "dataset", "profile", "method", "metric", "value", "ci_low", "ci_high", "n_images"]
    path = tmp_path / "summary.csv"
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
    text = findings(SimpleNamespace(experiment="receptive_field", results=SimpleNamespace(summary_path=path)))
    assert "ERF" in text and "46 vs 60" in text and "not reproduced" in text


@pytest.mark.parametrize("run", ["coelho2009-cpu", "coelho2009-cpu-seed1", "coelho2009-cpu-curves"])
def test_the_published_run_is_the_cpu_profiles_run(run):
    """What `make reference` (and `make curves`) would train today is what the published runs trained: changing the
    cpu profile's budget, learning rate or weight average without re-publishing them fails here."""
    from nucseg_lib.study.profiles import get_profile, training_budget
    from tests.conftest import REPO

    record = json.loads((REPO / "reference" / run / "results" / "run.json").read_text())
    # runs made before the weight average or StarDist's learning rate were settings had neither (StarDist: 3e-4)
    published = {"unet_ema": 0.0, "stardist_lr": 3e-4, **record["budget"]}
    assert published == training_budget(get_profile("cpu"))
    assert record["parameters"]["profile"] == "cpu" and record["parameters"].get("lr") is None


def test_make_curves_trains_with_the_cpu_profiles_settings():
    """`make curves` passes no training setting of its own (it once pinned lr=1e-4 ema=0): its runs train as the
    reference run's do."""
    import re
    import subprocess

    from tests.conftest import REPO

    dry = subprocess.run(["make", "-n", "curves", "DATA=/data"], cwd=REPO, capture_output=True, text=True, check=True)
    line = next(x for x in dry.stdout.replace("\\\n", " ").splitlines() if "snakemake" in x and "curves" in x)
    assert not re.findall(r"\b(lr|ema|stardist_lr|epochs|steps_per_epoch|batch_size|patch_size)=", line), line


def test_findings_of_a_short_synthetic_run_say_they_are_not_findings_and_name_the_runs_own_k(tmp_path):
    """Under the demo/quick profiles "What we found" says the numbers are not findings; a top-K grid without the
    report's K says the claim was not trained with these parameters and lists the run's own K instead."""
    from types import SimpleNamespace

    from nucseg_lib.study.notebook import findings
    from nucseg_lib.study.profiles import get_profile

    cols = ["experiment", "dataset", "profile", "method", "metric", "value", "ci_low", "ci_high", "n_images"]
    rows = [
        ("topk", "synthetic", "demo", "unet_topk_0.02", "dice", 0.61, 0.55, 0.66, 8),
        ("topk", "synthetic", "demo", "unet_dice", "dice", 0.90, 0.88, 0.92, 8),
    ]
    path = tmp_path / "summary.csv"
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
    study = SimpleNamespace(
        experiment="topk", results=SimpleNamespace(summary_path=path), profile=get_profile("demo"), dataset="synthetic"
    )
    text = findings(study)
    assert text.startswith("Not findings: this run trained each model for 160 steps (the `demo` profile)")
    assert "Top-K alone, K = 10% of a patch: does not converge: not trained in this run" in text
    assert "unet_topk_0.02 (a K of this run's parameters, not in the report): dice 0.610 [0.550, 0.660]" in text
    real = SimpleNamespace(
        experiment="topk", results=SimpleNamespace(summary_path=path), profile=get_profile("cpu"), dataset="coelho2009"
    )
    assert not findings(real).startswith("Not findings")


def test_a_notebook_from_another_run_says_how_that_run_differs(tmp_path):
    """Notebook 09 of the reference book comes from its own run (another CPU, bf16, lr 1e-4, no weight average):
    its page and the results page's curves section say so; a run with the book's settings gets no note."""
    import nbformat

    from nucseg_lib.pipeline.book import other_run_note
    from nucseg_lib.pipeline.runner import note_other_run

    book_run = {
        "assembled": "2026-12-03T10:00:00",
        "hardware": {"cpu": "AMD EPYC (family 23, model 49)", "precision": "fp32"},
        "budget": {"unet_lr": 1e-3, "unet_ema": 0.995},
    }
    curves_run = {
        "assembled": "2026-11-25T07:46:44",
        "hardware": {"cpu": "AMD EPYC", "cpu_bf16": ["avx512_bf16"], "precision": "bf16"},
    }  # assembled before the learning rate and weight average were recorded
    note = other_run_note("This notebook", curves_run, book_run)
    for said in (
        "2026-11-25 on AMD EPYC with avx512_bf16",
        "bf16 with Adam learning rate 0.0001, no weight average",
        "fp32, Adam learning rate 0.001, weights averaged (decay 0.995 per step)",
    ):
        assert said in note
    assert other_run_note("This notebook", {**book_run, "assembled": "2026-12-04"}, book_run) is None
    # the cross-validation trained StarDist at the learning rate chosen on validation images, the book's run not
    tuned = {**book_run, "budget": {**book_run["budget"], "stardist_lr": 1e-3}}
    note = other_run_note("This section", tuned, book_run)
    assert "StarDist at Adam learning rate 0.001; the rest" in note and note.endswith("its own CPU.")
    assert "StarDist at Adam learning rate 0.0003." in note  # the book's run predates the setting: its default
    # a run with the book's settings but published before runs recorded their code (the cross-validation of
    # 2026-12-04, before StarDist's seeding and the normalised weight average): said, whatever else agrees
    committed = {**book_run, "code": {"commits": ["18327f361f0000"], "modified": False, "unrecorded_jobs": []}}
    note = other_run_note("This section", book_run, committed)
    assert "same CPU with the same precision and training settings" in note and "predate changes" in note
    assert other_run_note("This section", committed, committed) is None
    assert other_run_note("This section", committed, book_run) is None  # the book's own run says nothing
    assert "Its code is not recorded" in other_run_note("This section", curves_run, committed)
    for name, record in (("curves", curves_run), ("book", book_run)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(record))
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# 9. Learning curves"), nbformat.v4.new_code_cell("x = 1")]
    )
    nbformat.write(nb, tmp_path / "09.ipynb")
    assert note_other_run(tmp_path / "09.ipynb", tmp_path / "curves", tmp_path / "book")
    cells = nbformat.read(tmp_path / "09.ipynb", as_version=4).cells
    assert cells[1].cell_type == "markdown" and cells[1].source.startswith("```{note}\nThis notebook comes from")
    assert not note_other_run(tmp_path / "09.ipynb", tmp_path / "book", tmp_path / "book")


def test_verdicts_of_relative_and_failure_claims_and_the_two_readings_of_size():
    """The report's relative claim (Dice + top-K beats Dice), its failure claim (top-K 10% does not converge),
    its conclusion (the U-Net clumps nuclei) and the ERF check against both readings of the largest nucleus."""
    assert verdict(0.004, 0.001, 0.007, 0.01, "positive") == "reproduced (CI above 0)"
    assert verdict(0.002, -0.001, 0.005, 0.01, "positive") == "not reproduced (CI contains 0)"
    assert verdict(-0.01, -0.02, -0.005, 0.01, "positive").startswith("reversed")
    assert verdict(0.948, 0.93, 0.96, 0.002, "diverges") == "not reproduced: it converged"
    assert verdict(0.05, 0.0, 0.1, 0.002, "diverges") == "reproduced: it did not converge"
    cols = ["experiment", "dataset", "profile", "method", "metric", "value", "ci_low", "ci_high", "n_images"]
    rows = [
        ("receptive_field", "c", "cpu", "unet_dice", "erf_diameter95_px", 45.0, None, None, 32),
        ("receptive_field", "c", "cpu", "data", "largest_nucleus_feret_px", 60.0, None, None, 55),
        ("receptive_field", "c", "cpu", "data", "largest_nucleus_equivalent_px", 44.0, None, None, 55),
        ("beyond", "c", "cpu", "unet_dice_cc", "merged", 52.0, 35.0, 71.0, 20),
        ("beyond", "c", "cpu", "unet_boundary", "merged", 17.0, 8.0, 26.0, 20),
        ("topk", "c", "cpu", "unet_dice+topk_0.1", "dice", 0.95, 0.93, 0.96, 20),
        ("transfer", "c", "cpu", "unet_dice_transfer", "epochs_to_95pct_minus_scratch", -12.0, None, None, 10),
    ]
    table = claims_table(pd.DataFrame(rows, columns=cols)).set_index("claim")
    faster = table.loc[[c for c in table.index if c.startswith("Pretrained encoder learns faster")][0]]
    assert faster.verdict == "new" and faster["ours [95% CI]"] == "-12 epochs"
    # each row gets its own reason, not that of a claim whose name begins the same way
    assert faster.why != table.loc["Pretrained encoder = scratch (difference in Dice)"].why
    erf = table.loc[[c for c in table.index if c.startswith("ERF")][0]]
    assert erf["ours [95% CI]"] == "45 vs 60 (Feret), 44 (equivalent diameter)"
    assert erf.verdict.startswith("depends on the definition: not reproduced against the Feret diameter")
    assert erf.why.startswith("depends on the definition of size")
    # below both readings: one verdict, and the reason says so instead of "depends on the definition"
    rows[0] = ("receptive_field", "c", "cpu", "unet_dice", "erf_diameter95_px", 38.0, None, None, 32)
    below = claims_table(pd.DataFrame(rows, columns=cols)).set_index("claim")
    erf = below.loc[[c for c in below.index if c.startswith("ERF")][0]]
    assert erf.verdict == "not reproduced" and erf.why.startswith("the same against both readings")
    clump = table.loc[[c for c in table.index if c.startswith("The U-Net clumps")][0]]
    assert clump["ours [95% CI]"] == "52 [35, 71]; unet_boundary 17" and clump.verdict == "reproduced"
    paired = table.loc["Dice + top-K better than Dice alone (paired difference in Dice)"]
    assert paired.verdict == "not measured in this run (it predates the measurement)"  # the model ran, not the pair
    assert table.loc["StarDist: F1 at IoU 0.5"].verdict == "not run" and all(table.why.str.len() > 0)


def test_key_findings_box_counts_verdicts_and_says_when_a_run_is_not_findings():
    from nucseg_lib.pipeline.book import key_findings, run_caveat

    cols = ["experiment", "dataset", "profile", "method", "metric", "value", "ci_low", "ci_high", "n_images"]
    rows = [
        ("baseline", "c", "cpu", "unet_dice", "dice", 0.97, 0.95, 0.99, 20),  # consistent with 0.98
        ("stardist", "c", "cpu", "stardist", "f1@0.5", 0.70, 0.65, 0.75, 20),  # below 0.88
        ("beyond", "c", "cpu", "unet_boundary", "f1@0.5_minus_stardist", 0.03, 0.01, 0.05, 20),
        ("beyond", "c", "cpu", "unet_boundary", "merged", 17, 8, 26, 20),
        ("beyond", "c", "cpu", "unet_dice_cc", "merged", 52, 35, 71, 20),
    ]
    cv = pd.DataFrame(
        [("cross_validation", "c", "cpu", "unet_boundary", "f1@0.5_minus_stardist", -0.01, -0.03, 0.01, 87)],
        columns=cols,
    )
    box = "\n".join(key_findings(pd.DataFrame(rows, columns=cols), cv))
    assert "Adam learning rate" not in box  # without the runs' records nothing is said about settings
    said = "\n".join(key_findings(pd.DataFrame(rows, columns=cols), cv, "", {}, {"budget": {"stardist_lr": 1e-3}}))
    assert "(paired, 20 test images; StarDist at Adam learning rate 0.0003)" in said
    assert "(paired; StarDist at Adam learning rate 0.001)." in said
    merged = pd.DataFrame(
        [
            ("cross_validation", "c", "cpu", m, "merged", v, v - 9, v + 9, 87)
            for m, v in (("unet_boundary", 57), ("stardist", 21))
        ],
        columns=cols,
    )
    box = "\n".join(key_findings(pd.DataFrame(rows, columns=cols), pd.concat([cv, merged])))
    assert "difference -0.010 [-0.030, 0.010] (paired); it merged 57 nuclei, StarDist 21." in box
    assert box.startswith("```{admonition} Key findings")
    assert "2 of 3 hold (U-Net with Dice loss; The U-Net clumps touching nuclei)" in box  # StarDist does not
    assert "boundary-aware U-Net leads StarDist" in box and "(paired, 20 test images)" in box
    assert "(cross-validation, 87 images) the boundary-aware U-Net cannot be told apart from StarDist" in box
    # two verdicts on one question: the box says how wide each interval is (test split 0.040, cross-validation 0.040)
    assert "That verdict differs from the test split's: its 20 images give a 95% interval 0.040 wide around " in box
    assert "+0.030, these 87 one 0.040 wide around -0.010." in box
    same = cv.assign(value=0.02, ci_low=0.01, ci_high=0.03)  # leads in both: nothing to explain
    assert "differs" not in "\n".join(key_findings(pd.DataFrame(rows, columns=cols), same))
    assert run_caveat({"profile": "cpu", "dataset": "coelho2009"}) == ""
    caveat = run_caveat({"profile": "quick", "dataset": "synthetic"})
    assert caveat.startswith("Not findings: this run trained each model for 200 steps")
    assert "(not findings)" in key_findings(pd.DataFrame(rows, columns=cols), caveat=caveat)[0]
