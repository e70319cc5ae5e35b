"""The study's parameters, declared once: name, what it is, and the check of its value.

The workflow reads its configuration (``workflow/config.yaml`` and ``--config``) through
:func:`check_config`, so a wrong value (``seeds=[-1]``, ``k_fractions=[1.5]``, ``lr=0``) stops
the workflow before any job, even a dry run, with one message naming every bad key; it would
otherwise fail later, inside a job, after other jobs had trained for minutes.

Values arrive as YAML gives them (numbers, lists, null) or as ``--config`` text (``seeds=[0,1]``
may arrive as ``['0', '1']``); :func:`check_config` returns them as numbers.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Callable


class ParameterError(ValueError):
    """One or more parameters have values the study cannot run with; the message names each one."""


def _number(v) -> float:
    if isinstance(v, bool):
        raise ValueError("a yes/no value is not a number")
    if isinstance(v, str):
        return float(v.strip())
    if isinstance(v, (int, float)):
        return float(v)
    raise ValueError(f"{v!r} is not a number")


def _listed(v) -> list:
    """A list from a list, a single value, or text such as ``"[0.05, 0.3]"``."""
    if isinstance(v, str):
        try:
            v = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            v = [x for x in v.strip("[] ").split(",") if x.strip()]
    return list(v) if isinstance(v, (list, tuple)) else [v]


def whole(lo: int = 0) -> Callable:
    def check(v):
        x = _number(v)
        if x != int(x) or x < lo:
            raise ValueError(f"must be a whole number >= {lo}")
        return int(x)

    return check


def positive(v) -> float:
    x = _number(v)
    if not x > 0 or x != x or x == float("inf"):
        raise ValueError("must be a number > 0")
    return x


def decay(v) -> float:
    x = _number(v)
    if not 0 <= x < 1:
        raise ValueError("must be a number in [0, 1): the weight kept per step (0: the last weights)")
    return x


def k_value(v) -> float:
    """K of the top-K loss: a fraction of a patch's pixels in (0, 1], or a whole pixel count above 1."""
    x = _number(v)
    if not (0 < x <= 1 or (x > 1 and x == int(x))):
        raise ValueError("K must be a fraction of a patch's pixels in (0, 1] or a whole pixel count above 1")
    return x


def flag(v) -> bool:
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def text(v) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a non-empty text")
    return v


def list_of(item: Callable, min_len: int = 1, unique: bool = False, increasing: bool = False) -> Callable:
    def check(v):
        values = [item(x) for x in _listed(v)]
        if len(values) < min_len:
            raise ValueError(f"needs at least {min_len} value{'s' * (min_len > 1)}")
        if unique and len(set(values)) != len(values):
            raise ValueError("lists a value twice")
        if increasing and sorted(values) != values:
            raise ValueError("must be in increasing order")
        return values

    return check


def optional(check: Callable) -> Callable:
    """None (the profile's value) or what ``check`` accepts."""

    def wrapped(v):
        return None if v is None or (isinstance(v, str) and v.strip().lower() in ("null", "none", "")) else check(v)

    return wrapped


def per_profile(item: Callable) -> Callable:
    def check(v):
        from .profiles import PROFILES

        if not isinstance(v, dict):
            raise ValueError("must map each profile to a value")
        missing = sorted(set(PROFILES) - set(v))
        if missing:
            raise ValueError(f"has no value for the profile{'s' * (len(missing) > 1)} {', '.join(missing)}")
        return {k: item(x) for k, x in v.items()}

    return check


def select_notebooks(names) -> list[str]:
    """The notebooks that ``names`` selects: ``'all'`` (every notebook but the opt-in ones,
    :data:`~nucseg_lib.pipeline.jobs.OPT_IN_NOTEBOOKS`: the cross-validation), or names and prefixes; numbers are notebook
    numbers (YAML reads ``notebooks=08`` as 8, and ``[01,08]`` arrives as text). ValueError naming an unknown one."""
    from ..pipeline.jobs import NOTEBOOKS, OPT_IN_NOTEBOOKS

    if names == "all":
        return [nb for nb in NOTEBOOKS if nb not in OPT_IN_NOTEBOOKS]
    names = [str(n).strip() for n in _listed(names)]
    names = [f"{int(n):02d}" if n.isdigit() else n for n in names]
    for n in names:
        if not any(nb.startswith(n) for nb in NOTEBOOKS):
            raise ValueError(f"{n!r}: no notebook starts with that; notebooks are {', '.join(NOTEBOOKS)}")
    return [nb for nb in NOTEBOOKS if any(nb.startswith(n) for n in names)]


def notebook_names(v):
    select_notebooks(v)
    return v


def profile_name(v):
    from .profiles import PROFILES

    if v not in PROFILES:
        raise ValueError(f"unknown profile {v!r}; choose from {', '.join(PROFILES)}")
    return v


