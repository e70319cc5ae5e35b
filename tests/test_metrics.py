import numpy as np
import pytest

from nucseg_lib import metrics as M
from tests.conftest import disk


def two_disks(shift):
    a = disk((60, 60), (30, 25), 10).astype(np.int32)
    b = disk((60, 60), (30, 25 + shift), 10).astype(np.int32)
    return a, b


def test_dice_known_values():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    b = np.zeros((10, 10), bool)
    b[:, :5] = True
    assert M.dice(a, a) == 1.0
    assert M.dice(a, ~a) == 0.0
    assert M.dice(a, b) == pytest.approx(2 * 25 / 100)
    assert M.dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0  # empty-empty is perfect
    with pytest.raises(ValueError):
        M.dice(a, a[:5])


def test_two_disks_known_iou_decides_matching():
    a, b = two_disks(4)  # IoU 0.605 (two discs of radius 10 shifted by 4 px)
    iou = (a & b).sum() / (a | b).sum()
    df = M.match_image(a, b, thresholds=(0.3, 0.5, 0.7))
    for _, r in df.iterrows():
        matched = iou >= r.thresh
        assert (r.tp, r.fp, r.fn) == ((1, 0, 0) if matched else (0, 1, 1))
        if matched:
            assert r.sum_iou == pytest.approx(iou)
    assert 0.5 < iou < 0.7  # the setup exercises both outcomes


def test_scores_from_counts():
    s = M.scores_from_counts({"tp": 8, "fp": 2, "fn": 4, "sum_iou": 6.4})
    assert s["precision"] == pytest.approx(0.8) and s["recall"] == pytest.approx(8 / 12)
    assert s["f1"] == pytest.approx(16 / 22) and s["accuracy"] == pytest.approx(8 / 14)
    assert s["pq"] == pytest.approx(6.4 / (8 + 1 + 2))
    assert M.scores_from_counts({"tp": 0, "fp": 0, "fn": 0, "sum_iou": 0})["f1"] == 1.0


def test_merged_and_split_on_known_shapes():
    truth = np.zeros((40, 80), np.int32)
    truth[10:30, 5:20] = 1
    truth[10:30, 20:35] = 2  # touches 1
    truth[10:30, 50:70] = 3
    merged_pred = np.zeros_like(truth)
    merged_pred[10:30, 5:35] = 1  # one prediction over nuclei 1 and 2
    merged_pred[10:30, 50:60] = 2  # nucleus 3 split in two
    merged_pred[10:30, 60:70] = 3
    ms = M.merged_and_split(truth, merged_pred)
    assert ms == {"merged": 1, "merged_nuclei": 2, "split": 1, "split_pieces": 2}
    assert M.merged_and_split(truth, truth) == {"merged": 0, "merged_nuclei": 0, "split": 0, "split_pieces": 0}
    # where the merge is: the prediction's own label (not renumbered), and how many nuclei it covers
    relabelled = np.where(merged_pred == 1, 7, merged_pred)
    assert M.merged_predictions(truth, relabelled) == {7: 2}
    assert M.merged_predictions(truth, truth) == {} and M.merged_predictions(truth, np.zeros_like(truth)) == {}
    assert M.merged_and_split(truth, np.zeros_like(truth))["merged"] == 0


def test_boundary_dice():
    a = disk((64, 128), (32, 32), 15)
    assert M.boundary_dice(a, a) == 1.0
    far = np.roll(a, 60, axis=1)
    assert M.boundary_dice(a, far) == 0.0
    near = np.roll(a, 2, axis=1)
    assert 0.5 < M.boundary_dice(a, near) < 1.0
    assert M.dice(a, near) > M.boundary_dice(a, near)  # boundaries are stricter than pixels


def test_pool_and_summary_match_hand_counts():
    a, b = two_disks(2)
    c, d = two_disks(15)
    df = M.evaluate_instances([a, c], [b, d], ["x", "y"], ["g1", "g2"])
    pooled = M.pool(df).set_index("thresh").loc[0.5]
    assert (pooled.tp, pooled.fp, pooled.fn) == (1, 1, 1)
    assert pooled.f1 == pytest.approx(0.5)
    summ = M.instance_summary(df, n_boot=200).set_index("metric")
    assert summ.loc["f1@0.5", "value"] == pytest.approx(0.5)
    assert summ.loc["f1@0.5", "ci_low"] <= 0.5 <= summ.loc["f1@0.5", "ci_high"]
    per_group = M.pool(df, by=("group", "thresh"))
    assert set(per_group.group) == {"g1", "g2"}
    assert per_group.set_index(["group", "thresh"]).loc[("g1", 0.5), "f1"] == 1.0


def test_paired_difference_of_pooled_f1():
    a, b = two_disks(2)  # matched at IoU 0.5
    c, d = two_disks(15)  # not matched
    good = M.evaluate_instances([a, c], [b, c], ["x", "y"])  # second image perfect
    bad = M.evaluate_instances([a, c], [b, d], ["x", "y"])
    diff = M.paired_difference(good, bad, n_boot=300)
    assert diff["value"] == pytest.approx(1.0 - 0.5) and diff["n_images"] == 2
    assert 0.0 <= diff["ci_low"] <= diff["value"] <= diff["ci_high"] <= 1.0
    same = M.paired_difference(bad, bad, n_boot=50)
    assert same["value"] == same["ci_low"] == same["ci_high"] == 0.0
    with pytest.raises(ValueError, match="different images"):
        M.paired_difference(good, M.evaluate_instances([a], [b], ["z"]))


