"""StarDist baseline (Schmidt et al. 2018; Weigert et al. 2020) trained on the same data as the U-Net.

``StarDist2D`` with 32 rays and grid (2, 2), trained on the same training
split, image scale, patch size and percentile normalization (1, 99.8) as the
U-Net runs; label holes are filled; augmentation follows StarDist's own
training example (random flips and 90-degree rotations, random intensity
scale 0.6-2 and shift -0.2..0.2, small Gaussian noise). The probability and
NMS thresholds are tuned on a validation part of the training split
(``optimize_thresholds``). Predictions are evaluated by :mod:`nucseg_lib.metrics`,
the same code as for the U-Net.

A trained StarDist folder (``basedir/name``) holds StarDist's own files
(``config.json``, ``weights_best.h5``, ``thresholds.json``) plus our
``train_config.json``, ``history.csv`` and ``epoch_seconds.csv`` (training seconds per
epoch); ``DONE`` marks a finished run. After each epoch, ``resume/`` keeps what an interrupted
run needs to go on as if it had not stopped: the weights, Adam's moments and step count, the
learning rate that the plateau schedule has reached, the schedule's state and the best
validation loss so far (so ``weights_best.h5`` stays the best of all epochs, not of those after
the restart). ``resume/state.json`` is written last and names that epoch's files, so a run
killed while writing them resumes from the epoch before. Folders made before ``resume/``
existed resume from StarDist's ``weights_now.h5``, with the schedule and best loss rebuilt
from ``history.csv`` and a fresh optimizer. Learning curves ask for ``snapshots/step-NNNNNN.weights.h5``
(weights after that many steps) with a ``.json`` beside it (training seconds so far).

TensorFlow is configured before it is imported: log level 3 (fatal only)
and ``threads`` intra-op threads (default: ``$OMP_NUM_THREADS``, which a workflow
job sets to its share of the cores, else every core), so it does not take more
than its share or fill notebooks with start-up messages. Training speed is set
almost entirely by the network step: on a 2-core AMD EPYC, batch 8 of 128x128,
2 threads train 28.8 patches/s and 1 thread 17.7, while preparing a batch
(augmentation and star distances) takes 7% of a step
(``benchmarks/bench_stardist.py``). Pretrained StarDist models need the network
and are not used: the baseline is always trained here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.common import Sample, normalize_percentile


def configure_tensorflow(threads: int | None = None, log_level: int = 3):
    """Quiet TensorFlow and cap its threads, and let StarDist count overlaps with :func:`~nucseg_lib.metrics.
    label_overlap`; call before anything imports tensorflow. Returns the module.

    ``log_level`` 3 hides TensorFlow's C++ log lines below FATAL (start-up notes and the
    harmless oneDNN fallback message on CPUs without AVX-512); Python errors still raise.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", str(log_level))
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # torch's optional triton extension segfaults when it loads after TensorFlow: load both first
    import torch  # noqa: F401

    try:
        import triton  # noqa: F401
        import triton.runtime  # noqa: F401
    except ImportError:
        pass
    with _quiet_stderr():  # absl prints start-up lines before any log level applies
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")

    # a workflow job's share of the machine (Snakemake sets OMP_NUM_THREADS to the job's threads)
    threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised: keep the settings it has
    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    # StarDist's threshold tuning then counts label overlaps without compiling numba code in this process
    from ..metrics import stardist_matching

    stardist_matching()
    return tf


class _quiet_stderr:
    """Send file descriptor 2 to /dev/null inside the block (C++ start-up messages of TensorFlow)."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 2)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        os.close(self.null)


@dataclass
class StarDistConfig:
    """Training settings of the baseline (``patch_size`` in pixels of the scaled images)."""

    epochs: int = 20
    steps_per_epoch: int = 20
    batch_size: int = 8
    patch_size: int = 128
    n_rays: int = 32
    grid: tuple = (2, 2)
    lr: float = 3e-4
    seed: int = 0
    threads: int | None = None
    data_tag: str = ""

    def __post_init__(self):
        for name in ("epochs", "steps_per_epoch", "batch_size", "n_rays"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"StarDistConfig.{name} must be a whole number >= 1, got {value!r}: a model that "
                    f"trained for no step would be cached as if it had trained"
                )
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"StarDistConfig.lr must be a positive number, got {self.lr!r}")


def data_workers(workers: int | None) -> int:
    """Processes that prepare StarDist's training batches (0 or None: one per CPU core, at most 4)."""
    return int(workers) if workers else min(4, os.cpu_count() or 1)


