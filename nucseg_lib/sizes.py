"""Nucleus sizes, measured one way everywhere.

- the **typical size** of nuclei is their median *equivalent diameter*, sqrt(4 area / pi), the
  diameter of the disc with the nucleus's area (notebook 1's histogram, the scale recorded with an
  exported model, ``nucseg predict``'s estimate);
- the **largest size** is the largest *maximum Feret diameter*, a nucleus's longest extent (the
  size the effective receptive field must cover: notebooks 1 and 7).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent diameter sqrt(4 area / pi) of every labelled object, in pixels (label order)."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    return np.sqrt(4 * areas[areas > 0] / np.pi)


def median_diameter(label_images: Sequence[np.ndarray]) -> float:
    """Median equivalent diameter (pixels) over all nuclei of ``label_images``; NaN when there are none."""
    d = np.concatenate([equivalent_diameters(lab) for lab in label_images] or [np.array([])])
    return float(np.median(d)) if len(d) else float("nan")


def largest_nucleus_diameter(label_images: Sequence[np.ndarray]) -> float:
    """Largest maximum Feret diameter (pixels) of any nucleus in the label images: its longest extent."""
    from skimage.measure import regionprops

    return float(max((r.feret_diameter_max for lab in label_images for r in regionprops(lab)), default=0.0))
