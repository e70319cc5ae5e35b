"""The machine a run uses: CPU name and features, GPU, and the numeric precision chosen for it.

Training and inference run in ``bf16`` (``torch.autocast`` with bfloat16; weights, optimizer
state and losses stay fp32) where the hardware makes that faster, else in ``fp32``:

- a CUDA GPU with bf16 support: ``bf16``;
- a CPU with native bf16 instructions (``amx_bf16`` on Intel Sapphire Rapids and later,
  ``avx512_bf16`` on Intel Cooper Lake and AMD Zen 4): ``bf16`` if a short convolution
  benchmark (:func:`bf16_speedup`, well under a second) shows it at least
  :data:`MIN_SPEEDUP` times faster than fp32 on this machine, else ``fp32``;
- anything else: ``fp32`` (emulated bf16 is slower than fp32).

``NUCSEG_PRECISION=fp32`` (or ``bf16``) overrides the choice, e.g. to compare the two.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path

PRECISIONS = ("auto", "fp32", "bf16")
MIN_SPEEDUP = 1.2
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# glibc's malloc settings for the workflow's jobs (glibc reads GLIBC_TUNABLES when a process starts, so the
# workflow sets it for the processes it starts). TensorFlow allocates and frees StarDist's tensors, megabytes
# each, at every step; with glibc's defaults freed memory goes back to the kernel and each new allocation
# faults it in again, 4 KiB at a time. These keep the freed memory in the process (mmap above 32 MiB only,
# trim above 1 GiB, 256 MiB padding when the heap grows) and ask for transparent huge pages (`hugetlb=1`:
# madvise, which kernels in THP mode "madvise" need). Measured on an AMD EPYC Zen 3 (family 25, model 1),
# one thread: StarDist 4.7-5.2 -> 6.7-7.2 patches/s, 10.7 -> 1.1-1.9 million page faults, the same peak
# memory (book/methods.md). A glibc without a tunable ignores it; other C libraries ignore the variable.
MALLOC_TUNABLES = ":".join(
    f"glibc.malloc.{k}={v}"
    for k, v in {"hugetlb": 1, "mmap_threshold": 32 << 20, "trim_threshold": 1 << 30, "top_pad": 256 << 20}.items()
)


def parse_cpuinfo(text: str, fallback: str = "") -> tuple[str, frozenset]:
    """(name, feature flags) of the first CPU in the text of ``/proc/cpuinfo``.

    Where the model name has no number in it (a virtual machine's "AMD EPYC" covers Zen 2 without
    AVX-512 and Zen 4 with AVX512-BF16), the x86 family and model numbers are appended, so that
    speed figures name the CPU they were measured on.
    """
    name, flags, fields = "", frozenset(), {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        elif key in ("cpu family", "model") and key not in fields:
            fields[key] = value.strip()
    name = name or fallback
    if len(fields) == 2 and not any(c.isdigit() for c in name):
        name = f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name, flags


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset]:
    """(name, feature flags) of this CPU (:func:`parse_cpuinfo`); (platform name, no flags) without ``/proc``."""
    fallback = platform.processor() or platform.machine()
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(), fallback)
    except OSError:
        return fallback, frozenset()


def cpu_name() -> str:
    return cpu_info()[0]


def cpu_bf16_features() -> list[str]:
    """The native bf16 instruction sets of this CPU (empty list: none)."""
    return [f for f in BF16_CPU_FLAGS if f in cpu_info()[1]]


def _conv_step_seconds(dtype) -> float:
    """Seconds of one forward+backward of a U-Net-like 3x3 convolution block on the CPU at ``dtype`` autocast."""
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1)
    ).to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, 64, 64).contiguous(memory_format=torch.channels_last)
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        y = conv(x)
    y.float().square().mean().backward()
    return time.perf_counter() - t


@functools.lru_cache(maxsize=1)
def bf16_speedup(repeats: int = 5) -> float:
    """fp32 seconds / bf16 seconds of a small convolution block on this CPU (above 1: bf16 is faster).

    Measured on one thread, the precisions interleaved, best of ``repeats`` each after a warm-up of
    oneDNN's kernels: a team of threads on a machine busy with other jobs (two study jobs on two
    cores) waits on its slowest member, which made the ratio of a multi-threaded timing swing
    between 0.3 and 2.7 on an otherwise idle-looking run.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = {"fp32": float("inf"), "bf16": float("inf")}
        for i in range(repeats + 1):
            for dtype in best:
                seconds = _conv_step_seconds(dtype)
                if i:
                    best[dtype] = min(best[dtype], seconds)
    finally:
        torch.set_num_threads(threads)
    return best["fp32"] / best["bf16"]


def resolve_precision(precision: str = "auto", device=None) -> str:
    """``'fp32'`` or ``'bf16'`` for ``device`` (default: the one :func:`~nucseg_lib.model.pick_device` picks).

    ``'auto'`` applies the rules of the module docstring; ``$NUCSEG_PRECISION`` overrides ``'auto'``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = os.environ.get("NUCSEG_PRECISION", "auto")
        if precision not in PRECISIONS:
            raise ValueError(f"$NUCSEG_PRECISION must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device is None and no_gpu_driver():
        kind = "cpu"  # known without importing torch: it is imported for the bf16 timing only
    else:
        import torch

        from .model import pick_device

        device = torch.device(device) if device is not None else pick_device()
        if device.type == "cuda":
            return "bf16" if native_bf16(device) else "fp32"
        kind = device.type
    # a CPU with bf16 instructions where the timing shows bf16 faster; elsewhere bf16 is emulated, slower than fp32
    return "bf16" if kind == "cpu" and cpu_bf16_features() and bf16_speedup() >= MIN_SPEEDUP else "fp32"


def native_bf16(device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU that supports it, or a CPU with bf16
    instructions (:data:`BF16_CPU_FLAGS`). Elsewhere bf16 is emulated, and slower than fp32."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(cpu_bf16_features())


def autocast(device, precision: str):
    """The autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    import torch

    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def transparent_hugepages() -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise`` or ``never``; None where unknown)."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    return next((w[1:-1] for w in text.split() if w.startswith("[")), None)


# device files of the GPU drivers torch can use on Linux (NVIDIA's CUDA, AMD's ROCm): without any of them torch
# finds no GPU, and :func:`gpu_name` and :func:`resolve_precision` answer without importing torch (about 3 s of a
# 2-core CPU in every workflow job and every Snakemake call), except to time bf16 on a CPU that has it
GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd")


def no_gpu_driver() -> bool:
    """True on Linux without any of :data:`GPU_DRIVER_FILES`: torch would find no GPU (known without importing it)."""
    return platform.system() == "Linux" and not any(Path(f).exists() for f in GPU_DRIVER_FILES)


def gpu_name() -> str | None:
    """The name of the CUDA (or ROCm) GPU torch would use, None when there is none."""
    if no_gpu_driver():
        return None
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # torch missing or broken CUDA: report no GPU
        return None


def hardware() -> dict:
    """CPU model and bf16 features, core count, memory, GPU (if any), the precision ``auto`` picks here,
    and the memory settings that change training speed (THP mode, ``GLIBC_TUNABLES``)."""
    info = {
        "cpu": cpu_name(),
        "cpu_bf16": cpu_bf16_features(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "transparent_hugepages": transparent_hugepages(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES") or None,
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    info["gpu"] = gpu_name()
    info["precision"] = resolve_precision("auto")
    return info
