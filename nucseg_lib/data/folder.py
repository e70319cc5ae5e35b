"""Your own annotated images: a folder of ``images/`` and ``labels/`` paired by file name.

What it is: any 2D nuclei images with instance labels, so that the whole study runs on a
user's data (``--config dataset=folder data_root=mydata/`` in the workflow, or
``dataset="folder", data_root="mydata/"`` in a notebook).

Layout::

    images/<name>.tif|.tiff|.png     raw image (2D; multi-channel images use channel ``channel`` below)
    labels/<name>.tif|.tiff|.png     instance labels with the same file stem, 0 = background; or
                                     colour-coded (RGB): background black, else the most frequent
                                     colour; each connected region of one colour is one nucleus
    split.csv                        optional: columns ``name,split`` (``train``/``test``)
                                     and optionally ``group``

Every image needs a label image and the reverse (a missing partner is an error naming the
file, and so is a name used twice, as in ``img01.tif`` beside ``img01.png``), and both go
through the checks of the other loaders (2D, same shape, integer labels,
no NaN, readable files). Without ``split.csv`` the split is fixed by file names
(:func:`~nucseg_lib.data.common.split_by_name`, test fraction 0.2, salt ``folder``): adding
files never moves another between train and test. The group (for per-group results) is
``split.csv``'s ``group`` column, else ``all``.

Cite: the data's own authors; this loader adds nothing to cite.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .common import (
    DataError,
    Sample,
    data_root,
    files_with_suffix,
    pair_by_name,
    read_image,
    read_labels,
    select_files,
    split_by_name,
)

NAME = "folder"
SUFFIXES = (".tif", ".tiff", ".png")
TEST_FRACTION = 0.2
SPLIT_SALT = "folder"


def _read_split(path: Path) -> dict[str, dict]:
    """``split.csv`` as ``{name: {"split": ..., "group": ...}}``; DataError naming the file and row when malformed."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if not rows or not {"name", "split"} <= set(rows[0]):
        raise DataError(f"{path}: needs a header with columns name,split (and optionally group)")
    out = {}
    for i, r in enumerate(rows, start=2):
        if r["split"] not in ("train", "test"):
            raise DataError(f"{path}, line {i}: split must be 'train' or 'test', got {r['split']!r}")
        name, entry = Path(r["name"]).stem, {"split": r["split"], "group": r.get("group") or "all"}
        if name in out and out[name] != entry:
            raise DataError(
                f"{path}, line {i}: {name!r} is listed again with split {entry['split']!r}, group {entry['group']!r}"
                f" (before: split {out[name]['split']!r}, group {out[name]['group']!r}); list each image once"
            )
        out[name] = entry
    return out


def load(root=None, split: str = "all", channel: int | None = 0, max_per_split: dict | None = None) -> list[Sample]:
    """Load every image/label pair under ``root`` (default ``$NUCSEG_DATA/folder``).

    ``split`` is ``'train'``, ``'test'`` or ``'all'``; names are the file stems. ``max_per_split``
    (e.g. ``{"train": 6, "test": 3}``) reads only the first images of each split, in file-name order.
    """
    root = data_root(NAME, root)
    img_dir, lab_dir = root / "images", root / "labels"
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise DataError(
                f"{root}: no {d.name}/ folder; a folder dataset holds images/ and labels/ with the same file names"
            )
    pairs = pair_by_name(files_with_suffix(img_dir, SUFFIXES), files_with_suffix(lab_dir, SUFFIXES))
    if not pairs:
        raise DataError(f"{root}: no image/label pairs ({', '.join(SUFFIXES)}) in images/ and labels/")
    names = [p.stem for p, _ in pairs]
    split_file = root / "split.csv"
    if split_file.exists():
        table = _read_split(split_file)
        missing = [n for n in names if n not in table]
        if missing:
            raise DataError(f"{split_file}: no row for {', '.join(missing[:5])}")
    else:
        table = {n: {"split": s, "group": "all"} for n, s in split_by_name(names, TEST_FRACTION, SPLIT_SALT).items()}
    if not any(table[n]["split"] == "test" for n in names) or not any(table[n]["split"] == "train" for n in names):
        raise DataError(
            f"{root}: the split has no {'test' if all(table[n]['split'] == 'train' for n in names) else 'train'}"
            f" images; give split.csv with both"
        )
    samples = [
        Sample(
            read_image(img, channel=channel),
            read_labels(lab),
            name=img.stem,
            group=table[img.stem]["group"],
            dataset=NAME,
            meta={"split": table[img.stem]["split"], "path": str(img)},
        )
        for img, lab in select_files(pairs, lambda p: table[p[0].stem]["split"], split, max_per_split)
    ]
    return samples
