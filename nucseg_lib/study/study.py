"""A study run as a notebook sees it: the data splits of its profile, its cached models, and its results.

Notebooks create one :class:`Study` from their parameters and use it to load the splits, train
(or reuse) models, and record numbers through :attr:`Study.results`
(:class:`~nucseg_lib.study.results.Results`: the results contract). The budgets are the profiles of
:mod:`nucseg_lib.study.profiles`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..data import load_dataset
from ..data.common import Sample
from .claims import PAPER  # noqa: F401 (notebooks import it from here)
from .profiles import resolve_profile
from .results import Results


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
        from ..pipeline.folders import check_run_folder

        check_run_folder(out_dir)  # not reference/ (its results would be truncated), not the repository's sources
        self.out_dir = Path(out_dir)
        self.models_dir = self.out_dir / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.results = Results(
            self.out_dir / "results", experiment, dataset, self.profile.name, self.profile.n_boot, seed
        )
        self._splits = None
        self.fold: tuple[int, int] | None = None  # (k, n): fold k of n is the test set (cross_validation)

    # ---------------------------------------------------------------- data
    @property
    def scale(self) -> float:
        return float(self.profile.scale.get(self.dataset, 1))

    def _load(self):
        if self._splits is None:
            kw = dict(self.profile.synthetic, seed=self.data_seed) if self.dataset == "synthetic" else {}
            n = self.profile.max_images  # a capped run (smoke) reads only the images it keeps
            cap = {"train": n, "test": max(2, n // 2)} if n else None
            samples = load_dataset(self.dataset, "all", root=self.data_root, scale=self.scale, max_per_split=cap, **kw)
            train = [s for s in samples if s.meta.get("split") == "train"]
            test = [s for s in samples if s.meta.get("split") == "test"]
            if self.fold:  # cross-validation: fold k of all the images is the test set, the others train
                from ..data.common import cross_validation_folds

                k, n = self.fold
                fold = cross_validation_folds(train + test, n)
                train, test = (
                    [s for s in train + test if fold[s.name] != k],
                    [s for s in train + test if fold[s.name] == k],
                )
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
        fold = f":fold{self.fold[0]}of{self.fold[1]}" if self.fold else ""
        return f"{self.dataset}@{self.scale:g}:{self.profile.name}:seed{self.seed}{data}{fold}:n{len(self.train)}"

    # ---------------------------------------------------------------- models
    def unet_config(self, loss: str = "dice", init: str = "scratch", **kw):
        from ..machine import resolve_precision
        from ..train.unet import TrainConfig

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

    def cross_validation_fold(self, k: int, n: int) -> "Study":
        """The same run with fold ``k`` of ``n`` of all its images as the test set and the others as training
        (validation: every 6th of those, as always); folds from
        :func:`~nucseg_lib.data.common.cross_validation_folds`. Its models get their own cache keys."""
        if not (isinstance(k, int) and 0 <= k < n):
            raise ValueError(f"fold must be a whole number from 0 to {n - 1}, got {k!r}")
        other = self.variant()
        other.fold, other._splits = (k, n), None
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
        """Train or reuse the U-Net for ``loss``/``init`` on this run's data at its profile's budget.

        Parameters
        ----------
        loss : str
            Loss specification (:func:`~nucseg_lib.losses.make_loss`: ``dice``, ``topk:0.1``,
            ``dice+topk:0.1``, ``boundary_ce:3``, ...).
        init : str
            ``scratch``, ``imagenet`` or a trained-model folder (:func:`~nucseg_lib.model.build_model`).
        train, val : list of Sample, optional
            Other training / validation images than the run's (a custom training set gets its own cache key).
        name : str, optional
            Folder name prefix; default :func:`method_name`.
        snapshot_steps : sequence of int
            Keep the weights after those step counts (learning curves).
        **kw
            Other :class:`~nucseg_lib.train.unet.TrainConfig` fields.

        Returns
        -------
        (UNet, DataFrame, Path)
            The model, its training history and its folder under ``models/``.
        """
        from ..train.unet import train_or_load

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

    def stardist_config(self):
        """The StarDist training settings of this run: the profile's budget and learning rate, this run's seed."""
        from ..train.stardist import StarDistConfig

        p = self.profile
        return StarDistConfig(
            epochs=p.stardist_epochs,
            steps_per_epoch=p.stardist_steps,
            batch_size=p.batch_size,
            patch_size=p.patch_size,
            lr=p.stardist_lr,
            seed=self.seed,
            data_tag=self.data_tag,
        )

    def stardist(self, verbose: int = 2, snapshot_steps=()):
        """Train or reuse the StarDist baseline for this run's data and profile."""
        from ..train.stardist import train_stardist

        cfg = self.stardist_config()
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
    def score_instances(self, preds: dict, table: str):
        """Score each method's instance labels (in the order of :attr:`test`, at the study's scale) on the test
        images at their native resolution, as the report, the learning curves and ``nucseg predict`` do:
        :meth:`Results.score_instances <nucseg_lib.study.results.Results.score_instances>`."""
        return self.results.score_instances(self.native_test(), preds, table)


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
