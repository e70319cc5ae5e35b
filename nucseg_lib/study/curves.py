"""Learning curves: test accuracy against training steps and seconds, from snapshots of one long run.

One long run per method, scale and training seed keeps its weights after a few step
counts (the budgets). Each snapshot is then evaluated as a finished model would be:

1. post-processing tuned on the **validation** images only: the watershed parameters of
   the boundary U-Net (:func:`~nucseg_lib.instances.tune_watershed`), the foreground
   threshold of the Dice U-Net's connected components
   (:func:`~nucseg_lib.instances.tune_components`), StarDist's probability and NMS
   thresholds (``optimize_thresholds``);
2. the test images predicted at the model's scale, the labels brought back to the images'
   native size (nearest neighbour) and scored against the native ground truth, so that
   models trained at different scales are compared on the same pixels.

Scores (:data:`COLUMNS`): pooled F1 at IoU 0.5 and 0.7 and ``ap@0.5:0.95`` (the mean over
IoU 0.5:0.95 of TP/(TP+FP+FN), StarDist's "average precision"), each with a 95% bootstrap
CI over test images. Each snapshot's row is cached beside it (``step-NNNNNN.eval.json``),
so an interrupted evaluation resumes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..methods import METHODS, get_method

SCORES = ["f1@0.5", "f1@0.7", "ap@0.5:0.95"]
COLUMNS = (
    ["method", "scale", "seed", "steps", "train_seconds", "precision"]
    + SCORES
    + [f"{m}_{b}" for m in SCORES for b in ("ci_low", "ci_high")]
    + ["val_f1@0.5", "n_images", "postprocess"]
)


def plan(profile, dataset: str, budgets=None, seeds=None, stardist_scales=None) -> dict:
    """The learning-curve runs of a study: budgets, seeds, steps per epoch and ``(method, scale, seed)`` runs.

    ``None`` takes the profile's ``curve_budgets``, ``curve_seeds`` and ``curve_stardist_scales``.
    An epoch is the largest step count (at most 200) that divides every budget: validation and
    snapshots happen at epoch ends. Used by notebook 09 and the workflow (one job per run).
    """
    import math

    from .study import parameter_list

    prof = profile
    scale = float(prof.scale.get(dataset, 1))
    budgets = sorted(
        {int(b) for b in parameter_list(list(prof.curve_budgets) if budgets is None else budgets, "budgets")}
    )
    if budgets[0] < 1:
        raise ValueError(f"parameter budgets: step counts must be >= 1, got {budgets}")
    seeds = [int(s) for s in parameter_list(list(prof.curve_seeds) if seeds is None else seeds, "curve_seeds")]
    extra = prof.curve_stardist_scales.get(dataset)
    scales = parameter_list(
        ([extra] if extra else []) if stardist_scales is None else stardist_scales, "stardist_scales", allow_empty=True
    )
    gcd = math.gcd(*budgets)
    spe = max(d for d in range(1, min(gcd, 200) + 1) if gcd % d == 0)
    runs = [(m, scale, s) for s in seeds for m in METHODS]
    runs += [("stardist", float(x), s) for s in seeds for x in scales if float(x) != scale]
    return {"budgets": budgets, "seeds": seeds, "steps_per_epoch": spe, "runs": runs}


def run_variant(study, p: dict, scale: float, seed: int):
    """The study of one learning-curve run: the plan's long budget, ``scale`` and training ``seed``."""
    n_epochs = p["budgets"][-1] // p["steps_per_epoch"]
    return study.at_scale(scale).variant(
        seed=seed,
        epochs=n_epochs,
        steps_per_epoch=p["steps_per_epoch"],
        stardist_epochs=n_epochs,
        stardist_steps=p["steps_per_epoch"],
    )


def run_name(method: str, scale: float, seed: int) -> str:
    """File name of a run's rows: ``<method>-<scale>x-seed<seed>`` (e.g. ``stardist-2x-seed1``)."""
    return f"{method}-{scale:g}x-seed{seed}"


def train_long_run(study, method: str, budgets, progress: bool = True) -> Path:
    """Train (or reuse) the long run of ``method`` for ``study`` (its profile sets the total budget),
    keeping snapshots at ``budgets`` steps; returns the model folder."""
    m = get_method(method)
    if not m.is_unet:
        model = study.stardist(snapshot_steps=budgets)
        return Path(model.logdir)
    _, _, folder = study.unet(m.loss, name=f"curve-{method}", snapshot_steps=budgets)
    return Path(folder)


