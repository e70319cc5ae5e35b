"""The instance-segmentation methods the study compares, in one place: what each trains and how it makes instances.

A method is a trained network plus the post-processing that turns its output into one label
per nucleus, tuned on validation images:

- ``unet_boundary``: a U-Net with 3 classes (background, interior, boundary; loss
  ``boundary_ce:3``, the boundary class weighed 3x), then a watershed of the interior seeds
  (:func:`~nucseg_lib.instances.watershed_boundary`; tuned: seed threshold, h);
- ``unet_dice_cc``: a U-Net with the Dice loss, then 4-connected components of its foreground
  (:func:`~nucseg_lib.instances.connected_components`; tuned: threshold, minimum size);
- ``stardist``: StarDist 2D, whose own non-maximum suppression makes instances (tuned: its
  probability and NMS thresholds, by StarDist's ``optimize_thresholds``).

Notebook 08, the learning curves (:mod:`~nucseg_lib.study.curves`), ``nucseg predict``
(:mod:`~nucseg_lib.predict.segmenter`) and the shared models of the workflow (:mod:`~nucseg_lib.pipeline.jobs`)
all read this table; adding a method is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Method:
    """One method: its name, the loss of its U-Net (``None``: StarDist), and its post-processing."""

    name: str
    loss: str | None
    description: str

    @property
    def is_unet(self) -> bool:
        return self.loss is not None

    def instances(self, probs: np.ndarray, params: dict) -> np.ndarray:
        """Instance labels (int32) from a U-Net's probability maps (C, H, W) with post-processing ``params``."""
        from .inference import foreground_probability
        from .instances import connected_components, watershed_boundary

        if self.name == "unet_boundary":
            return watershed_boundary(probs, **params)
        if self.name == "unet_dice_cc":
            return connected_components(foreground_probability(probs), **params)
        raise ValueError(f"{self.name}: makes its instances itself (StarDist), not from U-Net probabilities")

    def tune(self, val_probs: list, val_truths: list) -> tuple[dict, "object"]:
        """``(parameters, table)``: the post-processing parameters with the best pooled F1 at IoU 0.5 on the
        validation images (never the test images), and the table of every candidate, best first."""
        from .inference import foreground_probability
        from .instances import tune_components, tune_watershed

        if self.name == "unet_boundary":
            return tune_watershed(val_probs, val_truths)
        if self.name == "unet_dice_cc":
            return tune_components([foreground_probability(p) for p in val_probs], val_truths)
        raise ValueError(f"{self.name}: StarDist tunes its thresholds itself (optimize_thresholds)")


METHODS = {
    m.name: m
    for m in (
        Method("unet_boundary", "boundary_ce:3", "3-class U-Net (boundary weight 3) + watershed"),
        Method("unet_dice_cc", "dice", "Dice-loss U-Net + connected components"),
        Method("stardist", None, "StarDist 2D (star-convex polygons + NMS)"),
    )
}


def get_method(name: str) -> Method:
    """The method ``name``; ValueError listing the known ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def combo_loss(k: float, weight: float = 1.0) -> str:
    """The loss specification of the Dice + top-K U-Net (notebooks 04 and 05, the shared ``unet_combo``):
    ``dice+topk:K``, or ``dice+W*topk:K`` when the top-K term has a weight other than 1."""
    return f"dice+{weight:g}*topk:{k:g}" if weight != 1 else f"dice+topk:{k:g}"


# the U-Nets that several notebooks share (trained once per run by the workflow's model jobs); StarDist: None
SHARED_MODELS: dict[str, Callable[[dict], str | None]] = {
    "unet_dice": lambda params: METHODS["unet_dice_cc"].loss,
    "unet_combo": lambda params: combo_loss(float(params.get("combo_k", 0.1))),
    "stardist": lambda params: None,
}
