"""The report's numbers and claims, and the rules that judge ours against them: one place for notebooks and book.

- :data:`PAPER`: the report's reported numbers (fractions), keyed by (experiment, method, metric);
- :data:`CLAIMS`: the rows of the results page's claims table;
- :func:`verdict`: is the report's number inside our 95% CI?
- :func:`f1_target` and :func:`merged_target`: notebook 8's target (the ground-truth-free
  boundary U-Net against StarDist and the Dice U-Net), which say "undetermined" when the numbers
  are degenerate (no nucleus found by either model) instead of declaring the target met.
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

PAPER = {  # the paper's reported numbers (fractions), for the book's verdicts
    ("baseline", "unet_dice", "dice"): 0.98,
    ("boundary", "unet_dice", "boundary_dice"): 0.56,
    ("boundary", "unet_dice", "boundary_dice_native"): 0.56,
    ("topk", "unet_topk_0.1", "dice"): 0.002,
    ("topk", "unet_topk_0.2", "dice"): 0.95,
    ("topk", "unet_topk_0.5", "dice"): 0.96,
    ("topk", "unet_dice", "dice"): 0.98,
    ("topk", "unet_dice+topk_0.1", "dice"): 0.99,
    ("stardist", "unet_oracle", "f1@0.5"): 0.78,
    ("stardist", "stardist", "f1@0.5"): 0.88,
}

# the report's design check (notebook 07), judged from two numbers rather than one against the paper's
ERF_CLAIM = ("ERF (95% mass diameter, px) larger than the largest nucleus (px)", "receptive_field")


class Claim(NamedTuple):
    """One row of the results page's claims table."""

    text: str  # the claim as the table states it
    experiment: str  # the notebook's experiment that measures it
    method: str | None  # the model measured; None: the row names the model the run recorded
    metric: str | tuple[str, ...]  # the metric; a tuple: older names after it (the first the run recorded is shown)
    paper: float | None  # the report's number, None where the report has none
    judge: str  # how :func:`verdict` compares ours with the paper's: "value", "zero", "positive", "diverges"
    unit: str = ""  # "": a score with its bootstrap interval; else a count of this unit, printed as a signed number

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric's names, newest first."""
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)


CLAIMS = [
    Claim("U-Net with Dice loss: average test Dice", "baseline", "unet_dice", "dice", 0.98, "value"),
    Claim("Pretrained encoder = scratch (difference in Dice)", "transfer", None, "dice_minus_scratch", 0.0, "zero"),
    Claim(
        "Pretrained encoder learns faster: epochs to 95% of scratch's final validation Dice, pretrained minus "
        "scratch (not in the report)",
        "transfer",
        "unet_dice_transfer",
        "epochs_to_95pct_minus_scratch",
        None,
        "value",
        unit="epochs",
    ),
    Claim("Top-K alone, K = 10% of a patch: does not converge", "topk", "unet_topk_0.1", "dice", 0.002, "diverges"),
    Claim("Top-K alone, K = 20%", "topk", "unet_topk_0.2", "dice", 0.95, "value"),
    Claim("Top-K alone, K = 50%", "topk", "unet_topk_0.5", "dice", 0.96, "value"),
    Claim("Dice + top-K (K = 10%)", "topk", "unet_dice+topk_0.1", "dice", 0.99, "value"),
    # the report's claim is relative: 0.99 against the Dice U-Net's 0.98, so a paired difference of +0.01
    Claim(
        "Dice + top-K better than Dice alone (paired difference in Dice)",
        "topk",
        "unet_dice+topk_0.1",
        "dice_minus_unet_dice",
        0.01,
        "positive",
    ),
    Claim(
        "Boundary Dice of the Dice-loss U-Net (native resolution)",
        "boundary",
        "unet_dice",
        ("boundary_dice_native", "boundary_dice"),
        0.56,
        "value",
    ),
    Claim("U-Net with oracle label propagation: F1 at IoU 0.5", "stardist", "unet_oracle", "f1@0.5", 0.78, "value"),
    Claim("StarDist: F1 at IoU 0.5", "stardist", "stardist", "f1@0.5", 0.88, "value"),
    Claim(
        "Ground-truth-free boundary U-Net: F1 at IoU 0.5 (not in the report)",
        "beyond",
        "unet_boundary",
        "f1@0.5",
        None,
        "value",
    ),
]


# the report's conclusion (claim 7): the U-Net clumps touching nuclei; judged from the merged-nucleus counts of
# notebook 08 (the Dice U-Net with connected components against the ground-truth-free boundary U-Net)
CLUMP_CLAIM = ("The U-Net clumps touching nuclei (merged nuclei, Dice U-Net + components)", "beyond")

