"""Where StarDist's training time goes on this machine: data feeding versus the network step.

Prints figures; it is not a test. Usage::

    python benchmarks/bench_stardist.py --data-root ../shared/data/coelho2009
    python benchmarks/bench_stardist.py --scale 2 --batch 4 --threads 2 --augment none
    python benchmarks/bench_stardist.py --threads 1 --malloc default   # glibc's own malloc settings

One configuration per call (TensorFlow's thread settings are fixed when it starts, glibc's
malloc settings when the process starts: ``--malloc`` restarts the process with them);
``--all`` runs the configurations of the study's investigation, each in a fresh process,
and prints one table. ``--malloc study`` (the default) is what the workflow's jobs get
(``nucseg_lib.machine.MALLOC_TUNABLES``), ``default`` is glibc's defaults, ``inherit`` keeps
this shell's ``GLIBC_TUNABLES``. For each: patches/s of whole training steps (Keras ``fit`` as
StarDist runs it, timed per step after 5 warm-up steps), the seconds one batch takes to
prepare (augmentation + star distances, StarDist's data generator, in the main thread),
and the same for the network step alone (``train_on_batch`` on a ready batch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def malloc_environment(malloc: str) -> dict:
    """This process's environment with ``GLIBC_TUNABLES`` as ``--malloc`` asks."""
    from nucseg_lib.machine import MALLOC_TUNABLES

    env = dict(os.environ)
    if malloc == "study":
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    elif malloc == "default":
        env.pop("GLIBC_TUNABLES", None)
    return env


def malloc_label() -> str:
    from nucseg_lib.machine import MALLOC_TUNABLES

    tunables = os.environ.get("GLIBC_TUNABLES")
    return "study" if tunables == MALLOC_TUNABLES else tunables or "default"


def run_one(a) -> dict:
    from nucseg_lib.train.stardist import _augment, _prepare, configure_tensorflow, data_workers

    configure_tensorflow(a.threads)
    import keras
    import tensorflow as tf
    from stardist.models import Config2D, StarDist2D

    from nucseg_lib.data import load_dataset

    samples = load_dataset(a.dataset, "train", root=a.data_root, scale=a.scale)[: a.images]
    X, Y = _prepare(samples)
    conf = Config2D(
        n_rays=32,
        grid=(2, 2),
        n_channel_in=1,
        train_patch_size=(a.patch, a.patch),
        train_batch_size=a.batch,
        train_tensorboard=False,
        use_gpu=False,
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model = StarDist2D(conf, name="bench", basedir=tmp)
        model.prepare_for_training()
        model.callbacks = []  # no checkpoint files, no LR schedule: time the steps

        class EpochTimer(keras.callbacks.Callback):  # step time including data feeding
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                epoch_times.append(time.perf_counter() - self.t)

        epoch_times: list[float] = []
        model.callbacks += [EpochTimer()]
        fit = model.keras_model.fit
        model.keras_model.fit = lambda *x, **k: fit(*x, **{**k, "verbose": 0})
        aug = _augment if a.augment == "study" else None
        workers = data_workers(a.workers)
        model.train(
            X,
            Y,
            validation_data=(X[:2], Y[:2]),
            augmenter=aug,
            epochs=2,
            steps_per_epoch=a.steps,
            seed=0,
            workers=workers,
        )
        gen = model.data_train
        t = time.perf_counter()
        for i in range(10):
            gen[i]
        data_s = (time.perf_counter() - t) / 10
        xb, yb = gen[0]
        model.keras_model.train_on_batch(xb, yb)
        t = time.perf_counter()
        for _ in range(10):
            model.keras_model.train_on_batch(xb, yb)
        net_s = (time.perf_counter() - t) / 10
    epoch2 = epoch_times[-1] / a.steps
    return {
        "scale": a.scale,
        "batch": a.batch,
        "patch": a.patch,
        "threads": a.threads,
        "augment": a.augment,
        "workers": workers,
        "malloc": malloc_label(),
        "fit_s_per_step": round(epoch2, 4),
        "patches_per_s": round(a.batch / epoch2, 1),
        "data_s_per_batch": round(data_s, 4),
        "net_s_per_step": round(net_s, 4),
        "tf_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }


CONFIGS = [  # the investigation: the study's first settings, then one change at a time
    dict(scale=4, batch=8, threads=2, augment="study", workers=1, malloc="default"),
    dict(scale=4, batch=8, threads=2, augment="none", workers=1, malloc="default"),
    dict(scale=4, batch=8, threads=1, augment="study", workers=1, malloc="default"),
    dict(scale=4, batch=8, threads=2, augment="study", workers=2, malloc="default"),
    dict(scale=2, batch=4, threads=2, augment="study", workers=1, malloc="default"),
    dict(scale=2, batch=4, threads=2, augment="study", workers=2, malloc="default"),
    dict(scale=4, batch=8, threads=2, augment="study", workers=1, malloc="study"),
    dict(scale=4, batch=8, threads=1, augment="study", workers=1, malloc="study"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="coelho2009")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--scale", type=float, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--augment", choices=["study", "none"], default="study")
    ap.add_argument("--workers", type=int, default=1, help="data-feeding processes (0: as many as cores)")
    ap.add_argument("--steps", type=int, default=40, help="steps per timed epoch")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--all", action="store_true", help="run the investigation's configurations")
    ap.add_argument(
        "--malloc",
        choices=["study", "default", "inherit"],
        default="study",
        help="glibc malloc settings: the workflow's (study), glibc's defaults, or this shell's GLIBC_TUNABLES",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON line (used by --all)")
    a = ap.parse_args()
    from nucseg_lib.machine import cpu_name, transparent_hugepages

    if not a.all:
        env = malloc_environment(a.malloc)
        if env.get("GLIBC_TUNABLES") != os.environ.get("GLIBC_TUNABLES"):
            os.execve(sys.executable, [sys.executable, *sys.argv], env)  # glibc reads them at start only
        row = run_one(a)
        print(json.dumps(row) if a.json else row)
        return
    import pandas as pd

    rows = []
    for c in CONFIGS:
        cmd = [
            sys.executable,
            __file__,
            "--json",
            "--dataset",
            a.dataset,
            "--steps",
            str(a.steps),
            "--images",
            str(a.images),
            "--patch",
            str(a.patch),
        ] + sum(([f"--{k}", str(v)] for k, v in c.items()), [])
        if a.data_root:
            cmd += ["--data-root", a.data_root]
        env = {**malloc_environment(c["malloc"]), "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [x for x in out.stdout.splitlines() if x.startswith("{")]
        if out.returncode or not line:
            print(f"failed: {c}\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line[-1]))
        print(rows[-1], flush=True)
    print(
        f"\nStarDist2D training throughput on {cpu_name()} ({os.cpu_count()} cores), {a.dataset}, "
        f"patch {a.patch}x{a.patch}; transparent huge pages: {transparent_hugepages()}:"
    )
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
