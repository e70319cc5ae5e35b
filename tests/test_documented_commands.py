"""Every shell command in README.md and book/reproduce.md runs as written (at the smoke profile).

The commands are read from the fenced ``bash`` blocks of the two pages, so a command
that is documented cannot break unnoticed. Substitutions, and only these, make them
fit a test: ``profile=``/``-p profile`` become ``smoke``; the placeholder data folders
``/path/to/coelho2009``, ``/path/to/kromp``, ``/path/to/my-annotated-data`` and
``/path/to/my-images`` become the shared Coelho copy, a small Kromp-layout copy, a small
folder dataset and a folder of two images that the test writes; output folders (``out=``,
``runs/...`` paths, papermill's output and ``out_dir``) go to a temporary folder, and Snakemake keeps its metadata there
(``--directory``). The SLURM command runs as a dry run (``-n``: its jobs and their resources
are planned, nothing is submitted; tests/test_workflow_slurm.py runs the study on a real
SLURM). The bioimage.io export and ``bioimageio test`` run as written (into the temporary folder). Make targets are checked with ``make -n`` (they run for real in CI's ``make test``
and in ``make book``). A command of a kind this file does not know fails the test, so a new
documented command needs a way to be checked here. The study on a folder dataset (``dataset=folder``)
is also checked for what it wrote: the whole study ran on the user's images. The study on the synthetic data
with a top-K grid of its own runs once in the suite, as the ``smoke_run`` fixture that other tests read. Each
command's seconds are listed at the end of pytest's report.
"""

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from tests.conftest import REPO, shared_data

DOCS = ["README.md", "book/reproduce.md"]


def documented_commands() -> list[tuple[str, str, str]]:
    """(page, working folder relative to the repository, command) for every command in the pages' bash blocks."""
    out = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
            cwd = "."
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$|^#.*$", "", line).strip()
                if not line:
                    continue
                if line.startswith("cd "):
                    cwd = os.path.normpath(os.path.join(cwd, line[3:].strip()))
                    continue
                out.append((doc, cwd, " ".join(line.split())))
    return out


def _fake_kromp_for_smoke(root: Path) -> Path:
    """A Kromp-layout folder with 16 synthetic 256x256 images (large enough for the smoke profile at 4x)."""
    from nucseg_lib.data import synthetic

    (root / "rawimages").mkdir(parents=True)
    (root / "groundtruth").mkdir()
    rows = ["Image_Name;Diagnosis;Train-/Testset split"]
    for i, s in enumerate(synthetic.load(n_train=12, n_test=4, size=256, seed=5)):
        name = f"{['Neuroblastoma', 'normal'][i % 2]}_{i}"
        img = (s.image - s.image.min()) / (s.image.max() - s.image.min()) * 4000
        tifffile.imwrite(root / "rawimages" / f"{name}.tif", img.astype(np.uint16))
        tifffile.imwrite(root / "groundtruth" / f"{name}.tif", s.labels.astype(np.uint16))
        rows.append(f"{name};{name.split('_')[0]};{'test' if i % 4 == 0 else 'train'}")
    (root / "image_description.csv").write_text("\n".join(rows))
    return root


def synthetic_images():
    """Two synthetic 256x256 images (the 'own images' of the documented nucseg commands)."""
    from nucseg_lib.data import synthetic

    return synthetic.load(n_train=1, n_test=1, size=256, seed=9)


def _prepare(cmd: str, tmp: Path, n: int) -> str:
    """The command with the substitutions of the module docstring."""
    coelho = shared_data() / "coelho2009"
    cmd = cmd.replace("/path/to/coelho2009", str(coelho))
    if "/path/to/kromp" in cmd:
        kromp = tmp / "kromp"
        if not kromp.exists():
            _fake_kromp_for_smoke(kromp)
        cmd = cmd.replace("/path/to/kromp", str(kromp))
    if "/path/to/my-annotated-data" in cmd:
        from tests.test_folder_dataset import make_folder

        mine = tmp / "my-annotated-data"
        if not mine.exists():
            make_folder(mine, n=12, size=256)
        cmd = cmd.replace("/path/to/my-annotated-data", str(mine))
    if "/path/to/my-images" in cmd:
        images = tmp / "my-images"
        if not images.exists():
            images.mkdir()
            for s in synthetic_images():
                tifffile.imwrite(images / f"{s.name}.tif", s.image.astype(np.float32))
        cmd = cmd.replace("/path/to/my-images", str(images))
    cmd = re.sub(r"(?<![\w/])runs/([\w.-]+)", lambda m: str(tmp / f"runs_{m.group(1)}"), cmd)
    cmd = re.sub(r"(?<=\s)profile=\S+", "profile=smoke", cmd)
    cmd = re.sub(r"-p profile \S+", "-p profile smoke", cmd)
    cmd = re.sub(r"-p out_dir \S+", f"-p out_dir {tmp / f'nb-out-{n}'}", cmd)
    cmd = re.sub(r"(papermill \S+) \S+", rf"\1 {tmp / f'executed-{n}.ipynb'}", cmd)
    if "snakemake" in cmd:  # runs/X (out=, -m) became tmp/runs_X above: the same folder in every command
        cmd = cmd.replace("snakemake ", f"snakemake --directory {tmp} ", 1)
        if "profiles/slurm" in cmd:
            cmd = cmd.replace("snakemake ", "snakemake -n ", 1)
    return cmd


