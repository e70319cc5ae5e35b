"""Nothing of the user's is ever deleted or overwritten, and nothing is silently misread (issue 28).

One test (or more) per case of the review: publish and export into a folder of the user's,
``nucseg predict`` into its own input folder, run folders that are the repository or lie in
``reference/``, workflow config values checked when read, the papermill route of the docs, and
predict's precision and normalization. The folder-dataset cases are in test_folder_dataset.py and
test_bad_input.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import tifffile

from nucseg_lib.pipeline.folders import FolderError, check_run_folder, replace_folder
from nucseg_lib.pipeline.jobs import JobError
from nucseg_lib.pipeline.runner import PUBLISHED_MARKER, publish
from tests.conftest import REPO, snakemake

NUCSEG = [sys.executable, "-m", "nucseg_lib.predict.cli"]


def thesis(folder):
    """A folder of the user's: what a command must never delete."""
    (folder / "figs").mkdir(parents=True)
    (folder / "chapter1.tex").write_text("\\chapter{Nuclei}\n")
    (folder / "figs" / "fig1.pdf").write_bytes(b"%PDF-1.4\n")
    return folder


def finished_run(run, executed=True):
    """A run folder that looks finished: one notebook (executed by papermill, or a source copy), a summary, run.json."""
    (run / "notebooks").mkdir(parents=True)
    (run / "results").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", execution_count=1 if executed else None)])
    if executed:
        nb.metadata["papermill"] = {"end_time": "2026-12-03T10:00:00", "exception": None}
    nbformat.write(nb, run / "notebooks" / "01_data.ipynb")
    (run / "results" / "summary.csv").write_text(
        "experiment,dataset,profile,method,metric,value,ci_low,ci_high,n_images\ndata,synthetic,smoke,-,images,6,,,6\n"
    )
    (run / "results" / "run.json").write_text(json.dumps({"notebooks": {"01_data": {"status": "ok"}}}))
    return run


# ---------------------------------------------------------------- 1. publish / export into a folder of the user's
def test_publish_refuses_a_folder_of_the_users_and_touches_nothing(tmp_path):
    run = finished_run(tmp_path / "run")
    target = thesis(tmp_path / "thesis")
    with pytest.raises(JobError, match=r"holds files nucseg did not write \(chapter1.tex, figs\)"):
        publish(run, target)
    assert (target / "chapter1.tex").read_text() == "\\chapter{Nuclei}\n" and (target / "figs" / "fig1.pdf").exists()
    assert not (target / "notebooks").exists() and not list(tmp_path.glob(".thesis*"))  # no stage left behind
    r = subprocess.run(
        [sys.executable, "-m", "nucseg_lib.pipeline.runner", "publish", "--run", str(run), "--to", str(target)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 1 and "chapter1.tex" in r.stderr and (target / "chapter1.tex").exists()


def test_publish_replaces_its_own_earlier_publication(tmp_path):
    run = finished_run(tmp_path / "run")
    to = publish(run, tmp_path / "new")  # a new folder
    assert (to / PUBLISHED_MARKER).is_file() and (to / "notebooks" / "01_data.ipynb").is_file()
    (run / "results" / "extra.csv").write_text("a\n1\n")
    publish(run, to)  # an earlier publication: replaced
    assert (to / "results" / "extra.csv").is_file()
    (tmp_path / "empty").mkdir()
    assert publish(run, tmp_path / "empty") == (tmp_path / "empty").resolve()


def test_the_published_reference_folders_carry_the_marker():
    folders = [d for d in (REPO / "reference").iterdir() if d.is_dir()]
    assert folders and all((d / PUBLISHED_MARKER).is_file() for d in folders)


def test_export_model_refuses_a_folder_of_the_users(tmp_path):
    from nucseg_lib.predict.segmenter import MODEL_FILE, ModelError, export_model

    labels = [np.pad(np.ones((8, 8), np.int32), 4)]
    target = thesis(tmp_path / "thesis")
    with pytest.raises(ModelError, match="chapter1.tex"):
        export_model(target, "unet_dice_cc", {}, labels, source=tmp_path / "no-model-needed-before-the-check")
    assert (target / "chapter1.tex").exists() and (target / "figs" / "fig1.pdf").exists()
    # the check comes before anything is read: with a model source, the same holds
    stage = tmp_path / ".stage"
    stage.mkdir()
    (stage / MODEL_FILE).write_text("{}")
    with pytest.raises(FolderError, match="chapter1.tex"):
        replace_folder(stage, target, MODEL_FILE, "export")
    assert not stage.exists() and (target / "chapter1.tex").exists()


def test_replace_folder_replaces_a_marked_folder_whole(tmp_path):
    old = tmp_path / "model"
    old.mkdir()
    (old / "m.json").write_text("old")
    (old / "stale.bin").write_text("x")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "m.json").write_text("new")
    replace_folder(stage, old, "m.json", "export")
    assert (old / "m.json").read_text() == "new" and not (old / "stale.bin").exists() and not stage.exists()


# ---------------------------------------------------------------- 2. nucseg predict into its own input folder
@pytest.fixture(scope="module")
def threshold_model(tmp_path_factory):
    """An exported U-Net folder (untrained weights: the test is about files, not about nuclei)."""
    import torch

    from nucseg_lib.model import build_model
    from nucseg_lib.predict.segmenter import MODEL_FILE

    folder = tmp_path_factory.mktemp("model") / "m"
    folder.mkdir()
    model = build_model(3, "scratch", 4, 16)
    (folder / "config.json").write_text(
        json.dumps({"out_channels": 3, "depth": 4, "decoder_base": 16, "precision": "bf16"})
    )
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, folder / "weights.pt"
    )
    (folder / MODEL_FILE).write_text(
        json.dumps({"method": "unet_boundary", "postprocess": {}, "nucleus_diameter_px": 12.0, "scale": 1.0})
    )
    return folder


