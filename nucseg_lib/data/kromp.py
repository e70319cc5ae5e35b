"""Kromp et al. 2020: annotated fluorescence images for training nuclear segmentation (the paper's dataset).

What it is: 79 fluorescence images (DAPI/Hoechst) of tissue sections and cell
preparations from neuroblastoma, ganglioneuroblastoma, normal tissue and other
specimens, with 7813 hand-annotated nuclei. Groups are the pathological
condition read from the file name (``Ganglioneuroblastoma``, ``Neuroblastoma``,
``normal``, ``otherspecimen``, ...) or, when ``image_description.csv`` is
present, its diagnosis column.

Layout after extraction of ``dataset.zip``::

    rawimages/<name>.tif          raw image; some have 3 channels, the nuclear signal is channel 0
    groundtruth/<name>.tif        instance mask with the same file name
    image_description.csv         per image: diagnosis, preparation, suggested train/test split, ...

Splits: ``paper`` (70 train / 9 test, a random permutation with seed 0, as in
the paper's 70/9 split) and ``suggested`` (the dataset's own train/test column).

Download: BioStudies S-BSST265 (CC0), ``dataset.zip`` with SHA-256 below. It
cannot be fetched from machines without network access; place the zip (or
the extracted folder) under ``root`` by hand.

Cite: F. Kromp, E. Bozsaky, F. Rifatbegovic et al. *An annotated fluorescence
image dataset for training nuclear segmentation methods.* Scientific Data 7,
262 (2020). doi:10.1038/s41597-020-00608-w
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from .common import (
    DataError,
    Sample,
    data_root,
    files_with_suffix,
    pair_by_name,
    read_image,
    read_labels,
    select_files,
)
from .download import fetch, safe_extract_zip

NAME = "kromp2020"
URL = "https://www.ebi.ac.uk/biostudies/files/S-BSST265/dataset.zip"
SHA256 = "8285987ed4d57c46a46a55a33c1c085875ea41f429b59cde31d249741aa07ad1"
TIFF_SUFFIXES = (".tif", ".tiff")
PAPER_N_TEST = 9
PAPER_SEED = 0
CITATION = (
    "F. Kromp, E. Bozsaky, F. Rifatbegovic et al. An annotated fluorescence image dataset for training "
    "nuclear segmentation methods. Scientific Data 7, 262 (2020). doi:10.1038/s41597-020-00608-w"
)


def download(root=None, url: str = URL, sha256: str = SHA256) -> Path:
    """Fetch ``dataset.zip`` (checked against ``sha256``) into ``root`` and extract it; returns the data folder."""
    root = data_root(NAME, root)
    if _find_data_dir(root) is not None:
        return _find_data_dir(root)
    archive = fetch(url, sha256, root / "dataset.zip")
    safe_extract_zip(archive, root)
    found = _find_data_dir(root)
    if found is None:
        raise DataError(f"{archive}: extracted, but no rawimages/ and groundtruth/ folders inside")
    return found


def _find_data_dir(root: Path) -> Path | None:
    """The folder holding ``rawimages/`` and ``groundtruth/`` (the root itself or one level below)."""
    for cand in [root, *sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith("."))]:
        if (cand / "rawimages").is_dir() and (cand / "groundtruth").is_dir():
            return cand
    return None


def read_description(path: Path) -> dict[str, dict]:
    """Rows of ``image_description.csv`` keyed by image stem (column names lower-cased)."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = text.splitlines()
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
        records = list(csv.DictReader(lines, dialect=dialect))
    except (IndexError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV table ({type(exc).__name__}: {exc or 'empty file'})") from exc
    rows = {}
    for row in records:
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        key = next(
            (row[k] for k in ("image_name", "imagename", "image name", "filename", "name", "image") if row.get(k)), None
        )
        if key:
            rows[Path(key).stem] = row
    return rows


def group_from_name(stem: str) -> str:
    """Pathological condition from a file name like ``Neuroblastoma_12`` (text before the trailing number)."""
    return re.sub(r"[_\-\s]*\d+$", "", stem) or stem


def _suggested_split(row: dict) -> str | None:
    for key, val in row.items():
        if "train" in key or "split" in key or "test" in key:
            v = val.lower()
            if v.startswith("train"):
                return "train"
            if v.startswith("test"):
                return "test"
    return None


def load(root=None, split: str = "all", scheme: str = "paper", max_per_split: dict | None = None) -> list[Sample]:
    """Load the dataset from ``root`` (default ``$NUCSEG_DATA/kromp2020``); no download is attempted.

    ``scheme`` is ``'paper'`` (70/9, seed 0) or ``'suggested'`` (the csv's column). ``max_per_split``
    (e.g. ``{"train": 6, "test": 3}``) reads only the first images of each split, in file-name order.
    """
    root = data_root(NAME, root)
    data_dir = _find_data_dir(root) if root.is_dir() else None
    if data_dir is None:
        raise DataError(
            f"{root}: no rawimages/ and groundtruth/ folders; run nucseg_lib.data.kromp.download() "
            f"or place the extracted {URL} there"
        )
    pairs = pair_by_name(
        files_with_suffix(data_dir / "rawimages", TIFF_SUFFIXES),
        files_with_suffix(data_dir / "groundtruth", TIFF_SUFFIXES),
    )
    if not pairs:
        raise DataError(f"{data_dir}: no TIFF pairs in rawimages/ and groundtruth/")
    desc = read_description(data_dir / "image_description.csv")
    stems = [p.stem for p, _ in pairs]
    if scheme == "paper":
        order = np.random.default_rng(PAPER_SEED).permutation(len(stems))
        n_test = PAPER_N_TEST if len(stems) > 2 * PAPER_N_TEST else max(1, len(stems) // 8)
        test = {stems[i] for i in order[:n_test]}
        assign = {s: ("test" if s in test else "train") for s in stems}
    elif scheme == "suggested":
        assign = {}
        for s in stems:
            sp = _suggested_split(desc.get(s, {}))
            if sp is None:
                raise DataError(f"{data_dir / 'image_description.csv'}: no train/test entry for {s}")
            assign[s] = sp
    else:
        raise ValueError(f"scheme must be 'paper' or 'suggested', got {scheme!r}")
    samples = []
    for img_path, lab_path in select_files(pairs, lambda p: assign[p[0].stem], split, max_per_split):
        row = desc.get(img_path.stem, {})
        group = row.get("diagnosis") or group_from_name(img_path.stem)
        samples.append(
            Sample(
                read_image(img_path, channel=0),
                read_labels(lab_path),
                name=img_path.stem,
                group=group,
                dataset=NAME,
                meta={"split": assign[img_path.stem], "path": str(img_path), **row},
            )
        )
    return samples
