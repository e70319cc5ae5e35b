"""Learning curves: snapshots of one long run, their evaluation, and the equal-budget comparison."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from nucseg_lib.study.curves import COLUMNS, learning_curve, winner_by_budget
from nucseg_lib.study.study import Study
from nucseg_lib.train.unet import TrainConfig, check_snapshot_steps, load_snapshot, snapshots, train


@pytest.mark.slow
def test_snapshots_hold_the_weights_after_those_steps(tmp_path, small_synthetic):
    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    cfg = TrainConfig(epochs=3, steps_per_epoch=2, batch_size=2, patch_size=32, seed=1)
    final, _ = train(cfg, tr[:4], tr[4:], tmp_path / "long", progress=False, snapshot_steps=[2, 6])
    short, _ = train(TrainConfig(**{**cfg.__dict__, "epochs": 1}), tr[:4], tr[4:], tmp_path / "short", progress=False)
    snaps = snapshots(tmp_path / "long")
    assert list(snaps.steps) == [2, 6] and (snaps.train_seconds.diff().dropna() > 0).all()
    at2 = load_snapshot(tmp_path / "long", snaps.weights[0])
    at6 = load_snapshot(tmp_path / "long", snaps.weights[1])
    for (k, a), b in zip(short.state_dict().items(), at2.state_dict().values()):
        assert torch.equal(a, b), k  # the 2-step snapshot is the model a 2-step run ends with
    for a, b in zip(final.state_dict().values(), at6.state_dict().values()):
        assert torch.equal(a, b)


def test_snapshot_steps_must_fall_on_epoch_ends():
    assert check_snapshot_steps([100, 300], 100, 3) == {100, 300}
    with pytest.raises(ValueError, match=r"\[150\]"):
        check_snapshot_steps([100, 150], 100, 3)
    with pytest.raises(ValueError, match=r"\[400\]"):
        check_snapshot_steps([400], 100, 3)


def test_winner_by_budget_known_answer():
    rows = []
    for method, f1s, secs in (("a", [0.5, 0.9], [10, 100]), ("b", [0.7, 0.8], [20, 40])):
        for seed, jitter in ((0, -0.01), (1, 0.01)):
            for steps, f1, sec in zip([100, 200], f1s, secs):
                rows.append(
                    {
                        "method": method,
                        "scale": 4.0,
                        "seed": seed,
                        "steps": steps,
                        "train_seconds": sec,
                        "f1@0.5": f1 + jitter,
                    }
                )
    curves = pd.DataFrame(rows)
    w = winner_by_budget(curves, "steps").set_index(["method", "budget"])
    assert w.loc[("a", 200), "mean"] == pytest.approx(0.9) and w.loc[("a", 200), "low"] == pytest.approx(0.89)
    assert w.loc[("b", 100), "mean"] == pytest.approx(0.7) and w.loc[("b", 100), "n_seeds"] == 2
    t = winner_by_budget(curves, "train_seconds")
    # common seconds: every run spans 20..40 s; a at 40 s: 0.5 + 0.4 * 30/90
    at40 = t[(t.method == "a") & (t.budget == 40)]["mean"].iloc[0]
    assert at40 == pytest.approx(0.5 + 0.4 * 30 / 90)
    assert t.budget.min() == 20 and t.budget.max() == 40


@pytest.mark.slow
def test_learning_curve_end_to_end_on_smoke_data(tmp_path):
    study = Study("synthetic", "smoke", out_dir=tmp_path, experiment="curves")
    long = study.variant(seed=1, epochs=3, steps_per_epoch=2)
    assert long.train[0].name == study.train[0].name and long.seed == 1  # same data, other training seed
    curve = learning_curve(long, "unet_dice_cc", [2, 6])
    assert list(curve.columns) == COLUMNS and list(curve.steps) == [2, 6] and (curve.seed == 1).all()
    assert curve["f1@0.5"].between(0, 1).all() and (curve["f1@0.5_ci_low"] <= curve["f1@0.5"]).all()
    assert json.loads(curve.postprocess[0])["threshold"] in (0.3, 0.4, 0.5, 0.6, 0.7)
    cached = sorted((tmp_path / "models").glob("curve-unet_dice_cc-*/snapshots/step-*.eval.json"))
    assert len(cached) == 2
    again = learning_curve(long, "unet_dice_cc", [2, 6])  # from the caches: nothing retrained
    pd.testing.assert_frame_equal(curve, again)
    with pytest.raises(RuntimeError, match="no snapshots at steps"):
        learning_curve(long, "unet_dice_cc", [4])


@pytest.mark.parametrize("method, tuner", [("unet_dice_cc", "tune_components"), ("unet_boundary", "tune_watershed")])
def test_post_processing_is_tuned_on_the_validation_images_only(tmp_path, monkeypatch, method, tuner):
    import nucseg_lib.instances as instances

    study = Study("synthetic", "smoke", out_dir=tmp_path, experiment="curves").variant(epochs=1, steps_per_epoch=2)
    seen = []
    real = getattr(instances, tuner)

    def spy(probs, truths, *args, **kw):
        seen.append([t.copy() for t in truths])
        return real(probs, truths, *args, **kw)

    monkeypatch.setattr(instances, tuner, spy)
    learning_curve(study, method, [2])
    assert len(seen) == 1 and len(seen[0]) == len(study.val)
    assert all(np.array_equal(a, s.labels) for a, s in zip(seen[0], study.val))
    assert not {s.name for s in study.val} & {s.name for s in study.test}


def test_leaders_say_undetermined_or_overlapping_instead_of_a_winner():
    from nucseg_lib.study.curves import leaders

    w = pd.DataFrame(
        [
            {"method": "a", "scale": 4.0, "budget": 100, "mean": 0.0, "low": 0.0, "high": 0.0},
            {"method": "b", "scale": 4.0, "budget": 100, "mean": 0.0, "low": 0.0, "high": 0.0},
            {"method": "a", "scale": 4.0, "budget": 200, "mean": 0.90, "low": 0.88, "high": 0.92},
            {"method": "b", "scale": 2.0, "budget": 200, "mean": 0.85, "low": 0.80, "high": 0.89},
            {"method": "a", "scale": 4.0, "budget": 400, "mean": 0.95, "low": 0.94, "high": 0.96},
            {"method": "b", "scale": 2.0, "budget": 400, "mean": 0.85, "low": 0.84, "high": 0.86},
        ]
    )
    lead = leaders(w).set_index("budget")
    assert lead.loc[100, "verdict"].startswith("undetermined") and pd.isna(lead.loc[100, "run"])
    assert not lead.loc[200, "clear"] and "overlaps b 2x" in lead.loc[200, "verdict"]
    assert lead.loc[400, "clear"] and lead.loc[400, "verdict"].startswith("a 4x leads")


def test_validation_f1_is_the_pooled_f1_at_iou_half():
    """The number a setting is chosen on: pooled over images, so one image with two nuclei (one found)
    and one with one nucleus (found, plus a false one) give TP 2, FP 1, FN 1: F1 = 4 / 6."""
    from nucseg_lib.study.curves import validation_f1

    two = np.zeros((20, 20), np.int32)
    two[2:8, 2:8], two[12:18, 12:18] = 1, 2
    one = np.zeros((20, 20), np.int32)
    one[2:8, 2:8] = 1
    found_one = one.copy()
    extra = one.copy()
    extra[12:18, 2:8] = 2
    assert validation_f1([two, one], [found_one, extra]) == pytest.approx(4 / 6)
    assert validation_f1([two], [two]) == 1.0


def test_equal_time_budgets_are_distinct_for_short_runs():
    """Runs that span only a few seconds (the smoke profile) must not give the same budget twice: the equal-time
    table is pivoted by budget, and a repeated one broke notebook 09."""
    from nucseg_lib.study.curves import _common_seconds

    curves = pd.DataFrame(
        {"method": ["a", "a", "b", "b"], "scale": 1.0, "seed": 0, "train_seconds": [2.2, 4.4, 2.0, 4.0]}
    )
    budgets = _common_seconds(curves)
    assert len(budgets) == len(set(budgets)) and list(budgets) == sorted(budgets)
    assert budgets[0] >= 2 and budgets[-1] <= 4