def _augment(x, y):
    """StarDist's example augmenter: flips, 90-degree rotations, intensity scale/shift, noise."""
    perm = tuple(np.random.permutation(x.ndim))
    x, y = x.transpose(perm), y.transpose(perm)
    for ax in range(x.ndim):
        if np.random.rand() > 0.5:
            x, y = np.flip(x, axis=ax), np.flip(y, axis=ax)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    x = x + np.random.normal(0, 0.02, x.shape) * np.random.rand()
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


def _prepare(samples: Sequence[Sample]):
    from stardist import fill_label_holes

    return ([normalize_percentile(s.image) for s in samples], [fill_label_holes(s.labels) for s in samples])


def train_stardist(
    config: StarDistConfig,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    basedir,
    name: str = "stardist",
    verbose: int = 2,
    snapshot_steps=(),
    stop_after_epoch: int | None = None,
):
    """Train (or resume, or load when finished) a StarDist2D model; returns the model.

    ``verbose`` is Keras' fit verbosity (2: one line per epoch, 1: a progress bar).
    ``snapshot_steps``: step counts (multiples of ``steps_per_epoch``) after which the
    weights are kept in ``snapshots/`` (:func:`snapshots`). ``stop_after_epoch`` stops
    as an interruption would, after that many epochs in all, and returns None.

    Parameters
    ----------
    config : StarDistConfig
        Budget, patch size, rays, grid, seed.
    train_samples, val_samples : sequence of Sample
        Training and validation images (validation also tunes the thresholds).
    basedir : path
        Where the model folder ``name`` goes.
    name : str
        The model folder's name.
    verbose, snapshot_steps, stop_after_epoch
        See above.

    Returns
    -------
    StarDist2D or None
    """
    configure_tensorflow(config.threads)
    from stardist.models import Config2D, StarDist2D

    from .model_folder import ModelFolderError, TrainingDiverged, check_snapshot_steps, read_json, write_json_atomic

    snapshot_steps = check_snapshot_steps(snapshot_steps, config.steps_per_epoch, config.epochs)
    folder = Path(basedir) / name
    if (folder / "diverged.json").exists():
        raise TrainingDiverged(folder, read_json(folder / "diverged.json"))
    if (folder / "DONE").exists():
        return load_stardist(folder)
    if not val_samples:
        raise ValueError("StarDist needs validation images to tune its thresholds")
    X, Y = _prepare(train_samples)
    Xv, Yv = _prepare(val_samples)
    p = config.patch_size
    for s in list(train_samples) + list(val_samples):
        if min(s.image.shape) < p:
            raise ValueError(f"{s.name}: image {s.image.shape} is smaller than the patch size {p}")
    sd_conf = Config2D(
        n_rays=config.n_rays,
        grid=tuple(config.grid),
        n_channel_in=1,
        train_patch_size=(p, p),
        train_batch_size=config.batch_size,
        train_epochs=config.epochs,
        train_steps_per_epoch=config.steps_per_epoch,
        train_learning_rate=config.lr,
        train_tensorboard=False,
        train_checkpoint_epoch=None,  # the resume state (resume/) replaces StarDist's weights_now.h5
        use_gpu=False,
    )
    state = read_json(folder / RESUME / "state.json") if (folder / RESUME / "state.json").exists() else None
    legacy = state is None and (folder / "weights_now.h5").exists() and (folder / "history.csv").exists()
    import keras

    # Keras draws a new model's initial weights from Python's random module: seed it first, or two runs with the same
    # seed start from different weights (the quick book's StarDist F1 at IoU 0.5 was 0.81-0.91 across builds)
    keras.utils.set_random_seed(config.seed)
    model = (
        StarDist2D(None, name=name, basedir=str(basedir))
        if state or legacy
        else StarDist2D(sd_conf, name=name, basedir=str(basedir))
    )
    done_epochs = 0
    if state:
        done_epochs = int(state["epochs"])
        model.load_weights(f"{RESUME}/{state['weights']}")
        # rows of an epoch that ran after the last resume state are dropped: that epoch runs again
        for table in ("history.csv", "epoch_seconds.csv"):
            _keep_rows(folder / table, done_epochs)
    elif legacy:
        try:
            model.load_weights("weights_now.h5")
        except Exception as exc:
            raise ModelFolderError(
                f"{folder / 'weights_now.h5'}: cannot resume from it ({type(exc).__name__}: {exc}); "
                f"delete {folder} to train afresh"
            ) from exc
        state = _state_from_history(folder / "history.csv")
        done_epochs = state["epochs"]
    (folder / "train_config.json").write_text(
        json.dumps(
            {
                **asdict(config),
                "train_images": [s.name for s in train_samples],
                "val_images": [s.name for s in val_samples],
            },
            indent=2,
        )
    )
    model.prepare_for_training()
    if config.epochs * config.steps_per_epoch <= EAGER_MAX_STEPS:
        model.keras_model.run_eagerly = True  # see EAGER_MAX_STEPS
    from keras.callbacks import CSVLogger, TerminateOnNaN

    model.callbacks.append(CSVLogger(str(folder / "history.csv"), append=True))
    model.callbacks.append(TerminateOnNaN())
    model.callbacks.append(
        _EpochRecorder(model, folder, done_epochs, config.steps_per_epoch, snapshot_steps, state, stop_after_epoch)
    )
    # StarDist calls keras_model.fit with verbose=1 (a bar redrawn every step, pages of text in a
    # notebook); override it so that one line per epoch is printed
    fit = model.keras_model.fit

    def fit_with_verbosity(*args, **kwargs):
        return fit(*args, **{**kwargs, "verbose": verbose})

    model.keras_model.fit = fit_with_verbosity
    remaining = config.epochs - done_epochs
    if remaining > 0:
        keras.utils.set_random_seed(config.seed + done_epochs)
        model.train(
            X,
            Y,
            validation_data=(Xv, Yv),
            augmenter=_augment,
            epochs=remaining,
            steps_per_epoch=config.steps_per_epoch,
            seed=config.seed + done_epochs,
        )
    import pandas as pd

    seconds = _train_seconds(folder)
    hist = pd.read_csv(folder / "history.csv") if (folder / "history.csv").exists() else pd.DataFrame()
    if stop_after_epoch is not None and len(hist) < config.epochs and np.isfinite(hist.get("loss", [0.0])).all():
        return None
    bad = [i for i, v in enumerate(hist.get("loss", []), 1) if not np.isfinite(v)]
    if bad or len(hist) < config.epochs:
        record = {
            "epoch": bad[0] if bad else len(hist) + 1,
            "step": (bad[0] if bad else len(hist) + 1) * config.steps_per_epoch,
            "what": "StarDist training loss not finite (Keras TerminateOnNaN)",
            "key": name,
        }
        write_json_atomic(record, folder / "diverged.json")
        raise TrainingDiverged(folder, record)
    model.optimize_thresholds(Xv, Yv, predict_kwargs={"show_tile_progress": False}, optimize_kwargs={"tol": 1e-2})
    (folder / "DONE").write_text(json.dumps({"train_seconds": seconds, "thresholds": model.thresholds._asdict()}))
    shutil.rmtree(folder / RESUME, ignore_errors=True)
    return model


