"""Training targets derived from instance labels."""

from __future__ import annotations

import numpy as np

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def foreground(labels: np.ndarray) -> np.ndarray:
    """Binary cell/background target (float32, 1 = nucleus), as the paper aggregates instances."""
    return (np.asarray(labels) > 0).astype(np.float32)


def three_class(labels: np.ndarray) -> np.ndarray:
    """Class map (int64): 0 background, 1 nucleus interior, 2 nucleus boundary.

    The boundary class is the inner edge of each nucleus (``find_boundaries(mode='inner')``),
    so two touching nuclei are separated by a 2-pixel seam of boundary pixels.
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    out = (labels > 0).astype(np.int64)
    out[find_boundaries(labels, mode="inner") & (labels > 0)] = BOUNDARY
    return out


def make_target(labels: np.ndarray, out_channels: int) -> np.ndarray:
    """Target for a model with ``out_channels`` outputs (1: binary, 3: three-class)."""
    return foreground(labels) if out_channels == 1 else three_class(labels)
