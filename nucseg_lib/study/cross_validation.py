"""Cross-validation of the headline comparison: every image of the dataset is a test image once.

The reference run tests on the 20 images of the dataset's own split. Here the images are dealt
into ``n`` folds stratified by cell line (:func:`~nucseg_lib.data.common.cross_validation_folds`);
for each fold ``k`` each method trains on the other folds (its validation images, every 6th of
those, choose its post-processing, as everywhere in the study), predicts fold ``k`` at the
study's scale, and is scored at native resolution. The per-image tables of all folds together
cover every image once, so the pooled scores and the paired difference between two methods rest
on all of them (87 for Coelho 2009) instead of 20.

One fold of one method is one workflow job (``rule cv``: ``results/cv/<method>-fold<k>.csv``),
so the folds run in parallel, on a cluster too, and an interrupted run redoes only the folds it
had not finished; notebook 10 joins them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..methods import get_method

CV_METHODS = ("unet_boundary", "stardist")  # the headline comparison of notebook 08


def fold_file(run, method: str, k: int) -> Path:
    """Where the per-image table of ``method`` on fold ``k`` goes: ``<run>/results/cv/<method>-fold<k>.csv``."""
    return Path(run) / "results" / "cv" / f"{method}-fold{k}.csv"


def predict_fold(study, method: str) -> tuple[list, dict]:
    """Train (or reuse) ``method`` on ``study``'s training images, choose its post-processing on its validation
    images, and predict its test images (at the study's scale).

    Parameters
    ----------
    study : Study
        A study whose split is one fold (:meth:`~nucseg_lib.study.study.Study.cross_validation_fold`).
    method : str
        A method of :data:`~nucseg_lib.methods.METHODS`.

    Returns
    -------
    (list of int arrays, dict)
        Instance labels of the test images, and the post-processing chosen on the validation images.
    """
    from ..inference import predict_probabilities
    from ..train.stardist import predict_stardist

    m = get_method(method)
    if not m.is_unet:
        model = study.stardist(verbose=2)
        chosen = {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)}
        return [predict_stardist(model, s.image) for s in study.test], chosen
    model, _, _ = study.unet(m.loss)
    chosen, _ = m.tune([predict_probabilities(model, s.image) for s in study.val], [s.labels for s in study.val])
    return [m.instances(predict_probabilities(model, s.image), chosen) for s in study.test], chosen


def run_fold(study, method: str, k: int, n: int, out: Path | None = None) -> pd.DataFrame:
    """Per-image scores of ``method`` trained without fold ``k`` of ``n`` and tested on it.

    Parameters
    ----------
    study : Study
        The run (its dataset, profile and training seed).
    method : str
        A method of :data:`~nucseg_lib.methods.METHODS`.
    k, n : int
        The test fold and the number of folds.
    out : path, optional
        Where to write the table (atomically); a finished table there is read, not recomputed.

    Returns
    -------
    DataFrame
        :func:`~nucseg_lib.study.results.score_at_native_size` rows with ``fold``, ``n_train`` and the chosen
        ``postprocess`` (JSON) added.
    """
    from .results import score_at_native_size

    if out is not None and Path(out).exists():
        return pd.read_csv(out)
    fold = study.cross_validation_fold(k, n)
    preds, chosen = predict_fold(fold, method)
    table = score_at_native_size(fold.native_test(), {method: preds}).assign(
        fold=k, n_train=len(fold.train) + len(fold.val), postprocess=json.dumps(chosen)
    )
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, out)
    return table


def summarize(per_image: pd.DataFrame, a: str, b: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Pooled F1 at IoU 0.5 and 0.7 of each method over all folds' images, and the paired difference ``a - b``,
    overall and per group (cell line).

    Parameters
    ----------
    per_image : DataFrame
        The folds' tables of :func:`run_fold`, every method on the same images.
    a, b : str
        The two methods compared (``a`` minus ``b``).
    n_boot, seed : int
        Bootstrap resamples of the images and the generator's seed.

    Returns
    -------
    DataFrame
        Rows ``group`` (``all`` or a cell line), ``method`` (a method, or ``a-b``), ``metric``, ``value``,
        ``ci_low``, ``ci_high``, ``n_images``.
    """
    from ..metrics import instance_summary, paired_difference

    images = {m: set(g.image) for m, g in per_image.groupby("method")}
    if images.get(a) != images.get(b):
        raise ValueError(f"{a} and {b} must be scored on the same images to be paired")
    rows = []
    groups = [("all", per_image)] + [(str(g), t) for g, t in per_image.groupby("group")]
    for group, table in groups:
        for method in (a, b):
            summ = instance_summary(
                table[table.method == method], metrics=("f1",), thresholds=(0.5, 0.7), n_boot=n_boot, seed=seed
            )
            summ = summ[summ.metric.isin(["f1@0.5", "f1@0.7", "merged", "split"])]
            rows += [{"group": group, "method": method, **r} for r in summ.to_dict("records")]
        for thresh in (0.5, 0.7):
            d = paired_difference(table[table.method == a], table[table.method == b], "f1", thresh, n_boot, seed)
            rows.append({"group": group, "method": f"{a}-{b}", "metric": f"f1@{thresh:g}", **d})
    return pd.DataFrame(rows, columns=["group", "method", "metric", "value", "ci_low", "ci_high", "n_images"])
