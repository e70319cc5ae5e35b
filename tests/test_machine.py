"""Machine facts and the precision rule: bf16 only where it runs natively and faster, fp32 otherwise."""

import json

import numpy as np
import pytest

from nucseg_lib import machine


def test_precision_rule(monkeypatch):
    monkeypatch.delenv("NUCSEG_PRECISION", raising=False)
    assert machine.resolve_precision("fp32") == "fp32" and machine.resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        machine.resolve_precision("fp16")
    monkeypatch.setattr(machine, "cpu_bf16_features", lambda: [])
    assert machine.resolve_precision("auto", "cpu") == "fp32"  # no native bf16: never bf16
    monkeypatch.setattr(machine, "cpu_bf16_features", lambda: ["avx512_bf16"])
    monkeypatch.setattr(machine, "bf16_speedup", lambda: 1.05)
    assert machine.resolve_precision("auto", "cpu") == "fp32"  # native but not faster (measured)
    monkeypatch.setattr(machine, "bf16_speedup", lambda: 1.6)
    assert machine.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv("NUCSEG_PRECISION", "fp32")
    assert machine.resolve_precision("auto", "cpu") == "fp32"


def test_bf16_speedup_is_the_best_of_interleaved_single_thread_timings(monkeypatch):
    """A slow outlier (a busy machine) does not decide the ratio, and the thread count is restored."""
    import torch

    times = {"fp32": iter([9.0, 2.0, 5.0, 2.0]), "bf16": iter([9.0, 1.0, 8.0, 3.0])}  # first of each: warm-up
    threads_seen = []

    def step(dtype):
        threads_seen.append(torch.get_num_threads())
        return next(times[dtype])

    monkeypatch.setattr(machine, "_conv_step_seconds", step)
    machine.bf16_speedup.cache_clear()
    before = torch.get_num_threads()
    try:
        assert machine.bf16_speedup(repeats=3) == pytest.approx(2.0)  # best fp32 2.0 / best bf16 1.0
    finally:
        machine.bf16_speedup.cache_clear()
    assert set(threads_seen) == {1} and torch.get_num_threads() == before


def test_hardware_names_the_cpu_and_precision():
    hw = machine.hardware()
    assert hw["cpu"] and hw["cores"] >= 1 and hw["precision"] in ("fp32", "bf16")
    assert isinstance(hw["cpu_bf16"], list)


def test_bf16_training_records_its_precision_and_predicts_like_fp32(tmp_path, small_synthetic):
    from nucseg_lib.inference import predict_probabilities
    from nucseg_lib.train.unet import TrainConfig, load_trained, train

    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32, decoder_base=8, precision="bf16")
    model, hist = train(cfg, small_synthetic[:4], small_synthetic[4:5], tmp_path / "m", progress=False)
    assert np.isfinite(hist.train_loss).all()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["precision"] == "bf16"
    loaded, _, _ = load_trained(tmp_path / "m", "cpu")
    assert loaded.precision == "bf16"
    img = small_synthetic[0].image
    p16 = predict_probabilities(loaded, img)
    p32 = predict_probabilities(loaded, img, precision="fp32")
    assert p16.dtype == np.float32 and np.abs(p16 - p32).max() < 0.05


def test_cpu_name_names_generic_models_by_family_and_model():
    from nucseg_lib.machine import parse_cpuinfo

    zen2 = "processor\t: 0\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n"
    name, flags = parse_cpuinfo(zen2 + zen2.replace("49", "1"))
    assert name == "AMD EPYC (family 23, model 49)" and flags == {"fpu", "avx2"}
    xeon = "cpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t: amx_bf16\n"
    assert parse_cpuinfo(xeon)[0] == "Intel(R) Xeon(R) Platinum 8480+"
    assert parse_cpuinfo("", "x86_64") == ("x86_64", frozenset())


def test_malloc_tunables_are_names_and_values_this_glibc_reads():
    """glibc ignores a misspelt tunable silently: its loader's list shows what it read from the variable."""
    import os
    import re
    import subprocess
    from pathlib import Path

    loader = Path("/lib64/ld-linux-x86-64.so.2")
    if not loader.exists():
        pytest.skip("no x86-64 glibc loader here")
    env = {**os.environ, "GLIBC_TUNABLES": machine.MALLOC_TUNABLES}
    r = subprocess.run([str(loader), "--list-tunables"], env=env, capture_output=True, text=True)
    if r.returncode:
        pytest.skip("this glibc cannot list its tunables (older than 2.33)")
    read = {m[1]: int(m[2], 0) for m in re.finditer(r"^(\S+): (0x[0-9a-f]+|[0-9]+)", r.stdout, re.M)}
    wanted = dict(item.split("=") for item in machine.MALLOC_TUNABLES.split(":"))
    assert wanted.keys() == {f"glibc.malloc.{k}" for k in ("hugetlb", "mmap_threshold", "trim_threshold", "top_pad")}
    assert {k: read.get(k) for k in wanted} == {k: int(v) for k, v in wanted.items()}
    assert read["glibc.malloc.top_pad"] == 256 * 2**20 and read["glibc.malloc.hugetlb"] == 1


def test_hardware_records_the_memory_settings(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    hw = machine.hardware()
    assert hw["glibc_tunables"] == "glibc.malloc.hugetlb=1"
    assert hw["transparent_hugepages"] in ("always", "madvise", "never", None)
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert machine.hardware()["glibc_tunables"] is None


def test_gpu_name_without_a_gpu_driver_does_not_import_torch(tmp_path):
    """Every workflow job records its machine; on Linux without a GPU driver's device files the GPU is None
    without importing torch (seconds per job); with one, torch is asked."""
    import os
    import subprocess
    import sys

    import torch

    code = (
        "import sys; from nucseg_lib import machine; machine.GPU_DRIVER_FILES = ({!r},); "
        "print(repr(machine.gpu_name())); print('torch' in sys.modules)"
    )

    def ask(driver_file):
        r = subprocess.run([sys.executable, "-c", code.format(str(driver_file))], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    assert ask(tmp_path / "none") == ["None", "False"]
    # nor does the precision rule on a CPU without bf16 instructions (a Zen 2: fp32)
    zen2 = code.replace(
        "print(repr(machine.gpu_name()))", "machine.cpu_bf16_features = list; print(machine.resolve_precision())"
    )
    r = subprocess.run(
        [sys.executable, "-c", zen2.format(str(tmp_path / "none"))],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "NUCSEG_PRECISION"},
    )
    assert r.stdout.splitlines() == ["fp32", "False"], r.stderr
    (tmp_path / "driver").write_text("")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    assert ask(tmp_path / "driver") == [repr(gpu), "True"]
