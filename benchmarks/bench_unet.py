"""Speed of the U-Net on this machine: training throughput and inference seconds per megapixel.

Prints figures; it is not a test. Usage::

    python benchmarks/bench_unet.py                    # defaults: batch 8 of 256x256, 1024x1024 inference
    python benchmarks/bench_unet.py --patch 128 --steps 5

Every figure is printed for fp32 and for bf16 (``torch.autocast``, as training and inference
use it), next to the CPU's name and its native bf16 features. On a CPU without native bf16 the bf16
rows are skipped unless ``--precisions fp32 bf16`` asks for them: emulated bf16 is many times
slower (0.07x of fp32 per training step on an AMD EPYC Zen 2), takes minutes to time, and its
matmul "peak" (under 1 GFLOP/s) is no peak, so no fraction of it is printed. Matmul peak: GFLOP/s of a
2048x2048 matrix product in each precision on this machine; the training rows give their
achieved GFLOP/s as a fraction of that peak.

Training: patches/s and achieved GFLOP/s (FLOPs of forward + backward counted once with
torch.utils.flop_counter, divided by the measured step time), channels_last memory format.
Inference: seconds per megapixel for one image, whole-image and tiled.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from nucseg_lib.inference import predict_probabilities
from nucseg_lib.losses import make_loss
from nucseg_lib.machine import autocast, bf16_speedup, cpu_bf16_features, cpu_name, native_bf16, resolve_precision
from nucseg_lib.model import UNet, pick_device


def matmul_peak(device, precision: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix product at ``precision`` (the machine's practical peak for dense math)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def step_flops(model, x, y, loss_fn) -> int:
    with FlopCounterMode(display=False) as fc:
        loss_fn(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def bench_train(device, batch: int, patch: int, steps: int, precision: str):
    """(seconds per step, patches/s, GFLOP/s) of U-Net training steps as nucseg_lib.train.unet runs them."""
    torch.manual_seed(0)
    model = UNet().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = make_loss("dice")
    x = torch.randn(batch, 1, patch, patch, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, patch, patch, device=device) > 0.5).float()
    flops = step_flops(model, x, y, loss_fn)

    def step():
        with autocast(device, precision):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    return dt, batch / dt, flops / dt / 1e9


def bench_infer(device, size: int, repeats: int, tile, precision: str):
    model = UNet().to(device).to(memory_format=torch.channels_last).eval()
    img = np.random.default_rng(0).random((size, size)).astype(np.float32)
    predict_probabilities(model, img, tile=tile, device=device, precision=precision)
    t = time.perf_counter()
    for _ in range(repeats):
        predict_probabilities(model, img, tile=tile, device=device, precision=precision)
    return (time.perf_counter() - t) / repeats / (size * size / 1e6)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--device", default=None)
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=("fp32", "bf16"),
        default=None,
        help="precisions to time (default: fp32, and bf16 where it is native: a GPU or a CPU with bf16 instructions)",
    )
    a = ap.parse_args()
    device = pick_device(a.device)
    native = {"fp32"} | ({"bf16"} if native_bf16(device) else set())
    precisions = a.precisions or sorted(native, reverse=True)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CPU: {cpu_name()}; native bf16: {', '.join(cpu_bf16_features()) or 'none'}")
    if device.type == "cpu":
        print(f"bf16 speed-up of a 3x3 conv block (the 'auto' rule): {bf16_speedup():.2f}x")
    print(f"precision 'auto' picks here: {resolve_precision('auto', device)}")
    if "bf16" not in precisions:
        print(f"bf16 not timed: no native bf16 on {device} (emulated; --precisions fp32 bf16 times it anyway)")
    peaks = {p: matmul_peak(device, p) for p in precisions}
    for p, g in peaks.items():
        print(f"matmul peak {p}: {g:.1f} GFLOP/s" + ("" if p in native else " (emulated, not a peak)"))
    rows = {}
    for p in precisions:
        for patch in sorted({128, a.patch}):
            dt, pps, gflops = bench_train(device, a.batch, patch, a.steps, p)
            rows[(p, patch)] = dt
            share = f" = {gflops / peaks[p]:.0%} of the {p} matmul peak" if p in native else ""
            print(
                f"train {p}: batch {a.batch} x {patch}^2: {dt:.3f} s/step, {pps:.1f} patches/s, {gflops:.0f} GFLOP/s{share}"
            )
        for tile in (None, 512):
            sec = bench_infer(device, a.size, 2, tile, p)
            print(f"inference {p} {a.size}x{a.size}, tile {tile}: {sec:.3f} s per megapixel")
    if len(precisions) == 2:
        for patch in sorted({128, a.patch}):
            print(f"training step fp32/bf16 at {patch}^2: {rows[('fp32', patch)] / rows[('bf16', patch)]:.2f}x")


if __name__ == "__main__":
    main()
