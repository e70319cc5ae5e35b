"""Synthetic 2D fluorescence nuclei with exact instance labels (the offline default dataset).

What it is: images drawn from a simple physical model of a widefield
fluorescence image of stained nuclei, so that every experiment runs without
downloads and every label is exact:

1. nuclei are star-convex shapes: an ellipse (random size, eccentricity and
   orientation) whose radius is perturbed by low-order Fourier terms, so
   shapes are irregular but mostly convex;
2. nuclei are placed alone or in clusters; a new nucleus may overlap earlier
   ones by a little, and the overlap stays with the earlier one, which gives
   touching nuclei with a shared boundary (the hard case of the paper);
3. intensity = per-nucleus brightness x chromatin texture (smoothed noise,
   with a few bright chromocentres), with a faint dim seam where nuclei touch;
4. an uneven background (smooth random field plus a linear gradient);
5. optical blur (Gaussian point spread function, sigma in pixels);
6. Poisson-Gaussian noise: photon shot noise at a condition's photon count
   plus Gaussian read noise, on a 12-bit-like scale.

Conditions (the ``group`` of each sample) mimic the paper's five pathological
conditions, which differ in density, size and signal-to-noise: ``sparse``,
``clustered``, ``small_dense``, ``large_textured`` and ``low_snr``.

Images are deterministic for a given seed: sample ``j`` of split ``s`` and
condition ``c`` uses the seed sequence ``(seed, split index, condition index, j)``.
Radii and sizes are in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .common import Sample

NAME = "synthetic"


@dataclass(frozen=True)
class Condition:
    """Parameters of one synthetic condition (lengths in pixels, for a 256 x 256 image)."""

    n_nuclei: tuple[int, int]  # range of nucleus count per 256x256 area
    radius: tuple[float, float]  # mean radius range
    eccentricity: tuple[float, float]  # ratio of minor to major axis range
    cluster_fraction: float  # fraction of nuclei placed next to another
    photons: float  # expected photons at full brightness
    texture: float  # amplitude of chromatin texture (0..1)
    blur: float  # PSF sigma


CONDITIONS: dict[str, Condition] = {
    "sparse": Condition((8, 14), (10, 14), (0.75, 1.0), 0.2, 400, 0.25, 1.2),
    "clustered": Condition((18, 28), (9, 13), (0.7, 1.0), 0.85, 300, 0.3, 1.4),
    "small_dense": Condition((35, 50), (5, 7.5), (0.6, 1.0), 0.6, 250, 0.2, 1.0),
    "large_textured": Condition((6, 10), (15, 20), (0.6, 0.95), 0.5, 350, 0.55, 1.5),
    "low_snr": Condition((14, 22), (8, 12), (0.65, 1.0), 0.5, 25, 0.3, 1.6),
}


def _shape(rng, r_mean: float, ecc: tuple[float, float], n_angles: int = 64) -> np.ndarray:
    """Polygon (n_angles x 2, in pixels, centred on 0) of one irregular nucleus."""
    a = rng.uniform(0.85, 1.15) * r_mean
    b = a * rng.uniform(*ecc)
    theta = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    r = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    for k in (2, 3, 4, 5):
        r *= 1 + rng.normal(0, 0.05 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    phi = rng.uniform(0, np.pi)
    x, y = r * np.cos(theta), r * np.sin(theta)
    return np.stack([x * np.cos(phi) - y * np.sin(phi), x * np.sin(phi) + y * np.cos(phi)], axis=1)


def _labels(rng, shape: tuple[int, int], cond: Condition) -> np.ndarray:
    from skimage.draw import polygon

    h, w = shape
    area_scale = h * w / 256**2
    n_target = int(rng.integers(*cond.n_nuclei) * area_scale) + 1
    r_mean = rng.uniform(*cond.radius)
    labels = np.zeros(shape, np.int32)
    centres: list[tuple[float, float, float]] = []
    tries = 0
    while len(centres) < n_target and tries < 40 * n_target:
        tries += 1
        r_this = r_mean * rng.uniform(0.8, 1.2)
        if centres and rng.random() < cond.cluster_fraction:
            cy, cx, cr = centres[rng.integers(len(centres))]
            ang = rng.uniform(0, 2 * np.pi)
            dist = (cr + r_this) * rng.uniform(0.8, 1.0)
            cy, cx = cy + dist * np.sin(ang), cx + dist * np.cos(ang)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        poly = _shape(rng, r_this, cond.eccentricity)
        rr, cc = polygon(poly[:, 1] + cy, poly[:, 0] + cx, shape)
        if rr.size < 12:
            continue
        occupied = labels[rr, cc] > 0
        if occupied.mean() > 0.12:
            continue
        keep = ~occupied
        labels[rr[keep], cc[keep]] = len(centres) + 1
        centres.append((cy, cx, r_this))
    # drop fragments that an overlap cut off (keep the largest piece of each label)
    from skimage.measure import label as cc_label
    from skimage.segmentation import relabel_sequential

    out = np.zeros_like(labels)
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        pieces = cc_label(labels[sl] == lab, connectivity=1)
        if pieces.max() == 0:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        largest = pieces == (np.argmax(sizes) + 1)
        if largest.sum() >= 12:
            out[sl][largest] = lab
    return relabel_sequential(out)[0].astype(np.int32)


def _image(rng, labels: np.ndarray, cond: Condition) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    h, w = labels.shape
    n = labels.max()
    brightness = np.concatenate([[0.0], rng.uniform(0.55, 1.0, n)])
    texture = ndi.gaussian_filter(rng.normal(size=(h, w)), 1.5)
    texture /= texture.std() + 1e-9
    spots = ndi.gaussian_filter((rng.random((h, w)) < 0.004).astype(float), 1.2)
    spots /= spots.max() + 1e-9
    signal = brightness[labels] * np.clip(1 + cond.texture * (0.5 * texture + 1.2 * spots), 0.2, None)
    seam = (
        find_boundaries(labels, mode="inner")
        & (ndi.maximum_filter(labels, 3) != ndi.minimum_filter(np.where(labels == 0, labels.max() + 1, labels), 3))
        & (labels > 0)
    )
    signal = signal * np.where(seam, 0.75, 1.0)
    signal = ndi.gaussian_filter(signal, cond.blur)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    field = ndi.gaussian_filter(rng.normal(size=(h, w)), max(h, w) / 6)
    field = (field - field.min()) / (np.ptp(field) + 1e-9)
    background = 0.04 + 0.05 * field + 0.03 * (rng.uniform(-1, 1) * yy + rng.uniform(-1, 1) * xx)
    expected = cond.photons * (signal + np.clip(background, 0.005, None))
    counts = rng.poisson(expected).astype(np.float64) + rng.normal(0, 2.0, size=(h, w))
    return (100 + 8 * counts).astype(np.float32)  # camera offset and gain, arbitrary units


def generate(
    condition: str = "clustered", size: int | tuple[int, int] = 256, seed=0, name: str | None = None
) -> Sample:
    """One synthetic image and its exact labels; ``seed`` may be an int or a seed sequence tuple."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {sorted(CONDITIONS)}")
    shape = (size, size) if np.isscalar(size) else tuple(size)
    rng = np.random.default_rng(seed)
    cond = CONDITIONS[condition]
    labels = _labels(rng, shape, cond)
    image = _image(rng, labels, cond)
    return Sample(image, labels, name=name or f"synthetic/{condition}", group=condition, dataset=NAME)


def load(
    split: str = "all",
    n_train: int = 40,
    n_test: int = 10,
    size: int = 256,
    seed: int = 0,
    conditions: tuple[str, ...] | None = None,
) -> list[Sample]:
    """``n_train`` training and ``n_test`` test images, conditions assigned in turn.

    The two splits use disjoint seed streams, so changing ``n_test`` never changes a training image.
    """
    conditions = tuple(conditions or CONDITIONS)
    samples = []
    for s_idx, (sp, n) in enumerate([("train", n_train), ("test", n_test)]):
        if split not in ("all", sp):
            continue
        for i in range(n):
            c_idx = i % len(conditions)
            j = i // len(conditions)
            smp = generate(conditions[c_idx], size, seed=(seed, s_idx, c_idx, j), name=f"{conditions[c_idx]}-{sp}-{j}")
            smp.meta["split"] = sp
            samples.append(smp)
    return samples
