"""Coelho et al. 2009: hand-segmented fluorescence nuclei (U2OS ``gnf`` and NIH3T3 ``ic100``, Hoechst).

What it is: 97 hand-labelled 8-bit images of DNA-stained nuclei from two cell
lines, U2OS (``gnf``, 1349 x 1030 px) and NIH3T3 (``ic100``, 1344 x 1024 px).
Some faint nuclei and debris are unlabelled, as upstream. Nuclei touching the
border are labelled. Groups are the cell lines ``U2OS`` and ``NIH3T3``.

Layout (the upstream repository ``luispedro/Coelho2009_ISBI_NuclearSegmentation``)::

    data/images/dna-images/{gnf,ic100}/dna-N.png       raw image (RGB, three equal channels)
    data/preprocessed-data/{gnf,ic100}/dna-N.png       instance labels, 0 = background

Split: fixed and defined by file names (:func:`~nucseg_lib.data.common.split_by_name`
with salt ``coelho2009`` and test fraction 0.2, applied per cell line), so
adding or removing files never moves another file between train and test.

Cite: L. P. Coelho, A. Shariff, R. F. Murphy. *Nuclear segmentation in
microscope cell images: a hand-segmented dataset and comparison of algorithms.*
ISBI 2009, pp. 518-521. doi:10.1109/ISBI.2009.5193098
"""

from __future__ import annotations

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

NAME = "coelho2009"
URL = "https://raw.githubusercontent.com/luispedro/Coelho2009_ISBI_NuclearSegmentation/master/"
CELL_LINES = {"gnf": "U2OS", "ic100": "NIH3T3"}
TEST_FRACTION = 0.2
SPLIT_SALT = "coelho2009"
CITATION = (
    "L. P. Coelho, A. Shariff, R. F. Murphy. Nuclear segmentation in microscope cell images: "
    "a hand-segmented dataset and comparison of algorithms. ISBI 2009. doi:10.1109/ISBI.2009.5193098"
)


def load(root=None, split: str = "all", max_per_split: dict | None = None) -> list[Sample]:
    """Load every labelled image under ``root`` (default ``$NUCSEG_DATA/coelho2009``).

    ``split`` is ``'train'``, ``'test'`` or ``'all'``. Names are ``<folder>/dna-N``. ``max_per_split``
    (e.g. ``{"train": 6, "test": 3}``) reads only the first images of each split (U2OS, then NIH3T3).
    """
    root = data_root(NAME, root)
    if not (root / "data").is_dir():
        raise DataError(f"{root}: not a Coelho 2009 root (no data/ folder); point root or $NUCSEG_DATA at it")
    entries = []  # (name, cell line, image, labels, split), before any pixel is read
    for folder, line in CELL_LINES.items():
        img_dir = root / "data" / "images" / "dna-images" / folder
        lab_dir = root / "data" / "preprocessed-data" / folder
        if not lab_dir.is_dir():
            continue
        labels = files_with_suffix(lab_dir, [".png"])
        # upstream has raw images without labels: only labelled ones are pairs
        images = [img_dir / p.name for p in labels]
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise DataError(f"missing raw image for labels: {', '.join(missing[:5])}")
        assign = split_by_name([f"{folder}/{p.stem}" for p in labels], TEST_FRACTION, SPLIT_SALT)
        for img_path, lab_path in pair_by_name(images, labels):
            name = f"{folder}/{img_path.stem}"
            entries.append((name, line, img_path, lab_path, assign[name]))
    if not entries:
        raise DataError(f"{root}: no labelled images found under data/preprocessed-data/{{gnf,ic100}}")
    return [
        Sample(
            read_image(img_path, channel=0),
            read_labels(lab_path),
            name=name,
            group=line,
            dataset=NAME,
            meta={"split": sp, "path": str(img_path)},
        )
        for name, line, img_path, lab_path, sp in select_files(entries, lambda e: e[4], split, max_per_split)
    ]
