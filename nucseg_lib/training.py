"""Training the U-Net: augmented patches, Adam, per-epoch history and checkpoints, resume, model folders.

A **trained-model folder** holds:

- ``config.json``: the full :class:`TrainConfig` plus the data tag and training image names;
- ``weights.pt``: the final state dict (present only when training finished);
- ``history.csv``: one row per epoch: ``epoch, train_loss, val_dice, seconds``;
- ``checkpoint.pt``: model, optimizer and history after the last finished epoch.

:func:`train` resumes from ``checkpoint.pt`` when it exists, so an interrupted
run continues at the next epoch and ends with the same weights as an
uninterrupted one (randomness is re-seeded from ``(seed, epoch)`` each epoch).
:func:`train_or_load` caches models by configuration under a models folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .data.common import Sample, normalize_percentile
from .losses import make_loss, n_classes
from .model import build_model, pick_device
from .targets import make_target


@dataclass
class TrainConfig:
    """Training settings; the paper's are Adam, lr 1e-4, 100 epochs, 256 x 256 patches.

    ``patch_size`` is in pixels of the (possibly downscaled) images; ``time_budget_s``
    stops training after the epoch in which the wall-clock budget runs out.
    """

    loss: str = "dice"
    init: str = "scratch"
    epochs: int = 100
    steps_per_epoch: int = 20
    batch_size: int = 8
    patch_size: int = 256
    lr: float = 1e-4
    seed: int = 0
    depth: int = 4
    decoder_base: int = 16
    augment: bool = True
    time_budget_s: float | None = None
    data_tag: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def out_channels(self) -> int:
        return n_classes(self.loss)

    def key(self) -> str:
        """Short hash of the configuration (the cache key of a model folder)."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


class PatchSampler:
    """Random training patches with joint augmentation of image and labels.

    Augmentation (torchvision.transforms.v2, applied to image and instance labels
    together; labels use nearest-neighbour interpolation): random crop,
    rotation by any angle, scaling by 0.75-1.33, horizontal and vertical flips.
    Targets are derived from the augmented labels, so boundaries stay exact.
    """

    def __init__(self, samples: Sequence[Sample], patch_size: int, out_channels: int, augment: bool = True):
        from torchvision.transforms import v2

        if not samples:
            raise ValueError("no training samples")
        self.images = [normalize_percentile(s.image) for s in samples]
        self.labels = [s.labels for s in samples]
        self.patch = patch_size
        self.out_channels = out_channels
        self.augment = augment
        areas = np.array([im.size for im in self.images], float)
        self.p = areas / areas.sum()
        self.geometry = v2.Compose([
            v2.RandomAffine(degrees=180, scale=(0.75, 1.33), interpolation=v2.InterpolationMode.BILINEAR),
            v2.CenterCrop(patch_size), v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()])

    def _crop(self, rng, i: int, size: int):
        img, lab = self.images[i], self.labels[i]
        h, w = img.shape
        ph, pw = max(0, size - h), max(0, size - w)
        if ph or pw:
            pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
            img, lab = np.pad(img, pad, mode="reflect"), np.pad(lab, pad, mode="reflect")
            h, w = img.shape
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        return img[y:y + size, x:x + size], lab[y:y + size, x:x + size]

    def patch_pair(self, rng):
        from torchvision import tv_tensors

        i = rng.choice(len(self.images), p=self.p)
        if not self.augment:
            return self._crop(rng, i, self.patch)
        img, lab = self._crop(rng, i, int(np.ceil(self.patch * 1.9)))
        ti = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(img))[None])
        tl = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(lab))[None])
        ti, tl = self.geometry(ti, tl)
        return ti[0].numpy(), tl[0].numpy()

    def batch(self, rng, n: int):
        pairs = [self.patch_pair(rng) for _ in range(n)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None].astype(np.float32))
        y = torch.from_numpy(np.stack([make_target(p[1], self.out_channels) for p in pairs]))
        return x, y


def validation_dice(model, samples: Sequence[Sample], device=None, tile: int | None = 512) -> float:
    """Mean pixel Dice of the thresholded foreground (p > 0.5) over ``samples``."""
    from .inference import foreground_probability, predict_probabilities
    from .metrics import dice

    if not samples:
        return float("nan")
    return float(np.mean([dice(s.labels > 0, foreground_probability(predict_probabilities(model, s.image, tile, device=device)) > 0.5)
                          for s in samples]))


