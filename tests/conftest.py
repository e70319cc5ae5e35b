"""Shared fixtures: small synthetic samples, the shared real data (skipped when absent)."""
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


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
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole study in the smoke profile through the real runner, with the book built."""
    from nucseg_lib.runner import build_book, run_study

    out = tmp_path_factory.mktemp("run") / "smoke"
    run_study("synthetic", "smoke", out)
    build_book(out)
    return out