def _predict_instances(study, method: str, folder: Path, weights: Path):
    """``(predict(image) -> labels, chosen post-processing, validation F1@0.5)`` for one snapshot."""
    from ..inference import predict_probabilities
    from ..train.stardist import load_stardist, predict_stardist

    m = get_method(method)
    val_truths = [s.labels for s in study.val]
    if not m.is_unet:
        import contextlib
        import io

        from ..data.common import normalize_percentile

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model = load_stardist(folder)  # (silent) its threshold tuning below prints a bar per NMS threshold
            model.keras_model.load_weights(str(weights))
            model.optimize_thresholds(
                [normalize_percentile(s.image) for s in study.val],
                val_truths,
                predict_kwargs={"show_tile_progress": False},
                optimize_kwargs={"tol": 1e-2},
                save_to_json=False,
            )
        params = {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)}
        predict = lambda image: predict_stardist(model, image)  # noqa: E731
        return predict, params, validation_f1(val_truths, [predict(s.image) for s in study.val])
    from ..train.model_folder import load_snapshot

    model = load_snapshot(folder, weights)
    params, table = m.tune([predict_probabilities(model, s.image) for s in study.val], val_truths)
    return (lambda image: m.instances(predict_probabilities(model, image), params)), params, float(table.f1.iloc[0])


def validation_f1(truths: list, preds: list) -> float:
    """Pooled F1 at IoU 0.5 of instance labels on the validation images: the number a setting is chosen on
    (the U-Nets' post-processing tuners report the same score for their best candidate)."""
    from ..metrics import evaluate_instances, pool

    per_image = evaluate_instances(truths, preds, [str(i) for i in range(len(preds))], thresholds=(0.5,))
    return float(pool(per_image).iloc[0]["f1"])


def evaluate_snapshot(study, method: str, folder: Path, snapshot: pd.Series, native_test=None) -> dict:
    """One row of :data:`COLUMNS` for one snapshot (cached in ``step-NNNNNN.eval.json``)."""
    from ..metrics import instance_summary
    from .results import score_at_native_size

    cache = Path(snapshot.weights).parent / f"step-{int(snapshot.steps):06d}.eval.json"
    if cache.exists():
        return json.loads(cache.read_text())
    native = native_test if native_test is not None else study.native_test()
    predict, params, val_f1 = _predict_instances(study, method, folder, Path(snapshot.weights))
    per_image = score_at_native_size(native, {method: [predict(s.image) for s in study.test]})
    summ = instance_summary(
        per_image, metrics=("f1", "accuracy"), thresholds=(0.5, 0.7), n_boot=study.profile.n_boot, seed=study.seed
    ).set_index("metric")
    row = {
        "method": method,
        "scale": study.scale,
        "seed": study.seed,
        "steps": int(snapshot.steps),
        "train_seconds": float(snapshot.train_seconds),
        "precision": snapshot.precision,
        "val_f1@0.5": val_f1,
        "n_images": len(native),
        "postprocess": json.dumps(params),
    }
    for m in SCORES:
        row[m] = float(summ.loc[m, "value"])
        row[f"{m}_ci_low"], row[f"{m}_ci_high"] = float(summ.loc[m, "ci_low"]), float(summ.loc[m, "ci_high"])
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, cache)
    return row


def learning_curve(study, method: str, budgets, progress: bool = True) -> pd.DataFrame:
    """Train the long run of ``method`` (if needed) and evaluate each snapshot; one row per budget."""
    from ..train.model_folder import snapshots as unet_snapshots
    from ..train.stardist import snapshots as stardist_snapshots

    folder = train_long_run(study, method, budgets, progress)
    snaps = unet_snapshots(folder) if get_method(method).is_unet else stardist_snapshots(folder)
    missing = sorted(set(int(b) for b in budgets) - set(snaps.steps.astype(int)))
    if missing:
        raise RuntimeError(
            f"{folder}: no snapshots at steps {missing}; the run was trained without them "
            f"(delete the folder to train it again with snapshots)"
        )
    snaps = snaps[snaps.steps.isin([int(b) for b in budgets])]
    native = study.native_test()
    rows = [evaluate_snapshot(study, method, folder, snap, native) for _, snap in snaps.iterrows()]
    return pd.DataFrame(rows, columns=COLUMNS)


def winner_by_budget(curves: pd.DataFrame, by: str = "steps", metric: str = "f1@0.5") -> pd.DataFrame:
    """For each method (at its better scale), the seeds' mean and range of ``metric`` per budget.

    ``by='steps'`` compares at equal step counts; ``by='train_seconds'`` interpolates each
    run's curve at common wall-clock budgets (the seconds at which every method has a point).
    Returns rows ``method, scale, budget, mean, low, high, n_seeds``.
    """
    rows = []
    for (method, scale), g in curves.groupby(["method", "scale"]):
        if by == "steps":
            per_budget = [(budget, b[metric].to_numpy()) for budget, b in g.groupby("steps")]
        else:
            per_budget = [
                (budget, np.array([np.interp(budget, s.train_seconds, s[metric]) for _, s in g.groupby("seed")]))
                for budget in _common_seconds(curves)
            ]
        for budget, v in per_budget:
            row = {"method": method, "scale": scale, "budget": budget}
            rows.append({**row, "mean": v.mean(), "low": v.min(), "high": v.max(), "n_seeds": len(v)})
    return pd.DataFrame(rows)