RESUME = "resume"  # subfolder of the per-epoch resume state
# Keras first traces the training and prediction steps into graphs: about 8 s of a 2-core CPU, more than a few steps
# cost when run op by op (0.9 s each at the smoke profile's 64 px patches). Trainings of at most this many steps (the
# smoke profile and the tests) run eagerly: the same model and loss, computed op by op, 25 s -> 18 s on a Zen 4.
EAGER_MAX_STEPS = 10


def _keep_rows(table: Path, n: int) -> None:
    """Keep the header and the first ``n`` rows of a CSV file (atomically)."""
    if not table.exists():
        return
    lines = table.read_text().splitlines(keepends=True)
    tmp = table.with_suffix(".tmp")
    tmp.write_text("".join(lines[: n + 1]))
    os.replace(tmp, table)


def _finite_or_none(value):
    return float(value) if value is not None and np.isfinite(value) else None


def _state_from_history(history: Path) -> dict:
    """The resume state of a folder made before ``resume/``: epochs done, best validation loss, the
    plateau schedule's best and wait, and its learning rate, read back from ``history.csv``."""
    import pandas as pd

    hist = pd.read_csv(history)
    val = hist["val_loss"].to_numpy(float) if "val_loss" in hist else np.array([])
    best_at = int(np.nanargmin(val)) if np.isfinite(val).any() else None
    best = _finite_or_none(val[best_at]) if best_at is not None else None
    return {
        "epochs": len(hist),
        "best_val_loss": best,
        "plateau": {"best": best, "wait": 0 if best_at is None else len(hist) - 1 - best_at, "cooldown_counter": 0},
        "learning_rate": float(hist["learning_rate"].iloc[-1]) if "learning_rate" in hist and len(hist) else None,
    }


