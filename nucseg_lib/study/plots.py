"""Figures shared by the notebooks: images with outlines, side-by-side panels."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..data.common import normalize_percentile


def outlines(labels: np.ndarray) -> np.ndarray:
    """Boolean map of instance boundaries (inner edges), for drawing outlines."""
    from skimage.segmentation import find_boundaries

    return find_boundaries(np.asarray(labels), mode="inner")


def show_image(ax, image, title: str = ""):
    """Show a percentile-normalized grey image with its axes labelled in pixels."""
    ax.imshow(np.clip(normalize_percentile(image), 0, 1), cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (px)", fontsize=8)
    ax.set_ylabel("y (px)", fontsize=8)
    ax.tick_params(labelsize=7)


def overlay(
    ax,
    image,
    label_sets: Sequence[np.ndarray],
    colors=("lime", "magenta", "cyan", "yellow"),
    names: Sequence[str] = (),
    title: str = "",
):
    """Image with the outlines of several label images in different colours (legend from ``names``)."""
    from matplotlib.patches import Patch

    show_image(ax, image, title)
    for lab, col in zip(label_sets, colors):
        edge = outlines(lab)
        rgba = np.zeros(edge.shape + (4,))
        rgba[edge] = plt.matplotlib.colors.to_rgba(col)
        ax.imshow(rgba, interpolation="nearest")
    if names:
        ax.legend(
            handles=[Patch(color=c, label=n) for n, c in zip(names, colors)],
            fontsize=7,
            loc="lower right",
            framealpha=0.7,
        )


def label_cmap_image(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """RGB image with a random colour per instance (background black)."""
    rng = np.random.default_rng(seed)
    colors = np.vstack([[0, 0, 0], rng.uniform(0.2, 1, (int(labels.max()), 3))])
    return colors[labels]


def panels(
    images: Sequence[np.ndarray], titles: Sequence[str], cmaps=None, ncols: int | None = None, size: float = 3.0
):
    """A row (or grid) of images with titles; returns the figure. Axes are in pixels."""
    n = len(images)
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.axis("off")
            continue
        cmap = (cmaps[k] if cmaps else None) or "gray"
        ax.imshow(images[k], cmap=cmap, interpolation="nearest")
        ax.set_title(titles[k], fontsize=9)
        ax.set_xlabel("x (px)", fontsize=8)
        ax.set_ylabel("y (px)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def one_per_group(samples: Sequence) -> list:
    """The first sample of each group (e.g. each cell line), groups in sorted order: the examples a figure shows."""
    first = {}
    for s in samples:
        first.setdefault(s.group, s)
    return [first[g] for g in sorted(first)]


def crop_box(mask: np.ndarray, margin: int = 8) -> tuple[slice, slice]:
    """The (rows, columns) slices of the bounding box of ``mask``, grown by ``margin`` pixels on each side
    and clipped to the image: ``image[crop_box(m)]`` zooms in on where ``m`` is true."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("crop_box: the mask is empty, there is nothing to zoom in on")
    h, w = mask.shape
    return (
        slice(max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin + 1, h)),
        slice(max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin + 1, w)),
    )
