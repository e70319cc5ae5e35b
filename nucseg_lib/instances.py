"""From probability maps to instance labels: the paper's oracle, connected components, watershed.

- :func:`oracle_propagation` is the paper's section III.6 label propagation. It
  uses the ground-truth labels, so it is an **oracle upper bound**, not a
  method that could run on new images.
- :func:`connected_components` and :func:`watershed_boundary` use no ground truth.

Probability maps with NaN or infinite values are refused (ValueError): they come from a
diverged model, and would otherwise give empty instances without a word.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def finite_probabilities(probs, ndim: int) -> np.ndarray:
    """``probs`` as an array, or a ValueError if it has the wrong number of axes or NaN/inf values."""
    probs = np.asarray(probs)
    if probs.ndim != ndim:
        raise ValueError(f"expected a probability map with {ndim} axes, got shape {probs.shape}")
    if np.issubdtype(probs.dtype, np.floating) and not np.isfinite(probs).all():
        raise ValueError(
            f"probability map has {int((~np.isfinite(probs)).sum())} NaN or infinite values "
            f"(a diverged model?); refusing to turn it into instances"
        )
    return probs


def oracle_propagation(pred_mask: np.ndarray, truth_labels: np.ndarray) -> np.ndarray:
    """The paper's ground-truth label propagation (oracle; needs the ground truth).

    1. ``mask1 = pred_mask * truth_labels``: predicted foreground pixels that lie
       inside a ground-truth nucleus keep its label;
    2. ``mask2``: ``mask1`` expanded (skimage ``expand_labels``) until it covers the
       image, so every pixel takes the label of the nearest labelled pixel;
    3. ``mask2 * pred_mask``: background predictions are removed.

    The number of labels never exceeds the number of ground-truth nuclei, and
    touching nuclei that the prediction clumps are split along the ground truth.
    """
    from skimage.segmentation import expand_labels

    mask = finite_probabilities(pred_mask, ndim=2) > 0
    truth = np.asarray(truth_labels)
    if mask.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {mask.shape}, truth {truth.shape}")
    mask1 = np.where(mask, truth, 0)
    if mask1.max() == 0:
        return np.zeros_like(truth, dtype=np.int32)
    mask2 = expand_labels(mask1, distance=int(np.hypot(*mask.shape)) + 1)
    return np.where(mask, mask2, 0).astype(np.int32)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects smaller than ``min_size`` pixels and relabel 1..n."""
    from skimage.segmentation import relabel_sequential

    if min_size <= 0 or labels.max() == 0:
        return labels.astype(np.int32)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return relabel_sequential(np.where(keep[labels], labels, 0))[0].astype(np.int32)


def connected_components(prob: np.ndarray, threshold: float = 0.5, min_size: int = 0) -> np.ndarray:
    """Label 4-connected regions of ``prob > threshold`` (touching nuclei stay merged).

    Parameters
    ----------
    prob : float array (H, W)
        Foreground probability (NaN or inf refused).
    threshold : float
        Foreground is ``prob > threshold``.
    min_size : int
        Objects smaller than this many pixels are dropped.

    Returns
    -------
    int32 array (H, W)
        Labels 1..n, 0 = background.

    Examples
    --------
    >>> p = np.zeros((6, 9)); p[1:4, 1:4] = 0.9; p[1:4, 4:7] = 0.8   # two touching squares
    >>> int(connected_components(p, 0.5).max())                        # one object: merged
    1
    """
    from skimage.measure import label

    prob = finite_probabilities(prob, ndim=2)
    return remove_small(label(prob > threshold, connectivity=1).astype(np.int32), min_size)


