"""Segment your own images with an exported model: the right scale, instances, and labels at the input's size.

An **exported model folder** carries everything needed to apply a model to new images
(:func:`export_model` writes it; ``nucseg predict -m FOLDER`` reads it):

- ``nucseg-model.json``: the method (``unet_boundary``: 3-class U-Net + watershed,
  ``unet_dice_cc``: Dice U-Net + connected components, ``stardist``), the post-processing
  parameters chosen on validation images, the normalization percentiles, and the scale the
  model was trained at: the median nucleus diameter in the model's pixels
  (``nucleus_diameter_px``, equivalent diameter sqrt(4 area / pi)) and, when known, the
  pixel size in micrometres (``pixel_size_um``, at the model's scale);
- the network: ``config.json`` + ``weights.pt`` (U-Net; float16 weights, to keep the folder
  small) or ``stardist/`` (StarDist's own folder);
- ``README.md``: the model card (what it was trained on, budget, test scores, intended use).

Scale: a model finds nuclei of about the size it was trained on. :class:`Segmenter` rescales
each input so that its nuclei have that size: by the input's pixel size (``pixel_size``,
when the model records one), by its nucleus diameter in input pixels (``nucleus_diameter``),
or, given neither, by a diameter it estimates from a first pass. It then predicts, builds
instances and returns labels at the input's own size (nearest neighbour).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..methods import METHODS, get_method
from ..sizes import equivalent_diameters, median_diameter  # noqa: F401 (part of this module's API)
from ..train.unet import AUGMENT_SCALE

MODEL_FILE = "nucseg-model.json"
MIN_NUCLEI_FOR_ESTIMATE = 3


class ModelError(ValueError):
    """An exported model folder is missing, incomplete or unreadable; names the folder and the file."""


def export_model(
    out,
    method: str,
    postprocess: dict,
    train_labels,
    scale: float = 1.0,
    source=None,
    stardist_model=None,
    pixel_size_um: float | None = None,
    card: str = "",
    extra: dict | None = None,
    weights=None,
) -> Path:
    """Write an exported model folder ``out`` (see the module docstring); returns it.

    ``out`` must be new, empty or an earlier exported model (it holds ``nucseg-model.json``): any other
    folder is a :class:`ModelError` and is left as it was.

    ``source``: a trained U-Net folder (:mod:`nucseg_lib.train.unet`); ``stardist_model``: a
    trained StarDist model (``method='stardist'``). ``train_labels``: the training label
    images at the model's scale (their median nucleus diameter is recorded); ``scale``: the
    factor by which the training images were downscaled (the first guess for new images).
    ``pixel_size_um``: micrometres per pixel at the model's scale, if known. ``weights``: other
    weights of ``source``'s model than its ``weights.pt`` (a learning-curve snapshot).

    Parameters
    ----------
    out : path
        The exported model folder to write.
    method : str
        A method of :data:`~nucseg_lib.methods.METHODS`.
    postprocess : dict
        Post-processing parameters chosen on validation images (:meth:`Method.tune`).
    train_labels : list of int arrays
        Training labels at the model's scale.
    scale : float
        Downscaling factor of the training images.
    source : path, optional
        Trained U-Net folder (U-Net methods).
    stardist_model : StarDist2D, optional
        Trained StarDist (``method='stardist'``).
    pixel_size_um : float, optional
        Micrometres per pixel at the model's scale.
    card : str
        The model card (``README.md``); default a one-line stub.
    extra : dict, optional
        More fields for ``nucseg-model.json`` (test scores, provenance).
    weights : path, optional
        Weights other than ``source``'s ``weights.pt``.

    Returns
    -------
    Path
        ``out``.
    """
    import torch

    from ..pipeline.folders import FolderError, check_replaceable, replace_folder

    get_method(method)  # ValueError naming the known methods
    out = Path(out)
    try:
        check_replaceable(out, MODEL_FILE, "export_model: out")
    except FolderError as exc:
        raise ModelError(str(exc)) from None
    stage = out.with_name(f".{out.name}.exporting")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    if method == "stardist":
        src = Path(stardist_model.basedir) / stardist_model.name
        (stage / "stardist").mkdir()
        for f in ("config.json", "weights_best.h5", "thresholds.json"):
            shutil.copy(src / f, stage / "stardist" / f)
    else:
        source = Path(source)
        shutil.copy(source / "config.json", stage / "config.json")
        state = torch.load(Path(weights or source / "weights.pt"), map_location="cpu", weights_only=True)
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, stage / "weights.pt")
    settings = {
        "method": method,
        "postprocess": postprocess,
        "normalization": {"pmin": 1.0, "pmax": 99.8},
        "nucleus_diameter_px": median_diameter(train_labels),
        "pixel_size_um": pixel_size_um,
        "scale": float(scale),
        **(extra or {}),
    }
    (stage / MODEL_FILE).write_text(json.dumps(settings, indent=2))
    (stage / "README.md").write_text(card or f"# {method}\n\nExported by nucseg_lib.predict.segmenter.export_model.\n")
    try:  # an earlier export (it holds nucseg-model.json) is replaced; a folder of the user's is refused
        return replace_folder(stage, out, MODEL_FILE, "export_model: out")
    except FolderError as exc:
        raise ModelError(str(exc)) from None


def model_card(
    title: str,
    settings: dict,
    trained_on: str,
    budget: str,
    hardware: str,
    scores,
    failures: str = "",
    use: str = "",
    scored_at: str = "the images' native resolution",
) -> str:
    """The README of an exported model: what, trained on what and how long, test scores with CIs, use, limits.

    ``scores``: rows with ``metric, value, ci_low, ci_high, n_images`` (e.g. from
    :func:`~nucseg_lib.metrics.instance_summary`).
    """
    rows = "\n".join(
        f"| {r.metric} | {r.value:.3f} | {r.ci_low:.3f}-{r.ci_high:.3f} | {int(r.n_images)} |"
        for r in scores.itertuples()
    )
    pix = f"{settings['pixel_size_um']:g} um/px" if settings.get("pixel_size_um") else "not recorded"
    return f"""# {title}

