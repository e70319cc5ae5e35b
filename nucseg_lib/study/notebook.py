"""What every notebook does first and last: its Study from the parameters cell, and "What we found".

Each notebook's second cell is ``study = setup("<experiment>", globals())``: it reads the
variables of the parameters cell (``dataset``, ``profile``, ``data_root``, ``out_dir``, ``seed``
and the training overrides ``epochs``, ``steps_per_epoch``, ``batch_size``, ``patch_size``, ``lr``,
``ema``, ``stardist_lr``),
quiets TensorFlow's start-up messages and returns the :class:`~nucseg_lib.study.study.Study` that
holds the data splits, the cached models (``<out_dir>/models``) and the results
(``<out_dir>/results``). Its last cell prints :func:`findings`: the report's claims that this
notebook tests, with our numbers and the verdicts, computed from this run.
"""

from __future__ import annotations

import os

from .parameters import OVERRIDES, PARAMETERS
from .study import Study


def setup(experiment: str, parameters: dict) -> Study:
    """The Study of a notebook run, from its parameters (the notebook passes ``globals()``)."""
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow
    # tqdm.auto (used by libraries) warns when ipywidgets is missing, then falls back to a text bar:
    # the bar is what we want, the warning would only end up in the published outputs
    warnings.filterwarnings("ignore", message="IProgress not found")
    missing = [k for k in PARAMETERS if k not in parameters]
    if missing:
        raise NameError(f"run the parameters cell first (missing: {', '.join(missing)})")
    return Study(
        *(parameters[k] for k in PARAMETERS), experiment=experiment, **{k: parameters.get(k) for k in OVERRIDES}
    )


SHORT_PROFILES = ("smoke", "demo", "quick")  # minutes of training: they show that a notebook runs, not findings


def not_findings_caveat(study: Study) -> str:
    """The sentence that heads "What we found" when the run cannot test the report: a short profile or the
    synthetic data. Empty for a real-data run at the cpu or full budget."""
    p, dataset = getattr(study, "profile", None), getattr(study, "dataset", None)
    if p is None or (p.name not in SHORT_PROFILES and dataset != "synthetic"):
        return ""
    data = "synthetic nuclei" if dataset == "synthetic" else f"{dataset} images"
    return (
        f"Not findings: this run trained each model for {p.epochs * p.steps_per_epoch} steps (the `{p.name}` "
        f"profile) on {data}: the numbers below show that the notebook runs end to end, not whether the report's "
        f"claims hold. Those are judged by the `cpu` profile on real images (the rendered book).\n\n"
    )


def findings(study: Study) -> str:
    """The report's claims tested by this notebook: ours [95% CI] against the report's, with the verdict.

    Read from this notebook's results fragment, so the text always matches the run's numbers. A run of a
    short profile or on synthetic data is headed by :func:`not_findings_caveat`; a claim whose model this
    run did not train (a top-K grid without K = 10%) says which parameter left it out, and the models the
    run trained instead (K = 2%) are listed with their numbers.
    """
    from ..pipeline.book import claims_table, format_ci
    from .claims import CLAIMS, ERF_CLAIM
    from .results import read_summary

    summary = read_summary(study.results.summary_path)
    mine = {text.split(" (")[0] for text, experiment, *_ in [*CLAIMS, ERF_CLAIM] if experiment == study.experiment}
    table = claims_table(summary)
    table = table[[any(str(c).startswith(m) for m in mine) for c in table.claim]]
    caveat = not_findings_caveat(study)
    if table.empty:
        return caveat + "This notebook tests none of the report's claims directly; see the tables above."
    lines = []
    for _, r in table.iterrows():
        if r.verdict == "not run":
            lines.append(f"- {r.claim}: not trained in this run (its parameters leave this model out)")
            continue
        if r.verdict.startswith("not measured"):
            lines.append(f"- {r.claim}: {r.verdict}")
            continue
        paper = f", report {r.paper}" if r.paper not in ("", None) else ""
        lines.append(f"- {r.claim}: ours {r['ours [95% CI]']}{paper} -> {r.verdict}")
    claimed = {c.method for c in CLAIMS if c.experiment == study.experiment}
    metrics = {c.metrics[0] for c in CLAIMS if c.experiment == study.experiment}
    extra = summary[
        (summary.experiment == study.experiment) & summary.metric.isin(metrics) & ~summary.method.isin(claimed)
    ]
    for _, r in extra.iterrows():
        if str(r.method).startswith("unet_topk_"):  # a K of this run's own grid, not the report's
            lines.append(
                f"- {r.method} (a K of this run's parameters, not in the report): {r.metric} "
                f"{format_ci(r.value, r.ci_low, r.ci_high)}"
            )
    return caveat + "\n".join(lines)


def show_table(df, digits: int = 3, index: bool = False) -> None:
    """Display a table as HTML (the rendered book shows a real table), numbers to ``digits`` places."""
    from IPython.display import display

    styler = df.style.format(precision=digits, na_rep="")
    display(styler if index else styler.hide(axis="index"))
