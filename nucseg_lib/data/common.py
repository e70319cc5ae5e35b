"""The sample record every dataset returns, reading with clear errors, and normalization.

Every loader in :mod:`nucseg_lib.data` returns a list of :class:`Sample`:

- ``image``: float32, shape (H, W), one channel, raw intensities (not normalized);
- ``labels``: int32, shape (H, W), 0 = background, 1..n = nuclei;
- ``name``: a stable identifier (file stem, or ``synthetic-<condition>-<i>``);
- ``group``: the pathological condition / cell line / synthetic condition.

Errors in input files raise :class:`DataError`, whose message names the file
and the problem, so a user with a broken download knows what to fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

DATA_ENV = "NUCSEG_DATA"


class DataError(ValueError):
    """An input file or array is unusable; the message names the file and the problem."""


@dataclass
class Sample:
    """One image with its instance labels (see the module docstring for units and dtypes)."""

    image: np.ndarray
    labels: np.ndarray
    name: str
    group: str
    dataset: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        validate_pair(self.image, self.labels, self.name)
        self.image = np.asarray(self.image, dtype=np.float32)
        self.labels = as_labels(self.labels, self.name)

    @property
    def n_nuclei(self) -> int:
        return int(len(np.unique(self.labels)) - (1 if (self.labels == 0).any() else 0))


def data_root(default_subdir: str, root: str | os.PathLike | None = None) -> Path:
    """Folder of a dataset: ``root`` if given, else ``$NUCSEG_DATA/<default_subdir>``, else ``./data/<default_subdir>``."""
    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get(DATA_ENV)
    return (Path(base) if base else Path("data")) / default_subdir


def validate_pair(image: np.ndarray, labels: np.ndarray, name: str) -> None:
    """Raise :class:`DataError` naming ``name`` if image and labels cannot be a training pair."""
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 2:
        raise DataError(f"{name}: image must be 2D (H, W) with one channel, got shape {image.shape}")
    if labels.ndim != 2:
        raise DataError(f"{name}: label image must be 2D (H, W), got shape {labels.shape}")
    if image.shape != labels.shape:
        raise DataError(f"{name}: image shape {image.shape} and label shape {labels.shape} differ")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise DataError(f"{name}: image dtype {image.dtype} is not numeric")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DataError(f"{name}: label image must be integer, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DataError(f"{name}: label image has negative values")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise DataError(f"{name}: image contains NaN or infinite values")
    if image.size and image.min() == image.max():
        raise DataError(f"{name}: image is constant (value {image.flat[0]}); nothing to segment")


STACK_AXES = {"Z": "z-slices", "T": "time points", "I": "pages", "Q": "pages"}


def _read_array(path: Path) -> np.ndarray:
    """Pixels of a TIFF or PNG as (H, W) or (H, W, C), channels last; DataError for stacks and unreadable files.

    TIFF axes come from the file's metadata (tifffile): a z-stack, a time series or a
    stack of pages of unknown meaning is refused rather than read as its first plane.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                series = tf.series[0]
                arr, axes = np.asarray(series.asarray()), series.axes
        else:
            import imageio.v3 as iio

            arr, axes = np.asarray(iio.imread(path)), None
    except Exception as exc:  # tifffile/imageio raise many types for corrupt files
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if axes is not None and len(axes) == arr.ndim:
        keep = [i for i, n in enumerate(arr.shape) if n > 1]
        axes = "".join(axes[i] for i in keep)
        arr = arr.reshape([arr.shape[i] for i in keep])
        for ax, what in STACK_AXES.items():
            if ax in axes:
                raise DataError(
                    f"{path}: a stack of {arr.shape[axes.index(ax)]} {what} (axes {axes}, shape "
                    f"{arr.shape}); nucseg reads single 2D images: save one plane (or a projection) "
                    f"per file"
                )
        for ax in "CS":  # channels (C) or samples per pixel (S, e.g. RGB): put them last
            if ax in axes:
                arr = np.moveaxis(arr, axes.index(ax), -1)
                break
    else:
        arr = np.squeeze(arr)
        if arr.ndim == 3 and arr.shape[-1] > 4 and arr.shape[0] <= 4:
            arr = np.moveaxis(arr, 0, -1)  # channels first (C, H, W)
    if arr.ndim == 3 and arr.shape[-1] > 4:
        raise DataError(f"{path}: cannot tell the channel axis of an image of shape {arr.shape}")
    if arr.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2D image, got shape {arr.shape}")
    return arr


