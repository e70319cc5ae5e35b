"""Segmentation metrics: pixel Dice, the paper's boundary Dice, and instance matching.

Instance matching builds on :func:`stardist.matching.matching` (the field's
reference: optimal one-to-one matching at an IoU threshold) and adds what it
lacks: counts of merged and split nuclei, pooling over images from per-image
counts, aggregation per group, bootstrap confidence intervals, and tidy tables.

Conventions
-----------
- IoU thresholds are 0.5, 0.55, ..., 0.95 (:data:`IOU_THRESHOLDS`).
- ``accuracy`` is TP / (TP + FP + FN), which StarDist and the Data Science Bowl
  call average precision; ``ap@0.5:0.95`` is its mean over the thresholds.
- ``pq`` is panoptic quality, sum of matched IoUs / (TP + FP/2 + FN/2).
- Pooled metrics over a dataset sum TP, FP, FN and matched IoUs over images
  first (as ``stardist.matching.matching_dataset`` does), then form ratios.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))
COUNT_COLUMNS = ("tp", "fp", "fn", "n_true", "n_pred", "sum_iou")


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Pixel Dice 2|A∩B| / (|A| + |B|) of two masks (nonzero = foreground).

    Parameters
    ----------
    truth, pred : array (H, W)
        Masks or label images of the same shape; nonzero pixels are foreground.

    Returns
    -------
    float
        Dice in [0, 1]. Two empty masks agree perfectly: 1.0 by definition.

    Examples
    --------
    >>> a = np.zeros((4, 4), bool); a[:2] = True     # 8 pixels
    >>> b = np.zeros((4, 4), bool); b[1:3] = True    # 8 pixels, 4 of them shared
    >>> dice(a, b)
    0.5
    """
    a = np.asarray(truth) > 0
    b = np.asarray(pred) > 0
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    denom = a.sum() + b.sum()
    if denom == 0:
        return 1.0
    return float(2.0 * np.logical_and(a, b).sum() / denom)


def boundary_band(mask: np.ndarray, width: int = 7, sigma: float = 1.0) -> np.ndarray:
    """Canny edges of a binary mask, dilated with a ``width`` x ``width`` square: the band of :func:`boundary_dice`.

    Parameters
    ----------
    mask : array (H, W)
        Binary mask (or instance labels: binarized, nonzero is foreground).
    width : int
        Side of the square, in pixels (the report's 7).
    sigma : float
        Gaussian of the Canny detector, in pixels.

    Returns
    -------
    bool array (H, W)
        The band.
    """
    from scipy import ndimage as ndi
    from skimage.feature import canny

    edges = canny(np.asarray(mask > 0, dtype=float), sigma=sigma)
    return ndi.binary_dilation(edges, structure=np.ones((width, width), bool))


def boundary_dice(truth: np.ndarray, pred: np.ndarray, width: int = 7, sigma: float = 1.0) -> float:
    """The paper's boundary Dice: Dice of the Canny-edge bands of the two masks.

    Definition used here (section III.4 of the paper): take the binary
    foreground of the ground truth and of the prediction, find edges of each
    with the Canny detector (Gaussian ``sigma`` in pixels), dilate each edge
    map with a ``width`` x ``width`` square (7 x 7 in the paper), and return
    the pixel Dice of the two bands. Instance labels are binarized first, so
    the seam between two touching nuclei counts only if the mask shows it.

    Alternative reading: dilate only the ground-truth edges into a band and
    compute the Dice of the two *masks* restricted to that band. That measures
    mask agreement near the boundary rather than edge agreement; it is higher
    for the same prediction. We use the first reading because the paper says
    the boundaries themselves "have poor alignment".

    Parameters
    ----------
    truth, pred : arrays (H, W)
        Ground-truth and predicted masks or instance labels, of one shape.
    width, sigma : int, float
        Band width and Canny sigma in pixels (:func:`boundary_band`).

    Returns
    -------
    float
        Dice of the two bands, in [0, 1].
    """
    return dice(boundary_band(truth, width, sigma), boundary_band(pred, width, sigma))


