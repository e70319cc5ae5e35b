"""Speed of the U-Net on this machine: training throughput and inference seconds per megapixel.

Prints figures; it is not a test. Usage::

    python benchmarks/bench_unet.py                    # defaults: batch 8 of 256x256, 1024x1024 inference
    python benchmarks/bench_unet.py --patch 128 --steps 5

Training: patches/s and achieved GFLOP/s (FLOPs of forward + backward counted once with
torch.utils.flop_counter, divided by the measured step time), for the plain (contiguous)
memory format and for channels_last. Inference: seconds for one image, whole-image and tiled.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from nucseg_lib.inference import predict_probabilities
from nucseg_lib.losses import make_loss
from nucseg_lib.model import UNet, pick_device


def step_flops(model, x, y, loss_fn) -> int:
    with FlopCounterMode(display=False) as fc:
        loss_fn(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def bench_train(device, batch: int, patch: int, steps: int, channels_last: bool):
    torch.manual_seed(0)
    model = UNet().to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = make_loss("dice")
    x = torch.randn(batch, 1, patch, patch, device=device).contiguous(memory_format=fmt)
    y = (torch.rand(batch, patch, patch, device=device) > 0.5).float()
    flops = step_flops(model, x, y, loss_fn)
    for _ in range(2):  # warm-up
        loss_fn(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    return dt, batch / dt, flops / dt / 1e9


def bench_infer(device, size: int, repeats: int, tile):
    model = UNet().to(device).to(memory_format=torch.channels_last).eval()
    img = np.random.default_rng(0).random((size, size)).astype(np.float32)
    predict_probabilities(model, img, tile=tile, device=device)
    t = time.perf_counter()
    for _ in range(repeats):
        predict_probabilities(model, img, tile=tile, device=device)
    return (time.perf_counter() - t) / repeats / (size * size / 1e6)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    device = pick_device(a.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for cl in (False, True):
        dt, pps, gflops = bench_train(device, a.batch, a.patch, a.steps, cl)
        print(f"train {'channels_last' if cl else 'contiguous   '}: batch {a.batch} x {a.patch}^2: "
              f"{dt:.2f} s/step, {pps:.1f} patches/s, {gflops:.1f} GFLOP/s")
    for tile in (None, 512, 256):
        s = bench_infer(device, a.size, 2, tile)
        print(f"inference {a.size}x{a.size}, tile {tile}: {s:.2f} s per megapixel")


if __name__ == "__main__":
    main()