def _save_atomic(obj, path: Path):
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(config: TrainConfig, train_samples: Sequence[Sample], val_samples: Sequence[Sample], out_dir,
          device=None, progress: bool = True, stop_after_epoch: int | None = None):
    """Train (or resume) a U-Net into ``out_dir``; returns ``(model, history DataFrame)``.

    ``stop_after_epoch`` ends the call early (after that epoch, without writing
    ``weights.pt``), to simulate an interruption in tests.
    """
    from tqdm import tqdm  # text bar: works in terminals, papermill and the rendered book alike

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(device if isinstance(device, str) else None) if not isinstance(device, torch.device) else device
    info = {**asdict(config), "key": config.key(), "out_channels": config.out_channels,
            "train_images": [s.name for s in train_samples], "val_images": [s.name for s in val_samples]}
    (out_dir / "config.json").write_text(json.dumps(info, indent=2))

    torch.manual_seed(config.seed)
    model = build_model(config.out_channels, config.init, config.depth, config.decoder_base)
    model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = make_loss(config.loss).to(device)
    sampler = PatchSampler(train_samples, config.patch_size, config.out_channels, config.augment)
    history: list[dict] = []
    start = 0
    ckpt_path = out_dir / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        history, start = ckpt["history"], ckpt["epoch"]
    spent = sum(h["seconds"] for h in history)
    total = config.epochs * config.steps_per_epoch
    bar = tqdm(total=total, initial=start * config.steps_per_epoch, desc=f"train {config.loss}",
               disable=not progress, mininterval=2.0, unit="step")
    for epoch in range(start, config.epochs):
        if config.time_budget_s is not None and spent >= config.time_budget_s:
            break
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)
        rng = np.random.default_rng((config.seed, epoch))
        model.train()
        losses = []
        for _ in range(config.steps_per_epoch):
            x, y = sampler.batch(rng, config.batch_size)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", refresh=False)
        val = validation_dice(model, val_samples, device)
        seconds = time.perf_counter() - t0
        spent += seconds
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_dice": val, "seconds": seconds})
        _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                      "epoch": epoch + 1}, ckpt_path)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            bar.close()
            return model, pd.DataFrame(history)
    bar.close()
    hist = pd.DataFrame(history, columns=["epoch", "train_loss", "val_dice", "seconds"])
    hist.to_csv(out_dir / "history.csv", index=False)
    _save_atomic(model.state_dict(), out_dir / "weights.pt")
    return model, hist


def load_trained(folder, device=None):
    """Load a trained-model folder: returns ``(model in eval mode, config dict, history DataFrame)``."""
    folder = Path(folder)
    if not (folder / "weights.pt").is_file():
        raise FileNotFoundError(f"{folder}: no weights.pt (training did not finish; run train() to resume)")
    cfg = json.loads((folder / "config.json").read_text())
    device = device or pick_device()
    model = build_model(cfg["out_channels"], "scratch", cfg["depth"], cfg["decoder_base"])
    model.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
    model.to(device).to(memory_format=torch.channels_last).eval()
    hist = pd.read_csv(folder / "history.csv") if (folder / "history.csv").exists() else pd.DataFrame()
    return model, cfg, hist


def model_folder(models_dir, config: TrainConfig, name: str | None = None) -> Path:
    """Cache folder of a configuration: ``<models_dir>/<name>-<config hash>``."""
    safe = (name or config.loss).replace("/", "_").replace(":", "_").replace("*", "x")
    return Path(models_dir) / f"{safe}-{config.key()}"


def train_or_load(config: TrainConfig, train_samples, val_samples, models_dir, name: str | None = None,
                  device=None, progress: bool = True):
    """Reuse the trained model of this exact configuration if its folder has weights, else train (or resume) it.

    Returns ``(model, history, folder)``.
    """
    folder = model_folder(models_dir, config, name)
    if (folder / "weights.pt").is_file():
        model, _, hist = load_trained(folder, device)
        return model, hist, folder
    model, hist = train(config, train_samples, val_samples, folder, device, progress)
    model.eval()
    return model, hist, folder
