"""The ``nucseg`` command: segment your own images with an exported model.

    nucseg predict -o OUT images/                         # the published model, nucleus size estimated
    nucseg predict -m runs/my-run/export/unet_boundary -o OUT --nucleus-diameter 30 a.tif b.png
    nucseg predict -o OUT --pixel-size 0.65 'plate1/*.tif'
    nucseg predict -m runs/my-run/export --method stardist -o OUT images/   # one of a run's exported models

``-m`` names an exported model folder, or a folder of them (a run's ``export/``; the default is the
repository's ``models/``, which publishes the boundary U-Net); ``--method`` picks one of them by
method (default ``unet_boundary``). A method the folder does not hold is a usage error that lists
what it does hold.

For each input ``NAME.tif``/``.png`` it writes ``OUT/NAME_labels.tif`` (instance labels,
uint16, or uint32 beyond 65535 nuclei), ``OUT/NAME_overlay.png`` (outlines on the image)
and ``OUT/NAME_nuclei.csv`` (one row per nucleus). Inputs whose three outputs exist are
skipped unless ``--overwrite``.

Your files are safe: an output is never written over a file that nucseg did not write
(the outputs carry a mark: the TIFF and PNG "Software" tag ``nucseg predict``, the CSV's
header), nor over one of the inputs, even with ``--overwrite``; folders and patterns skip
nucseg's own outputs, so segmenting a folder into itself (``-o D D``) twice segments the
same images. A file that fails is reported by name and the others still run; the exit status
is 1 when any failed, 2 on a usage error (no such input, ``-o`` naming a file, ...).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

from ..pipeline.folders import REPO

PUBLISHED_MODELS = REPO / "models"  # the models a fresh clone has (no download): the boundary U-Net
DEFAULT_METHOD = "unet_boundary"
SUFFIXES = (".tif", ".tiff", ".png")
SOFTWARE = "nucseg predict"  # the TIFF/PNG Software tag of every image this command writes
TABLE_HEADER = "label,area_px"  # how the nucleus tables this command writes begin


class UsageError(Exception):
    """The command line cannot run (exit status 2); the message says what to change."""


def is_our_output(path: Path) -> bool:
    """Whether ``path`` is a file this command wrote (its mark: see the module docstring)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return tif.pages[0].software == SOFTWARE
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                return im.info.get("Software") == SOFTWARE
        if path.suffix.lower() == ".csv":
            with open(path) as fh:
                return fh.readline().startswith(TABLE_HEADER)
    except Exception:  # noqa: BLE001 (an unreadable file is not ours; it is left alone)
        return False
    return False


