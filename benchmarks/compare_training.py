"""Does a training setting change accuracy? A U-Net trained under each value of one setting
(``precision``, the Adam learning rate ``lr`` or the decay ``ema`` of the weight average), same data,
seeds and steps. ``--method`` picks the model: the boundary U-Net with watershed (``unet_boundary``, the
default), the Dice U-Net with connected components (``unet_dice_cc``) or StarDist (``stardist``: its
learning rate only, at the profile's schedule, with snapshots at ``--budgets``; its scale with ``--scale``).

Prints a table; it is not a test. Usage::

    python benchmarks/compare_training.py --data-root ../shared/data/coelho2009 --budgets 200 400 --seeds 0
    python benchmarks/compare_training.py --data-root ../shared/data/coelho2009 --setting lr \
        --values 1e-4 3e-4 1e-3 --seeds 0 1
    python benchmarks/compare_training.py --data-root ../shared/data/coelho2009 --setting ema \
        --method unet_dice_cc --values 0 0.995 --seeds 0
    python benchmarks/compare_training.py --data-root ../shared/data/coelho2009 --method stardist \
        --setting lr --values 3e-4 1e-3 --budgets 400 800 1200 1600 --scale 2

With ``--budgets``, each (value, seed) trains one run of the largest budget with snapshots at the
others (:mod:`nucseg_lib.study.curves`); without, it trains the model exactly as the study does at the
profile's budget (the same configuration, hence the same cache key as the study's boundary
or Dice U-Net). Both use the profile's data at its downscaling factor, or at ``--scale``. Each model is
scored like the learning curves: post-processing (watershed, or the components' threshold) tuned on
validation images (``val_f1@0.5``: choose on this column), test F1 at native resolution with 95%
bootstrap CIs; without ``--budgets`` also notebook 02's test pixel Dice (foreground probability > 0.5,
at the model's scale). bf16 is used only where the CPU supports it natively; elsewhere both precision
rows are fp32 and that comparison says nothing.
"""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd

SETTINGS = {"precision": (str, ["fp32", "bf16"]), "lr": (float, [1e-4, 3e-4]), "ema": (float, [0.0, 0.995])}


def pixel_dice(study, model) -> dict:
    """Notebook 02's score: mean test Dice of the foreground (probability > 0.5) at the model's scale, 95% CI."""
    from nucseg_lib.metrics import mean_with_ci
    from nucseg_lib.train.unet import pixel_dices

    ci = mean_with_ci(pixel_dices(model, study.test), n_boot=study.profile.n_boot, seed=study.seed)
    return {"dice": ci["value"], "dice_ci_low": ci["ci_low"], "dice_ci_high": ci["ci_high"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="coelho2009")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="precision")
    ap.add_argument("--method", choices=["unet_boundary", "unet_dice_cc", "stardist"], default="unet_boundary")
    ap.add_argument(
        "--values", nargs="+", default=None, help="values of the setting (default: fp32 bf16; 1e-4 3e-4; 0 0.995)"
    )
    ap.add_argument("--budgets", type=int, nargs="+", default=None, help="snapshot steps (default: the profile's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--scale", type=float, default=None, help="image downscaling factor (default: the profile's)")
    ap.add_argument("--out", default=None, help="run folder (default: runs/compare-<setting>)")
    a = ap.parse_args()
    from nucseg_lib.machine import cpu_bf16_features, cpu_name
    from nucseg_lib.methods import METHODS
    from nucseg_lib.study.curves import evaluate_snapshot, learning_curve, plan, run_variant
    from nucseg_lib.study.profiles import training_budget
    from nucseg_lib.study.study import Study

    kind, default = SETTINGS[a.setting]
    values = [kind(v) for v in (a.values or default)]
    out = a.out or f"runs/compare-{a.setting}"
    study = Study(a.dataset, a.profile, a.data_root, out, experiment="")
    if a.scale:
        study = study.at_scale(a.scale)
    if a.method == "stardist" and a.setting != "lr":
        ap.error("StarDist compares learning rates (--setting lr); precision and the weight average are U-Net settings")
    p = plan(study.profile, a.dataset, a.budgets, a.seeds, []) if a.budgets else None
    rows = []
    for value in values:
        for seed in a.seeds:
            if a.method == "stardist":  # the study's own schedule (epochs of its length), snapshots at the budgets
                variant = study.variant(seed=seed, stardist_lr=value)
                steps = variant.profile.stardist_epochs * variant.profile.stardist_steps
                rows.append(learning_curve(variant, "stardist", a.budgets or [steps]).assign(lr=value))
                continue
            if p:
                variant = run_variant(study, p, study.scale, seed).variant(**{a.setting: value})
                rows.append(learning_curve(variant, a.method, p["budgets"]).assign(**{a.setting: value}))
                continue
            variant = study.variant(seed=seed, **{a.setting: value})
            model, history, folder = variant.unet(METHODS[a.method].loss)
            final = pd.Series(
                {
                    "steps": training_budget(variant.profile)["unet_steps"],
                    "train_seconds": history.seconds.sum(),
                    "precision": json.loads((folder / "config.json").read_text())["precision"],
                    "weights": folder / "weights.pt",
                }
            )
            row = evaluate_snapshot(variant, a.method, folder, final)
            rows.append(pd.DataFrame([{**row, **pixel_dice(variant, model)}]).assign(**{a.setting: value}))
    table = pd.concat(rows, ignore_index=True)
    table.to_csv(os.path.join(out, f"compare_{a.setting}.csv"), index=False)
    cols = [a.setting] * (a.setting != "precision") + ["precision", "seed", "steps", "train_seconds", "val_f1@0.5"]
    cols += ["f1@0.5", "f1@0.5_ci_low", "f1@0.5_ci_high", "f1@0.7", "ap@0.5:0.95"]
    cols += ["dice", "dice_ci_low", "dice_ci_high"] * (not a.budgets and a.method != "stardist")
    print(
        f"{a.method} on {a.dataset} ({a.profile} profile data, {study.scale:g}x downscaled), {cpu_name()} "
        f"(bf16 features: {', '.join(cpu_bf16_features()) or 'none'}), {os.environ.get('OMP_NUM_THREADS', 'all')} "
        f"threads"
    )
    shown = table[cols].round(3)
    shown[a.setting] = table[a.setting].map(str if a.setting == "precision" else "{:g}".format)
    print(shown.to_string(index=False))


if __name__ == "__main__":
    main()