**Method:** `{settings["method"]}`; post-processing (chosen on validation images):
`{json.dumps(settings.get("postprocess"))}`.

**Trained on:** {trained_on}

**Scale:** trained at 1/{settings.get("scale", 1):g} of the images' native size; median nucleus
diameter {settings["nucleus_diameter_px"]:.1f} px at that scale (equivalent diameter); pixel size {pix}.
`nucseg predict` rescales new images to this scale (`--pixel-size`, `--nucleus-diameter`, or an estimate).

**Training budget:** {budget}. **Hardware:** {hardware}.

**Test scores** (pooled over the held-out test images, at {scored_at}; 95% bootstrap CI):

| metric | value | 95% CI | images |
|---|---|---|---|
{rows}

**Intended use:** {use or "2D fluorescence images of stained nuclei (DAPI/Hoechst), one channel, nuclei of a few to a few tens of micrometres. Research use; check a sample of the outlines (the overlay PNGs) before relying on counts."}

**Known failure modes:** {failures or "see the study's notebook 8 (hardest test images)."}

Weights are stored in float16 (to keep the repository small); they are loaded into a float32 model.
"""


def read_settings(folder) -> dict:
    """The ``nucseg-model.json`` of an exported model folder; ModelError naming what is wrong."""
    folder = Path(folder)
    path = folder / MODEL_FILE
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    if not path.is_file():
        raise ModelError(
            f"{folder}: not an exported model (no {MODEL_FILE}); export one with "
            f"nucseg_lib.predict.segmenter.export_model (notebook 08 exports its models to <run>/export/)"
        )
    try:
        settings = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if settings.get("method") not in METHODS:
        raise ModelError(f"{path}: method must be one of {', '.join(METHODS)}, got {settings.get('method')!r}")
    d = settings.get("nucleus_diameter_px")
    if not (isinstance(d, (int, float)) and d > 0):
        raise ModelError(f"{path}: nucleus_diameter_px must be a positive number, got {d!r}")
    return settings


def exported_models(folder) -> dict[str, Path]:
    """``{method: model folder}`` that ``folder`` offers: itself when it is an exported model folder, else its
    subfolders that are (a run's ``export/``, the repository's ``models/``), in name order; ModelError when a
    folder's ``nucseg-model.json`` is broken or two subfolders hold the same method."""
    folder = Path(folder)
    if (folder / MODEL_FILE).is_file():
        return {read_settings(folder)["method"]: folder}
    offered: dict[str, Path] = {}
    for sub in sorted(folder.iterdir()) if folder.is_dir() else ():
        if (sub / MODEL_FILE).is_file():
            method = read_settings(sub)["method"]
            if method in offered:
                raise ModelError(
                    f"{folder}: {offered[method].name} and {sub.name} are both {method} models; "
                    f"name one with -m {folder}/<its folder>"
                )
            offered[method] = sub
    return offered


