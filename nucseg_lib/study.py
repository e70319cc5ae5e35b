"""The study's shared plumbing: profiles, data per profile, cached models, and the results contract.

Notebooks create one :class:`Study` from their parameters and use it to load
the splits, train (or reuse) models and record numbers. Results go to
``<out_dir>/results/``:

- ``parts/<experiment>.csv``: the summary rows of one notebook, one row per
  (experiment, dataset, profile, method, metric) with columns :data:`SUMMARY_COLUMNS`;
  a notebook's :class:`Study` starts its fragment afresh, and recording a row again
  replaces it. Each notebook writes only its own fragment, so notebooks can run in
  parallel; the workflow's ``assemble`` job joins the fragments into ``summary.csv``;
- ``<experiment>_*.csv``: tidy per-image tables behind the summary rows.

Profiles (:data:`PROFILES`) set the data size and training budget:
``smoke`` (seconds, CI and nbval), ``demo`` (the notebooks' default in JupyterLab: about a
minute of training per model), ``quick`` (the embedded synthetic data, ``make book``: see the
README for its time), ``cpu`` (real data, downscaled: 57 minutes on a 2-core AMD EPYC Zen 4
with native bf16, where one 1600-step U-Net trains in 6.4 minutes; about three hours on a
2-core Zen 2 in fp32, where it takes 23, and three and a half on a 2-core Zen 3 in fp32, where it
takes about 27) and ``full`` (the paper's settings, for a GPU).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .claims import PAPER  # noqa: F401 (notebooks import it from here)
from .data import load_dataset
from .data.common import Sample

SUMMARY_COLUMNS = ["experiment", "dataset", "profile", "method", "metric", "value", "ci_low", "ci_high", "n_images"]
SUMMARY_KEY = ["experiment", "dataset", "profile", "method", "metric"]


@dataclass(frozen=True)
class Profile:
    """Budget of a study run. ``scale`` maps a dataset name to its downscaling factor."""

    name: str
    epochs: int
    steps_per_epoch: int
    batch_size: int
    patch_size: int
    stardist_epochs: int
    stardist_steps: int
    scale: dict = field(default_factory=dict)
    synthetic: dict = field(default_factory=dict)
    max_images: int | None = None  # cap on real images per split (smoke runs on real data)
    erf_images: int = 16
    n_boot: int = 1000
    precision: str = "auto"  # U-Net training/inference: bf16 where this machine runs it faster (nucseg_lib.machine)
    lr: float = 1e-4  # Adam learning rate of the U-Nets (the report's 1e-4; StarDist keeps its own, 3e-4)
    ema: float = 0.0  # decay per step of the U-Nets' weight average (TrainConfig.ema; 0: the last weights)
    # learning curves (notebook 09): snapshot step counts of one long run per method and seed, the
    # training seeds, and the extra scales at which StarDist also runs (beside ``scale``)
    curve_budgets: tuple = ()
    curve_seeds: tuple = (0, 1)
    curve_stardist_scales: dict = field(default_factory=dict)


PROFILES = {
    "smoke": Profile(
        "smoke",
        epochs=2,
        steps_per_epoch=2,
        batch_size=2,
        patch_size=64,
        stardist_epochs=1,
        stardist_steps=2,
        scale={"coelho2009": 8, "kromp2020": 4},
        synthetic=dict(n_train=6, n_test=3, size=96),
        max_images=6,
        erf_images=2,
        n_boot=100,
        curve_budgets=(2, 4, 6),
        curve_seeds=(0,),  # one training seed: each curve job is mostly start-up time here
        curve_stardist_scales={"coelho2009": 4},
    ),
    # StarDist needs ~400 steps on the synthetic data: at 200 steps its object probabilities peaked at
    # ~0.2 and its F1 at IoU 0.5 was 0.02, at 400 steps 0.94. The quick profile gives it 20 epochs to the
    # U-Nets' 10.
    # what a student stepping through a notebook in JupyterLab gets by default: about a minute of
    # training per model on synthetic data, rough but real numbers
    "demo": Profile(
        "demo",
        epochs=8,
        steps_per_epoch=20,
        batch_size=4,
        patch_size=128,
        stardist_epochs=10,
        stardist_steps=30,
        scale={"coelho2009": 4, "kromp2020": 2},
        synthetic=dict(n_train=24, n_test=8, size=192),
        erf_images=4,
        n_boot=200,
        curve_budgets=(40, 80, 160),
        curve_seeds=(0,),
        curve_stardist_scales={},
    ),
    "quick": Profile(
        "quick",
        epochs=10,
        steps_per_epoch=20,
        batch_size=8,
        patch_size=128,
        stardist_epochs=20,
        stardist_steps=20,
        scale={"coelho2009": 4, "kromp2020": 2},
        synthetic=dict(n_train=40, n_test=15, size=256),
        erf_images=16,
        curve_budgets=(40, 80, 160),
        curve_seeds=(0,),
        curve_stardist_scales={"coelho2009": 2},
    ),
    # the published reference run. Its budget is the knee of the learning curves (reference/coelho2009-cpu-curves,
    # seeds 0 and 1, lr 1e-4): the boundary U-Net's validation F1@0.5 rose 0.888/0.905 -> 0.916/0.911 ->
    # 0.931/0.932 from 400 to 800 to 1600 steps and only to 0.936/0.935 at 3000; StarDist 4x's test F1@0.5
    # 0.835 -> 0.893 -> 0.911 -> 0.917. 1600 steps (80 epochs of 20) for every model; 400 steps before the curves.
    # U-Nets at Adam lr 1e-3, chosen on validation images at that budget (benchmarks/compare_training.py
    # --setting lr, book/methods.md): on an Intel Xeon with AMX the boundary U-Net's validation F1@0.5 was
    # 0.943/0.943 (seeds 0/1) at 1e-3, 0.937/0.937 at 3e-4 and 0.933/0.924 at the report's 1e-4. On an AMD EPYC
    # (AVX512-BF16, other bf16 kernels, other models) 0.919/0.939, 0.938/0.931 and 0.930/0.926: over the four
    # trainings 1e-3 and 3e-4 tie (mean 0.936), 1e-4 trails (0.928). 3e-4 from 2026-11-29, 1e-3 since 2026-12-02.
    "cpu": Profile(
        "cpu",
        epochs=80,
        steps_per_epoch=20,
        batch_size=8,
        patch_size=128,
        stardist_epochs=80,
        stardist_steps=20,
        scale={"coelho2009": 4, "kromp2020": 2},
        synthetic=dict(n_train=80, n_test=25, size=256),
        erf_images=32,
        lr=1e-3,
        ema=0.995,  # the weight average: book/methods.md, "Weight average"
        curve_budgets=(200, 400, 800, 1600, 3000),
        curve_stardist_scales={"coelho2009": 2, "kromp2020": 1},
    ),
    "full": Profile(
        "full",
        epochs=100,
        steps_per_epoch=50,
        batch_size=8,
        patch_size=256,
        stardist_epochs=100,
        stardist_steps=50,
        scale={"coelho2009": 2, "kromp2020": 1},
        synthetic=dict(n_train=200, n_test=50, size=512),
        erf_images=64,
        curve_budgets=(1000, 2500, 5000, 10000),
        curve_stardist_scales={"coelho2009": 1},
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    return PROFILES[name]


def resolve_profile(name: str, **overrides) -> Profile:
    """Profile ``name`` with the given fields replaced (``None`` values keep the profile's)."""
    return replace(get_profile(name), **{k: v for k, v in overrides.items() if v is not None})


def training_budget(profile: Profile) -> dict:
    """What every model of a run trains for (recorded in ``run.json``): steps, epochs, batch, patch (px)."""
    return {
        "unet_steps": profile.epochs * profile.steps_per_epoch,
        "unet_epochs": profile.epochs,
        "unet_lr": profile.lr,
        "unet_ema": profile.ema,
        "stardist_steps": profile.stardist_epochs * profile.stardist_steps,
        "stardist_epochs": profile.stardist_epochs,
        "batch_size": profile.batch_size,
        "patch_size_px": profile.patch_size,
    }


class Study:
    """One experiment's view of a study run: data splits, models folder and results files.

    ``overrides`` replace profile fields (e.g. ``epochs=5``); ``None`` values are ignored,
    so notebook parameters can default to ``None`` (= the profile's value).
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        profile: str = "smoke",
        data_root=None,
        out_dir="runs/interactive",
        seed: int = 0,
        experiment: str = "",
        **overrides,
    ):
        self.profile = resolve_profile(profile, **overrides)
        self.dataset, self.data_root, self.seed, self.experiment = dataset, data_root, seed, experiment
        self.data_seed = seed  # the synthetic data's seed; variant(seed=...) changes only the training seed
        from .folders import check_run_folder

        check_run_folder(out_dir)  # not reference/ (its results would be truncated), not the repository's sources
        self.out_dir = Path(out_dir)
        self.results_dir = self.out_dir / "results"
        self.models_dir = self.out_dir / "models"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._splits = None
        if experiment:  # a notebook run owns its fragment: start it afresh (header only)
            self.summary_path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(columns=SUMMARY_COLUMNS).to_csv(self.summary_path, index=False)

    # ---------------------------------------------------------------- data
    @property
    def scale(self) -> float:
        return float(self.profile.scale.get(self.dataset, 1))

    def _load(self):
        if self._splits is None:
            kw = dict(self.profile.synthetic, seed=self.data_seed) if self.dataset == "synthetic" else {}
            samples = load_dataset(self.dataset, "all", root=self.data_root, scale=self.scale, **kw)
            train = [s for s in samples if s.meta.get("split") == "train"]
            test = [s for s in samples if s.meta.get("split") == "test"]
            if self.profile.max_images:
                train, test = train[: self.profile.max_images], test[: max(2, self.profile.max_images // 2)]
            # validation: every 6th training image (at least one), used for early checks and thresholds
            val = train[::6] if len(train) >= 6 else train[-1:]
            val_names = {s.name for s in val}
            fit = [s for s in train if s.name not in val_names] or train
            self._splits = {"train": fit, "val": val, "test": test}
        return self._splits

    @property
    def train(self) -> list[Sample]:
        return self._load()["train"]

    @property
    def val(self) -> list[Sample]:
        return self._load()["val"]

    @property
    def test(self) -> list[Sample]:
        return self._load()["test"]

    @property
    def data_tag(self) -> str:
        data = f":data{self.data_seed}" if self.data_seed != self.seed and self.dataset == "synthetic" else ""
        return f"{self.dataset}@{self.scale:g}:{self.profile.name}:seed{self.seed}{data}:n{len(self.train)}"

    # ---------------------------------------------------------------- models
    def unet_config(self, loss: str = "dice", init: str = "scratch", **kw):
        from .machine import resolve_precision
        from .training import TrainConfig

        p = self.profile
        kw.setdefault("precision", resolve_precision(p.precision))
        kw.setdefault("lr", p.lr)
        kw.setdefault("ema", p.ema)
        return TrainConfig(
            loss=loss,
            init=init,
            epochs=p.epochs,
            steps_per_epoch=p.steps_per_epoch,
            batch_size=p.batch_size,
            patch_size=p.patch_size,
            seed=self.seed,
            data_tag=self.data_tag,
            **kw,
        )

    def variant(self, seed: int | None = None, **overrides) -> "Study":
        """The same run (data, out_dir, results fragment) with another training ``seed`` or other profile
        fields, e.g. a longer budget or another ``scale``; its results fragment is not reset."""
        other = Study.__new__(Study)
        other.__dict__.update(self.__dict__)
        other.seed = self.seed if seed is None else int(seed)
        other.profile = replace(self.profile, **{k: v for k, v in overrides.items() if v is not None})
        if other.profile.scale != self.profile.scale or other.profile.synthetic != self.profile.synthetic:
            other._splits = None
        return other

    def at_scale(self, scale: float) -> "Study":
        """The same run with its dataset downscaled by ``scale`` (1: native resolution); the profile's
        factors for other datasets are kept."""
        return self.variant(scale={**self.profile.scale, self.dataset: scale})

    def native_test(self) -> list[Sample]:
        """The test images at their native resolution (scale 1), in the order of :attr:`test`."""
        if self.scale == 1:
            return self.test
        return self.at_scale(1).test

    def unet(
        self,
        loss: str = "dice",
        init: str = "scratch",
        train=None,
        val=None,
        name: str | None = None,
        snapshot_steps=(),
        **kw,
    ):
        """Train or reuse the U-Net for ``loss``/``init``; returns ``(model, history, folder)``.

        ``snapshot_steps`` keep the weights after those step counts (learning curves)."""
        from .training import train_or_load

        cfg = self.unet_config(loss, init, **kw)
        if train is not None:  # a custom training set gets its own cache key
            import hashlib

            names = ",".join(s.name for s in train)
            cfg = replace(cfg, data_tag=f"{cfg.data_tag}:custom-{hashlib.sha1(names.encode()).hexdigest()[:8]}")
        return train_or_load(
            cfg,
            train if train is not None else self.train,
            val if val is not None else self.val,
            self.models_dir,
            name=name or method_name(loss, init),
            snapshot_steps=snapshot_steps,
        )

    def stardist(self, verbose: int = 2, snapshot_steps=()):
        """Train or reuse the StarDist baseline for this run's data and profile."""
        from .stardist_baseline import StarDistConfig, train_stardist

        p = self.profile
        cfg = StarDistConfig(
            epochs=p.stardist_epochs,
            steps_per_epoch=p.stardist_steps,
            batch_size=p.batch_size,
            patch_size=p.patch_size,
            seed=self.seed,
            data_tag=self.data_tag,
        )
        import hashlib
        from dataclasses import asdict

        key = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:10]
        return train_stardist(
            cfg,
            self.train,
            self.val,
            self.models_dir,
            name=f"stardist-{key}",
            verbose=verbose,
            snapshot_steps=snapshot_steps,
        )

    # ---------------------------------------------------------------- results
    @property
    def summary_path(self) -> Path:
        """This experiment's fragment of the summary: ``results/parts/<experiment>.csv``."""
        return self.results_dir / "parts" / f"{self.experiment or 'interactive'}.csv"

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
        """Write (or replace) one row of ``summary.csv``."""
        row = {
            "experiment": experiment or self.experiment,
            "dataset": self.dataset,
            "profile": self.profile.name,
            "method": method,
            "metric": metric,
            "value": float(value),
            "ci_low": float(ci_low),
            "ci_high": float(ci_high),
            "n_images": int(n_images),
        }
        self.record_rows(pd.DataFrame([row]))

    def record_rows(self, rows: pd.DataFrame):
        """Upsert rows (with :data:`SUMMARY_COLUMNS`) into ``summary.csv``, keyed by :data:`SUMMARY_KEY`."""
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

    def record_mean(self, method: str, metric: str, per_image_values, experiment: str | None = None):
        """Record the mean of per-image values with its 95% bootstrap CI."""
        from .metrics import mean_with_ci

        s = mean_with_ci(per_image_values, n_boot=self.profile.n_boot, seed=self.seed)
        self.record(method, metric, s["value"], s["ci_low"], s["ci_high"], s["n_images"], experiment)
        return s

    def record_instances(
        self, method: str, per_image: pd.DataFrame, experiment: str | None = None, thresholds=(0.5, 0.7)
    ):
        """Record pooled instance scores (f1, precision, recall, accuracy, pq, ap, merged, split) with CIs."""
        from .metrics import instance_summary

        summ = instance_summary(per_image, thresholds=thresholds, n_boot=self.profile.n_boot, seed=self.seed)
        summ = summ.assign(
            experiment=experiment or self.experiment, dataset=self.dataset, profile=self.profile.name, method=method
        )
        self.record_rows(summ)
        return summ

    def score_instances(self, preds: dict, table: str):
        """Score each method's instance labels on the test images at their native resolution: ``(per_image, summary)``.

        ``preds`` maps a method name to its label images, in the order of :attr:`test` (at the
        study's scale). Each is brought back to its image's native size (nearest neighbour, ids
        kept) and matched against the native ground truth, as the report scores and as the
        learning curves and ``nucseg predict`` do. The per-image table
        (:func:`~nucseg_lib.metrics.evaluate_instances`, with a ``method`` column) is saved as
        ``results/<table>.csv`` and the pooled scores with CIs are recorded
        (:meth:`record_instances`) and returned.
        """
        from .data.common import resize_labels
        from .metrics import evaluate_instances

        native = self.native_test()
        wrong = {m: len(p) for m, p in preds.items() if len(p) != len(native)}
        if wrong:
            raise ValueError(f"{table}: predictions for {wrong} images, but there are {len(native)} test images")
        truths, names, groups = [s.labels for s in native], [s.name for s in native], [s.group for s in native]
        per_image = pd.concat(
            [
                evaluate_instances(
                    truths, [resize_labels(q, t.shape) for q, t in zip(p, truths)], names, groups
                ).assign(method=m)
                for m, p in preds.items()
            ]
        )
        self.save_table(table, per_image)
        summary = pd.concat([self.record_instances(m, per_image[per_image.method == m]) for m in preds])
        return per_image, summary

    def save_table(self, name: str, df: pd.DataFrame) -> None:
        """Write a tidy table to ``results/<name>.csv`` (returns nothing, so a notebook cell ending
        with it shows no output)."""
        df.to_csv(self.results_dir / f"{name}.csv", index=False)


