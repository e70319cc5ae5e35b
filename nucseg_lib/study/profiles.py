"""Profiles: the data size and training budget of a study run, by name.

``smoke`` (seconds: CI and nbval), ``demo`` (the notebooks' default in JupyterLab: about a minute of
training per model), ``quick`` (the embedded synthetic data: ``make book``), ``cpu`` (real data,
downscaled: the published reference run) and ``full`` (the report's settings, for a GPU). How each
budget was chosen, and what it costs on which CPU, is in book/methods.md ("Training", "Precision
and speed"); the README gives the measured times of ``make book`` and the demo profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Profile:
    """Budget of a study run. ``scale`` maps a dataset name to its downscaling factor."""

    name: str
    epochs: int
    steps_per_epoch: int
    batch_size: int
    patch_size: int
    stardist_epochs: int
    stardist_steps: int
    scale: dict = field(default_factory=dict)
    synthetic: dict = field(default_factory=dict)
    max_images: int | None = None  # cap on real images per split (smoke runs on real data)
    erf_images: int = 16
    n_boot: int = 1000
    precision: str = "auto"  # U-Net training/inference: bf16 where this machine runs it faster (nucseg_lib.machine)
    lr: float = 1e-4  # Adam learning rate of the U-Nets (the report's 1e-4)
    stardist_lr: float = 3e-4  # StarDist's Adam learning rate (its own default; compare STARDIST_LR_CHOSEN)
    ema: float = 0.0  # decay per step of the U-Nets' weight average (TrainConfig.ema; 0: the last weights)
    # learning curves (notebook 09): snapshot step counts of one long run per method and seed, the
    # training seeds, and the extra scales at which StarDist also runs (beside ``scale``)
    curve_budgets: tuple = ()
    curve_seeds: tuple = (0, 1)
    curve_stardist_scales: dict = field(default_factory=dict)


# StarDist's Adam learning rate chosen on Coelho 2009's validation images at the cpu profile's budget (book/methods.md,
# "StarDist's settings"); the cpu profile (the reference run since 2026-12-04) and `make cv` train at it
STARDIST_LR_CHOSEN = 1e-3

PROFILES = {
    "smoke": Profile(
        "smoke",
        epochs=2,
        steps_per_epoch=2,
        batch_size=2,
        patch_size=64,
        stardist_epochs=1,
        stardist_steps=2,
        scale={"coelho2009": 8, "kromp2020": 4},
        synthetic=dict(n_train=6, n_test=3, size=96),
        max_images=6,
        erf_images=2,
        n_boot=100,
        curve_budgets=(2, 4, 6),
        curve_seeds=(0,),  # one training seed: each curve job is mostly start-up time here
        curve_stardist_scales={"coelho2009": 4},
    ),
    # a student's default in JupyterLab: about a minute of training per model (README: measured time)
    "demo": Profile(
        "demo",
        epochs=8,
        steps_per_epoch=20,
        batch_size=4,
        patch_size=128,
        stardist_epochs=10,
        stardist_steps=30,
        scale={"coelho2009": 4, "kromp2020": 2},
        synthetic=dict(n_train=24, n_test=8, size=192),
        erf_images=4,
        n_boot=200,
        curve_budgets=(40, 80, 160),
        curve_seeds=(0,),
        curve_stardist_scales={},
    ),
    # make book: StarDist gets 400 steps to the U-Nets' 200 (it needs them: book/methods.md, "StarDist baseline");
    # batches of 4 patches of 96 px: a third of the cost of 8 x 128 px for a test Dice of 0.89 instead of 0.91
    # (book/methods.md, "The quick profile")
    "quick": Profile(
        "quick",
        epochs=10,
        steps_per_epoch=20,
        batch_size=4,
        patch_size=96,
        stardist_epochs=20,
        stardist_steps=20,
        scale={"coelho2009": 4, "kromp2020": 2},
        synthetic=dict(n_train=40, n_test=15, size=256),
        erf_images=16,
        curve_budgets=(40, 80, 160),
        curve_seeds=(0,),
        curve_stardist_scales={"coelho2009": 2},
    ),
    # the published reference run: 1600 steps, the knee of the learning curves, and the U-Nets' learning rate and
    # weight average chosen on validation images (book/methods.md: "Training", "Learning rate", "Weight average";
    # run times per CPU: "Precision and speed")
    "cpu": Profile(
        "cpu",
        epochs=80,
        steps_per_epoch=20,
        batch_size=8,
        patch_size=128,
        stardist_epochs=80,
        stardist_steps=20,
        scale={"coelho2009": 4, "kromp2020": 2},
        synthetic=dict(n_train=80, n_test=25, size=256),
        erf_images=32,
        lr=1e-3,
        ema=0.995,  # the weight average: book/methods.md, "Weight average"
        stardist_lr=STARDIST_LR_CHOSEN,  # chosen on validation images over its default 3e-4
        curve_budgets=(200, 400, 800, 1600, 3000),
        curve_stardist_scales={"coelho2009": 2, "kromp2020": 1},
    ),
    "full": Profile(
        "full",
        epochs=100,
        steps_per_epoch=50,
        batch_size=8,
        patch_size=256,
        stardist_epochs=100,
        stardist_steps=50,
        scale={"coelho2009": 2, "kromp2020": 1},
        synthetic=dict(n_train=200, n_test=50, size=512),
        erf_images=64,
        curve_budgets=(1000, 2500, 5000, 10000),
        curve_stardist_scales={"coelho2009": 1},
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; ValueError naming the known ones otherwise."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    return PROFILES[name]


def resolve_profile(name: str, **overrides) -> Profile:
    """Profile ``name`` with the given fields replaced (``None`` values keep the profile's)."""
    return replace(get_profile(name), **{k: v for k, v in overrides.items() if v is not None})


def training_budget(profile: Profile) -> dict:
    """What every model of a run trains for (recorded in ``run.json``): steps, epochs, batch, patch (px)."""
    return {
        "unet_steps": profile.epochs * profile.steps_per_epoch,
        "unet_epochs": profile.epochs,
        "unet_lr": profile.lr,
        "unet_ema": profile.ema,
        "stardist_steps": profile.stardist_epochs * profile.stardist_steps,
        "stardist_epochs": profile.stardist_epochs,
        "stardist_lr": profile.stardist_lr,
        "batch_size": profile.batch_size,
        "patch_size_px": profile.patch_size,
    }