def images_with_own_labels(folder):
    """The user's folder: two images and, for one of them, the user's own annotation ``a_labels.tif``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        tifffile.imwrite(folder / f"{name}.tif", (rng.random((64, 64)) * 1000).astype(np.uint16))
    own = np.zeros((64, 64), np.uint16)
    own[10:20, 10:20] = 7
    tifffile.imwrite(folder / "a_labels.tif", own)
    return own


def predict(*args):
    """``nucseg predict ARGS`` in this process (the console script calls the same ``main``): exit status and output."""
    import contextlib
    import io
    from types import SimpleNamespace

    from nucseg_lib.predict.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["predict", *map(str, args)])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_predict_into_the_input_folder_never_overwrites_an_input(threshold_model, tmp_path):
    d = tmp_path / "D"
    own = images_with_own_labels(d)
    r = predict("-m", threshold_model, "--nucleus-diameter", 12, "-o", d, d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "a_labels.tif is one of the inputs" in r.stderr and "not overwritten" in r.stderr
    assert np.array_equal(tifffile.imread(d / "a_labels.tif"), own)  # the user's annotation is intact
    assert (d / "b_labels.tif").is_file() and (d / "a_labels_labels.tif").is_file()  # the others ran
    before = sorted(p.name for p in d.iterdir())
    again = predict("-m", threshold_model, "--nucleus-diameter", 12, "-o", d, d)
    after = sorted(p.name for p in d.iterdir())
    assert before == after, "a second run segmented its own outputs"
    assert not any("_labels_labels_labels" in n or "_overlay_labels" in n for n in after)
    assert "skipping 2 of 3" in again.stdout and np.array_equal(tifffile.imread(d / "a_labels.tif"), own)


def test_predict_never_overwrites_a_file_it_did_not_write(threshold_model, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    tifffile.imwrite(src / "a.tif", (np.random.default_rng(1).random((64, 64)) * 1000).astype(np.uint16))
    (out / "a_nuclei.csv").write_text("my,own,table\n")
    r = predict("-m", threshold_model, "--nucleus-diameter", 12, "--overwrite", "-o", out, src)
    assert r.returncode == 1 and "a_nuclei.csv exists and was not written by nucseg predict" in r.stderr
    assert (out / "a_nuclei.csv").read_text() == "my,own,table\n" and not (out / "a_labels.tif").exists()
    (out / "a_nuclei.csv").unlink()
    assert predict("-m", threshold_model, "--nucleus-diameter", 12, "-o", out, src).returncode == 0
    redo = predict("-m", threshold_model, "--nucleus-diameter", 12, "--overwrite", "-o", out, src)
    assert redo.returncode == 0 and "1 of 1 images segmented" in redo.stdout  # its own outputs it may redo


def test_predict_usage_errors_exit_2_with_a_message_not_a_traceback(threshold_model, tmp_path):
    src = tmp_path / "in"
    images_with_own_labels(src)
    afile = tmp_path / "results.txt"
    afile.write_text("keep me\n")
    r = predict("-m", threshold_model, "-o", afile, src)
    assert r.returncode == 2 and "results.txt: is a file" in r.stderr and "Traceback" not in r.stderr
    assert afile.read_text() == "keep me\n"
    for bad in ([tmp_path / "nope.tif"], [str(tmp_path / "*.png")], [tmp_path / "empty"]):
        (tmp_path / "empty").mkdir(exist_ok=True)
        r = predict("-m", threshold_model, "-o", tmp_path / "o", *bad)
        assert r.returncode == 2 and "nucseg predict: error:" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------- 3. run folders that are not run folders
@pytest.mark.parametrize("where", [".", "notebooks", "reference/coelho2009-cpu", "nucseg_lib/x", ".."])
def test_run_folders_in_the_repositorys_sources_are_refused(where):
    with pytest.raises(FolderError):
        check_run_folder(REPO / where)
    check_run_folder(REPO / "runs" / "x")  # the place for runs


def test_workflow_refuses_the_repository_as_its_output_folder(tmp_path):
    import subprocess

    # as a user types it, from the repository's root, where `out=.` is the repository
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", "workflow/Snakefile", "-n", "--cores", "1"]
    r = subprocess.run([*cmd, "--config", "profile=smoke", "out=."], cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "is the repository or a folder above it" in r.stdout + r.stderr
    assert not (REPO / "results").exists()
    r = snakemake(tmp_path, "profile=smoke", f"out={REPO / 'notebooks'}", args=["-n"], check=False)
    assert r.returncode != 0 and "inside the repository's notebooks/ folder" in r.stdout


def test_publish_refuses_a_run_whose_notebooks_were_not_executed(tmp_path):
    run = finished_run(tmp_path / "run", executed=False)
    with pytest.raises(JobError, match="01_data.ipynb is not an executed notebook"):
        publish(run, tmp_path / "to")
    empty = finished_run(tmp_path / "run2")
    (empty / "results" / "summary.csv").write_text(
        "experiment,dataset,profile,method,metric,value,ci_low,ci_high,n_images\n"
    )
    with pytest.raises(JobError, match="summary.csv has no rows"):
        publish(empty, tmp_path / "to")
    assert not (tmp_path / "to").exists()


def test_a_notebook_study_inside_reference_is_refused_and_truncates_nothing():
    from nucseg_lib.study.study import Study

    part = REPO / "reference" / "coelho2009-cpu" / "results" / "parts" / "baseline.csv"
    before = part.read_text()
    with pytest.raises(FolderError, match="inside reference/"):
        Study("synthetic", "smoke", out_dir=REPO / "reference" / "coelho2009-cpu", experiment="baseline")
    assert part.read_text() == before


# ---------------------------------------------------------------- 4. config values checked when read
@pytest.mark.parametrize(
    "item, msg",
    [
        ({"seeds": [-1]}, r"seeds=.*whole number >= 0"),
        ({"k_fractions": [1.5]}, r"k_fractions=.*fraction of a patch's pixels in \(0, 1\] or a whole pixel count"),
        ({"combo_k": 0}, r"combo_k=.*K must be"),
        ({"lr": 0}, r"lr=.*> 0"),
        ({"ema": 1}, r"ema=.*\[0, 1\)"),
        ({"stardist_lr": -1e-3}, r"stardist_lr=.*> 0"),
        ({"threads": 0}, r"threads=.*>= 1"),
        ({"budgets": [400, 200]}, r"budgets=.*increasing"),
        ({"book": "perhaps"}, r"book=.*true or false"),
        ({"seed": 1}, r"seed: not a parameter of the workflow"),
        ({"dataset": "kromp"}, r"dataset=.*unknown dataset"),
        ({"notebooks": [99]}, r"no notebook starts with that"),
        ({"gpus": {"smoke": 0}}, r"gpus=.*no value for the profiles"),
    ],
)
def test_bad_config_values_are_refused_naming_the_key(item, msg):
    from nucseg_lib.study.parameters import ParameterError, check_config

    with pytest.raises(ParameterError, match=msg):
        check_config({"profile": "smoke", "seeds": [0], **item})


def test_bad_config_values_stop_the_dry_run(tmp_path):
    r = snakemake(
        tmp_path,
        "profile=smoke",
        f"out={tmp_path / 'run'}",
        "seeds=[-1]",
        "k_fractions=[1.5]",
        args=["-n"],
        check=False,
    )
    assert r.returncode != 0 and "seeds=" in r.stdout and "k_fractions=" in r.stdout, r.stdout[-2000:]
    assert not (tmp_path / "run").exists()


def test_check_config_converts_command_line_text():
    from nucseg_lib.study.parameters import check_config

    c = check_config({"seeds": ["0", "2"], "k_fractions": "[0.05,0.3]", "lr": "1e-3", "book": "false", "budgets": None})
    assert c["seeds"] == [0, 2] and c["k_fractions"] == [0.05, 0.3] and c["lr"] == 1e-3 and c["book"] is False


def test_the_default_config_passes_its_own_checks():
    import yaml

    from nucseg_lib.study.parameters import WORKFLOW_PARAMETERS, check_config

    config = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())
    check_config(config)
    declared = {p.name for p in WORKFLOW_PARAMETERS}
    assert set(config) <= declared


# ---------------------------------------------------------------- 6. predict at this machine's precision
def test_predict_runs_at_this_machines_precision_and_the_recorded_normalization(threshold_model, monkeypatch, tmp_path):
    import shutil

    from nucseg_lib.inference import predict_probabilities
    from nucseg_lib.predict import segmenter as predict_module
    from nucseg_lib.predict.segmenter import MODEL_FILE, Segmenter

    monkeypatch.setenv("NUCSEG_PRECISION", "fp32")  # what resolve_precision('auto') says on a CPU without bf16
    seg = Segmenter(threshold_model)  # config.json says bf16: the training machine's, not this one's
    assert seg.precision == "fp32" and seg.model.precision == "fp32"
    image = (np.random.default_rng(2).random((64, 64)) * 1000).astype(np.float32)
    other = tmp_path / "other"
    shutil.copytree(threshold_model, other)
    settings = json.loads((other / MODEL_FILE).read_text())
    settings["normalization"] = {"pmin": 0.0, "pmax": 100.0}
    (other / MODEL_FILE).write_text(json.dumps(settings))
    got = Segmenter(other)
    assert got.normalization == {"pmin": 0.0, "pmax": 100.0}
    import nucseg_lib.instances as instances

    captured = []
    monkeypatch.setattr(
        instances, "watershed_boundary", lambda probs, **kw: captured.append(probs) or np.zeros((64, 64), np.int32)
    )
    got._instances(image)
    x = (image - image.min()) / (image.max() - image.min())
    expected = predict_probabilities(got.model, x, normalize=False, precision="fp32")
    np.testing.assert_allclose(captured[0], expected, atol=1e-6)
    settings["normalization"] = {"pmin": 50, "pmax": 10}
    (other / MODEL_FILE).write_text(json.dumps(settings))
    with pytest.raises(predict_module.ModelError, match="normalization needs 0 <= pmin < pmax <= 100"):
        Segmenter(other)


# ---------------------------------------------------------------- 7. the papermill route of the docs
def test_the_documented_papermill_output_folder_exists_in_a_fresh_clone():
    """The documented papermill command writes into ../runs/ from notebooks/: the folder is part of the repository."""
    text = (REPO / "book" / "reproduce.md").read_text()
    assert "papermill 04_topk.ipynb ../runs/" in text
    tracked = subprocess.run(["git", "ls-files", "runs"], capture_output=True, text=True, cwd=REPO).stdout.split()
    assert tracked, "runs/ holds no tracked file, so a fresh clone has no runs/ and papermill cannot write there"