def label_overlap(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pixel counts of every (truth label, predicted label) pair, background row and column 0 included.

    Entry ``[i, j]`` counts the pixels labelled ``i`` in ``truth`` and ``j`` in ``pred``; the shape is
    ``(1 + truth.max(), 1 + pred.max())`` and the dtype unsigned, as in StarDist's ``label_overlap``. Labels are
    whole numbers >= 0 (sequential ones keep the matrix small). One ``np.bincount`` over the pairs: StarDist
    counts with a numba loop that is compiled anew in every process that first matches, 0.9 s of CPU on the
    2-core Zen 4 of the README (some 70 workflow jobs in ``make test`` match), where one count of a 1.4 megapixel
    image takes 10 ms here against its 2 ms; :func:`stardist_matching` lets StarDist use this one.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"label images of shapes {truth.shape} and {pred.shape}: they must have one shape")
    t, p = truth.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    if t.size and min(t.min(), p.min()) < 0:
        raise ValueError("labels must be >= 0 (0: background)")
    n_true, n_pred = int(t.max(initial=0)) + 1, int(p.max(initial=0)) + 1
    counts = np.bincount(t * n_pred + p, minlength=n_true * n_pred)
    return counts.reshape(n_true, n_pred).astype(np.uint)


def stardist_matching():
    """The module ``stardist.matching``, counting its overlaps with :func:`label_overlap`.

    StarDist's matching, and its threshold tuning (``optimize_thresholds``, through ``matching_dataset``), count
    overlaps in ``stardist.matching._label_overlap``, a numba function compiled in each process that first calls
    it. This replaces it, for the process, with :func:`label_overlap`: the same counts
    (tests/test_metrics.py), without the compile. The matching itself stays StarDist's.
    """
    import stardist.matching as sm

    if hasattr(sm, "_label_overlap"):  # stardist 0.9's name; another version keeps its own
        sm._label_overlap = label_overlap
    return sm


def _coverage(truth: np.ndarray, pred: np.ndarray, cover: float):
    """``(truth_covered, pred_inside, pred_ids)``: truth i mostly (> ``cover`` of its area) inside prediction j,
    prediction j mostly inside truth i (boolean matrices over the nuclei and predictions present), and the
    original label of each prediction column."""
    from skimage.segmentation import relabel_sequential

    t = relabel_sequential(np.asarray(truth))[0]
    p, _, inverse = relabel_sequential(np.asarray(pred))
    ov = label_overlap(t, p)[1:, 1:].astype(np.float64)
    true_area = np.bincount(t.ravel(), minlength=ov.shape[0] + 1)[1:]
    pred_area = np.bincount(p.ravel(), minlength=ov.shape[1] + 1)[1:]
    truth_covered = ov / np.maximum(true_area[:, None], 1) > cover
    pred_inside = ov / np.maximum(pred_area[None, :], 1) > cover
    return truth_covered, pred_inside, np.asarray(inverse)[1 : ov.shape[1] + 1]


def merged_and_split(truth: np.ndarray, pred: np.ndarray, cover: float = 0.5) -> dict[str, int]:
    """Count merges and splits between two instance label images.

    - ``merged``: predictions that each cover more than ``cover`` of the area of
      two or more ground-truth nuclei (the clumping the paper describes);
      ``merged_nuclei`` is the number of ground-truth nuclei inside such merges.
    - ``split``: ground-truth nuclei of which two or more predictions each lie
      mostly (more than ``cover`` of the prediction's area) inside;
      ``split_pieces`` counts those predictions.
    """
    truth_covered, pred_inside, _ = _coverage(truth, pred, cover)
    per_pred = truth_covered.sum(axis=0)
    per_true = pred_inside.sum(axis=1)
    return {
        "merged": int((per_pred >= 2).sum()),
        "merged_nuclei": int(per_pred[per_pred >= 2].sum()),
        "split": int((per_true >= 2).sum()),
        "split_pieces": int(per_true[per_true >= 2].sum()),
    }


def merged_predictions(truth: np.ndarray, pred: np.ndarray, cover: float = 0.5) -> dict[int, int]:
    """Where the merges of :func:`merged_and_split` are: each merging prediction's label in ``pred`` -> the
    number of ground-truth nuclei it covers (more than ``cover`` of each one's area; two or more)."""
    truth_covered, _, ids = _coverage(truth, pred, cover)
    per_pred = truth_covered.sum(axis=0)
    return {int(ids[j]): int(n) for j, n in enumerate(per_pred) if n >= 2}


