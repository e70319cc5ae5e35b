"""Training the U-Net: augmented patches, Adam, per-epoch history and checkpoints, resume, model folders.

A **trained-model folder** holds:

- ``config.json``: the full :class:`TrainConfig` plus the data tag and training image names;
- ``weights.pt``: the final state dict (present only when training finished);
- ``history.csv``: one row per epoch: ``epoch, train_loss, val_dice, seconds``;
- ``checkpoint.pt``: model, optimizer, weight average (``TrainConfig.ema``) and history after the
  last finished epoch; removed when ``weights.pt`` is written;
- ``snapshots/step-NNNNNN.pt`` and ``.json`` (when asked for, learning curves): the weights
  after that many training steps, and the training seconds and validation Dice at that point.

:func:`train` resumes from ``checkpoint.pt`` when it exists, so an interrupted
run continues at the next epoch and ends with the same weights as an
uninterrupted one (randomness is re-seeded from ``(seed, epoch)`` each epoch); on a finished folder it
loads ``weights.pt``.
:func:`train_or_load` caches models by configuration under a models folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..data.common import Sample, normalize_percentile
from ..losses import make_loss, n_classes
from ..machine import autocast
from ..model import build_model, pick_device
from ..targets import make_target
from .model_folder import (  # noqa: F401 (ModelFolderError, load_trained, snapshots, ...: part of this module's API)
    ModelFolderError,
    TrainingDiverged,
    check_snapshot_steps,
    load_snapshot,
    load_trained,
    model_with_weights,
    read_json,
    save_atomic,
    snapshots,
    torch_load,
    write_json_atomic,
)

AUGMENT_SCALE = (0.75, 1.33)  # random zoom of training patches: the nucleus sizes a model has seen, relative


@dataclass
class TrainConfig:
    """Training settings; the paper's are Adam, lr 1e-4, 100 epochs, 256 x 256 patches.

    ``patch_size`` is in pixels of the (possibly downscaled) images; ``time_budget_s``
    stops training after the epoch in which the wall-clock budget runs out. ``precision``
    ``'bf16'`` runs the forward pass under bfloat16 autocast (weights, optimizer and loss
    stay fp32); :func:`nucseg_lib.machine.resolve_precision` says which one pays here.
    ``ema``: decay per step of an exponential moving average of the weights (0: off). The average
    does not change the training; it is what is validated, snapshotted and saved as
    ``weights.pt``. With decay ``d`` it spans about ``1 / (1 - d)`` steps (0.995: the last ~200), and
    it holds no share of the initial weights (:func:`average_decay`).
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
    precision: str = "fp32"
    ema: float = 0.0
    data_tag: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"TrainConfig.{name} must be a whole number >= 1, got {value!r}: a model that "
                    f"trained for no step would be cached as if it had trained"
                )
        if not isinstance(self.patch_size, (int, np.integer)) or self.patch_size < 16:
            raise ValueError(f"TrainConfig.patch_size must be a whole number of pixels >= 16, got {self.patch_size!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.ema, (int, float)) and 0 <= self.ema < 1):
            raise ValueError(f"TrainConfig.ema must be a decay in [0, 1) (0: no weight average), got {self.ema!r}")
        if self.time_budget_s is not None and not (self.time_budget_s > 0):
            raise ValueError(f"TrainConfig.time_budget_s must be None or > 0 seconds, got {self.time_budget_s!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(
                f"TrainConfig.precision must be 'fp32' or 'bf16' (resolve 'auto' with "
                f"nucseg_lib.machine.resolve_precision), got {self.precision!r}"
            )
        loss = make_loss(self.loss)  # unknown or malformed loss specifications fail here, before any training
        for term in getattr(loss, "terms", [loss]):
            if hasattr(term, "n_pixels"):
                term.n_pixels(self.patch_size**2)  # a K larger than a patch fails here

    @property
    def out_channels(self) -> int:
        return n_classes(self.loss)

    def key(self) -> str:
        """Short hash of the configuration (the cache key of a model folder)."""
        fields = asdict(self)
        if not fields["ema"]:  # models trained before the weight average existed keep their keys
            del fields["ema"]
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


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
        self.geometry = v2.Compose(
            [
                v2.RandomAffine(degrees=180, scale=AUGMENT_SCALE, interpolation=v2.InterpolationMode.BILINEAR),
                v2.CenterCrop(patch_size),
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
            ]
        )

    def _crop(self, rng, i: int, size: int):
        img, lab = self.images[i], self.labels[i]
        h, w = img.shape
        ph, pw = max(0, size - h), max(0, size - w)
        if ph or pw:
            pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
            img, lab = np.pad(img, pad, mode="reflect"), np.pad(lab, pad, mode="reflect")
            h, w = img.shape
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        return img[y : y + size, x : x + size], lab[y : y + size, x : x + size]

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
    if not samples:
        return float("nan")
    return float(np.mean(pixel_dices(model, samples, device, tile)))


def pixel_dices(model, samples: Sequence[Sample], device=None, tile: int | None = 1024) -> np.ndarray:
    """Pixel Dice of the thresholded foreground (p > 0.5) of each sample, at the samples' scale (notebook 02's
    score; ``tile`` as in :func:`~nucseg_lib.inference.predict_probabilities`)."""
    from ..inference import foreground_probability, predict_probabilities
    from ..metrics import dice

    return np.array(
        [
            dice(s.labels > 0, foreground_probability(predict_probabilities(model, s.image, tile, device=device)) > 0.5)
            for s in samples
        ]
    )


def average_decay(decay: float, step: int) -> float:
    """The decay to apply at training step ``step`` (1, 2, ...) so that the weight average is the mean of the
    weights after steps 1 to ``step``, weighted ``decay ** (step - i)``, with no share of the initial weights.

    An average started from the initial weights with a constant ``decay`` keeps ``decay ** step`` of them
    (at 0.995: 37% after 200 steps, 2% after 800, 0.03% after 1600): a snapshot of a short training would show
    the untrained network more than the trained one. Normalising by the weights' sum (as Adam corrects its
    moments) removes that share: ``decay * (1 - decay ** (step - 1)) / (1 - decay ** step)``, 0 at the first
    step (the average becomes the weights), tending to ``decay``.
    """
    if step < 1:
        raise ValueError(f"step counts from 1, got {step}")
    return decay * (1.0 - decay ** (step - 1)) / (1.0 - decay**step)


def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float):
    """One step of the exponential moving average: ``average <- decay * average + (1 - decay) * model``.

    Every floating-point entry of the state dict is averaged (weights and BatchNorm running
    statistics, so the two stay consistent); integer entries (batch counters) are copied.
    """
    with torch.no_grad():
        current = model.state_dict()
        for name, value in average.state_dict().items():
            if value.is_floating_point():
                value.lerp_(current[name], 1.0 - decay)
            else:
                value.copy_(current[name])


