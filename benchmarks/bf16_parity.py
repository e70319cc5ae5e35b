"""Does bf16 training cost accuracy? The boundary U-Net trained in fp32 and in bf16, same data, seed and steps.

Prints a table; it is not a test. Usage::

    python benchmarks/bf16_parity.py --data-root ../shared/data/coelho2009 --budgets 200 400 --seeds 0

Each (precision, seed) trains one run of the largest budget with snapshots at the others
(:mod:`nucseg_lib.curves`, cpu profile data at 4x), and each snapshot is scored like the
learning curves: watershed tuned on validation images, test F1 at native resolution with 95%
bootstrap CIs. bf16 is used only where the CPU supports it natively; elsewhere both rows are
fp32 and the comparison says nothing.
"""

from __future__ import annotations

import argparse
import os

import pandas as pd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="coelho2009")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--budgets", type=int, nargs="+", default=[200, 400])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/bf16-parity")
    a = ap.parse_args()
    from nucseg_lib.curves import learning_curve, plan, run_variant
    from nucseg_lib.machine import cpu_bf16_features, cpu_name
    from nucseg_lib.study import Study

    study = Study(a.dataset, a.profile, a.data_root, a.out, experiment="")
    p = plan(study.profile, a.dataset, a.budgets, a.seeds, [])
    rows = []
    for precision in ("fp32", "bf16"):
        for seed in a.seeds:
            variant = run_variant(study, p, study.scale, seed).variant(precision=precision)
            rows.append(learning_curve(variant, "unet_boundary", p["budgets"]))
    table = pd.concat(rows, ignore_index=True)
    table.to_csv(os.path.join(a.out, "bf16_parity.csv"), index=False)
    cols = [
        "precision",
        "seed",
        "steps",
        "train_seconds",
        "f1@0.5",
        "f1@0.5_ci_low",
        "f1@0.5_ci_high",
        "f1@0.7",
        "ap@0.5:0.95",
    ]
    print(
        f"unet_boundary on {a.dataset} ({a.profile} profile data), {cpu_name()} "
        f"(bf16 features: {', '.join(cpu_bf16_features()) or 'none'}), {os.environ.get('OMP_NUM_THREADS', 'all')} "
        f"threads"
    )
    print(table[cols].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
