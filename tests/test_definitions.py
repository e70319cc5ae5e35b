"""Known answers that pin the study's definitions: the report's and the ones the study adds.

Each test builds a case whose answer follows from the definition alone (a straight edge
shifted by d pixels, a prediction that covers 40% of two nuclei, a linear "network" whose
input gradient is its kernel), so that changing the definition fails here and not only,
perhaps, in a number of the book. The values are worked out in the comments.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from nucseg_lib import instances as I
from nucseg_lib import metrics as M
from nucseg_lib.data.common import resize_labels
from nucseg_lib.erf import effective_receptive_field, erf_radius
from nucseg_lib.inference import foreground_probability
from nucseg_lib.losses import BoundaryCELoss, make_loss
from nucseg_lib.targets import BOUNDARY, INTERIOR, three_class


def half_plane(edge: int, n: int = 64, axis: int = 1) -> np.ndarray:
    """An n x n mask whose foreground lies left of column ``edge`` (``axis=1``) or above row ``edge`` (``axis=0``)."""
    m = np.zeros((n, n), bool)
    if axis == 1:
        m[:, :edge] = True
    else:
        m[:edge] = True
    return m


# --- boundary Dice (report, section III.4): Canny edges, each dilated with a 7x7 square ---


def test_boundary_band_of_a_straight_edge_is_the_edge_dilated_by_a_7x7_square():
    # a vertical step: Canny marks both of its pixels (columns 31 and 32); the 7x7 square adds 3 columns on
    # each side, so every row of the band is 8 pixels wide (columns 28-35)
    band = M.boundary_band(half_plane(32, axis=1))
    assert set(band.sum(axis=1).tolist()) == {8}
    assert np.nonzero(band.any(axis=0))[0].tolist() == list(range(28, 36))
    # a horizontal step: Canny marks one or both of its rows depending on the column, so each column of the
    # band is 7 or 8 pixels high, within rows 28-35 (a band dilated along one axis only would be 1-2 pixels)
    band = M.boundary_band(half_plane(32, axis=0))
    assert set(band.sum(axis=0).tolist()) <= {7, 8}
    assert np.nonzero(band.any(axis=1))[0].tolist() == list(range(28, 36))


def test_boundary_dice_of_two_edges_d_pixels_apart_is_one_minus_d_over_eight():
    # two 8-px bands of vertical edges shifted by d overlap in 8 - d columns: Dice = 2 (8 - d) / 16
    # (with a 5x5 square it would be 1 - d/6)
    a = half_plane(32)
    got = [M.boundary_dice(a, half_plane(32 + d)) for d in range(10)]
    assert got == pytest.approx([max(0.0, 1 - d / 8) for d in range(10)], abs=1e-12)
    # the pixel Dice of the same masks barely moves: boundaries are the stricter measure
    assert M.dice(a, half_plane(34)) > 0.96 > M.boundary_dice(a, half_plane(34))


def test_boundary_band_of_a_square_keeps_skimages_canny_at_sigma_1():
    # a 32x32 square: Canny (sigma 1, skimage's default) rounds the corners; its 7x7 band holds 948 px
    # (sigma 2 gives 892, sigma 3 916)
    sq = np.zeros((64, 64), bool)
    sq[16:48, 16:48] = True
    assert int(M.boundary_band(sq).sum()) == 948


# --- instance matching and its summaries ---


def two_squares():
    truth = np.zeros((12, 24), np.int32)
    truth[1:11, 0:10] = 1
    truth[1:11, 12:22] = 2
    return truth


def test_a_merge_is_a_prediction_covering_more_than_half_of_two_nuclei():
    truth = two_squares()
    wide = np.zeros_like(truth)
    wide[1:11, 4:18] = 1  # 6 of 10 columns of each nucleus: 60% of both
    narrow = np.zeros_like(truth)
    narrow[1:11, 6:16] = 1  # 4 of 10 columns of each: 40%
    assert M.merged_and_split(truth, wide)["merged"] == 1
    assert M.merged_and_split(truth, narrow)["merged"] == 0


def test_ap_is_the_mean_accuracy_tp_over_tp_fp_fn_over_the_thresholds():
    truth = two_squares()
    pred = np.where(truth == 1, 1, 0).astype(np.int32)  # finds one nucleus exactly: TP 1, FN 1 at every IoU
    summary = M.instance_summary(M.evaluate_instances([truth], [pred], ["a"]), n_boot=10).set_index("metric")
    assert summary.loc["ap@0.5:0.95", "value"] == pytest.approx(0.5)  # accuracy 1/2 at each of 10 thresholds
    assert summary.loc["f1@0.5", "value"] == pytest.approx(2 / 3)  # F1 2/3: AP is not F1


def test_bootstrap_interval_is_the_central_95_percent():
    # a statistic that returns 0, 1, ..., 999 on the successive resamples: the interval is the 2.5th and
    # 97.5th percentiles of those values (numpy's linear rule: 0.025 * 999 and 0.975 * 999)
    draws = iter(range(1000))
    lo, hi = M.bootstrap_ci(lambda idx: next(draws), n_items=5, n_boot=1000)
    assert (lo, hi) == pytest.approx((24.975, 974.025))
    # the real-data profiles resample the test images 1000 times, as Methods says
    from nucseg_lib.study.profiles import get_profile

    assert get_profile("cpu").n_boot == get_profile("full").n_boot == 1000


# --- from probabilities to instances ---


def test_connected_components_are_4_connected():
    p = np.zeros((6, 6))
    p[0:3, 0:3] = p[3:6, 3:6] = 0.9  # two squares that touch only at a corner
    assert int(I.connected_components(p).max()) == 2


def three_class_map(shape):
    probs = np.zeros((3, *shape))
    probs[0] = 1.0
    return probs


def put(probs, region, background, interior, boundary):
    probs[0][region], probs[1][region], probs[2][region] = background, interior, boundary


def test_watershed_foreground_is_interior_plus_boundary_probability():
    # a core (interior 0.9) in a ring whose interior and boundary probabilities are 0.3 each: the ring
    # is foreground because 0.3 + 0.3 > 0.5, though neither class alone is; the object is the 12x12 square
    probs = three_class_map((20, 20))
    ring = np.zeros((20, 20), bool)
    ring[4:16, 4:16] = True
    put(probs, ring, 0.4, 0.3, 0.3)
    put(probs, (slice(6, 14), slice(6, 14)), 0.05, 0.9, 0.05)
    out = I.watershed_boundary(probs, h=None)
    assert int(out.max()) == 1 and int((out > 0).sum()) == 144


def test_watershed_divides_touching_nuclei_where_the_boundary_probability_peaks():
    # two seeds at the ends of a strip; in between the interior probability is flat (0.45, under the seed
    # threshold) and the boundary probability peaks in column 12: the landscape P(boundary) - P(interior)
    # divides there, not halfway (column 20) as the interior alone would
    probs = three_class_map((10, 40))
    put(probs, (slice(None), slice(4, 36)), 0.25, 0.45, 0.3)
    put(probs, (slice(None), 12), 0.05, 0.45, 0.5)
    put(probs, (slice(None), slice(0, 4)), 0.05, 0.9, 0.05)
    put(probs, (slice(None), slice(36, 40)), 0.05, 0.9, 0.05)
    out = I.watershed_boundary(probs, h=None)
    assert int(out.max()) == 2
    left = out == out[5, 0]
    assert left.all(axis=0)[:12].all() and not left[:, 13:].any()


def test_watershed_seeds_smaller_than_four_pixels_are_dropped():
    probs = three_class_map((12, 12))
    put(probs, (slice(2, 3), slice(2, 3)), 0.05, 0.9, 0.05)  # one pixel: no seed, no object
    assert int(I.watershed_boundary(probs, h=None).max()) == 0
    put(probs, (slice(7, 9), slice(7, 9)), 0.05, 0.9, 0.05)  # 2x2 = 4 pixels: a seed
    assert int(I.watershed_boundary(probs, h=None).max()) == 1


def test_foreground_probability_of_a_three_class_map_is_interior_plus_boundary():
    probs = np.stack([np.full((4, 4), 0.2), np.full((4, 4), 0.5), np.full((4, 4), 0.3)])
    assert np.allclose(foreground_probability(probs), 0.8)
    assert np.allclose(foreground_probability(probs[1:2]), 0.5)  # a 1-channel map is the foreground itself


def test_three_class_target_marks_the_inner_ring_of_each_nucleus():
    labels = np.zeros((9, 9), np.int32)
    labels[2:7, 2:7] = 1  # a 5x5 nucleus: 16 pixels of inner ring, 9 of interior, nothing outside
    target = three_class(labels)
    assert int((target == BOUNDARY).sum()) == 16 and int((target == INTERIOR).sum()) == 9
    assert target[2, 2] == BOUNDARY and target[4, 4] == INTERIOR and (target[labels == 0] == 0).all()
    # "edge" means a 4-neighbour outside: a diamond of radius 2 (13 pixels) has 8 boundary pixels, its tips
    # and slopes, and 5 of interior (with diagonal neighbours counted, 12 and 1)
    yy, xx = np.mgrid[-3:4, -3:4]
    diamond = (np.abs(yy) + np.abs(xx) <= 2).astype(np.int32)
    target = three_class(diamond)
    assert int((target == BOUNDARY).sum()) == 8 and int((target == INTERIOR).sum()) == 5


# --- losses ---


def test_boundary_loss_weighs_boundary_pixels_three_times():
    # one interior and one boundary pixel: weighted cross-entropy (ce_interior + w * ce_boundary) / (1 + w)
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.5]]).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[1, 2]]])
    ce = -torch.log_softmax(logits, dim=1)[0, :, 0, :]
    ce_interior, ce_boundary = float(ce[1, 0]), float(ce[2, 1])
    for loss, w in [(make_loss("boundary_ce"), 3.0), (BoundaryCELoss(5.0), 5.0)]:
        assert float(loss(logits, target)) == pytest.approx((ce_interior + w * ce_boundary) / (1 + w))


# --- effective receptive field ---


def test_erf_is_the_mean_absolute_input_gradient():
    # a linear "network" (one 3x3 convolution): the gradient of an output pixel is its kernel, whatever the
    # input, so the ERF is |kernel| around the position and 0 elsewhere (signs cancel without the absolute value)
    kernel = torch.tensor([[1.0, -2.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, -1.0]])
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[0, 0] = kernel
    images = [np.random.default_rng(i).random((32, 32)).astype(np.float32) for i in range(3)]
    erf = effective_receptive_field(conv, images, position=(10, 20), size=32, n_images=3)
    expected = np.zeros((32, 32), np.float32)
    expected[9:12, 19:22] = kernel.abs().numpy()
    assert np.allclose(erf, expected)


def test_erf_radius_holds_95_percent_of_the_mass():
    # 92% of the mass at the centre, 8% on eight pixels at distance exactly 10: 95% needs the ring
    erf = np.zeros((21, 21))
    erf[10, 10] = 0.92
    for dy, dx in [(10, 0), (-10, 0), (0, 10), (0, -10), (6, 8), (-6, 8), (6, -8), (-6, -8)]:
        erf[10 + dy, 10 + dx] = 0.01
    assert erf_radius(erf) == pytest.approx(10.0)
    assert erf_radius(erf, mass=0.9) == 0.0


# --- resizing and the split ---


def test_labels_are_resized_by_nearest_neighbour_keeping_their_ids():
    labels = np.array([[1, 5], [5, 1]], np.int32)
    up = resize_labels(labels, (8, 8))
    assert set(np.unique(up).tolist()) == {1, 5} and up.dtype == np.int32  # blending would make 2, 3, 4
    assert np.array_equal(up, np.kron(labels, np.ones((4, 4), np.int32)))
    big = np.kron(np.array([[0, 3], [7, 0]], np.int32), np.ones((8, 8), np.int32))
    assert np.array_equal(resize_labels(big, (2, 2)), [[0, 3], [7, 0]])


def test_coelho_split_is_the_published_runs(coelho_root, tmp_path):
    # the published models were trained, tuned and scored on these splits: a change to the split rule, its
    # salt, the test fraction or the choice of validation images (every 6th training image) moves images
    # between the splits, and the published numbers no longer hold
    from nucseg_lib.study.study import Study
    from tests.conftest import REPO

    published = pd.read_csv(REPO / "reference" / "coelho2009-cpu" / "results" / "data_images.csv")
    study = Study("coelho2009", "cpu", data_root=coelho_root, out_dir=tmp_path)
    for split in ("train", "val", "test"):
        names = [s.name for s in getattr(study, split)]
        assert names == published.loc[published.split == split, "image"].tolist(), split


# --- the verdicts the book prints ---


def test_verdicts_and_targets_at_their_edges():
    from nucseg_lib.study.claims import f1_target, merged_target, verdict

    # notebook 8: "at least StarDist's F1" holds at a tie; "at most half the merges" holds at exactly half
    assert f1_target(0.9, 0.9) == "met" and f1_target(0.899, 0.9).startswith("not met, short by 0.001")
    assert merged_target(5, 10) == "cut at least in half" and merged_target(6, 10).startswith("not halved (60%")
    # the report's number is consistent when it lies inside our 95% interval, edges included, and not 0.005 outside
    assert verdict(0.90, 0.88, 0.92, 0.92, "value") == "consistent"
    assert verdict(0.90, 0.88, 0.92, 0.925, "value") == "ours lower by 0.025"
    assert verdict(0.90, 0.88, 0.92, 0.875, "value") == "ours higher by 0.025"