def watershed_boundary(
    probs: np.ndarray,
    seed_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    h: float | None = 2.0,
    min_seed_size: int = 4,
    min_size: int = 0,
) -> np.ndarray:
    """Instances from a 3-class map (background, interior, boundary), no ground truth needed.

    1. interior mask: ``P(interior) > seed_threshold``, regions under ``min_seed_size``
       pixels dropped;
    2. seeds: with ``h=None``, one seed per connected interior region; otherwise the
       ``h``-maxima (in pixels) of the smoothed distance transform of the interior mask,
       so that interior regions joined by a thin neck (touching nuclei whose boundary
       seam was not predicted everywhere) still get one seed per nucleus;
    3. each seed grows by watershed over ``P(boundary) - P(interior)``, limited to the
       foreground ``P(interior) + P(boundary) > mask_threshold``.

    The defaults are the values that :func:`tune_watershed` picked on the validation
    images of the Coelho reference run; tune them again for other data.

    Parameters
    ----------
    probs : float array (3, H, W)
        Softmax probabilities of background, interior and boundary.
    seed_threshold, mask_threshold : float
        Interior threshold of the seeds; foreground threshold of the grown regions.
    h : float or None
        Height (pixels of distance) of the maxima that become seeds; None: one seed per
        interior region.
    min_seed_size, min_size : int
        Smallest seed region and smallest final object, in pixels.

    Returns
    -------
    int32 array (H, W)
        Instance labels, 0 = background.

    Examples
    --------
    >>> classes = np.zeros((6, 9), int)                       # 0 background, 1 interior, 2 boundary
    >>> classes[1:5, 1:4] = classes[1:5, 5:8] = 1; classes[1:5, 4] = 2   # two nuclei, a seam between
    >>> probs = np.stack([classes == k for k in range(3)]).astype(float)
    >>> int(watershed_boundary(probs, h=None).max())          # two objects, where components give one
    2
    """
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    probs = finite_probabilities(probs, ndim=3)
    if probs.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) probability map, got shape {probs.shape}")
    p_int, p_bnd = probs[1], probs[2]
    interior = remove_small(label(p_int > seed_threshold, connectivity=1).astype(np.int32), min_seed_size) > 0
    if h is None:
        seeds = label(interior, connectivity=1)
    else:
        dist = ndi.gaussian_filter(ndi.distance_transform_edt(interior), 1.0)
        seeds = label(h_maxima(dist, h).astype(bool) & interior)
    mask = (p_int + p_bnd) > mask_threshold
    return remove_small(watershed(p_bnd - p_int, seeds, mask=mask | (seeds > 0)).astype(np.int32), min_size)


def tune_watershed(probs: list, truths: list, grid: dict | None = None, thresh: float = 0.5):
    """Pick :func:`watershed_boundary` parameters that maximise pooled F1 at IoU ``thresh``.

    The analogue of StarDist's ``optimize_thresholds``: run it on **validation** images
    only, never on the test images. ``grid`` maps parameter names to candidate values
    (default: ``seed_threshold`` 0.5/0.6/0.7 x ``h`` none/0.5/1/2/3 pixels). Returns
    ``(best_params, table)``, the table holding pooled F1, merged and split counts for
    every combination, best first.

    Parameters
    ----------
    probs : list of float arrays (3, H, W)
        The U-Net's probability maps of the validation images.
    truths : list of int arrays (H, W)
        Their ground-truth instance labels, at the same size.
    grid : dict, optional
        Parameter name -> candidate values (keyword arguments of :func:`watershed_boundary`).
    thresh : float
        IoU threshold of the F1 that is maximised.

    Returns
    -------
    (dict, DataFrame)
        The best parameters and the table of all candidates.
    """
    grid = grid or {"seed_threshold": [0.5, 0.6, 0.7], "h": [None, 0.5, 1.0, 2.0, 3.0]}
    return tune_instances(watershed_boundary, probs, truths, grid, thresh)


def tune_components(probs: list, truths: list, grid: dict | None = None, thresh: float = 0.5):
    """Pick the foreground threshold of :func:`connected_components` that maximises pooled F1 at IoU
    ``thresh`` on **validation** images.

    Parameters
    ----------
    probs : list of float arrays (H, W)
        Foreground probabilities of the validation images.
    truths : list of int arrays (H, W)
        Their ground-truth instance labels.
    grid : dict, optional
        Parameter name -> candidate values (default: ``threshold`` 0.3-0.7).
    thresh : float
        IoU threshold of the F1 that is maximised.

    Returns
    -------
    (dict, DataFrame)
        The best parameters and the table of all candidates, best first.
    """
    grid = grid or {"threshold": [0.3, 0.4, 0.5, 0.6, 0.7]}
    return tune_instances(connected_components, probs, truths, grid, thresh)


def tune_instances(make_instances, probs: list, truths: list, grid: dict, thresh: float = 0.5):
    """Grid search of ``make_instances(prob, **params)`` by pooled F1 at IoU ``thresh``; ``(best, table)``."""
    import itertools

    import pandas as pd

    from .metrics import evaluate_instances, pool

    keys = list(grid)
    rows = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        preds = [make_instances(p, **params) for p in probs]
        per_image = evaluate_instances(truths, preds, [str(i) for i in range(len(preds))], thresholds=(thresh,))
        pooled = pool(per_image).iloc[0]
        rows.append(
            {**params, "f1": pooled.f1, "merged": int(per_image.merged.sum()), "split": int(per_image.split.sum())}
        )
    table = pd.DataFrame(rows).sort_values("f1", ascending=False, kind="stable").reset_index(drop=True)
    best = {k: (None if pd.isna(table.loc[0, k]) else float(table.loc[0, k])) for k in keys}
    return best, table