def synthetic_study_command() -> str:
    """book/reproduce.md's command that runs the whole study on the synthetic data with a top-K grid of its own
    (the suite's ``smoke_run``: the test below checks it through that fixture rather than running it twice)."""
    [cmd] = [c for _, _, c in documented_commands() if "snakemake" in c and "k_fractions=" in c and "dataset=" not in c]
    return cmd


def _run_for(cmd: str, tmp: Path, n: int) -> list[str]:
    """The argument list that runs documented command ``cmd`` (its n-th on the pages) in this test."""
    args = shlex.split(cmd)
    if args[0] == "make":
        return ["make", "-n", *args[1:]]
    if args[0].endswith(("bin/snakemake", "bin/papermill", "bin/nucseg", "bin/bioimageio")) or args[1:3] == [
        "-m",
        "nucseg_lib.predict.bioimageio",
    ]:
        return shlex.split(_prepare(cmd, tmp, n))
    raise ValueError(f"no check for the documented command {cmd!r}; add one to tests/test_documented_commands.py")


def run_documented(cmd: str, tmp: Path, cwd: str = ".", n: int = 0) -> Path:
    """Run documented command ``cmd`` as this module's docstring says, in ``tmp``; fails with its output.

    Returns the run folder its ``out=`` names (a snakemake command), else ``tmp``.
    """
    run = _run_for(cmd, tmp, n)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(run, cwd=REPO / cwd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"`{cmd}` (run as `{' '.join(run)}` in {cwd}) failed:\n{(r.stdout + r.stderr)[-3000:]}"
    out = re.search(r"(?<=\s)out=(\S+)", " ".join(run))
    return Path(out.group(1)) if out else tmp


def test_the_pages_document_commands():
    cmds = [c for _, _, c in documented_commands()]
    assert "make book" in cmds and "make test" in cmds
    assert any("papermill" in c for c in cmds) and any("workflow/profiles/slurm" in c for c in cmds)
    assert any("seeds=[0,1,2]" in c for c in cmds) and any("k_fractions=" in c for c in cmds)
    assert any("nucseg predict" in c for c in cmds) and any("dataset=folder" in c for c in cmds)


def test_documented_workflow_commands_resume_after_a_kill():
    """After ``kill -9`` the documented rerun works only with ``--rerun-incomplete`` (else
    IncompleteFilesException): every documented snakemake command carries it, or the SLURM profile that sets it."""
    profile = (REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text()
    assert "rerun-incomplete: true" in profile
    for doc, _, cmd in documented_commands():
        if "snakemake" in cmd:
            assert "--rerun-incomplete" in cmd or "profiles/slurm" in cmd, f"{doc}: {cmd}"
    assert "--rerun-incomplete" in (REPO / "Makefile").read_text()


def test_documented_slurm_commands_without_accounting_ask_squeue():
    """``--slurm-no-account`` alone hangs where accounting is off (the plugin polls sacct): documented together."""
    for doc, _, cmd in documented_commands():
        if "--slurm-no-account" in cmd:
            assert "--slurm-status-command squeue" in cmd, f"{doc}: {cmd}"
    assert any("--slurm-no-account" in c for _, _, c in documented_commands())


@pytest.mark.slow
def test_documented_commands_run_as_written(tmp_path, record_property):
    if not (shared_data() / "coelho2009" / "data").is_dir():
        pytest.skip("the shared Coelho 2009 copy is needed by the documented commands")
    # the synthetic study with its own top-K grid is the suite's smoke_run (the test below), not run twice
    synthetic, seen = synthetic_study_command(), set()
    folder_study_ran = False
    for n, (doc, cwd, cmd) in enumerate(documented_commands()):
        try:
            key = (cwd, tuple(_run_for(cmd, tmp_path, n)))
        except ValueError as exc:
            pytest.fail(f"{doc}: {exc}")
        if cmd == synthetic or key in seen:  # e.g. the cpu and full commands become the same at the smoke profile
            continue
        seen.add(key)
        began = time.perf_counter()
        out = run_documented(cmd, tmp_path, cwd, n)
        # where this test's time goes (the slowest of the suite): listed at the end of pytest's report (conftest)
        record_property("command_seconds", (round(time.perf_counter() - began, 1), f"{doc}: {cmd[:110]}"))
        if "snakemake" in cmd and "dataset=folder" in cmd:  # the whole study on the user's own annotated images
            summary = pd.read_csv(out / "results" / "summary.csv")
            assert set(summary.dataset) == {"folder"}
            assert {"data", "baseline", "beyond", "curves"} <= set(summary.experiment)
            assert (out / "notebooks" / "08_beyond_instances.ipynb").exists()
            folder_study_ran = True
    assert folder_study_ran, "no documented command runs the study on a folder dataset"


@pytest.mark.slow
def test_the_documented_synthetic_study_is_the_suites_smoke_run(smoke_run):
    """The synthetic study with its own top-K grid (book/reproduce.md) ran as written, as the ``smoke_run`` fixture."""
    assert "k_fractions=" in synthetic_study_command()
    assert (smoke_run / "results" / "run.json").exists() and (smoke_run / "_build" / "html" / "index.html").exists()
