"""Shared fixtures: small synthetic samples, the shared real data (skipped when absent), the smoke study (run once
for the session's pytest-xdist workers), and the test tiers."""

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """The precision ``auto`` picks on this machine, decided once for the session: the suite's Snakemake calls and
    jobs inherit it (a run would otherwise time bf16 again at each call where the CPU has it, ~3 s each). The tests
    of the ``auto`` rule and of a resumed run's precision unset it (monkeypatch)."""
    from nucseg_lib.machine import resolve_precision

    os.environ.setdefault("NUCSEG_PRECISION", resolve_precision("auto"))


def shared_data() -> Path:
    return Path(os.environ.get("NUCSEG_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def coelho_root():
    root = shared_data() / "coelho2009"
    if not (root / "data").is_dir():
        pytest.skip(f"Coelho 2009 data not found at {root} (set NUCSEG_DATA)")
    return root


@pytest.fixture(scope="session")
def coelho_test(coelho_root):
    from nucseg_lib.data import coelho

    return coelho.load(coelho_root, split="test")[:4]


@pytest.fixture(scope="session")
def small_synthetic():
    from nucseg_lib.data import synthetic

    return synthetic.load(n_train=6, n_test=2, size=96, seed=3)


def disk(shape, center, radius):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


SNAKEFILE = REPO / "workflow" / "Snakefile"


def snakemake_command(workdir, *config: str, args=(), cores: int | None = 2) -> list[str]:
    """The command line that runs the study's workflow with ``--config`` items ``config``; Snakemake's metadata
    goes to ``workdir`` (made here). ``cores=None`` leaves ``--cores`` out (an executor profile sets the job count)."""
    import sys

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return [
        str(Path(sys.executable).parent / "snakemake"),
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        *(["--cores", str(cores)] if cores else []),
        "--rerun-incomplete",
        "--show-failed-logs",
        *args,
        "--config",
        *config,
    ]


def snakemake(workdir, *config: str, args=(), cores: int | None = 2, check: bool = True):
    """Run the study's workflow (:func:`snakemake_command`); returns the CompletedProcess (stdout and stderr
    together in ``stdout``), and fails the test when Snakemake fails and ``check`` is true."""
    import subprocess

    cmd = snakemake_command(workdir, *config, args=args, cores=cores)
    r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake failed ({r.returncode}):\n{r.stdout[-4000:]}")
    return r


def session_folder(tmp_path_factory) -> Path:
    """A folder of this test session that its pytest-xdist workers share (each worker's base folder is
    ``<session>/popen-gwN``); without xdist, the session's base folder."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def one_worker_at_a_time(tmp_path_factory, name: str):
    """An exclusive lock ``name`` held by one of the session's pytest-xdist workers at a time (``fcntl.flock``)."""
    import fcntl

    with open(session_folder(tmp_path_factory) / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole study on the synthetic data at the smoke profile through the workflow (Snakemake, local), with
    its book: book/reproduce.md's command that re-runs the study with a top-K grid of its own, run as written
    with the substitutions of tests/test_documented_commands.py. The suite runs it once: the first pytest-xdist
    worker that needs it runs it into the session's shared folder; the other waits for it and reads it."""
    from tests.test_documented_commands import run_documented, synthetic_study_command

    shared = session_folder(tmp_path_factory) / "smoke_run"
    with one_worker_at_a_time(tmp_path_factory, "smoke_run"):
        done = shared / "run_folder.txt"
        if not done.exists():
            shared.mkdir(exist_ok=True)
            done.write_text(str(run_documented(synthetic_study_command(), shared)))
        return Path(done.read_text())


# fixtures that train a model or run a whole study: a test that uses one is slow
SLOW_FIXTURES = {"smoke_run", "exported", "trained", "slurm"}


def pytest_collection_modifyitems(config, items):
    """Tiers (``make test-fast`` leaves out slow, browser and slurm). Marked slow, whatever a test's own marks say:
    a test that uses a fixture of :data:`SLOW_FIXTURES` and a test that runs the workflow (it calls
    ``snakemake(``: Snakemake alone takes seconds to read the workflow). The browser and SLURM modules carry
    their marks (and slow) on every test."""
    import inspect

    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        try:
            source = inspect.getsource(item.function)
        except (OSError, TypeError):
            source = ""
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or "snakemake(" in source:
            item.add_marker(pytest.mark.slow)
        if module == "test_book_browser":
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
        if module == "test_workflow_slurm":
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.slow)


# each documented command's seconds (tests/test_documented_commands.py records them as a user property), gathered
# from the reports, which pytest-xdist's workers send to the main process, and listed at the end of the run
COMMAND_SECONDS = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        COMMAND_SECONDS.extend(value for name, value in report.user_properties if name == "command_seconds")


def pytest_terminal_summary(terminalreporter):
    if COMMAND_SECONDS:
        terminalreporter.section("documented commands, seconds each")
        for seconds, what in COMMAND_SECONDS:
            terminalreporter.write_line(f"{seconds:7.1f} s  {what}")
