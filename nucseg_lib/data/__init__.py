"""Datasets: one module per dataset, all returning lists of :class:`~nucseg_lib.data.common.Sample`.

- :mod:`~nucseg_lib.data.synthetic`: generated nuclei with exact labels (offline default);
- :mod:`~nucseg_lib.data.coelho`: Coelho et al. 2009, U2OS and NIH3T3 (real, hand-labelled);
- :mod:`~nucseg_lib.data.kromp`: Kromp et al. 2020, the paper's dataset (download needed);
- :mod:`~nucseg_lib.data.folder`: your own ``images/`` and ``labels/`` paired by file name.

:func:`load_dataset` is the single entry point the notebooks use.
"""

from __future__ import annotations

from . import coelho, folder, kromp, synthetic
from .common import DataError, Sample, normalize_percentile, read_image, read_labels, rescale_sample, select_files

DATASETS = ("synthetic", "coelho2009", "kromp2020", "folder")


def load_dataset(
    name: str, split: str = "all", root=None, scale: float = 1.0, max_per_split: dict | None = None, **kwargs
) -> list[Sample]:
    """Load dataset ``name`` (one of :data:`DATASETS`), optionally downscaled by ``scale``.

    Parameters
    ----------
    name : str
        ``synthetic``, ``coelho2009``, ``kromp2020`` or ``folder``.
    split : str
        ``train``, ``test`` or ``all`` (each sample's ``meta['split']`` says which).
    root : path, optional
        The dataset's folder (real data; default ``$NUCSEG_DATA/<name>``).
    scale : float
        Downscaling factor (images by area averaging, labels by nearest neighbour).
    max_per_split : dict, optional
        At most this many images per split, the first in the dataset's order (``{"train": 6, "test": 3}``);
        real datasets read no other file (:func:`~nucseg_lib.data.common.select_files`).
    **kwargs
        To the dataset's ``load`` (e.g. ``n_train``/``size`` for synthetic, ``scheme`` for Kromp).

    Returns
    -------
    list of Sample
    """
    if name == "synthetic":
        samples = select_files(synthetic.load(split=split, **kwargs), lambda s: s.meta["split"], "all", max_per_split)
    elif name == coelho.NAME:
        samples = coelho.load(root=root, split=split, max_per_split=max_per_split, **kwargs)
    elif name == kromp.NAME:
        samples = kromp.load(root=root, split=split, max_per_split=max_per_split, **kwargs)
    elif name == folder.NAME:
        samples = folder.load(root=root, split=split, max_per_split=max_per_split, **kwargs)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
    return [rescale_sample(s, scale) for s in samples]


__all__ = [
    "DATASETS",
    "DataError",
    "Sample",
    "load_dataset",
    "normalize_percentile",
    "read_image",
    "read_labels",
    "rescale_sample",
    "coelho",
    "folder",
    "kromp",
    "synthetic",
]