def train(
    config: TrainConfig,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    out_dir,
    device=None,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    snapshot_steps=(),
):
    """Train (or resume) a U-Net into ``out_dir``; returns ``(model, history DataFrame)``.

    ``snapshot_steps``: step counts (multiples of ``steps_per_epoch``) after which the weights
    are kept in ``snapshots/`` (see :func:`snapshots`); they do not change the training.
    ``stop_after_epoch`` ends the call early (after that epoch, without writing
    ``weights.pt``), to simulate an interruption in tests.

    Raises :class:`TrainingDiverged` when a loss or the validation Dice is not finite
    (``diverged.json`` records it, no weights are written), :class:`ModelFolderError` when
    ``out_dir`` holds another configuration's files or a corrupt checkpoint, and
    ``RuntimeError`` when no training step ran (a time budget spent before the first epoch).

    Parameters
    ----------
    config : TrainConfig
        Loss, initialisation, budget, patch size, precision, seed.
    train_samples, val_samples : sequence of Sample
        Training and validation images with their labels.
    out_dir : path
        The model folder (:mod:`~nucseg_lib.train.model_folder`): checkpoints, ``history.csv``, ``weights.pt``.
    device : torch.device, optional
        Default: a GPU when there is one, else the CPU.
    progress : bool
        A progress bar over the epochs.
    stop_after_epoch : int, optional
        Stop after this epoch, as an interruption would.
    snapshot_steps : sequence of int
        Step counts whose weights are kept.

    Returns
    -------
    (UNet, DataFrame)
        The trained model (eval mode) and the per-epoch history.
    """
    from tqdm import tqdm  # text bar: works in terminals, papermill and the rendered book alike

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = (
        pick_device(device if isinstance(device, str) else None) if not isinstance(device, torch.device) else device
    )
    snapshot_steps = check_snapshot_steps(snapshot_steps, config.steps_per_epoch, config.epochs)
    key = config.key()
    cfg_path, ckpt_path, div_path = out_dir / "config.json", out_dir / "checkpoint.pt", out_dir / "diverged.json"
    if cfg_path.exists():
        old_key = read_json(cfg_path).get("key")
        if old_key != key:
            raise ModelFolderError(
                f"{cfg_path}: this folder holds a model of another configuration (key {old_key}, "
                f"asked for {key}); train into another folder or delete this one"
            )
    if div_path.exists():
        raise TrainingDiverged(out_dir, read_json(div_path))
    if (out_dir / "weights.pt").is_file():  # finished (its checkpoint was removed then): load it, never train over it
        model, _, hist = load_trained(out_dir, device)
        return model, hist
    info = {
        **asdict(config),
        "key": key,
        "out_channels": config.out_channels,
        "train_images": [s.name for s in train_samples],
        "val_images": [s.name for s in val_samples],
    }
    write_json_atomic(info, cfg_path)

    torch.manual_seed(config.seed)
    model = build_model(config.out_channels, config.init, config.depth, config.decoder_base)
    model.to(device).to(memory_format=torch.channels_last)
    model.precision = config.precision  # predict_probabilities runs the model at this precision
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    average = copy.deepcopy(model) if config.ema else None  # the weight average (TrainConfig.ema)
    kept = model if average is None else average  # what is validated, snapshotted, saved and returned
    loss_fn = make_loss(config.loss).to(device)
    sampler = PatchSampler(train_samples, config.patch_size, config.out_channels, config.augment)
    history: list[dict] = []
    start = 0
    if ckpt_path.exists():
        ckpt = torch_load(ckpt_path, device)
        if ckpt.get("key", key) != key:
            raise ModelFolderError(
                f"{ckpt_path}: checkpoint of another configuration (key {ckpt.get('key')}, "
                f"asked for {key}); delete it to start again"
            )
        try:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            if average is not None:
                average.load_state_dict(ckpt["average"])
            history, start = list(ckpt["history"]), int(ckpt["epoch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelFolderError(
                f"{ckpt_path}: not a checkpoint of this model ({type(exc).__name__}: "
                f"{str(exc)[:300]}); delete it to start again"
            ) from exc
    spent = sum(h["seconds"] for h in history)
    total = config.epochs * config.steps_per_epoch
    bar = tqdm(
        total=total,
        initial=start * config.steps_per_epoch,
        desc=f"train {config.loss}",
        disable=not progress,
        mininterval=2.0,
        unit="step",
    )

    def diverged(epoch: int, step: int, what: str, losses: list):
        bar.close()
        record = {
            "epoch": epoch + 1,
            "step": epoch * config.steps_per_epoch + step,
            "what": what,
            "last_losses": [float(v) for v in losses[-5:]],
            "key": key,
        }
        write_json_atomic(record, div_path)
        return TrainingDiverged(out_dir, record)

    for epoch in range(start, config.epochs):
        if config.time_budget_s is not None and spent >= config.time_budget_s:
            break
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)
        rng = np.random.default_rng((config.seed, epoch))
        model.train()
        losses = []
        for step in range(1, config.steps_per_epoch + 1):
            x, y = sampler.batch(rng, config.batch_size)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with autocast(device, config.precision):
                logits = model(x)
            loss = loss_fn(logits.float(), y.to(device))
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise diverged(epoch, step, f"training loss {losses[-1]}", losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                update_average(average, model, average_decay(config.ema, epoch * config.steps_per_epoch + step))
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", refresh=False)
        try:
            val = validation_dice(kept, val_samples, device)
        except ValueError as exc:  # non-finite probabilities
            raise diverged(epoch, config.steps_per_epoch, f"validation: {exc}", losses) from None
        seconds = time.perf_counter() - t0
        spent += seconds
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_dice": val, "seconds": seconds})
        steps_done = (epoch + 1) * config.steps_per_epoch
        if steps_done in snapshot_steps:  # before the checkpoint: a resumed run never misses one
            snap = out_dir / "snapshots" / f"step-{steps_done:06d}"
            snap.parent.mkdir(exist_ok=True)
            save_atomic(kept.state_dict(), snap.with_suffix(".pt"))
            write_json_atomic(
                {"steps": steps_done, "train_seconds": spent, "val_dice": val, "precision": config.precision},
                snap.with_suffix(".json"),
            )
        save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                **({"average": average.state_dict()} if average is not None else {}),
                "history": history,
                "epoch": epoch + 1,
                "key": key,
            },
            ckpt_path,
        )
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            bar.close()
            return kept, pd.DataFrame(history)
    bar.close()
    if not history:
        raise RuntimeError(
            f"{out_dir}: no training step ran (time budget {config.time_budget_s} s spent before the "
            f"first epoch); nothing is saved as a trained model"
        )
    hist = pd.DataFrame(history, columns=["epoch", "train_loss", "val_dice", "seconds"])
    hist.to_csv(out_dir / "history.csv", index=False)
    save_atomic(kept.state_dict(), out_dir / "weights.pt")
    # finished: weights.pt is the model; the checkpoint (raw weights, Adam's two moments, the average: three to four
    # times weights.pt) is of no more use, and without it a study's model folders take a third to a quarter of the disk
    ckpt_path.unlink(missing_ok=True)
    return kept, hist


