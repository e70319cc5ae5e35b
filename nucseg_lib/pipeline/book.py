"""The book's results page, generated from a run's ``results/summary.csv`` and ``results/run.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..study.claims import CLAIMS, CLUMP_CLAIM, ERF_BOTH_READINGS, ERF_CLAIM, f1_target, merged_target, verdict, why
from ..study.results import read_summary


def _read_run(results_dir: Path) -> dict:
    """A results folder's ``run.json`` (empty when the run wrote none)."""
    path = Path(results_dir) / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def format_ci(v, lo, hi):
    if pd.isna(v):
        return "n/a"
    if pd.isna(lo):
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def claims_table(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for c in CLAIMS:
        claim, exp, method, metrics, paper, how = c.text, c.experiment, c.method, c.metrics, c.paper, c.judge
        recorded = [m for m in metrics if ((summary.experiment == exp) & (summary.metric == m)).any()]
        metric = recorded[0] if recorded else metrics[0]
        if metric != metrics[0]:
            claim = f"{claim.split(' (')[0]} ({metric}: this run predates {metrics[0]})"
        sub = summary[(summary.experiment == exp) & (summary.metric == metric)]
        if method is not None:
            sub = sub[sub.method == method]
            div = summary[
                (summary.experiment == exp) & (summary.method == method) & (summary.metric == "diverged_at_step")
            ]
            if len(div):
                step = int(div.value.iloc[0])
                rows.append(
                    {
                        "claim": claim,
                        "paper": "" if paper is None else f"{paper:.3f}",
                        "ours [95% CI]": f"diverged at step {step}",
                        "n images": "",
                        "verdict": "training diverged (non-finite loss); no model to score",
                    }
                )
                continue
        if len(sub) == 0:
            trained = method is not None and (summary.experiment == exp).any() and (summary.method == method).any()
            rows.append(
                {
                    "claim": claim,
                    "paper": "" if paper is None else f"{paper:.3f}",
                    "ours [95% CI]": "not run",
                    "n images": "",
                    # the model ran but the run predates this measurement (re-run the notebook), or it did not run
                    "verdict": "not measured in this run (it predates the measurement)" if trained else "not run",
                }
            )
            continue
        r = sub.iloc[0]
        rows.append(
            {
                "claim": claim + ("" if method is not None else f" ({r.method})"),
                "paper": "" if paper is None else f"{paper:.3f}",
                "ours [95% CI]": f"{r.value:+.0f} {c.unit}" if c.unit else format_ci(r.value, r.ci_low, r.ci_high),
                "n images": int(r.n_images) if r.n_images else "",
                "verdict": verdict(r.value, r.ci_low, r.ci_high, paper, how),
            }
        )
    erf = summary[
        (summary.experiment == "receptive_field")
        & (summary.method == "unet_dice")
        & (summary.metric == "erf_diameter95_px")
    ]
    big = summary[(summary.experiment == "receptive_field") & (summary.metric == "largest_nucleus_feret_px")]
    equiv = summary[(summary.experiment == "receptive_field") & (summary.metric == "largest_nucleus_equivalent_px")]
    if len(erf) and len(big):
        d, n = float(erf.value.iloc[0]), float(big.value.iloc[0])
        ours, said = f"{d:.0f} vs {n:.0f}", "consistent" if d > n else "not reproduced"
        reason = None  # the claim's own reason (WHY), unless both readings of the size agree
        if len(equiv):  # both readings of "the largest nucleus": its longest extent and its equivalent diameter
            e = float(equiv.value.iloc[0])
            ours = f"{d:.0f} vs {n:.0f} (Feret), {e:.0f} (equivalent diameter)"
            if (d > n) != (d > e):
                said = f"depends on the definition: {said} against the Feret diameter, " + (
                    "consistent against the equivalent diameter" if d > e else "not against the equivalent diameter"
                )
            else:
                reason = ERF_BOTH_READINGS
        rows.append(
            {
                "claim": ERF_CLAIM[0],
                "paper": "yes",
                "ours [95% CI]": ours,
                "n images": int(erf.n_images.iloc[0]),
                "verdict": said,
                "why": reason,
            }
        )
    merged = summary[(summary.experiment == CLUMP_CLAIM[1]) & (summary.metric == "merged")].set_index("method")
    if "unet_dice_cc" in merged.index:
        cc = merged.loc["unet_dice_cc"]
        others = ", ".join(f"{m} {merged.loc[m].value:.0f}" for m in ("unet_boundary", "stardist") if m in merged.index)
        rows.append(
            {
                "claim": CLUMP_CLAIM[0],
                "paper": "yes (conclusion)",
                "ours [95% CI]": f"{cc.value:.0f} [{cc.ci_low:.0f}, {cc.ci_high:.0f}]"
                + (f"; {others}" if others else ""),
                "n images": int(cc.n_images),
                "verdict": "reproduced" if cc.value > 0 else "not reproduced: no merged nuclei",
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        reasons = table.claim.map(why)  # a row's own reason (the ERF row's, computed above) comes first
        table["why"] = reasons.mask(table["why"].notna(), table["why"]) if "why" in table else reasons
    return table


def beyond_lines(summary: pd.DataFrame) -> list[str]:
    """Markdown lines on the target of notebook 08 (ground-truth-free U-Net against StarDist)."""
    sub = summary[summary.experiment == "beyond"].set_index(["method", "metric"])

    def get(method, metric):
        return sub.loc[(method, metric)] if (method, metric) in sub.index else None

    f1_b, f1_s = get("unet_boundary", "f1@0.5"), get("stardist", "f1@0.5")
    m_b, m_cc = get("unet_boundary", "merged"), get("unet_dice_cc", "merged")
    diff = get("unet_boundary", "f1@0.5_minus_stardist")
    if f1_b is None or f1_s is None or m_b is None or m_cc is None:
        return ["Notebook 08 has not run in this run."]
    lines = [
        "Target: the ground-truth-free boundary-aware U-Net (`unet_boundary`) reaches at least StarDist's "
        "F1 at IoU 0.5, and has at most half the merged nuclei of the Dice-loss U-Net with connected "
        "components (`unet_dice_cc`).",
        "",
        f"- F1 at IoU 0.5: `unet_boundary` {format_ci(f1_b.value, f1_b.ci_low, f1_b.ci_high)}, `stardist` "
        f"{format_ci(f1_s.value, f1_s.ci_low, f1_s.ci_high)}: "
        + f"**{f1_target(f1_b.value, f1_s.value)}** (point estimates)",
    ]
    if diff is not None:
        contains = diff.ci_low <= 0 <= diff.ci_high
        lines.append(
            f"- paired difference `unet_boundary` - `stardist`: {diff.value:+.3f} "
            f"[{diff.ci_low:+.3f}, {diff.ci_high:+.3f}] over {int(diff.n_images)} test images: "
            + (
                "the interval contains 0, so this test set cannot tell the two apart"
                if contains
                else "the interval excludes 0"
            )
        )
    lines.append(
        f"- merged nuclei: `unet_boundary` {m_b.value:.0f} [{m_b.ci_low:.0f}, {m_b.ci_high:.0f}], "
        f"`unet_dice_cc` {m_cc.value:.0f} [{m_cc.ci_low:.0f}, {m_cc.ci_high:.0f}]: "
        + f"**{merged_target(m_b.value, m_cc.value)}**"
    )
    return lines


def seed_table(results_dirs: list[Path]) -> pd.DataFrame:
    """Notebook 08's headline numbers, one row per training seed (one run folder per seed).

    Bootstrap intervals only say how much a number depends on the test images; training the
    same models with another seed shows the other source of variation.
    """
    rows = []
    for d in results_dirs:
        d = Path(d)
        run = _read_run(d)
        sub = read_summary(d / "summary.csv")
        sub = sub[sub.experiment == "beyond"].set_index(["method", "metric"])
        if ("unet_boundary", "f1@0.5") not in sub.index:
            continue

        def get(method, metric, sub=sub, column="value"):
            return sub[column].get((method, metric), np.nan)

        diff = [get("unet_boundary", "f1@0.5_minus_stardist", column=c) for c in ("value", "ci_low", "ci_high")]

        rows.append(
            {
                "seed": run.get("parameters", {}).get("seed", "?"),
                "F1@0.5 unet_boundary": f"{get('unet_boundary', 'f1@0.5'):.3f}",
                "F1@0.5 stardist": f"{get('stardist', 'f1@0.5'):.3f}",
                "F1@0.5 unet_dice_cc": f"{get('unet_dice_cc', 'f1@0.5'):.3f}",
                "pixel Dice unet_dice": f"{get('unet_dice', 'dice'):.3f}",
                "boundary - stardist [95% CI]": f"{diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]",
                "merged boundary / dice_cc": f"{get('unet_boundary', 'merged'):.0f} / {get('unet_dice_cc', 'merged'):.0f}",
            }
        )
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def code_lines(run: dict) -> list[str]:
    """The run page's line on the code that made the run (``run.json``'s ``code``; none for runs made before it
    was recorded): the commit(s) its jobs ran, whether that code had uncommitted changes, and which jobs began
    before commits were recorded."""
    code = run.get("code") or {}
    commits, unrecorded = code.get("commits") or [], code.get("unrecorded_jobs") or []
    if not commits:
        return []
    what = "commit " if len(commits) == 1 else "commits "
    line = f"- code: {what}{', '.join(c[:10] for c in commits)} of this repository"
    if len(commits) > 1:
        line += " (its jobs ran at different commits)"
    if code.get("modified"):
        line += ", with uncommitted changes to the library, notebooks or workflow"
    if unrecorded:
        line += f"; {len(unrecorded)} job{'s' * (len(unrecorded) > 1)} began before commits were recorded"
    return [line]


def unet_lr(run: dict) -> float:
    """The Adam learning rate of a run's U-Nets, from ``run.json``. Runs assembled before it was recorded
    trained at the report's 1e-4: the profiles had no learning rate then, and TrainConfig's default is 1e-4."""
    return (run.get("budget") or {}).get("unet_lr", 1e-4)


def stardist_lr(run: dict) -> float:
    """The Adam learning rate of a run's StarDist, from ``run.json``. Runs assembled before it was recorded
    trained at StarDist's own default, 3e-4 (the profiles' value then)."""
    return (run.get("budget") or {}).get("stardist_lr", 3e-4)


def unet_training(run: dict) -> str:
    """The U-Nets' optimiser settings in a run (``run.json``), in the words every page uses: the Adam learning
    rate and the weight average (its decay per step, or none)."""
    ema = (run.get("budget") or {}).get("unet_ema", 0.0)
    average = f"weights averaged (decay {ema:g} per step)" if ema else "no weight average"
    return f"Adam learning rate {unet_lr(run):g}, {average}"


def run_settings(run: dict) -> dict:
    """What makes two runs' numbers differ beyond the data: when, CPU, precision, the U-Nets' learning rate and
    weight average, StarDist's learning rate (``run.json``; runs assembled before these were recorded had 1e-4,
    none and 3e-4)."""
    hw = run.get("hardware") or {}
    cpu = hw.get("cpu", "an unrecorded CPU") + (" with " + "/".join(hw["cpu_bf16"]) if hw.get("cpu_bf16") else "")
    return {
        "assembled": str(run.get("assembled") or run.get("end") or "an unrecorded date")[:10],
        "cpu": cpu,
        "precision": hw.get("precision", "fp32"),
        "training": f"{unet_training(run)}; StarDist at Adam learning rate {stardist_lr(run):g}",
    }


def other_run_note(what: str, other: dict, this: dict) -> str | None:
    """A sentence saying that ``what`` comes from the run ``other``, not ``this`` (both ``run.json`` records),
    and how the two differ: settings and CPU, and whether ``other``'s code is unrecorded where ``this`` names its
    commit (a run published before commits were recorded may predate fixes that the changelog lists). None when
    they do not differ."""
    a, b = run_settings(other), run_settings(this)
    unrecorded = not (other.get("code") or {}).get("commits") and bool((this.get("code") or {}).get("commits"))
    code = (
        "it was published before runs recorded the commit of their code, so it may predate changes to the code "
        "that the changelog lists"
    )
    if {k: a[k] for k in ("cpu", "precision", "training")} == {k: b[k] for k in ("cpu", "precision", "training")}:
        if not unrecorded:
            return None
        return (
            f"{what} comes from another run than the rest of this book: assembled {a['assembled']}, on the same CPU "
            f"with the same precision and training settings, but {code}. Its comparisons are made within that run, "
            f"every method trained there."
        )
    return (
        f"{what} comes from another run than the rest of this book: assembled {a['assembled']} on {a['cpu']}, "
        f"U-Nets in {a['precision']} with {a['training']}; the rest of the book: assembled {b['assembled']} on "
        f"{b['cpu']}, {b['precision']}, {b['training']}. Its comparisons are made within that run, every method "
        f"trained there; its numbers are not those of the models on the other pages, and its seconds are those of "
        f"its own CPU." + (f" Its code is not recorded: {code}." if unrecorded else "")
    )


def curves_lines(curves: pd.DataFrame, training: str, note: str | None = None) -> list[str]:
    """Markdown on the learning curves (notebook 09's ``time_to_accuracy.csv``; ``training``: their run's
    settings in :func:`run_settings`' words): who wins at equal steps and at equal wall-clock time, per budget,
    with the seeds' spread."""
    from ..study.curves import leaders, winner_by_budget

    seeds = sorted(curves.seed.unique())
    lines = [
        "## How long to train: learning curves",
        "",
        f"From {{doc}}`../notebooks/09_learning_curves`: one long run per method, scale and training seed "
        f"(seeds {', '.join(map(str, seeds))}; U-Nets at {training}), its snapshots evaluated "
        f"with post-processing tuned on "
        f"validation images and scored on the test images at their native resolution. Test F1 at IoU 0.5, "
        f"the seeds' mean [min-max]:",
        "",
        *([f"```{{note}}\n{note}\n```", ""] if note else []),
    ]
    for by, label in (("steps", "training steps"), ("train_seconds", "training time (s)")):
        w = winner_by_budget(curves, by=by)
        w["run"] = w.method + " " + w.scale.map(lambda x: f"{x:g}x")
        w["cell"] = [f"{m:.3f} [{lo:.3f}-{hi:.3f}]" for m, lo, hi in zip(w["mean"], w.low, w.high)]
        table = w.pivot(index="budget", columns="run", values="cell").reset_index().rename(columns={"budget": label})
        lines += [f"**At equal {label}:**", "", _md_table(table), ""]
        lines += [f"- {b:g}: {v}" for b, v in zip(leaders(w).budget, leaders(w).verdict)] + [""]
    return lines


def _budget_lines(run: dict) -> list[str]:
    """The run's training budget per model, as ``run.json`` records it (runs assembled before it did: none)."""
    b = run.get("budget")
    if not b:
        return []
    precision = (run.get("hardware") or {}).get("precision", "fp32")
    return [
        f"- training budget per model: U-Nets {b['unet_steps']} steps ({b['unet_epochs']} epochs, "
        f"{unet_training(run)}), StarDist "
        f"{b['stardist_steps']} steps (Adam learning rate {stardist_lr(run):g}); batches of {b['batch_size']} "
        f"patches of {b['patch_size_px']}x{b['patch_size_px']} px; U-Net precision {precision}"
    ]


def compared_settings(run: dict) -> str:
    """The sentence naming both methods' training settings in a run (``run.json``): the headline comparison is
    fair only when each got the same care (each setting chosen on validation images: the methods page)."""
    from ..study.profiles import STARDIST_LR_CHOSEN

    b = run.get("budget") or {}
    if not b:
        return ""
    chosen = (
        "the one chosen on validation images"
        if stardist_lr(run) == STARDIST_LR_CHOSEN
        else f"not the {STARDIST_LR_CHOSEN:g} chosen on Coelho 2009's validation images at the cpu profile's budget"
    )
    return (
        f"Settings: the boundary U-Net {b['unet_steps']} steps at {unet_training(run)} "
        f"({{ref}}`learning-rate`); StarDist {b['stardist_steps']} steps at Adam learning rate "
        f"{stardist_lr(run):g}, {chosen} ({{ref}}`stardist-settings`)."
    )


def cv_lines(summary: pd.DataFrame, note: str | None = None, settings: str = "") -> list[str]:
    """Markdown on the cross-validation (notebook 10's rows of ``summary.csv``): both methods' pooled F1 over
    all the images and the paired difference, overall and per cell line, under ``settings``
    (:func:`compared_settings`); empty when it did not run."""
    rows = summary[summary.experiment == "cross_validation"]
    diff = rows[rows.metric.str.startswith("f1@0.5_minus_stardist")]
    if not len(diff):
        return []
    overall = diff[diff.metric == "f1@0.5_minus_stardist"].iloc[0]
    table = []
    for metric in sorted(diff.metric):
        group = metric.split(":", 1)[1] if ":" in metric else "all"
        suffix = "" if group == "all" else f":{group}"
        cell = {}
        for method, m in (("unet_boundary", f"f1@0.5{suffix}"), ("stardist", f"f1@0.5{suffix}")):
            r = rows[(rows.method == method) & (rows.metric == m)]
            cell[f"{method} F1@0.5 [95% CI]"] = format_ci(*r[["value", "ci_low", "ci_high"]].iloc[0]) if len(r) else ""
        d = diff[diff.metric == metric].iloc[0]
        table.append(
            {
                "images": f"{group} ({int(d.n_images)})",
                **cell,
                "difference [paired 95% CI]": format_ci(d.value, d.ci_low, d.ci_high),
                "verdict": "unet_boundary leads"
                if d.ci_low > 0
                else "StarDist leads"
                if d.ci_high < 0
                else "cannot be told apart",
            }
        )
    return [
        "## Every image a test image: cross-validation",
        "",
        f"From {{doc}}`../notebooks/10_cross_validation`: the headline comparison (boundary U-Net against "
        f"StarDist) repeated over folds that make each of the {int(overall.n_images)} images a test image once, each "
        f"method trained on the other folds with post-processing chosen on their validation images:",
        "",
        *([settings, ""] if settings else []),
        *([f"```{{note}}\n{note}\n```", ""] if note else []),
        _md_table(pd.DataFrame(table)),
        "",
        *_cv_merged_lines(rows),
    ]


def _cv_merged(rows: pd.DataFrame):
    """The cross-validation's merged-nuclei rows (``unet_boundary``, ``stardist``) over all the images; None when
    notebook 10 did not record them."""
    merged = rows[(rows.experiment == "cross_validation") & (rows.metric == "merged")].set_index("method")
    if not {"unet_boundary", "stardist"} <= set(merged.index):
        return None
    return merged.loc["unet_boundary"], merged.loc["stardist"]


def _cv_merged_lines(rows: pd.DataFrame) -> list[str]:
    """The cross-validation's merged-nuclei counts of both methods (F1 alone hides that trade-off)."""
    merged = _cv_merged(rows)
    if merged is None:
        return []
    b, s = merged
    return [
        f"Merged nuclei over all {int(b.n_images)} images (true nuclei covered by one prediction that also covers "
        f"another): `unet_boundary` {b.value:.0f} [{b.ci_low:.0f}, {b.ci_high:.0f}], `stardist` {s.value:.0f} "
        f"[{s.ci_low:.0f}, {s.ci_high:.0f}].",
        "",
    ]


def run_caveat(run: dict) -> str:
    """The "Not findings" sentence (:func:`~nucseg_lib.study.notebook.not_findings_caveat`) for a run's ``run.json``:
    a short profile or the synthetic data; empty for a real-data run at the cpu or full budget."""
    from types import SimpleNamespace

    from ..study.notebook import not_findings_caveat
    from ..study.profiles import PROFILES

    profile = PROFILES.get(run.get("profile"))
    if profile is None:
        return ""
    return not_findings_caveat(SimpleNamespace(profile=profile, dataset=run.get("dataset"))).strip()


def key_findings(
    summary: pd.DataFrame,
    cv_rows: pd.DataFrame | None = None,
    caveat: str = "",
    run: dict | None = None,
    cv_run: dict | None = None,
) -> list[str]:
    """An admonition with the run's key findings, computed from its summary (and a cross-validation run's rows):
    the count of the report's claims by verdict, the headline paired difference, the clumping, and the verdict
    over all the images when the cross-validation ran; headed by ``caveat`` (:func:`run_caveat`) when the run
    cannot test the report. Given the runs' ``run.json`` records (``run``, ``cv_run``), each comparison names
    StarDist's learning rate: the two may differ (the methods page, "StarDist's settings"). Empty for an empty
    summary."""

    def trained(record):
        return f"; StarDist at Adam learning rate {stardist_lr(record):g}" if record is not None else ""

    def lead(d):  # the boundary U-Net against StarDist, from a paired difference's 95% interval
        return "leads" if d.ci_low > 0 else "trails" if d.ci_high < 0 else "cannot be told apart from"

    if not len(summary):
        return []
    table = claims_table(summary)
    judged = table[~table.verdict.isin(["not run", "new"]) & ~table.verdict.str.startswith("not measured")]
    agree = judged.verdict.str.startswith(("consistent", "reproduced"))
    held = "; ".join(c.split(" (")[0].split(":")[0] for c in judged.claim[agree]) or "none"
    bullets = [
        f"Of the report's claims checked here, {int(agree.sum())} of {len(judged)} hold ({held}); the others "
        f"differ: see the table and the reason next to each verdict."
    ]
    beyond = summary[summary.experiment == "beyond"].set_index(["method", "metric"])
    split = None  # the test split's paired difference, which the cross-validation's verdict is compared with
    if ("unet_boundary", "f1@0.5_minus_stardist") in beyond.index:
        split = d = beyond.loc[("unet_boundary", "f1@0.5_minus_stardist")]
        bullets.append(
            f"Without ground truth at test time, the boundary-aware U-Net {lead(d)} StarDist: F1 at IoU 0.5 "
            f"difference {format_ci(d.value, d.ci_low, d.ci_high)} (paired, {int(d.n_images)} test images"
            f"{trained(run)})."
        )
    if ("unet_dice_cc", "merged") in beyond.index and ("unet_boundary", "merged") in beyond.index:
        bullets.append(
            f"The Dice U-Net with connected components merges touching nuclei ({beyond.loc[('unet_dice_cc', 'merged')].value:.0f} "
            f"merged); the boundary-aware U-Net merged {beyond.loc[('unet_boundary', 'merged')].value:.0f}."
        )
    rows = cv_rows if cv_rows is not None else summary
    cv = rows[(rows.experiment == "cross_validation") & (rows.metric == "f1@0.5_minus_stardist")]
    if len(cv):
        d = cv.iloc[0]
        merged = _cv_merged(rows)
        clumps = f"; it merged {merged[0].value:.0f} nuclei, StarDist {merged[1].value:.0f}" if merged else ""
        bullets.append(
            f"Over every image (cross-validation, {int(d.n_images)} images) the boundary-aware U-Net {lead(d)} "
            f"StarDist: difference {format_ci(d.value, d.ci_low, d.ci_high)} (paired{trained(cv_run)}){clumps}."
        )
        if split is not None and lead(split) != lead(d):  # two verdicts on one question: say why they differ
            t = split
            bullets[-1] += (
                f" That verdict differs from the test split's: its {int(t.n_images)} images give a 95% interval "
                f"{t.ci_high - t.ci_low:.3f} wide around {t.value:+.3f}, these {int(d.n_images)} one "
                f"{d.ci_high - d.ci_low:.3f} wide around {d.value:+.3f}."
            )
    title = "What this run shows (not findings)" if caveat else "Key findings"
    return [f"```{{admonition}} {title}", *([caveat, ""] if caveat else []), *[f"- {b}" for b in bullets], "```", ""]


def write_results_page(
    results_dir: Path, target: Path, replicates=(), curves: Path | None = None, cv: Path | None = None
) -> Path:
    """Write the markdown results page for the run whose results are in ``results_dir``.

    ``replicates``: results folders of the same study run with other training seeds (notebook
    08 only); their headline numbers are tabulated next to this run's. ``curves``: the
    learning curves' ``time_to_accuracy.csv`` (default: the run's own, if notebook 09 ran in it).
    ``cv``: the ``results/`` folder of the cross-validation run (default: the run's own rows, if notebook
    10 ran in it).
    """
    results_dir = Path(results_dir)
    curves = Path(curves) if curves else results_dir / "time_to_accuracy.csv"
    summary = read_summary(results_dir / "summary.csv")
    run = _read_run(results_dir)
    hw, ver = run.get("hardware", {}), run.get("versions", {})
    other_cv = cv is not None and Path(cv) != results_dir  # the cross-validation of a sibling run
    cv_rows = read_summary(Path(cv) / "summary.csv") if other_cv else summary
    cv_run = _read_run(Path(cv)) if other_cv else run
    lines = [
        "# Results",
        "",
        "This page is generated from `results/summary.csv` and `results/run.json` of the run shown in "
        "this book; every number below is in those files. The run's settings, machine and timings follow "
        "the verdicts.",
        "",
        *key_findings(summary, cv_rows, run_caveat(run), run, cv_run),
    ]
    run_lines = [
        "## The run",
        "",
        f"- dataset: **{run.get('dataset', '?')}**, profile: **{run.get('profile', '?')}**",
        f"- finished {run.get('assembled') or run.get('end', '?')}; its jobs (notebooks, shared models, "
        f"learning-curve runs) took {run.get('duration_s', float('nan')) / 60:.1f} minutes in all",
        *(
            [
                "- resumed after an interruption (their seconds count the last attempt only): "
                + ", ".join(
                    f"{job} ({n} unfinished attempt{'s' * (n > 1)})" for job, n in run["interrupted_jobs"].items()
                )
            ]
            if run.get("interrupted_jobs")
            else []
        ),
        *_budget_lines(run),
        f"- hardware: {hw.get('cpu', '?')}, {hw.get('cores', '?')} cores, GPU: {hw.get('gpu') or 'none'}",
        *(
            [
                f"- memory settings: transparent huge pages `{hw.get('transparent_hugepages')}`, "
                f"`GLIBC_TUNABLES={hw.get('glibc_tunables') or ''}`"
            ]
            if "glibc_tunables" in hw
            else []
        ),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v),
        *code_lines(run),
        "",
        "| notebook | status | seconds |",
        "|---|---|---|",
    ]
    for name, nb in run.get("notebooks", {}).items():
        run_lines.append(f"| {name} | {nb.get('status')} | {nb.get('seconds', float('nan')):.0f} |")
    run_lines += [
        "",
        "Seconds are those of each notebook's last execution. Trained models are cached in the run's "
        "`models/` folder, so a notebook executed again after its models were trained loads them and its "
        "seconds leave the training out; the `train_seconds` rows below give the training times.",
    ]
    lines += [
        "",
        "## The report's claims, checked",
        "",
        "Paper numbers are from the report (Kromp data, full resolution, 100 epochs of 256x256 patches); ours "
        "are from the run below, with 95% bootstrap confidence intervals over test images. "
        "*Consistent* means the report's number lies inside our interval. Differences in data, "
        "image scale and training budget (see {doc}`methods`) are reasons for a difference as "
        "much as the method is.",
        "",
    ]
    lines.append(_md_table(claims_table(summary)) if len(summary) else "No results yet.")
    if len(summary):
        lines += ["", "## Beyond the paper: ground-truth-free instances", ""] + beyond_lines(summary)
        settings = compared_settings(run)
        lines += ["", settings] if settings else []
        seeds = seed_table([results_dir, *replicates]) if replicates else pd.DataFrame()
        if len(seeds) > 1:
            lines += [
                "",
                "Training seeds: the same notebook run again with other seeds (same data and split, "
                "`seeds=[0,N] notebooks=08` in the workflow). The spread between seeds is a second source of uncertainty, next to "
                "the bootstrap intervals over test images.",
                "",
                _md_table(seeds),
            ]
        if curves.exists():
            other = _read_run(curves.parent)
            note = other_run_note("This section", other, run) if curves.parent != results_dir else None
            lines += [""] + curves_lines(pd.read_csv(curves), run_settings(other)["training"], note)
        note = other_run_note("This section", cv_run, run) if other_cv else None  # how that run differs
        lines += [""] + cv_lines(cv_rows, note, compared_settings(cv_run))
    lines += [""] + run_lines
    if len(summary):
        lines += ["", "## All numbers", "", "Every row of `summary.csv` (value [95% CI], number of test images).", ""]
        show = summary.copy()
        show["value [95% CI]"] = [format_ci(v, lo, hi) for v, lo, hi in zip(show.value, show.ci_low, show.ci_high)]
        show = show[["experiment", "method", "metric", "value [95% CI]", "n_images"]]
        lines.append(_md_table(show))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")
    return target