def expand_inputs(items) -> list[Path]:
    """Files from files, folders (their .tif/.tiff/.png files) and glob patterns; UsageError naming the item.

    Folders and patterns leave out this command's own outputs; a file named on its own is always an input."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise UsageError(f"{p}: no {'/'.join(SUFFIXES)} files in this folder")
            out += [f for f in found if not is_our_output(f)]
        elif p.is_file():
            out.append(p)
        elif any(c in item for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(item) if Path(f).is_file())
            if not found:
                raise UsageError(f"{item}: no file matches this pattern")
            out += [f for f in found if not is_our_output(f)]
        else:
            raise UsageError(f"{item}: no such file or folder")
    if not out:
        raise UsageError(f"{' '.join(map(str, items))}: only nucseg predict's own outputs, no image to segment")
    stems = {}
    for f in out:
        if f.stem in stems and stems[f.stem] != f:
            raise UsageError(
                f"{stems[f.stem]} and {f} would write the same outputs ({f.stem}_*); "
                f"segment them into different --out folders"
            )
        stems[f.stem] = f
    return list(dict.fromkeys(out))


def outputs(out: Path, stem: str) -> dict[str, Path]:
    return {
        "labels": out / f"{stem}_labels.tif",
        "overlay": out / f"{stem}_overlay.png",
        "table": out / f"{stem}_nuclei.csv",
    }


def blocked_outputs(files: dict[str, Path], inputs: set[Path]) -> list[str]:
    """Why some of ``files`` may not be written: an input of this run, or a file nucseg did not write."""
    why = []
    for f in files.values():
        if f.resolve() in inputs:
            why.append(f"{f} is one of the inputs")
        elif f.exists() and not is_our_output(f):
            why.append(f"{f} exists and was not written by nucseg predict")
    return why


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def segment_file(segmenter, path: Path, out: Path, channel, pixel_size, nucleus_diameter) -> dict:
    """Segment one file and write its three outputs; returns what was done (nuclei, factor, ...)."""
    import numpy as np
    import tifffile
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from ..data.common import read_image
    from .segmenter import nucleus_table, outline_overlay

    image = read_image(path, channel=channel)
    labels, info = segmenter.segment(image, pixel_size=pixel_size, nucleus_diameter=nucleus_diameter)
    files = outputs(out, path.stem)
    dtype = np.uint16 if labels.max() < 2**16 else np.uint32
    png_info = PngInfo()
    png_info.add_text("Software", SOFTWARE)
    _write_atomic(
        files["labels"], lambda t: tifffile.imwrite(t, labels.astype(dtype), compression="zlib", software=SOFTWARE)
    )
    _write_atomic(
        files["overlay"],
        lambda t: Image.fromarray(outline_overlay(image, labels)).save(t, format="PNG", pnginfo=png_info),
    )
    _write_atomic(files["table"], lambda t: nucleus_table(labels, image, pixel_size).to_csv(t, index=False))
    return {**info, "nuclei": int(labels.max())}


def model_folder(model, method: str | None) -> Path:
    """The exported model folder that ``-m`` and ``--method`` name (see the module docstring); UsageError
    naming the methods the folder holds when it has none or not the one asked for."""
    from .segmenter import exported_models

    folder = Path(model)
    if not folder.is_dir():
        raise UsageError(f"-m {folder}: no such folder")
    offered = exported_models(folder)
    holds = ", ".join(f"{m} ({p})" for m, p in offered.items()) or "none"
    if not offered:
        raise UsageError(f"-m {folder}: not an exported model folder, nor a folder of them (exported models: none)")
    if method is None:  # a single model folder, or the default method of a folder of them
        method = next(iter(offered)) if len(offered) == 1 else DEFAULT_METHOD
    if method not in offered:
        raise UsageError(
            f"--method {method}: {folder} holds no such model; it holds: {holds}. A run of the study "
            f"exports all three methods to <run>/export/ (notebook 08)"
        )
    return offered[method]


def predict_main(a) -> int:
    from tqdm import tqdm

    from .segmenter import ModelError, Segmenter

    try:
        folder = model_folder(a.model, a.method)  # a usage error before any image is read
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = expand_inputs(a.inputs)
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: is a file; -o names the folder the outputs go to")
    out.mkdir(parents=True, exist_ok=True)
    inputs = {f.resolve() for f in files}
    todo, refused = [], []
    for f in files:
        files_out = outputs(out, f.stem)
        blocked = blocked_outputs(files_out, inputs)
        if blocked:
            refused.append((f, "; ".join(blocked) + " (not overwritten; choose another -o)"))
        elif a.overwrite or not all(p.exists() for p in files_out.values()):
            todo.append(f)
    skipped = len(files) - len(todo) - len(refused)
    if skipped:
        print(f"skipping {skipped} of {len(files)} images whose outputs exist in {out} (--overwrite to redo them)")
    for f, why in refused:
        print(f"REFUSED {f}: {why}", file=sys.stderr)
    if not todo:
        return 1 if refused else 0
    try:
        segmenter = Segmenter(folder)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"model: {folder} ({segmenter.method}, trained on nuclei of {segmenter.diameter:.1f} px"
        + (f" at {segmenter.pixel_size:g} um/px" if segmenter.pixel_size else "")
        + f"; predicting in {segmenter.precision})"
    )
    failed = []
    for f in tqdm(todo, desc="segmenting", unit="image", disable=not sys.stderr.isatty() and not a.progress):
        try:
            r = segment_file(segmenter, f, out, a.channel, a.pixel_size, a.nucleus_diameter)
            tqdm.write(
                f"{f}: {r['nuclei']} nuclei (nucleus diameter {r['diameter_px']:.1f} px, {r['how']}; "
                f"scaled by 1/{r['factor']:.2f})"
            )
        except Exception as exc:  # one bad file must not stop the batch
            failed.append((f, f"{type(exc).__name__}: {exc}"))
            tqdm.write(f"FAILED {f}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"{len(todo) - len(failed)} of {len(todo)} images segmented into {out}")
    failed += refused
    if failed:
        print(f"{len(failed)} failed:\n" + "\n".join(f"  {f}: {why}" for f, why in failed), file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="nucseg", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser(
        "predict",
        help="segment images with an exported model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="image files (.tif, .tiff, .png), folders or glob patterns")
    p.add_argument(
        "-m",
        "--model",
        default=str(PUBLISHED_MODELS),
        help="an exported model folder, or a folder of them such as a run's export/ (default: the published "
        "models/, which holds unet_boundary)",
    )
    from ..methods import METHODS

    p.add_argument(
        "--method",
        choices=list(METHODS),
        default=None,
        help="which model of a folder of them: "
        + "; ".join(f"{m.name}: {m.description}" for m in METHODS.values())
        + f" (default: the folder's only model, else {DEFAULT_METHOD})",
    )
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--pixel-size", type=float, default=None, help="micrometres per pixel of the inputs")
    p.add_argument(
        "--nucleus-diameter",
        type=float,
        default=None,
        help="typical nucleus diameter in input pixels (default: estimated)",
    )
    p.add_argument("--channel", type=int, default=0, help="channel holding the nuclei in multi-channel images")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs exist")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    a = ap.parse_args(argv)
    if a.pixel_size is not None and a.nucleus_diameter is not None:
        ap.error("give --pixel-size or --nucleus-diameter, not both")
    try:
        return predict_main(a)
    except UsageError as exc:
        p.print_usage(sys.stderr)
        print(f"nucseg predict: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