def model_folder(models_dir, config: TrainConfig, name: str | None = None) -> Path:
    """Cache folder of a configuration: ``<models_dir>/<name>-<config hash>``."""
    safe = (name or config.loss).replace("/", "_").replace(":", "_").replace("*", "x")
    return Path(models_dir) / f"{safe}-{config.key()}"


def train_or_load(
    config: TrainConfig,
    train_samples,
    val_samples,
    models_dir,
    name: str | None = None,
    device=None,
    progress: bool = True,
    snapshot_steps=(),
):
    """Reuse the trained model of this exact configuration if its folder has weights, else train (or resume) it.

    Parameters
    ----------
    config : TrainConfig
        The configuration; its :meth:`TrainConfig.key` names the folder (with ``name``).
    train_samples, val_samples : sequence of Sample
        Training and validation images.
    models_dir : path
        The run's ``models/`` folder.
    name : str, optional
        Readable prefix of the folder name (e.g. ``unet_dice``).
    device, progress, snapshot_steps
        As for :func:`train`.

    Returns
    -------
    (UNet, DataFrame, Path)
        The model, its history and its folder.
    """
    folder = model_folder(models_dir, config, name)
    # train() itself loads a finished folder (weights.pt) instead of training
    model, hist = train(config, train_samples, val_samples, folder, device, progress, snapshot_steps=snapshot_steps)
    model.eval()
    return model, hist, folder
