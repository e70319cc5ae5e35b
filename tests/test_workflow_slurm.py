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


@pytest.mark.slow
def test_smoke_study_through_slurm_equals_the_local_run(slurm, smoke_run, tmp_path):
    before = set(
        subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout.split()
    )
    out = tmp_path / "run"
    # the cluster run exactly as book/reproduce.md shows it, plus the two settings a cluster without
    # accounting needs (status from squeue, no account)
    snakemake(
        tmp_path,
        "profile=smoke",
        f"out={out}",
        "book=false",
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
    # parameters and assemble are local rules; 8 notebooks and 3 shared models went through SLURM
    assert len(jobs) >= 11, f"only {len(jobs)} SLURM jobs"
    local = pd.read_csv(smoke_run / "results" / "summary.csv")
    cluster = pd.read_csv(out / "results" / "summary.csv")
    key = ["experiment", "method", "metric"]
    assert len(local) == len(cluster) and not local.duplicated(key).any()
    both = local.merge(cluster, on=key, suffixes=("_local", "_slurm"))
    deterministic = both[~both.metric.str.contains("seconds")]  # timings differ between any two runs
    assert len(deterministic) > 50
    pd.testing.assert_series_equal(deterministic.value_local, deterministic.value_slurm, check_names=False, rtol=1e-9)
