"""Losses on logits: soft Dice, pixel BCE, top-K hard-pixel BCE, their weighted sums, and a 3-class loss.

All losses take ``logits`` of shape (N, C, H, W) and a ``target`` of shape
(N, H, W): a float {0, 1} foreground mask for the binary losses, or class
indices {0: background, 1: interior, 2: boundary} for :class:`BoundaryCELoss`.

Loss specifications are strings, so that notebooks and result tables name
them the same way: ``"dice"``, ``"bce"``, ``"topk:0.1"`` (K as a fraction of
the pixels of a patch) or ``"topk:6000"`` (K as a pixel count), sums such as
``"dice+topk:0.1"`` or ``"dice+0.5*topk:0.1"`` (λ = 0.5), and
``"boundary_ce"`` (3-class, boundary weight 3) or ``"boundary_ce:5"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - (2 Σ p·y + eps) / (Σ p + Σ y + eps), summed over the whole batch (the paper's Dice loss).

    A perfect prediction (``prob == target``) gives exactly 0.
    """
    p = prob.reshape(-1)
    y = target.reshape(-1).to(p.dtype)
    return 1 - (2 * (p * y).sum() + eps) / (p.sum() + y.sum() + eps)


class DiceLoss(nn.Module):
    def forward(self, logits, target):
        return soft_dice_loss(torch.sigmoid(logits[:, 0]), target)


class BCELoss(nn.Module):
    def forward(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype))


class TopKBCELoss(nn.Module):
    """Mean BCE of the K pixels with the highest BCE in each image (online hard-pixel mining).

    ``k`` is a pixel count (int > 1) or a fraction of an image's pixels (0 < k <= 1):
    the paper's K = 6000, 14000, 33000 are about 10%, 20% and 50% of a 256 x 256 patch.
    Gradients flow only from the selected pixels.
    """

    def __init__(self, k: float):
        super().__init__()
        if not (math.isfinite(k) and k > 0) or (k > 1 and k != int(k)):
            raise ValueError(f"k must be a fraction in (0, 1] or a whole number of pixels > 1, got {k}")
        self.k = k

    def n_pixels(self, n_per_image: int) -> int:
        """K in pixels for images of ``n_per_image`` pixels; a K larger than that is an error, not clipped."""
        if self.k <= 1:
            return max(1, round(self.k * n_per_image))
        if self.k > n_per_image:
            raise ValueError(
                f"top-K: K = {int(self.k)} pixels is more than the {n_per_image} pixels of a patch; "
                f"use a smaller K or a fraction such as topk:0.2"
            )
        return int(self.k)

    def forward(self, logits, target):
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype), reduction="none")
        flat = per_pixel.reshape(per_pixel.shape[0], -1)
        top, _ = flat.topk(self.n_pixels(flat.shape[1]), dim=1)
        return top.mean()


class BoundaryCELoss(nn.Module):
    """Cross-entropy over background / interior / boundary with extra weight on the boundary class."""

    def __init__(self, boundary_weight: float = 3.0):
        super().__init__()
        self.register_buffer("weight", torch.tensor([1.0, 1.0, float(boundary_weight)]))

    def forward(self, logits, target):
        return F.cross_entropy(logits, target.long(), weight=self.weight.to(logits.device))


class WeightedSum(nn.Module):
    """Σ λ_i · loss_i."""

    def __init__(self, terms: list[tuple[float, nn.Module]]):
        super().__init__()
        self.weights = [w for w, _ in terms]
        self.terms = nn.ModuleList(t for _, t in terms)

    def forward(self, logits, target):
        return sum(w * t(logits, target) for w, t in zip(self.weights, self.terms))


def _single(spec: str) -> nn.Module:
    name, colon, arg = spec.partition(":")
    if name in ("dice", "bce"):
        if colon:
            raise ValueError(f"loss {spec!r}: {name} takes no argument; write {name!r}")
        return DiceLoss() if name == "dice" else BCELoss()
    if name == "topk":
        k = _number(spec, arg, "K")
        if k > 1 and k != int(k):
            raise ValueError(
                f"loss {spec!r}: K must be a fraction in (0, 1] of a patch's pixels or a whole "
                f"number of pixels > 1, got {arg}"
            )
        return TopKBCELoss(k if k <= 1 else int(k))
    if name == "boundary_ce":
        return BoundaryCELoss(_number(spec, arg, "the boundary weight") if colon else 3.0)
    raise ValueError(f"unknown loss {spec!r}; use dice, bce, topk:K, boundary_ce[:w] or sums like dice+0.5*topk:0.1")


def _number(spec: str, text: str, what: str) -> float:
    """A positive finite number from a loss specification, or a ValueError naming the spec."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"loss {spec!r}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"loss {spec!r}: {what} must be a positive finite number, got {text}")
    return value


def make_loss(spec: str) -> nn.Module:
    """Build a loss from a specification string (see the module docstring).

    Raises ``ValueError`` for unknown terms, arguments a term does not take, K that is
    neither a fraction in (0, 1] nor a whole pixel count, weights that are not positive
    finite numbers, and sums that mix the 3-class loss with the binary ones (their
    targets differ).
    """
    terms = []
    for part in spec.replace(" ", "").split("+"):
        w, star, rest = part.partition("*")
        terms.append((_number(spec, w, "a weight"), _single(rest)) if star else (1.0, _single(part)))
    kinds = {isinstance(t, BoundaryCELoss) for _, t in terms}
    if len(kinds) > 1:
        raise ValueError(
            f"loss {spec!r}: boundary_ce (3 classes) cannot be summed with dice, bce or topk (one foreground channel)"
        )
    return terms[0][1] if len(terms) == 1 and terms[0][0] == 1.0 else WeightedSum(terms)


def n_classes(spec: str) -> int:
    """Output channels a loss needs: 3 for the boundary-aware loss, else 1."""
    return 3 if "boundary_ce" in spec else 1