def match_image(truth: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS) -> pd.DataFrame:
    """Per-threshold counts for one image: columns ``thresh`` and :data:`COUNT_COLUMNS`.

    Parameters
    ----------
    truth, pred : int array (H, W)
        Instance label images (0 = background, 1..n = objects); a float array is refused.
    thresholds : sequence of float
        IoU thresholds at which a predicted object matches a true one (one-to-one, optimal).

    Returns
    -------
    DataFrame
        One row per threshold: ``thresh, tp, fp, fn, n_true, n_pred, sum_iou``; ``sum_iou`` is
        the sum of IoUs of the matched pairs, so that panoptic quality pools over images exactly.

    Examples
    --------
    >>> truth = np.zeros((10, 10), int); truth[1:5, 1:5] = 1; truth[6:9, 6:9] = 2
    >>> pred = np.zeros((10, 10), int); pred[1:5, 1:5] = 1    # finds the first nucleus only
    >>> match_image(truth, pred, thresholds=[0.5])[["tp", "fp", "fn"]].iloc[0].tolist()
    [1, 0, 1]
    """
    matching = stardist_matching().matching

    truth = _label_image(truth, "truth")
    pred = _label_image(pred, "pred")
    if truth.shape != pred.shape:
        raise ValueError(f"label shapes differ: {truth.shape} vs {pred.shape}")
    stats = matching(truth, pred, thresh=list(thresholds))
    rows = [
        {
            "thresh": float(s.thresh),
            "tp": s.tp,
            "fp": s.fp,
            "fn": s.fn,
            "n_true": s.n_true,
            "n_pred": s.n_pred,
            "sum_iou": s.mean_matched_score * s.tp,
        }
        for s in stats
    ]
    return pd.DataFrame(rows)


def _label_image(labels, what: str) -> np.ndarray:
    """An instance label image as int32, or a ValueError saying why it is not one."""
    from .data.common import DataError, as_labels

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{what}: expected a 2D label image, got shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating):
        raise ValueError(
            f"{what}: expected an integer label image (0 = background, 1..n = nuclei), got dtype "
            f"{labels.dtype}; a probability map must be turned into instances first, e.g. with "
            f"nucseg_lib.instances.connected_components"
        )
    try:
        return as_labels(labels, what)
    except DataError as exc:
        raise ValueError(str(exc)) from None


def scores_from_counts(c: pd.DataFrame | pd.Series | dict) -> dict[str, float]:
    """Precision, recall, F1, accuracy (TP/(TP+FP+FN)), PQ and mean true score from summed counts.

    Ratios with a zero denominator are 0, except that no truth and no prediction scores 1.
    """
    tp, fp, fn = (float(c[k]) for k in ("tp", "fp", "fn"))
    s = float(c["sum_iou"])

    def ratio(a, b, empty=0.0):
        return a / b if b > 0 else empty

    perfect_empty = 1.0 if tp + fp + fn == 0 else 0.0
    return {
        "precision": ratio(tp, tp + fp, perfect_empty),
        "recall": ratio(tp, tp + fn, perfect_empty),
        "f1": ratio(2 * tp, 2 * tp + fp + fn, perfect_empty),
        "accuracy": ratio(tp, tp + fp + fn, perfect_empty),
        "pq": ratio(s, tp + fp / 2 + fn / 2, perfect_empty),
        "mean_true_score": ratio(s, tp + fn, perfect_empty),
    }


