"""The benchmark scripts run as their docstrings write them (smoke profile, synthetic data)."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # the benchmarks train U-Nets


def _run(*args, out):
    cmd = [sys.executable, "benchmarks/compare_training.py", "--dataset", "synthetic", "--profile", "smoke"]
    # one precision for the script and the test (``auto`` times a convolution, which a loaded machine may tip)
    env = {**os.environ, "NUCSEG_PRECISION": "fp32"}
    r = subprocess.run([*cmd, *args, "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_compare_training_learning_rates_at_the_profile_budget(tmp_path, monkeypatch):
    """Without --budgets each value trains the study's own model (same cache key) and is scored once."""
    from nucseg_lib.study.study import Study

    monkeypatch.setenv("NUCSEG_PRECISION", "fp32")
    printed = _run("--setting", "lr", "--values", "1e-4", "3e-4", "--seeds", "0", out=tmp_path)
    table = pd.read_csv(tmp_path / "compare_lr.csv")
    assert sorted(table.lr) == [1e-4, 3e-4] and set(table.steps) == {4}  # smoke: 2 epochs of 2 steps
    assert table["val_f1@0.5"].between(0, 1).all() and table["f1@0.5"].between(0, 1).all()
    assert "0.0001" in printed and "0.0003" in printed  # the values, not rounded to 0.0
    # the models are those the study trains: the study's configuration at lr 3e-4 finds its folder
    key = Study("synthetic", "smoke", out_dir=tmp_path, lr=3e-4).unet_config("boundary_ce:3").key()
    assert list((tmp_path / "models").glob(f"unet_boundary_ce_3-{key}"))


def test_compare_training_precision_snapshots(tmp_path):
    """With --budgets, one long run per value keeps snapshots, each scored like the learning curves;
    --scale trains and scores at another downscaling than the profile's."""
    printed = _run("--budgets", "2", "4", "--seeds", "0", "--scale", "2", out=tmp_path)
    assert "2x downscaled" in printed
    tags = {json.loads(c.read_text())["data_tag"] for c in (tmp_path / "models").glob("*/config.json")}
    assert tags and all(t.startswith("synthetic@2:") for t in tags), tags
    table = pd.read_csv(tmp_path / "compare_precision.csv")
    assert sorted(table.steps) == [2, 2, 4, 4] and set(table.precision) <= {"fp32", "bf16"}
    assert table["f1@0.5"].between(0, 1).all()


def test_compare_training_weight_average_of_the_dice_unet(tmp_path):
    """--setting ema trains one model per decay; the average is recorded in each model's config; --method
    unet_dice_cc compares the study's Dice U-Net (scored with connected components) instead."""
    printed = _run("--setting", "ema", "--values", "0", "0.5", "--seeds", "0", "--method", "unet_dice_cc", out=tmp_path)
    assert printed.startswith("unet_dice_cc on synthetic")
    table = pd.read_csv(tmp_path / "compare_ema.csv")
    assert sorted(table.ema) == [0.0, 0.5] and set(table.method) == {"unet_dice_cc"}
    assert all("threshold" in json.loads(p) and "h" not in json.loads(p) for p in table.postprocess)
    assert table.dice.between(0, 1).all() and (table.dice_ci_low <= table.dice).all()  # notebook 02's pixel Dice
    configs = [json.loads(p.read_text()) for p in (tmp_path / "models").glob("unet_*/config.json")]
    assert sorted((c["loss"], c["ema"]) for c in configs) == [("dice", 0.0), ("dice", 0.5)]


def test_bench_unet_times_bf16_only_where_native(tmp_path):
    """Small sizes; fp32 is always timed; bf16 only on a CPU with native bf16 (else it says so)."""
    from nucseg_lib.machine import cpu_bf16_features

    cmd = [sys.executable, "benchmarks/bench_unet.py", "--batch", "2", "--steps", "1", "--patch", "64", "--size", "64"]
    r = subprocess.run([*cmd, "--device", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CPU: " in r.stdout and "train fp32: batch 2 x 64^2" in r.stdout and "of the fp32 matmul peak" in r.stdout
    if cpu_bf16_features():
        assert "train bf16" in r.stdout and "training step fp32/bf16" in r.stdout
    else:
        assert "bf16 not timed" in r.stdout and "train bf16" not in r.stdout


def test_bench_startup_times_each_item_in_a_fresh_process():
    """The start-up benchmark names the CPU and prints wall and CPU seconds per item; a bad count is refused."""
    import re

    cmd = [sys.executable, "benchmarks/bench_startup.py", "--repeats", "1", "--items", "python", "papermill"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and "best of 1 fresh processes" in lines[0]
    timed = {
        m[1]: (float(m[2]), float(m[3])) for m in re.finditer(r"(\w+): +([\d.]+) s wall, +([\d.]+) s CPU", r.stdout)
    }
    assert set(timed) == {"python", "papermill"} and all(w > 0 for w, _ in timed.values())
    assert timed["papermill"][1] > timed["python"][1]  # papermill's imports cost CPU beyond the bare interpreter
    r = subprocess.run([*cmd[:2], "--repeats", "0"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "--repeats must be at least 1" in r.stderr