def normalization_of(settings: dict, path) -> dict:
    """The percentile normalization an exported model was trained with (``{"pmin", "pmax"}``, percent);
    the study's 1 and 99.8 for models that record none; ModelError naming ``path`` when malformed."""
    norm = settings.get("normalization") or {"pmin": 1.0, "pmax": 99.8}
    try:
        pmin, pmax = float(norm["pmin"]), float(norm["pmax"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{path}: normalization must hold numbers pmin and pmax, got {norm!r}") from None
    if not 0 <= pmin < pmax <= 100:
        raise ModelError(f"{path}: normalization needs 0 <= pmin < pmax <= 100 (percentiles), got {norm!r}")
    return {"pmin": pmin, "pmax": pmax}


class Segmenter:
    """An exported model, ready to segment images of any size and scale (see the module docstring)."""

    def __init__(self, folder, device=None):
        self.folder = Path(folder)
        self.settings = read_settings(self.folder)
        self.method = self.settings["method"]
        self.diameter = float(self.settings["nucleus_diameter_px"])
        self.pixel_size = self.settings.get("pixel_size_um")
        self.post = dict(self.settings.get("postprocess") or {})
        self.normalization = normalization_of(self.settings, self.folder / MODEL_FILE)
        self.precision = "fp32"
        if not get_method(self.method).is_unet:
            from ..train.stardist import load_stardist

            self.model = load_stardist(self.folder / "stardist")
        else:
            from ..machine import resolve_precision
            from ..train.model_folder import ModelFolderError, model_with_weights

            try:
                self.model, _ = model_with_weights(self.folder, self.folder / "weights.pt", device)
            except (ModelFolderError, FileNotFoundError) as exc:
                raise ModelError(str(exc)) from exc
            # this machine's precision, not the one the model trained at (config.json): bf16 on a CPU without
            # native bf16 is emulated, several times slower, and its probabilities differ from fp32's
            self.precision = resolve_precision("auto", next(self.model.parameters()).device)
            self.model.float()
            self.model.precision = self.precision

    # ------------------------------------------------------------------ scale
    def factor(self, pixel_size: float | None = None, nucleus_diameter: float | None = None) -> float | None:
        """Downscaling factor that brings an input to the model's scale (None: to be estimated)."""
        if nucleus_diameter is not None:
            if not nucleus_diameter > 0:
                raise ValueError(f"nucleus diameter must be > 0 pixels, got {nucleus_diameter}")
            return float(nucleus_diameter) / self.diameter
        if pixel_size is not None:
            if not pixel_size > 0:
                raise ValueError(f"pixel size must be > 0 micrometres, got {pixel_size}")
            if not self.pixel_size:
                raise ValueError(
                    f"{self.folder}: this model records no pixel size; give the nuclei's diameter in "
                    f"pixels instead (--nucleus-diameter), or none to have it estimated"
                )
            return float(self.pixel_size) / float(pixel_size)
        return None

    # ------------------------------------------------------------------ prediction
    def _instances_at(self, image: np.ndarray, factor: float) -> np.ndarray:
        """Instances of ``image`` predicted at 1/``factor`` of its size, returned at its own size."""
        from skimage.transform import resize

        from ..data.common import resize_labels
        from ..inference import MIN_SIDE

        h, w = image.shape
        shape = (max(1, round(h / factor)), max(1, round(w / factor)))
        if min(shape) < MIN_SIDE:
            raise ValueError(
                f"image {image.shape} at the model's scale (1/{factor:.3g}) would be {shape}, smaller "
                f"than {MIN_SIDE} pixels: are the nuclei really {factor * self.diameter:.0f} pixels "
                f"wide? Check --pixel-size / --nucleus-diameter"
            )
        small = (
            image
            if shape == image.shape
            else resize(image.astype(np.float32), shape, order=1, anti_aliasing=factor > 1, preserve_range=True)
        )
        return resize_labels(self._instances(small.astype(np.float32)), image.shape)

    def _instances(self, image: np.ndarray) -> np.ndarray:
        from ..data.common import normalize_percentile
        from ..inference import predict_probabilities

        x = normalize_percentile(image, self.normalization["pmin"], self.normalization["pmax"])
        method = get_method(self.method)
        if not method.is_unet:
            from ..train.stardist import predict_stardist

            return predict_stardist(self.model, x, normalize=False)
        return method.instances(predict_probabilities(self.model, x, normalize=False), self.post)

    def segment(
        self, image: np.ndarray, pixel_size: float | None = None, nucleus_diameter: float | None = None
    ) -> tuple[np.ndarray, dict]:
        """Instance labels (int32, the input's shape) and what was done (``factor``, ``diameter_px``, ``how``).

        Without ``pixel_size`` or ``nucleus_diameter`` the nucleus diameter is estimated: a first
        pass at the model's own training scale (or, if it finds fewer than 3 nuclei, at the
        factor among 1, 2, 4, 8 that finds the most) gives the median nucleus diameter in input
        pixels; when that is within the zoom range of training (0.75-1.33 times the training
        diameter) the first pass stands, otherwise a second pass runs at the factor it implies.

        Parameters
        ----------
        image : array (H, W)
            One channel, raw intensities; any size.
        pixel_size : float, optional
            Micrometres per pixel of ``image`` (models that record their pixel size).
        nucleus_diameter : float, optional
            Typical nucleus diameter in pixels of ``image``.

        Returns
        -------
        (int32 array (H, W), dict)
            Instance labels and ``factor``, ``diameter_px``, ``how``.
        """
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D image, got shape {image.shape} (select a channel with --channel)")
        if not np.isfinite(image).all():
            raise ValueError("image has NaN or infinite values")
        f = self.factor(pixel_size, nucleus_diameter)
        if f is not None:
            how = "pixel size" if nucleus_diameter is None else "nucleus diameter"
            return self._instances_at(image, f), {"factor": f, "diameter_px": f * self.diameter, "how": how}
        first = float(self.settings.get("scale", 1.0))
        tried = {}
        for cand in [first] + [c for c in (1.0, 2.0, 4.0, 8.0) if c != first]:
            try:
                tried[cand] = self._instances_at(image, cand)
            except ValueError:
                continue
            if tried[cand].max() >= MIN_NUCLEI_FOR_ESTIMATE:
                break
        if not tried:
            raise ValueError(f"image {image.shape} is too small for this model at any scale")
        best = max(tried, key=lambda c: tried[c].max())
        d = median_diameter([tried[best]])
        if not np.isfinite(d):
            return tried[best], {"factor": best, "diameter_px": float("nan"), "how": "estimate failed: no nuclei"}
        f = d / self.diameter
        # training zoomed patches by AUGMENT_SCALE: nuclei within that range of the training size need no
        # rescaling, and a model trained on a mix of cell lines would otherwise rescale each one to the mix's median
        lo, hi = AUGMENT_SCALE
        if lo <= f / best <= hi:
            return tried[best], {"factor": best, "diameter_px": d, "how": "estimated, within the trained range"}
        labels = self._instances_at(image, f)
        return labels, {"factor": f, "diameter_px": median_diameter([labels]), "how": "estimated"}


def nucleus_table(labels: np.ndarray, image: np.ndarray, pixel_size: float | None = None):
    """One row per nucleus: label, area (pixels and, with ``pixel_size``, square micrometres), centroid
    (y, x in pixels), mean intensity, eccentricity, solidity (``skimage.measure.regionprops_table``)."""
    import pandas as pd
    from skimage.measure import regionprops_table

    props = ("label", "area", "centroid", "intensity_mean", "eccentricity", "solidity")
    t = pd.DataFrame(regionprops_table(labels, intensity_image=np.asarray(image, dtype=np.float32), properties=props))
    t = t.rename(
        columns={
            "area": "area_px",
            "centroid-0": "centroid_y",
            "centroid-1": "centroid_x",
            "intensity_mean": "mean_intensity",
        }
    )
    if pixel_size:
        t.insert(2, "area_um2", t.area_px * float(pixel_size) ** 2)
    return t


def outline_overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB uint8: the image (percentile-normalized, grey) with nucleus outlines in yellow."""
    from skimage.segmentation import find_boundaries

    from ..data.common import normalize_percentile

    grey = (np.clip(normalize_percentile(image), 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[find_boundaries(labels, mode="inner")] = (255, 220, 0)
    return rgb