def evaluate_instances(
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    names: Sequence[str],
    groups: Sequence[str] | None = None,
    thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> pd.DataFrame:
    """Tidy per-image table: one row per (image, threshold) with counts, scores, merged and split.

    Parameters
    ----------
    truths, preds : sequences of int arrays
        Ground-truth and predicted instance label images, in the same order.
    names : sequence of str
        One unique name per image (pooling and bootstrapping are per image).
    groups : sequence of str, optional
        A group per image (e.g. the cell line) for per-group pooling.
    thresholds : sequence of float
        IoU thresholds (default 0.5, 0.55, ..., 0.95).

    Returns
    -------
    DataFrame
        Columns ``image, group, thresh, tp, fp, fn, n_true, n_pred, sum_iou, precision,
        recall, f1, accuracy, pq, mean_true_score, merged, merged_nuclei, split, split_pieces``
        (merge and split counts do not depend on the threshold and repeat on each row).

    Examples
    --------
    >>> truth = np.zeros((10, 10), int); truth[1:5, 1:5] = 1; truth[6:9, 6:9] = 2
    >>> merged = (truth > 0).astype(int)             # one prediction covering both nuclei
    >>> row = evaluate_instances([truth], [merged], ["a"], thresholds=[0.5]).iloc[0]
    >>> int(row.tp), int(row.merged), int(row.merged_nuclei)
    (1, 1, 2)
    """
    if not (len(truths) == len(preds) == len(names)):
        raise ValueError(
            f"truths, preds and names must have the same length, got {len(truths)}, {len(preds)} and {len(names)}"
        )
    groups = list(groups) if groups is not None else [""] * len(names)
    if len(groups) != len(names):
        raise ValueError(f"groups has {len(groups)} entries for {len(names)} images")
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise ValueError(f"image names must be unique (pooling is per image); repeated: {dup[:5]}")
    frames = []
    for t, p, n, g in zip(truths, preds, names, groups):
        df = match_image(t, p, thresholds)
        scores = pd.DataFrame([scores_from_counts(r) for _, r in df.iterrows()])
        ms = merged_and_split(t, p)
        df = pd.concat([df, scores], axis=1).assign(image=n, group=g, **ms)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    lead = ["image", "group", "thresh"]
    return out[lead + [c for c in out.columns if c not in lead]]


def pool(per_image: pd.DataFrame, by: Sequence[str] = ("thresh",)) -> pd.DataFrame:
    """Pool a per-image table (from :func:`evaluate_instances`) by summing counts within ``by``.

    Parameters
    ----------
    per_image : DataFrame
        The table of :func:`evaluate_instances`.
    by : sequence of str
        Columns to pool within: ``("thresh",)`` for dataset scores, ``("group", "thresh")``
        for per-group scores.

    Returns
    -------
    DataFrame
        Summed counts, ``n_images`` and the scores of :func:`scores_from_counts`, one row per
        value of ``by``.

    Examples
    --------
    >>> truth = np.zeros((10, 10), int); truth[1:5, 1:5] = 1; truth[6:9, 6:9] = 2
    >>> pred = np.zeros((10, 10), int); pred[1:5, 1:5] = 1
    >>> round(float(pool(evaluate_instances([truth], [pred], ["a"], thresholds=[0.5])).f1.iloc[0]), 3)
    0.667
    """
    by = list(by)
    sums = per_image.groupby(by)[list(COUNT_COLUMNS) + ["merged", "split"]].sum()
    sums["n_images"] = per_image.groupby(by)["image"].nunique()
    scores = pd.DataFrame([scores_from_counts(r) for _, r in sums.iterrows()], index=sums.index)
    return pd.concat([sums, scores], axis=1).reset_index()


def bootstrap_ci(values_fn, n_items: int, n_boot: int = 1000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap over items: ``values_fn(idx)`` gives the statistic on the resampled index array.

    Parameters
    ----------
    values_fn : callable
        Maps an int array of resampled item indices to the statistic (a float).
    n_items : int
        Number of items (images) to resample.
    n_boot, level, seed : int, float, int
        Resamples, coverage of the interval (0.95: a 95% CI) and the generator's seed.

    Returns
    -------
    (float, float)
        ``(low, high)``. With a single item the interval collapses to the point value.
    """
    rng = np.random.default_rng(seed)
    if n_items <= 1:
        v = values_fn(np.arange(n_items))
        return float(v), float(v)
    stats = np.array([values_fn(rng.integers(0, n_items, n_items)) for _ in range(n_boot)])
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def _image_counts(per_image: pd.DataFrame, thresh: float, images) -> np.ndarray:
    """Array (n_images, n_counts) of one threshold's match counts, rows in the order of ``images``."""
    return (
        per_image[np.isclose(per_image["thresh"], thresh)]
        .set_index("image")
        .loc[images, list(COUNT_COLUMNS)]
        .to_numpy(float)
    )


def _pooled_score(counts: np.ndarray, idx: np.ndarray, metric: str) -> float:
    """``metric`` from the counts of the images ``idx`` (rows of ``counts``) summed, as :func:`pool` does."""
    return scores_from_counts(dict(zip(COUNT_COLUMNS, counts[idx].sum(axis=0))))[metric]


def instance_summary(
    per_image: pd.DataFrame,
    metrics: Sequence[str] = ("f1", "precision", "recall", "accuracy", "pq"),
    thresholds: Sequence[float] = (0.5,),
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Pooled scores with 95% bootstrap CIs over images: columns ``metric, value, ci_low, ci_high, n_images``.

    Parameters
    ----------
    per_image : DataFrame
        The table of :func:`evaluate_instances`.
    metrics : sequence of str
        Scores of :func:`scores_from_counts` to report at each of ``thresholds``.
    n_boot, seed : int
        Bootstrap resamples of the images, and the generator's seed.

    Returns
    -------
    DataFrame
        Rows ``<metric>@<thresh>``, ``ap@0.5:0.95`` (mean accuracy over all thresholds in the
        table, when it has more than one) and ``merged``/``split`` (totals over images).

    Examples
    --------
    >>> truth = np.zeros((10, 10), int); truth[1:5, 1:5] = 1; truth[6:9, 6:9] = 2
    >>> per_image = evaluate_instances([truth], [truth], ["a"], thresholds=[0.5, 0.9])
    >>> instance_summary(per_image, metrics=("f1",), n_boot=10).metric.tolist()
    ['f1@0.5', 'ap@0.5:0.9', 'merged', 'split']
    """
    images = per_image["image"].unique()
    all_t = sorted(per_image["thresh"].unique())
    # counts[t, i, c]: image i's count c at threshold t, for fast resampling
    counts = np.stack([_image_counts(per_image, t, images) for t in all_t])
    rows = []

    def pooled(ti, idx, metric):
        return _pooled_score(counts[ti], idx, metric)

    full = np.arange(len(images))
    for t in thresholds:
        if float(t) not in all_t:
            continue
        ti = all_t.index(float(t))
        for m in metrics:
            lo, hi = bootstrap_ci(lambda idx, ti=ti, m=m: pooled(ti, idx, m), len(images), n_boot, seed=seed)
            rows.append({"metric": f"{m}@{float(t):g}", "value": pooled(ti, full, m), "ci_low": lo, "ci_high": hi})

    def ap(idx):
        return float(np.mean([pooled(ti, idx, "accuracy") for ti in range(len(all_t))]))

    if len(all_t) > 1:
        lo, hi = bootstrap_ci(ap, len(images), max(200, n_boot // 5), seed=seed)
        rows.append({"metric": f"ap@{all_t[0]:g}:{all_t[-1]:g}", "value": ap(full), "ci_low": lo, "ci_high": hi})
    first = per_image[per_image["thresh"] == all_t[0]].set_index("image").loc[images]
    for m in ("merged", "split"):
        vals = first[m].to_numpy(float)
        lo, hi = bootstrap_ci(lambda idx, vals=vals: vals[idx].sum(), len(vals), n_boot, seed=seed)
        rows.append({"metric": m, "value": float(vals.sum()), "ci_low": lo, "ci_high": hi})
    out = pd.DataFrame(rows)
    out["n_images"] = len(images)
    return out


def mean_with_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean of per-image values with a 95% percentile bootstrap CI.

    Parameters
    ----------
    values : sequence of float
        One value per image.
    n_boot, seed : int
        Bootstrap resamples and the generator's seed.

    Returns
    -------
    dict
        ``value, ci_low, ci_high, n_images``.
    """
    v = np.asarray(values, dtype=float)
    lo, hi = bootstrap_ci(lambda idx: v[idx].mean(), len(v), n_boot, seed=seed)
    return {"value": float(v.mean()), "ci_low": lo, "ci_high": hi, "n_images": int(len(v))}


def paired_difference(
    per_image_a: pd.DataFrame,
    per_image_b: pd.DataFrame,
    metric: str = "f1",
    thresh: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Pooled ``metric`` at IoU ``thresh`` of method A minus method B, with a paired 95% bootstrap CI.

    Both tables come from :func:`evaluate_instances` on the same test images; each bootstrap
    resample draws images (with replacement) and pools both methods' counts over the same
    draw, so the interval reflects how much the *difference* depends on which images were
    tested. An interval that contains 0 means the data cannot tell the two methods apart.

    Parameters
    ----------
    per_image_a, per_image_b : DataFrame
        :func:`evaluate_instances` tables of methods A and B on the same images.
    metric : str
        A score of :func:`scores_from_counts` (``f1``, ``precision``, ``recall``, ``accuracy``, ``pq``).
    thresh : float
        IoU threshold.
    n_boot, seed : int
        Bootstrap resamples of the images and the generator's seed.

    Returns
    -------
    dict
        ``value`` (A minus B), ``ci_low``, ``ci_high``, ``n_images``.
    """

    def counts(per_image):
        sub = per_image[np.isclose(per_image["thresh"], thresh)].set_index("image")
        if sub.index.has_duplicates:
            raise ValueError("per-image table has several rows per image at this threshold")
        return sub

    a, b = counts(per_image_a), counts(per_image_b)
    if set(a.index) != set(b.index):
        raise ValueError(f"the two tables cover different images: {sorted(set(a.index) ^ set(b.index))[:5]} ...")
    images = list(a.index)
    ca, cb = _image_counts(per_image_a, thresh, images), _image_counts(per_image_b, thresh, images)

    def diff(idx):
        return _pooled_score(ca, idx, metric) - _pooled_score(cb, idx, metric)

    lo, hi = bootstrap_ci(diff, len(images), n_boot, seed=seed)
    return {"value": float(diff(np.arange(len(images)))), "ci_low": lo, "ci_high": hi, "n_images": len(images)}