def _train_seconds(folder: Path) -> float:
    """Training seconds so far (sum of ``epoch_seconds.csv``, across resumed runs)."""
    f = Path(folder) / "epoch_seconds.csv"
    return float(sum(float(x) for x in f.read_text().split()[1:])) if f.exists() else 0.0


def _epoch_recorder_class():
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """Appends each epoch's seconds to ``epoch_seconds.csv``, keeps the asked-for snapshots and the
        resume state (``resume/``), and restores that state when a run resumes."""

        def __init__(self, sd_model, folder, done_epochs, steps_per_epoch, snapshot_steps, state=None, stop_after=None):
            super().__init__()
            self.sd_model, self.folder, self.done, self.spe = sd_model, Path(folder), done_epochs, steps_per_epoch
            self.snapshot_steps = {int(n) for n in snapshot_steps}
            self.state, self.stop_after = state, stop_after

        def _callback(self, kind):
            return next((c for c in self.sd_model.callbacks if isinstance(c, kind)), None)

        def on_train_begin(self, logs=None):
            """Put back the state of the interrupted run (after the other callbacks reset theirs)."""
            if not self.state:
                return
            km = self.sd_model.keras_model
            opt = km.optimizer
            if self.state.get("optimizer"):
                if not opt.built:
                    opt.build(km.trainable_variables)
                with np.load(self.folder / RESUME / self.state["optimizer"]) as saved:
                    for i, var in enumerate(opt.variables):
                        var.assign(saved[f"v{i}"])
            elif self.state.get("learning_rate"):
                opt.learning_rate = self.state["learning_rate"]
            best = self._callback(keras.callbacks.ModelCheckpoint)
            if best is not None and self.state.get("best_val_loss") is not None:
                best.best = self.state["best_val_loss"]
            plateau = self._callback(keras.callbacks.ReduceLROnPlateau)
            if plateau is not None:
                for k, v in self.state["plateau"].items():
                    setattr(plateau, k, v)

        def _save_state(self, epochs: int):
            """Weights and optimizer of this epoch under new names, then ``state.json`` naming them."""
            from .model_folder import write_json_atomic

            km, folder = self.sd_model.keras_model, self.folder / RESUME
            folder.mkdir(exist_ok=True)
            stem = f"epoch-{epochs:06d}"
            km.save_weights(str(folder / stem) + ".weights.h5")
            np.savez(
                folder / f"{stem}.optimizer.npz", **{f"v{i}": v.numpy() for i, v in enumerate(km.optimizer.variables)}
            )
            best, plateau = (
                self._callback(keras.callbacks.ModelCheckpoint),
                self._callback(keras.callbacks.ReduceLROnPlateau),
            )
            state = {
                "epochs": epochs,
                "weights": f"{stem}.weights.h5",
                "optimizer": f"{stem}.optimizer.npz",
                "best_val_loss": _finite_or_none(getattr(best, "best", None)),
                "plateau": {k: getattr(plateau, k) for k in ("wait", "cooldown_counter")} if plateau else {},
            }
            if plateau is not None:
                state["plateau"]["best"] = _finite_or_none(plateau.best)
            write_json_atomic(state, folder / "state.json")
            for old in folder.glob("epoch-*"):
                if not old.name.startswith(stem + "."):
                    old.unlink()

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            f = self.folder / "epoch_seconds.csv"
            if not f.exists():
                f.write_text("seconds\n")
            with open(f, "a") as fh:
                fh.write(f"{time.perf_counter() - self.t0:.3f}\n")
            steps = (self.done + epoch + 1) * self.spe
            if steps in self.snapshot_steps:
                from .model_folder import write_json_atomic

                snap = self.folder / "snapshots" / f"step-{steps:06d}"
                snap.parent.mkdir(exist_ok=True)
                self.sd_model.keras_model.save_weights(str(snap) + ".weights.h5")
                write_json_atomic(
                    {
                        "steps": steps,
                        "train_seconds": _train_seconds(self.folder),
                        "val_loss": float((logs or {}).get("val_loss", float("nan"))),
                        "precision": "fp32",
                    },
                    snap.with_suffix(".json"),
                )
            self._save_state(self.done + epoch + 1)
            if self.stop_after is not None and self.done + epoch + 1 >= self.stop_after:
                self.model.stop_training = True

    return EpochRecorder


