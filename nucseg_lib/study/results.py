"""The results contract of a study run: numbers with their 95% CIs in one summary table, and tidy tables.

Results go to ``<run>/results/``:

- ``parts/<experiment>.csv``: the summary rows of one notebook, one row per
  (experiment, dataset, profile, method, metric) with columns :data:`SUMMARY_COLUMNS`;
  a notebook's :class:`Results` start its fragment afresh, and recording a row again
  replaces it. Each notebook writes only its own fragment, so notebooks can run in
  parallel; the workflow's ``assemble`` job joins the fragments into ``summary.csv``;
- ``<table>.csv``: tidy per-image tables behind the summary rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

SUMMARY_COLUMNS = ["experiment", "dataset", "profile", "method", "metric", "value", "ci_low", "ci_high", "n_images"]
SUMMARY_KEY = ["experiment", "dataset", "profile", "method", "metric"]


def read_summary(path) -> pd.DataFrame:
    """A summary table (``summary.csv`` or a fragment); an empty one with :data:`SUMMARY_COLUMNS` if absent."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    return pd.read_csv(path)


def score_at_native_size(truth, preds: dict) -> pd.DataFrame:
    """Per-image instance scores of each method against the native-size ground truth, as the report scores.

    Parameters
    ----------
    truth : list of Sample
        The test images at their native resolution.
    preds : dict
        Method name -> label images in the order of ``truth``, at any scale: each is brought to its image's
        native size (nearest neighbour, ids kept) before matching.

    Returns
    -------
    DataFrame
        :func:`~nucseg_lib.metrics.evaluate_instances` rows with a ``method`` column.
    """
    from ..data.common import resize_labels
    from ..metrics import evaluate_instances

    wrong = {m: len(p) for m, p in preds.items() if len(p) != len(truth)}
    if wrong:
        raise ValueError(f"predictions for {wrong} images, but there are {len(truth)} test images")
    truths, names, groups = [s.labels for s in truth], [s.name for s in truth], [s.group for s in truth]
    return pd.concat(
        [
            evaluate_instances(truths, [resize_labels(q, t.shape) for q, t in zip(p, truths)], names, groups).assign(
                method=m
            )
            for m, p in preds.items()
        ]
    )


class Results:
    """One experiment's results in a run's ``results/`` folder.

    Parameters
    ----------
    folder : path
        The run's ``results/`` folder (created).
    experiment : str
        The notebook's experiment name; its fragment ``parts/<experiment>.csv`` is started afresh.
        Empty: rows go to ``parts/interactive.csv`` and nothing is reset.
    dataset, profile : str
        Written into every row.
    n_boot, seed : int
        Bootstrap resamples and seed of the 95% CIs.
    """

    def __init__(self, folder, experiment: str = "", dataset: str = "", profile: str = "", n_boot=1000, seed=0):
        self.folder = Path(folder)
        self.experiment, self.dataset, self.profile = experiment, dataset, profile
        self.n_boot, self.seed = int(n_boot), int(seed)
        self.folder.mkdir(parents=True, exist_ok=True)
        if experiment:  # a notebook run owns its fragment: start it afresh (header only)
            self.summary_path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(columns=SUMMARY_COLUMNS).to_csv(self.summary_path, index=False)

    @property
    def summary_path(self) -> Path:
        """This experiment's fragment of the summary: ``results/parts/<experiment>.csv``."""
        return self.folder / "parts" / f"{self.experiment or 'interactive'}.csv"

    def record(
        self,
        method: str,
        metric: str,
        value: float,
        ci_low=np.nan,
        ci_high=np.nan,
        n_images=0,
        experiment: str | None = None,
    ):
        """Write (or replace) one row of the summary: ``value`` of ``metric`` for ``method`` over ``n_images``."""
        row = {
            "experiment": experiment or self.experiment,
            "dataset": self.dataset,
            "profile": self.profile,
            "method": method,
            "metric": metric,
            "value": float(value),
            "ci_low": float(ci_low),
            "ci_high": float(ci_high),
            "n_images": int(n_images),
        }
        self.record_rows(pd.DataFrame([row]))

    def record_rows(self, rows: pd.DataFrame):
        """Upsert rows (with :data:`SUMMARY_COLUMNS`) into the fragment, keyed by :data:`SUMMARY_KEY` (atomic write)."""
        rows = rows[SUMMARY_COLUMNS]
        old = read_summary(self.summary_path)
        if len(old):
            keys = set(map(tuple, rows[SUMMARY_KEY].astype(str).to_numpy()))
            old = old[[tuple(r) not in keys for r in old[SUMMARY_KEY].astype(str).to_numpy()]]
        out = pd.concat([old, rows], ignore_index=True) if len(old) else rows
        self.summary_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.summary_path.with_suffix(".tmp")
        out.to_csv(tmp, index=False)
        os.replace(tmp, self.summary_path)

    def record_mean(self, method: str, metric: str, per_image_values, experiment: str | None = None) -> dict:
        """Record the mean of per-image values with its 95% bootstrap CI; returns value, ci_low, ci_high, n_images."""
        from ..metrics import mean_with_ci

        s = mean_with_ci(per_image_values, n_boot=self.n_boot, seed=self.seed)
        self.record(method, metric, s["value"], s["ci_low"], s["ci_high"], s["n_images"], experiment)
        return s

    def record_instances(
        self, method: str, per_image: pd.DataFrame, experiment: str | None = None, thresholds=(0.5, 0.7)
    ) -> pd.DataFrame:
        """Record pooled instance scores (f1, precision, recall, accuracy, pq, ap, merged, split) with CIs.

        ``per_image``: :func:`~nucseg_lib.metrics.evaluate_instances` rows of one method. Returns the recorded rows.
        """
        from ..metrics import instance_summary

        summ = instance_summary(per_image, thresholds=thresholds, n_boot=self.n_boot, seed=self.seed)
        summ = summ.assign(
            experiment=experiment or self.experiment, dataset=self.dataset, profile=self.profile, method=method
        )
        self.record_rows(summ)
        return summ

    def score_instances(self, truth, preds: dict, table: str):
        """Score each method's instance labels against ``truth``: ``(per_image, summary)``.

        Parameters
        ----------
        truth : list of Sample
            The test images at their native resolution.
        preds : dict
            Method name -> label images in the order of ``truth``, at any scale: each is brought to its
            image's native size (nearest neighbour, ids kept), as the report scores.
        table : str
            The per-image table (:func:`~nucseg_lib.metrics.evaluate_instances` with a ``method``
            column) is saved as ``results/<table>.csv``; the pooled scores with CIs are recorded
            (:meth:`record_instances`).

        Returns
        -------
        (DataFrame, DataFrame)
            The per-image table and the recorded summary rows.
        """
        try:
            per_image = score_at_native_size(truth, preds)
        except ValueError as exc:
            raise ValueError(f"{table}: {exc}") from None
        self.save_table(table, per_image)
        summary = pd.concat([self.record_instances(m, per_image[per_image.method == m]) for m in preds])
        return per_image, summary

    def save_table(self, name: str, df: pd.DataFrame) -> None:
        """Write a tidy table to ``results/<name>.csv`` (returns nothing, so a notebook cell ending
        with it shows no output)."""
        df.to_csv(self.folder / f"{name}.csv", index=False)