def dataset_name(v):
    from ..data import DATASETS

    if v not in DATASETS:
        raise ValueError(f"unknown dataset {v!r}; choose from {', '.join(DATASETS)}")
    return v


@dataclass(frozen=True)
class Parameter:
    name: str
    check: Callable[[Any], Any]
    help: str


# every key of workflow/config.yaml, in its order
WORKFLOW_PARAMETERS = (
    Parameter("dataset", dataset_name, "synthetic, coelho2009, kromp2020 or folder"),
    Parameter("data_root", optional(text), "folder of a real dataset (null: $NUCSEG_DATA/<dataset>)"),
    Parameter("profile", profile_name, "smoke, demo, quick, cpu or full"),
    Parameter("out", text, "run folder of the first seed"),
    Parameter("seeds", list_of(whole(0), unique=True), "training seeds (whole numbers >= 0)"),
    Parameter("seed_notebooks", notebook_names, "notebooks the other seeds run"),
    Parameter("notebooks", notebook_names, "all, or notebook names / prefixes"),
    Parameter("book", flag, "build the book"),
    Parameter("threads", whole(1), "CPU threads per job"),
    Parameter("epochs", optional(whole(1)), "U-Net epochs (null: the profile's)"),
    Parameter("steps_per_epoch", optional(whole(1)), "steps per epoch (null: the profile's)"),
    Parameter("batch_size", optional(whole(1)), "patches per step (null: the profile's)"),
    Parameter("patch_size", optional(whole(16)), "patch side in pixels (null: the profile's)"),
    Parameter("lr", optional(positive), "Adam learning rate of the U-Nets (null: the profile's)"),
    Parameter("ema", optional(decay), "decay per step of the weight average (null: the profile's)"),
    Parameter("stardist_lr", optional(positive), "Adam learning rate of StarDist (null: the profile's)"),
    Parameter("k_fractions", list_of(k_value), "04: the top-K grid"),
    Parameter("combo_k", k_value, "04, 05: K of the Dice + top-K model"),
    Parameter("boundary_weight", positive, "08: weight of the boundary class"),
    Parameter("budgets", optional(list_of(whole(1), unique=True, increasing=True)), "09: snapshot step counts"),
    Parameter("curve_seeds", optional(list_of(whole(0), unique=True)), "09: training seeds of the curves"),
    Parameter("stardist_scales", optional(list_of(positive, unique=True)), "09: extra StarDist scales"),
    Parameter("cv_folds", whole(2), "10: folds of the cross-validation over all the images"),
    Parameter("runtime_min", per_profile(whole(1)), "minutes per job on a cluster"),
    Parameter("mem_mb", per_profile(whole(1)), "MiB per job on a cluster"),
    Parameter("gpus", per_profile(whole(0)), "GPUs per job on a cluster"),
)


# the parameters cell of every notebook: what makes a Study (nucseg_lib.study.notebook.setup), and the training
# overrides (None: the profile's). Declared here, in a module that imports nothing heavy, because every workflow
# job reads them (nucseg_lib.pipeline.jobs) and a notebook job would otherwise import the study's data and models
# in its own process besides the kernel's (about a second of a 2-core CPU per notebook job)
PARAMETERS = ("dataset", "profile", "data_root", "out_dir", "seed")
OVERRIDES = ("epochs", "steps_per_epoch", "batch_size", "patch_size", "lr", "ema", "stardist_lr")

# what each notebook gets beyond the study's parameters (PARAMETERS and OVERRIDES): workflow
# keys passed as papermill parameters of the same name; a change of one re-runs the notebooks that use it
NOTEBOOK_EXTRA = {
    "04_topk": ("k_fractions", "combo_k"),
    "05_boundary": ("combo_k",),
    "08_beyond_instances": ("boundary_weight",),
    "09_learning_curves": ("budgets", "curve_seeds", "stardist_scales"),
    "10_cross_validation": ("cv_folds",),
}
# what a shared model's training depends on beyond the study's parameters
MODEL_EXTRA = {"unet_combo": ("combo_k",)}


def check_config(config: dict) -> dict:
    """The workflow's ``config`` with every declared value checked and converted; :class:`ParameterError`
    naming every bad or unknown key (a typo such as ``seed=1`` for ``seeds`` would otherwise do nothing)."""
    declared = {p.name: p for p in WORKFLOW_PARAMETERS}
    problems, out = [], dict(config)
    for key in config:
        if key not in declared:
            problems.append(f"{key}: not a parameter of the workflow (known: {', '.join(declared)})")
    for p in WORKFLOW_PARAMETERS:
        if p.name not in config:
            continue
        try:
            out[p.name] = p.check(config[p.name])
        except (ValueError, TypeError) as exc:
            problems.append(f"{p.name}={config[p.name]!r}: {exc} ({p.help})")
    if problems:
        raise ParameterError("workflow config: " + "; ".join(problems))
    return out