def _EpochRecorder(*args):
    return _epoch_recorder_class()(*args)


def snapshots(folder):
    """The snapshots of a StarDist folder: DataFrame ``steps, train_seconds, val_loss, precision, weights``."""
    import pandas as pd

    from .model_folder import read_json

    rows = [
        {**read_json(j), "weights": j.with_name(j.stem + ".weights.h5")}
        for j in sorted((Path(folder) / "snapshots").glob("step-[0-9][0-9][0-9][0-9][0-9][0-9].json"))
    ]
    return pd.DataFrame(rows, columns=["steps", "train_seconds", "val_loss", "precision", "weights"])


def load_stardist(folder):
    """Load a trained StarDist folder (weights_best.h5 and tuned thresholds)."""
    configure_tensorflow()
    from stardist.models import StarDist2D

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: not a StarDist model folder (no config.json)")
    with contextlib.redirect_stdout(io.StringIO()):  # StarDist prints the files it loads, three lines a model
        return StarDist2D(None, name=folder.name, basedir=str(folder.parent))


def predict_stardist(model, image: np.ndarray, max_side: int = 1024, normalize: bool = True) -> np.ndarray:
    """Instance labels for one image, with StarDist's tuned thresholds; tiles large images.

    Parameters
    ----------
    model : StarDist2D
        A trained model (:func:`train_stardist`).
    image : array (H, W)
        Raw intensities, normalized here like the training data (percentiles 1 and 99.8).
    max_side : int
        Images with a longer side are predicted in tiles.
    normalize : bool
        False: ``image`` is normalized already.

    Returns
    -------
    int32 array (H, W)
        Instance labels, 0 = background.
    """
    x = normalize_percentile(image) if normalize else np.asarray(image, np.float32)
    n_tiles = tuple(int(np.ceil(s / max_side)) for s in x.shape)
    labels, _ = model.predict_instances(x, n_tiles=n_tiles, show_tile_progress=False, verbose=False)
    return labels.astype(np.int32)