def test_mean_with_ci():
    r = M.mean_with_ci([0.9, 0.8, 1.0, 0.7], n_boot=500)
    assert r["value"] == pytest.approx(0.85) and r["ci_low"] < 0.85 < r["ci_high"] and r["n_images"] == 4
    one = M.mean_with_ci([0.5])
    assert one["ci_low"] == one["ci_high"] == 0.5


# ---- real labels from Coelho 2009 with perturbed predictions -----------------------------------------------
def test_perturbed_real_labels(coelho_test):
    from skimage.morphology import disk as fp_disk
    from skimage.morphology import erosion
    from skimage.segmentation import relabel_sequential

    truth = coelho_test[0].labels
    n = int(truth.max())
    assert n > 10
    # identical: perfect at every threshold
    df = M.match_image(truth, truth)
    assert (df.tp == n).all() and (df.fp == 0).all()
    # slight erosion: every nucleus still matched at IoU 0.5, but not at 0.95
    eroded = erosion(truth, fp_disk(2))
    df = M.match_image(truth, eroded).set_index("thresh")
    assert df.loc[0.5, "tp"] == n and df.loc[0.95, "tp"] < n
    # dropped objects: recall drops exactly
    dropped = relabel_sequential(np.where(np.isin(truth, [1, 2, 3]), 0, truth))[0]
    df = M.match_image(truth, dropped).set_index("thresh")
    assert df.loc[0.5, "tp"] == n - 3 and df.loc[0.5, "fn"] == 3 and df.loc[0.5, "fp"] == 0
    # shifted far: nothing matches
    shifted = np.roll(truth, 60, axis=0)
    assert M.match_image(truth, shifted).set_index("thresh").loc[0.5, "tp"] < n // 2
    # merged: two nuclei given the same label -> one merge, and the pair is lost at IoU 0.5
    a, b = 1, 2
    merged = np.where(truth == b, a, truth)
    ms = M.merged_and_split(truth, merged)
    assert ms["merged"] == 1 and ms["merged_nuclei"] == 2
    assert M.match_image(truth, merged).set_index("thresh").loc[0.5, "tp"] >= n - 2
    # split: cut one nucleus in two halves along its centroid row
    ys, xs = np.nonzero(truth == 5)
    split = truth.copy()
    split[ys[ys > np.median(ys)], xs[ys > np.median(ys)]] = truth.max() + 1
    ms = M.merged_and_split(truth, split)
    assert ms["split"] == 1 and ms["split_pieces"] == 2


def test_overlap_counting_is_sparse_enough(coelho_root):
    """A 1.4 megapixel label image with ~50 objects is matched without a dense object x pixel loop."""
    from nucseg_lib.data import coelho

    s = coelho.load(coelho_root)[0]
    df = M.match_image(s.labels, np.roll(s.labels, 3, axis=1))
    assert df.tp.iloc[0] > 0.9 * s.labels.max()


def test_label_overlap_counts_two_disks_and_the_background():
    """Two disks of radius 10 px shifted by 4 px: the matrix holds their intersection, each one's rest against
    the other's background, and the background shared by both."""
    a, b = two_disks(4)
    both, only_a, only_b = int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())
    counts = M.label_overlap(a, b)
    assert counts.dtype == np.uint and counts.shape == (2, 2)
    assert counts.tolist() == [[a.size - both - only_a - only_b, only_b], [only_a, both]]
    with pytest.raises(ValueError, match=">= 0"):
        M.label_overlap(-a, b)
    for other in (b[:10], b[:, :30]):  # fewer pixels; as many pixels (1800) in another shape than a[:30]
        with pytest.raises(ValueError, match="one shape"):
            M.label_overlap(a[:30], other)


def test_stardist_matching_counts_as_stardists_own_loop():
    """StarDist's matching and threshold tuning count overlaps with our label_overlap once stardist_matching ran:
    the same matrix as StarDist's numba loop (run here as plain Python, its source), the same matching."""
    import importlib

    import stardist.matching as sm

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 7, size=(40, 50))
    pred = np.where(rng.random((40, 50)) < 0.8, truth, rng.integers(0, 9, size=(40, 50)))
    importlib.reload(sm)  # StarDist's own definitions, whatever an earlier test replaced
    loop = sm._label_overlap.py_func  # numba's dispatcher keeps the Python function it compiles
    expected = loop(truth, pred)
    assert M.stardist_matching() is sm and sm._label_overlap is M.label_overlap
    try:
        assert np.array_equal(M.label_overlap(truth, pred), expected)
        assert M.label_overlap(truth, pred).dtype == expected.dtype
        ours = sm.matching(truth, pred, thresh=0.3)
        sm._label_overlap = loop
        theirs = sm.matching(truth, pred, thresh=0.3)
        assert (ours.tp, ours.fp, ours.fn, ours.mean_true_score) == (
            theirs.tp,
            theirs.fp,
            theirs.fn,
            theirs.mean_true_score,
        )
    finally:
        M.stardist_matching()


def test_crop_box_zooms_on_the_mask_with_a_margin_clipped_to_the_image():
    from nucseg_lib.study.plots import crop_box

    mask = np.zeros((30, 40), bool)
    mask[10:14, 3:8] = True
    assert crop_box(mask, margin=5) == (slice(5, 19), slice(0, 13))
    with pytest.raises(ValueError, match="empty"):
        crop_box(np.zeros((4, 4), bool))


def test_one_per_group_takes_the_first_sample_of_each_group_in_sorted_order():
    from types import SimpleNamespace

    from nucseg_lib.study.plots import one_per_group

    samples = [SimpleNamespace(group=g, name=f"{g}{i}") for i, g in enumerate(["U2OS", "NIH3T3", "U2OS", "NIH3T3"])]
    assert [s.name for s in one_per_group(samples)] == ["NIH3T31", "U2OS0"]