def read_image(path: str | os.PathLike, channel: int | None = 0) -> np.ndarray:
    """Read a TIFF or PNG as a 2D array; a multi-channel image gives ``channel`` (default 0).

    Raises :class:`DataError` naming the file when it is missing, unreadable or truncated,
    when it is a z-stack or time series, and when the requested channel is constant while
    another channel holds signal (the nuclear stain is elsewhere: the message names it).
    """
    path = Path(path)
    arr = _read_array(path)
    if arr.ndim == 3:
        c = channel or 0
        if c >= arr.shape[-1]:
            raise DataError(f"{path}: has {arr.shape[-1]} channels, channel {c} was asked for")
        plane = arr[..., c]
        if plane.min() == plane.max():
            signal = [i for i in range(arr.shape[-1]) if arr[..., i].min() != arr[..., i].max()]
            if signal:
                raise DataError(
                    f"{path}: channel {c} is constant (no signal) but channel {signal[0]} is not; "
                    f"the nuclear stain is probably in channel {signal[0]}: pass channel={signal[0]}"
                )
        arr = plane
    return arr


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an instance label image (integer, 0 = background) as int32, with clear errors.

    A label image with several channels is read as colour-coded labels unless all channels are
    equal (a constant alpha channel is ignored): see :func:`colour_labels`.
    """
    path = Path(path)
    arr = _read_array(path)
    if arr.ndim == 3:
        if arr.shape[-1] == 4 and arr[..., 3].min() == arr[..., 3].max():
            arr = arr[..., :3]
        if all(np.array_equal(arr[..., 0], arr[..., i]) for i in range(1, arr.shape[-1])):
            arr = arr[..., 0]
        else:
            arr = colour_labels(arr)
    return as_labels(arr, str(path))


def colour_labels(rgb: np.ndarray) -> np.ndarray:
    """Instance labels (int32, 0 = background) from a colour-coded label image (H, W, C).

    Background is black where the image has black pixels, else its most frequent colour (a
    white background). Every other colour is a nucleus colour, and each 8-connected region of
    one colour is a nucleus of its own: tools that colour labels with a small palette reuse a
    colour for nuclei that do not touch, and those must not merge into one instance.
    """
    from scipy import ndimage as ndi

    colours, ids, counts = np.unique(rgb.reshape(-1, rgb.shape[-1]), axis=0, return_inverse=True, return_counts=True)
    ids = ids.reshape(rgb.shape[:2])
    black = np.flatnonzero(~colours.any(axis=1))
    background = int(black[0]) if len(black) else int(np.argmax(counts))
    out = np.zeros(rgb.shape[:2], np.int32)
    n = 0
    for c in range(len(colours)):
        if c == background:
            continue
        regions, k = ndi.label(ids == c, structure=np.ones((3, 3), bool))
        out[regions > 0] = regions[regions > 0] + n
        n += k
    return out


def as_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """An instance label array as int32 (0 = background), or :class:`DataError` naming ``name``.

    Floats with whole values are accepted; negative values and other floats are refused.
    Ids of 2**31 and more do not fit int32: such images are relabelled 1..n (each nucleus
    keeps its own id, in order) instead of wrapping around.
    """
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.int32)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise DataError(f"{name}: label image must be integer, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise DataError(f"{name}: label image has negative values")
    if arr.size and int(arr.max()) > np.iinfo(np.int32).max:
        from skimage.segmentation import relabel_sequential

        arr = relabel_sequential(arr.astype(np.uint64))[0]
    return arr.astype(np.int32)


def files_with_suffix(folder: Path, suffixes) -> list[Path]:
    """Files in ``folder`` whose suffix is one of ``suffixes``, in any case (``.PNG`` as ``.png``); sorted."""
    suffixes = {s.lower() for s in suffixes}
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def pair_by_name(image_files: Iterable[Path], label_files: Iterable[Path], strict: bool = True):
    """Pair images and labels with the same file stem; sorted by name.

    With ``strict``, an image without a label (or the reverse) raises :class:`DataError` naming it.
    """
    imgs, labs = _by_stem(image_files), _by_stem(label_files)
    if strict:
        missing = sorted(set(imgs) ^ set(labs))
        if missing:
            which = [str(imgs.get(m) or labs.get(m)) for m in missing[:5]]
            raise DataError(f"missing image/label pair for: {', '.join(which)}")
    return [(imgs[k], labs[k]) for k in sorted(set(imgs) & set(labs), key=natural_key)]


def _by_stem(files: Iterable[Path]) -> dict[str, Path]:
    """``{stem: file}``; two files with one stem (``img01.tif`` and ``img01.png``) are a DataError naming both,
    since one of them would be dropped without a word."""
    out: dict[str, Path] = {}
    for f in map(Path, files):
        if f.stem in out and out[f.stem] != f:
            raise DataError(f"{out[f.stem]} and {f} have the same name {f.stem!r}; keep one of them (or rename one)")
        out[f.stem] = f
    return out


def natural_key(s: str):
    """Sort key that orders ``dna-2`` before ``dna-10``."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def normalize_percentile(image: np.ndarray, pmin: float = 1.0, pmax: float = 99.8, eps: float = 1e-20) -> np.ndarray:
    """Map the ``pmin`` and ``pmax`` percentiles to 0 and 1 (StarDist's convention); float32, not clipped."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [pmin, pmax])
    return ((image - lo) / max(hi - lo, eps)).astype(np.float32)


def rescale_sample(sample: Sample, scale: float) -> Sample:
    """Downscale a sample by ``scale`` (e.g. 2 halves each side): image by area averaging, labels by nearest."""
    if scale == 1:
        return sample
    from skimage.transform import resize

    h, w = sample.image.shape
    shape = (max(1, round(h / scale)), max(1, round(w / scale)))
    img = resize(sample.image, shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
    return replace(sample, image=img, labels=resize_labels(sample.labels, shape), meta={**sample.meta, "scale": scale})


def resize_labels(labels: np.ndarray, shape) -> np.ndarray:
    """Label image resized to ``shape`` by nearest neighbour (ids are kept, never blended); int32.

    Used both ways: to downscale ground truth with its image, and to bring labels predicted
    on a downscaled image back to the image's native size for evaluation.
    """
    from skimage.transform import resize

    labels = np.asarray(labels)
    if tuple(labels.shape) == tuple(shape):
        return labels.astype(np.int32, copy=False)
    return resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)


def split_by_name(names: Sequence[str], test_fraction: float, salt: str) -> dict[str, str]:
    """Assign each name to ``train`` or ``test`` from a hash of (salt, name) alone.

    A name goes to test when the first 8 bytes of SHA-256(``salt:name``), read as a
    fraction of 2**64, fall below ``test_fraction``. The assignment of a file
    therefore depends on nothing but its own name: adding or removing other files
    never reshuffles the split. Applied within each group (cell line), every group
    gets about ``test_fraction`` of its files in test.
    """
    import hashlib

    out: dict[str, str] = {}
    for n in names:
        h = int.from_bytes(hashlib.sha256(f"{salt}:{n}".encode()).digest()[:8], "big") / 2**64
        out[n] = "test" if h < test_fraction else "train"
    return out


def cross_validation_folds(samples: Sequence[Sample], n_folds: int) -> dict[str, int]:
    """The fold (0 .. ``n_folds`` - 1) of each sample's name, stratified by group (cell line).

    Groups in name order, names in order within each group, are dealt out like cards: the i-th
    gets fold ``i % n_folds``. Every fold gets every group in about its share, fold sizes differ by
    at most one image, and the assignment depends on the names alone (no random draw), so it is
    the same on every machine and for every method.
    """
    if not (isinstance(n_folds, int) and 2 <= n_folds <= len(samples)):
        raise ValueError(f"n_folds must be a whole number from 2 to the {len(samples)} images, got {n_folds!r}")
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        raise ValueError("cross-validation needs unique image names")
    order = sorted(samples, key=lambda s: (str(s.group), s.name))
    return {s.name: i % n_folds for i, s in enumerate(order)}


def select_files(items: Iterable, split_of, split: str = "all", max_per_split: dict | None = None) -> list:
    """The items of ``split`` (``'all'``: every one), at most the first ``max_per_split[split]`` of each split.

    ``items`` are a loader's file pairs in its order and ``split_of(item)`` names an item's split. The
    loaders select before reading any pixels, so that loading the test split or a run capped at a few
    images per split (the smoke profile's ``max_images``) reads only those files: all of Coelho 2009 is
    174 PNGs, seconds per job on a 2-core CPU.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    kept, counts = [], {}
    for item in items:
        sp = split_of(item)
        if split != "all" and sp != split:
            continue
        if max_per_split and sp in max_per_split and counts.get(sp, 0) >= max_per_split[sp]:
            continue
        counts[sp] = counts.get(sp, 0) + 1
        kept.append(item)
    return kept
