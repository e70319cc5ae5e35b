"""What starting one workflow job costs on this machine: seconds of the imports every job repeats.

Prints figures; it is not a test. Usage::

    python benchmarks/bench_startup.py             # best of 3 fresh processes per item
    python benchmarks/bench_startup.py --repeats 1

A whole study is some 16 jobs, each a fresh Python process (a notebook job is two: papermill's and the
kernel's), so on a 2-core CPU the smoke studies of ``make test`` spend most of their time starting up rather
than training. Each item below runs in a fresh process, timed from the parent (wall-clock seconds, best of
``--repeats``, and the CPU seconds of that process), on an otherwise idle machine:

- ``python``: the interpreter alone;
- ``torch``: ``import torch`` (every U-Net job and kernel);
- ``tensorflow``: ``nucseg_lib.train.stardist.configure_tensorflow()`` (every StarDist job and the kernels of
  notebooks 06, 08 and 09; it imports torch first);
- ``papermill``: a notebook job's own process (``nucseg_lib.pipeline.jobs.import_papermill``);
- ``kernel``: papermill executing a one-cell notebook (starting a Jupyter kernel and talking to it).

These are the costs that the CPU's speed at running Python sets, beside the U-Net's arithmetic that
``bench_unet.py`` times; the README's two commands depend on both.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

ITEMS = {
    "python": "pass",
    "torch": "import torch",
    "tensorflow": "from nucseg_lib.train.stardist import configure_tensorflow; configure_tensorflow()",
    "papermill": "from nucseg_lib.pipeline.jobs import import_papermill; import_papermill()",
    "kernel": (
        "import sys, nbformat; from nucseg_lib.pipeline.jobs import import_papermill; pm = import_papermill(); "
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1')]); "
        "nbformat.write(nb, sys.argv[1] + '/in.ipynb'); "
        "pm.execute_notebook(sys.argv[1] + '/in.ipynb', sys.argv[1] + '/out.ipynb', progress_bar=False, "
        "kernel_name='python3')"
    ),
}


def time_process(code: str, folder: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children) of ``python -c code folder``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"{code!r} failed:\n{r.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per item (the best is printed)")
    parser.add_argument("--items", nargs="+", choices=sorted(ITEMS), default=list(ITEMS))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    from nucseg_lib.machine import cpu_name

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; best of {args.repeats} fresh processes per item")
    with tempfile.TemporaryDirectory() as folder:
        for item in args.items:
            runs = [time_process(ITEMS[item], folder) for _ in range(args.repeats)]
            wall, cpu = min(runs)
            print(f"{item:>10}: {wall:5.2f} s wall, {cpu:5.2f} s CPU")


if __name__ == "__main__":
    main()