# a short reason next to each verdict: what differs between the report's setting and ours
WHY = {
    "U-Net with Dice loss": "Coelho 2009 at 4x downscaling, 1600 steps; the report: Kromp data, full resolution, "
    "100 epochs of 256x256 patches",
    "Pretrained encoder": "ours: in-domain pretraining (a U-Net trained on U2OS, fine-tuned on NIH3T3), not ImageNet "
    "(its weights cannot be downloaded here)",
    "Pretrained encoder learns faster": "notebook 03's plot in one number; one training run each, so no interval",
    "Top-K alone, K = 10%": "the report saw training oscillate at small K; ours converged at K = 10% of a 128x128 "
    "patch (1638 pixels; the report's patches were 256x256), on other data and with another schedule",
    "Top-K alone, K = 20%": "same data and scale caveats as the Dice U-Net",
    "Top-K alone, K = 50%": "same data and scale caveats as the Dice U-Net",
    "Dice + top-K (K = 10%)": "an absolute Dice carries the data and scale differences; the claim is relative: "
    "see the paired row below",
    "Dice + top-K better": "paired over the same test images, so the data and scale differences cancel",
    "Boundary Dice": "Coelho's nuclei are larger in pixels than Kromp's, so a 7x7 band covers less of each "
    "nucleus; the report's definition is ambiguous (methods page)",
    "U-Net with oracle": "the report's propagation gives one label per true nucleus, so its precision equals its "
    "recall; ours gives none to a true nucleus that the predicted mask misses entirely, so it proposes fewer labels "
    "and its precision is at least its recall",
    "StarDist": "4x downscaling and 1600 steps, chosen on validation images over 2x and fewer steps (methods page, "
    "StarDist's settings); its learning rate is named under 'Beyond the paper' below; the report's settings are "
    "not given",
    "Ground-truth-free": "our extension; paired against StarDist in notebook 08 and notebook 10",
    "The U-Net clumps": "merged nuclei: ground-truth nuclei covered by one prediction that also covers another",
    "ERF": "depends on the definition of size: the 95%-mass diameter against the largest extent (Feret) or the "
    "largest equivalent diameter",
}
# the ERF row's reason when both readings of "the largest nucleus" give the same verdict
ERF_BOTH_READINGS = (
    "the same against both readings of the largest nucleus (its largest extent, Feret, and the diameter of a disk of "
    "its area); one model's ERF moves by several px between runs of the same settings (methods page)"
)


def why(claim: str) -> str:
    """The short reason of :data:`WHY` for ``claim`` (the longest key it begins with); empty if none."""
    return max(((k, v) for k, v in WHY.items() if claim.startswith(k)), key=lambda kv: len(kv[0]), default=("", ""))[1]


def verdict(value, lo, hi, paper, how) -> str:
    """'consistent' when the paper's number lies in our 95% CI, else which way and by how much.

    ``how`` is ``'value'`` (the paper's number against our CI), ``'zero'`` (the paper claims no difference),
    ``'positive'`` (the paper claims a gain: our CI above 0?) or ``'diverges'`` (the paper reports that training
    failed: a Dice above 0.5 means ours converged).
    """
    if paper is None or pd.isna(value):
        return "new" if not pd.isna(value) else "not run"
    if pd.isna(lo):
        lo = hi = value
    if how == "zero":
        return "consistent (CI contains 0)" if lo <= 0 <= hi else f"differs ({value:+.3f})"
    if how == "positive":
        if lo > 0:
            return "reproduced (CI above 0)"
        return "not reproduced (CI contains 0)" if hi >= 0 else f"reversed ({value:+.3f}, CI below 0)"
    if how == "diverges":
        return "not reproduced: it converged" if value > 0.5 else "reproduced: it did not converge"
    if lo - 1e-9 <= paper <= hi + 1e-9:
        return "consistent"
    return f"ours {'higher' if value > paper else 'lower'} by {abs(value - paper):.3f}"


def f1_target(f1_boundary: float, f1_stardist: float) -> str:
    """Notebook 8's first target: the boundary U-Net's F1 at IoU 0.5 at least StarDist's.

    ``'met'``, ``'not met, short by X'`` or ``'undetermined'`` when either score is missing or
    both are 0 (neither model found a nucleus: nothing is compared).
    """
    if pd.isna(f1_boundary) or pd.isna(f1_stardist) or (f1_boundary <= 0 and f1_stardist <= 0):
        return "undetermined (neither model found nuclei)"
    if f1_boundary >= f1_stardist:
        return "met"
    return f"not met, short by {f1_stardist - f1_boundary:.3f}"


def merged_target(merged_boundary: float, merged_dice_cc: float) -> str:
    """Notebook 8's second target: at most half the merged nuclei of the Dice U-Net with components.

    ``'undetermined'`` when the Dice U-Net merged none (there is nothing to halve).
    """
    if pd.isna(merged_boundary) or pd.isna(merged_dice_cc) or merged_dice_cc <= 0:
        return "undetermined (the Dice U-Net merged no nuclei)"
    if merged_boundary <= merged_dice_cc / 2:
        return "cut at least in half"
    return f"not halved ({merged_boundary / merged_dice_cc:.0%} of the Dice U-Net's count)"
