"""Effective receptive field (ERF; Luo et al. 2016) of the U-Net.

The ERF of an output pixel is the gradient of that pixel's output with
respect to every input pixel: an image the size of the input, whose large
values mark the input pixels that move the output. Following Luo et al., we
backpropagate a one-hot gradient (1 at the chosen output pixel, 0 elsewhere)
and average the absolute input gradient over many input images.

For intermediate layers, the one-hot gradient is placed at the unit of that
layer's feature map nearest to the chosen position (summed over channels).

:func:`erf_radius` summarizes an ERF as the radius (pixels) of the disc around
the output position that holds a given fraction (default 95%) of the absolute
gradient mass.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .sizes import largest_nucleus_diameter  # noqa: F401 (notebook 7 imports it from here)


def _inputs(images: Sequence[np.ndarray], size: int, n: int, seed: int) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops of normalized images (float32, N x 1 x size x size)."""
    from .data.common import normalize_percentile

    rng = np.random.default_rng(seed)
    crops = []
    for k in range(n):
        img = images[k % len(images)]
        h, w = img.shape
        if h < size or w < size:
            img = np.pad(img, ((0, max(0, size - h)), (0, max(0, size - w))), mode="reflect")
            h, w = img.shape
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crops.append(normalize_percentile(img[y : y + size, x : x + size]))
    return torch.from_numpy(np.stack(crops)[:, None].astype(np.float32))


def layer_modules(model) -> dict[str, torch.nn.Module]:
    """The named layers whose ERF is reported: encoder stages, then the whole network (``output``)."""
    enc = model.encoder
    layers = {"stem (/2)": enc.bn1, "layer1 (/4)": enc.layer1, "layer2 (/8)": enc.layer2, "layer3 (/16)": enc.layer3}
    if enc.layer4 is not None:
        layers["layer4 (/32)"] = enc.layer4
    return layers


def effective_receptive_field(
    model,
    images: Sequence[np.ndarray],
    position: tuple[int, int] | None = None,
    size: int = 128,
    n_images: int = 16,
    layer: str = "output",
    seed: int = 0,
    batch_size: int = 4,
) -> np.ndarray:
    """Mean absolute input gradient (size x size) for the output pixel at ``position`` (row, col; default centre).

    ``layer`` is ``'output'`` (the network's first output channel, the logit) or a
    name from :func:`layer_modules`. The model runs in eval mode (batch norm uses
    its running statistics), so the ERF does not depend on the batch.

    Parameters
    ----------
    model : torch.nn.Module
        The U-Net (:func:`~nucseg_lib.model.build_model`).
    images : sequence of float arrays (H, W)
        Images to crop ``size`` x ``size`` windows from (normalized as the model was trained).
    position : (int, int), optional
        Output pixel (row, col) in the window; default its centre.
    size : int
        Window side, in pixels.
    n_images : int
        Windows averaged (drawn from ``images`` with ``seed``).
    layer : str
        ``'output'`` or a layer name.
    seed, batch_size : int
        Window draw seed; windows per backward pass.

    Returns
    -------
    float array (size, size)
        The ERF map: the mean absolute gradient over the windows (not normalized).
    """
    position = position or (size // 2, size // 2)
    x_all = _inputs(images, size, n_images, seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros(size, size)
    captured = {}
    hook = None
    if layer != "output":
        mod = layer_modules(model)[layer]
        hook = mod.register_forward_hook(lambda m, i, o: captured.__setitem__("f", o))
    try:
        for b in range(0, n_images, batch_size):
            x = x_all[b : b + batch_size].to(device).requires_grad_(True)
            out = model(x)
            if layer == "output":
                target = out[:, 0, position[0], position[1]]
            else:
                f = captured["f"]
                fy = min(f.shape[-2] - 1, position[0] * f.shape[-2] // size)
                fx = min(f.shape[-1] - 1, position[1] * f.shape[-1] // size)
                target = f[:, :, fy, fx].sum(dim=1)
            (grad,) = torch.autograd.grad(target.sum(), x)
            total += grad.abs().sum(dim=0)[0].cpu()
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
    return (total / n_images).numpy()


def erf_radius(erf: np.ndarray, position: tuple[int, int] | None = None, mass: float = 0.95) -> float:
    """Radius of the disc centred at ``position`` that holds ``mass`` of the ERF's total absolute value.

    Parameters
    ----------
    erf : float array (H, W)
        An ERF map (:func:`effective_receptive_field`).
    position : (int, int), optional
        Centre (row, col); default the map's centre.
    mass : float
        Fraction of the total (0.95: the radius holding 95% of the gradient mass).

    Returns
    -------
    float
        Radius in pixels of the model's input.
    """
    erf = np.abs(np.asarray(erf, dtype=np.float64))
    h, w = erf.shape
    position = position or (h // 2, w // 2)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - position[0], xx - position[1]).ravel()
    order = np.argsort(r)
    cum = np.cumsum(erf.ravel()[order])
    if cum[-1] == 0:
        return 0.0
    return float(r[order][np.searchsorted(cum, mass * cum[-1])])