def parameter_list(value, name: str, allow_empty: bool = False) -> list[float]:
    """A list-of-numbers notebook parameter, given as a list or as text such as ``"[0.05, 0.3]"``.

    ``papermill -p name "[0.05, 0.3]"`` passes the text, not a list (``-y "name: [0.05, 0.3]"``
    passes a list); both work. Anything else raises ValueError naming the parameter.
    """
    import ast

    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ValueError(
                f'parameter {name}: cannot read {value!r} as a list of numbers, e.g. "[0.05, 0.3]"'
            ) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (list, tuple)):  # Snakemake's --config "k=[0.05,0.3]" gives ['0.05', '0.3']
        value = [_number_or_text(v) for v in value]
    if (
        not isinstance(value, (list, tuple))
        or (not value and not allow_empty)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"parameter {name}: expected a non-empty list of numbers, got {value!r}")
    return [float(v) for v in value]


def _number_or_text(v):
    """``v`` as a number when it is numeric text, else unchanged."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def method_name(loss: str, init: str = "scratch") -> str:
    """Method name for the results table: ``unet_dice``, ``unet_topk_0.1``, ``unet_dice+topk_0.1``, ..."""
    name = "unet_" + loss.replace("topk:", "topk_").replace("*", "x").replace(":", "_")
    if init != "scratch":
        name += "_" + (init if init == "imagenet" else "transfer")
    return name


def read_summary(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    return pd.read_csv(path)
