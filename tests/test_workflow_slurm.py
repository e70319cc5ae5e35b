"""The study through a real single-node SLURM cluster gives the same results as a local run."""

import subprocess
import sys

import pandas as pd
import pytest

from tests import slurm_node
from tests.conftest import REPO, snakemake


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = slurm_node.unavailable()
    if why:
        pytest.skip(f"no SLURM here: {why}")
    # started as book/reproduce.md documents it ("Try the SLURM profile on one machine"), less sudo: CI is root
    folder = tmp_path_factory.mktemp("slurm")
    doc = (REPO / "book" / "reproduce.md").read_text()
    assert "sudo .venv/bin/python -m tests.slurm_node start runs/slurm-node" in doc
    assert "sudo .venv/bin/python -m tests.slurm_node stop runs/slurm-node" in doc
    subprocess.run([sys.executable, "-m", "tests.slurm_node", "start", str(folder)], cwd=REPO, check=True)
    yield
    subprocess.run([sys.executable, "-m", "tests.slurm_node", "stop", str(folder)], cwd=REPO, check=True)


NOTEBOOKS = ["02_baseline", "06_stardist"]  # they train the shared models unet_dice and stardist


@pytest.mark.slow
def test_smoke_study_through_slurm_equals_the_local_run(slurm, smoke_run, tmp_path):
    before = set(
        subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout.split()
    )
    out = tmp_path / "run"
    # the cluster run as book/reproduce.md shows it (with the two settings a cluster without accounting needs:
    # status from squeue, no account), for two notebooks and the two shared models they read (the whole study's
    # plan is checked as a dry run by test_documented_commands; its jobs are of these kinds)
    snakemake(
        tmp_path,
        "profile=smoke",
        f"out={out}",
        "book=false",
        f"notebooks=[{','.join(NOTEBOOKS)}]",
        cores=None,
        args=[
            "--profile",
            str(REPO / "workflow" / "profiles" / "slurm"),
            "--slurm-no-account",
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            "1",
        ],
    )
    jobs = (
        set(subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout.split())
        - before
    )
    # parameters and assemble are local rules; 2 notebooks and 2 shared models went through SLURM
    assert len(jobs) >= 4, f"only {len(jobs)} SLURM jobs"
    cluster = pd.read_csv(out / "results" / "summary.csv")
    assert set(cluster.experiment) == {"baseline", "stardist"}
    local = pd.read_csv(smoke_run / "results" / "summary.csv")
    local = local[local.experiment.isin(cluster.experiment)]
    key = ["experiment", "method", "metric"]
    assert len(local) == len(cluster) and not local.duplicated(key).any()
    both = local.merge(cluster, on=key, suffixes=("_local", "_slurm"))
    deterministic = both[~both.metric.str.contains("seconds")]  # timings differ between any two runs
    assert len(deterministic) >= 30  # the two notebooks record 40 numbers at the smoke profile
    pd.testing.assert_series_equal(deterministic.value_local, deterministic.value_slurm, check_names=False, rtol=1e-9)
