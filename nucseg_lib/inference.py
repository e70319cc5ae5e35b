"""Tiled (sliding-window) prediction of probability maps over whole images of any size."""

from __future__ import annotations

import numpy as np
import torch

from .data.common import normalize_percentile
from .machine import autocast

MIN_SIDE = 16  # pixels: the encoder's total stride; smaller images hold no nucleus at the study's scales


def _window(size: int, overlap: int) -> np.ndarray:
    """1D blending weight: linear ramps over ``overlap`` pixels at both ends, 1 in the middle."""
    w = np.ones(size, np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        w[:overlap] = ramp
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


@torch.no_grad()
def predict_probabilities(
    model,
    image: np.ndarray,
    tile: int | None = 1024,
    overlap: int = 64,
    device=None,
    normalize: bool = True,
    batch_size: int = 4,
    precision: str | None = None,
) -> np.ndarray:
    """Probability maps (C, H, W), float32, for a 2D ``image``.

    The image is percentile-normalized (unless ``normalize=False``), cut into
    ``tile`` x ``tile`` windows overlapping by ``overlap`` pixels, predicted in
    batches, and blended with linear ramps so tile seams do not show. ``tile=None``
    predicts the whole image in one pass. ``precision`` (``'fp32'`` or ``'bf16'``; default: the
    precision the model was trained at, its ``precision`` attribute) sets the autocast.

    Tiles cost their overlap twice: a 1024x1024 image in 512-pixel tiles is 9 tiles, 2.4x
    the pixels, and took 2.2 s per megapixel on 2 CPU cores against 0.86 s in one pass
    (``benchmarks/bench_unet.py``). Hence the default of 1024: images up to a megapixel go
    in one pass, larger ones in tiles that keep memory bounded.

    Parameters
    ----------
    model : torch.nn.Module
        A U-Net (:func:`~nucseg_lib.model.build_model`).
    image : float array (H, W)
        The image (raw intensities, or normalized with ``normalize=False``); any size.
    tile, overlap : int
        Tile side and overlap in pixels; ``tile=None``: one pass.
    device : torch.device, optional
        Default: the model's.
    normalize : bool
        Percentile-normalize ``image`` first (1 and 99.8).
    batch_size : int
        Tiles per forward pass.
    precision : str, optional
        ``'fp32'`` or ``'bf16'``; default the model's.

    Returns
    -------
    float32 array (C, H, W)
        Softmax probabilities (3 classes) or the sigmoid (1 class), at the image's size.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        hint = (
            " (an RGB or multi-channel image: pass the nuclear channel, e.g. image[..., 0], or read it with "
            "nucseg_lib.data.read_image(path, channel=k))"
            if image.ndim == 3
            else ""
        )
        raise ValueError(f"expected a 2D image (H, W), got shape {image.shape}{hint}")
    if min(image.shape) < MIN_SIDE:
        raise ValueError(
            f"image of shape {image.shape} is smaller than {MIN_SIDE} pixels on a side: no nucleus "
            f"fits at the study's scales; check the axes, or crop/upscale to at least {MIN_SIDE} pixels"
        )
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise ValueError(f"image dtype {image.dtype} is not a real number type")
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    if tile is not None and (tile < MIN_SIDE or tile <= overlap):
        raise ValueError(
            f"tile = {tile} must be at least {MIN_SIDE} pixels and larger than overlap = {overlap}; "
            f"use e.g. tile=1024, overlap=64 (or tile=None for one pass)"
        )
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0 pixels, got {overlap}")
    device = device or next(model.parameters()).device
    precision = precision or getattr(model, "precision", "fp32")
    x = normalize_percentile(image) if normalize else image.astype(np.float32)
    was_training = model.training
    model.eval()
    h, w = x.shape
    if tile is None or (h <= tile and w <= tile):
        t = torch.from_numpy(x)[None, None].to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out = model.probabilities(model(t).float())[0].cpu().numpy()
        model.train(was_training)
        return out
    th, tw = min(tile, h), min(tile, w)
    step_h, step_w = max(1, th - overlap), max(1, tw - overlap)
    weight = np.outer(_window(th, overlap if h > th else 0), _window(tw, overlap if w > tw else 0))
    acc = None
    norm = np.zeros((h, w), np.float32)
    coords = [(i, j) for i in _starts(h, th, step_h) for j in _starts(w, tw, step_w)]
    for b in range(0, len(coords), batch_size):
        chunk = coords[b : b + batch_size]
        batch = np.stack([x[i : i + th, j : j + tw] for i, j in chunk])[:, None]
        t = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            probs = model.probabilities(model(t).float()).cpu().numpy()
        if acc is None:
            acc = np.zeros((probs.shape[1], h, w), np.float32)
        for (i, j), p in zip(chunk, probs):
            acc[:, i : i + th, j : j + tw] += p * weight
            norm[i : i + th, j : j + tw] += weight
    model.train(was_training)
    return acc / np.maximum(norm, 1e-8)


def foreground_probability(probs: np.ndarray) -> np.ndarray:
    """Nucleus probability (H, W) from a 1-channel map or a 3-class map (interior + boundary).

    NaN or infinite values (a diverged model) raise ValueError instead of giving an empty mask.
    """
    from .instances import finite_probabilities

    probs = finite_probabilities(probs, ndim=3)
    return probs[0] if probs.shape[0] == 1 else probs[1] + probs[2]
