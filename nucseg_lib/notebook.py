"""What every notebook does first and last: its Study from the parameters cell, and "What we found".

Each notebook's second cell is ``study = setup("<experiment>", globals())``: it reads the
variables of the parameters cell (``dataset``, ``profile``, ``data_root``, ``out_dir``, ``seed``
and the training overrides ``epochs``, ``steps_per_epoch``, ``batch_size``, ``patch_size``, ``lr``,
``ema``),
quiets TensorFlow's start-up messages and returns the :class:`~nucseg_lib.study.Study` that
holds the data splits, the cached models (``<out_dir>/models``) and the results
(``<out_dir>/results``). Its last cell prints :func:`findings`: the report's claims that this
notebook tests, with our numbers and the verdicts, computed from this run.
"""

from __future__ import annotations

import os

from .study import Study

PARAMETERS = ("dataset", "profile", "data_root", "out_dir", "seed")
OVERRIDES = ("epochs", "steps_per_epoch", "batch_size", "patch_size", "lr", "ema")  # None: the profile's


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


def findings(study: Study) -> str:
    """The report's claims tested by this notebook: ours [95% CI] against the report's, with the verdict.

    Read from this notebook's results fragment, so the text always matches the run's numbers.
    """
    from .book import claims_table
    from .claims import CLAIMS, ERF_CLAIM
    from .study import read_summary

    summary = read_summary(study.summary_path)
    mine = {c[0].split(" (")[0] for c in [*CLAIMS, ERF_CLAIM] if c[1] == study.experiment}
    table = claims_table(summary)
    table = table[[any(str(c).startswith(m) for m in mine) for c in table.claim]]
    if table.empty:
        return "This notebook tests none of the report's claims directly; see the tables above."
    lines = [
        f"- {r.claim}: ours {r['ours [95% CI]']}"
        + (f", report {r.paper}" if r.paper not in ("", None) else "")
        + f" -> {r.verdict}"
        for _, r in table.iterrows()
    ]
    return "\n".join(lines)


def show_table(df, digits: int = 3, index: bool = False) -> None:
    """Display a table as HTML (the rendered book shows a real table), numbers to ``digits`` places."""
    from IPython.display import display

    styler = df.style.format(precision=digits, na_rep="")
    display(styler if index else styler.hide(axis="index"))