def leaders(w: pd.DataFrame) -> pd.DataFrame:
    """Per budget of a :func:`winner_by_budget` table, which run leads and whether the lead is clear.

    A run *leads* when its worst seed beats every other run's best seed; otherwise the
    verdict names the best mean but says that the seeds' ranges overlap. When every run
    scores 0 (nothing trained yet) or all are equal, the verdict is "undetermined".
    Returns rows ``budget, run, mean, clear, verdict``.
    """
    rows = []
    for budget, g in w.groupby("budget"):
        g = g.sort_values("mean", ascending=False)
        best = g.iloc[0]
        run = f"{best.method} {best.scale:g}x"
        others = g.iloc[1:]
        if best["mean"] <= 0 or (len(others) and (others["mean"] == best["mean"]).all()):
            rows.append(
                {
                    "budget": budget,
                    "run": None,
                    "mean": best["mean"],
                    "clear": False,
                    "verdict": f"undetermined (best mean F1 {best['mean']:.3f}, all runs equal)",
                }
            )
            continue
        clear = bool(len(others) == 0 or best.low > others.high.max())
        verdict = (
            f"{run} leads ({best['mean']:.3f}, seeds {best.low:.3f}-{best.high:.3f})"
            if clear
            else f"{run} has the best mean ({best['mean']:.3f}) but its seeds' range overlaps "
            f"{', '.join(f'{o.method} {o.scale:g}x' for o in others.itertuples() if o.high >= best.low)}"
        )
        rows.append({"budget": budget, "run": run, "mean": best["mean"], "clear": clear, "verdict": verdict})
    return pd.DataFrame(rows)


def _common_seconds(curves: pd.DataFrame, n: int = 6) -> np.ndarray:
    """At most ``n`` wall-clock budgets (whole seconds, log-spaced, distinct) that every run's curve spans."""
    spans = curves.groupby(["method", "scale", "seed"]).train_seconds.agg(["min", "max"])
    lo, hi = spans["min"].max(), spans["max"].min()
    if not hi > lo:
        return np.array([hi])
    return np.unique(np.geomspace(lo, hi, n).round(0))  # short runs: rounding would repeat a budget


def export_snapshot(study, p: dict, method: str, scale: float, seed: int, steps: int, out) -> Path:
    """Export the learning-curve snapshot of ``(method, scale, seed)`` after ``steps`` as a model folder for
    ``nucseg predict`` (:func:`nucseg_lib.predict.segmenter.export_model`), with its validation-tuned post-processing
    and a model card holding its test scores at native resolution. U-Net methods only."""
    from ..machine import cpu_name
    from ..predict.segmenter import export_model, model_card, read_settings
    from ..train.model_folder import snapshots

    if method not in METHODS or not METHODS[method].is_unet:
        raise ValueError(
            f"export_snapshot exports U-Net runs ({', '.join(m for m in METHODS if METHODS[m].is_unet)}), not {method!r}"
        )
    variant = run_variant(study, p, scale, seed)
    folder = train_long_run(variant, method, p["budgets"])
    snaps = snapshots(folder)
    if steps not in set(snaps.steps):
        raise ValueError(f"{folder}: no snapshot at {steps} steps; snapshots: {list(snaps.steps)}")
    snap = snaps[snaps.steps == steps].iloc[0]
    row = evaluate_snapshot(variant, method, folder, snap)
    out = export_model(
        out,
        method,
        json.loads(row["postprocess"]),
        [s.labels for s in variant.train],
        scale=scale,
        source=folder,
        weights=snap.weights,
    )
    scores = pd.DataFrame(
        [
            {
                "metric": m,
                "value": row[m],
                "ci_low": row[f"{m}_ci_low"],
                "ci_high": row[f"{m}_ci_high"],
                "n_images": row["n_images"],
            }
            for m in SCORES
        ]
    )
    card = model_card(
        f"{method}: nuclei segmentation trained on {study.dataset}",
        read_settings(out),
        trained_on=f"{len(variant.train)} training images of {study.dataset} at 1/{scale:g} size "
        f"(validation: {len(variant.val)} images); training seed {seed}",
        budget=f"{steps} steps of batch {variant.profile.batch_size} ({row['precision']}), "
        f"{row['train_seconds']:.0f} s of training",
        hardware=cpu_name(),
        scores=scores,
        failures="touching nuclei whose shared border the network does not mark can be merged; faint or "
        "out-of-focus nuclei are missed (they are also unlabelled in the training data); images "
        "far from the training scale are wrong unless rescaled (give --nucleus-diameter)",
    )
    (out / "README.md").write_text(card)
    return out
