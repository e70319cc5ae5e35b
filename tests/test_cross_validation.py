"""Cross-validation over all the images (notebook 10): folds with a known answer, splits that cover every image
once, the paired summary, and the workflow's run of it."""

import json

import numpy as np
import pandas as pd
import pytest

from nucseg_lib.data.common import Sample, cross_validation_folds


def _samples(groups: dict) -> list:
    """Tiny samples named ``<group>-<i>``; ``groups`` maps a group to its number of images."""
    img, labels = np.arange(16, dtype=np.float32).reshape(4, 4), np.eye(4, dtype=np.int32)
    return [Sample(img, labels, f"{g}-{i}", g) for g, n in groups.items() for i in range(n)]


def test_folds_are_dealt_by_cell_line_like_cards():
    """Coelho 2009's 87 images are 44 NIH3T3 and 43 U2OS; dealt into 5 folds, each fold gets 17 or 18 images,
    8 or 9 of each cell line: the exact assignment below is the definition."""
    samples = _samples({"U2OS": 43, "NIH3T3": 44})
    folds = cross_validation_folds(samples, 5)
    # NIH3T3 first (group order), names in order: NIH3T3-0 -> 0, NIH3T3-1 -> 1, NIH3T3-10 -> 2 (text order)
    assert [folds[f"NIH3T3-{i}"] for i in (0, 1, 10, 11)] == [0, 1, 2, 3]
    assert folds["U2OS-0"] == 44 % 5  # the dealing goes on across groups
    sizes = pd.Series(folds).value_counts().sort_index()
    assert sizes.tolist() == [18, 18, 17, 17, 17]
    for line in ("NIH3T3", "U2OS"):
        assert set(pd.Series({k: v for k, v in folds.items() if k.startswith(line)}).value_counts()) <= {8, 9}
    shuffled = list(reversed(samples))  # the order the loader gives does not matter
    assert cross_validation_folds(shuffled, 5) == folds
    with pytest.raises(ValueError, match="n_folds"):
        cross_validation_folds(samples, 1)
    with pytest.raises(ValueError, match="unique image names"):
        cross_validation_folds(samples + samples[:1], 5)


def test_each_fold_tests_on_its_images_and_trains_on_the_others(tmp_path):
    from nucseg_lib.study.study import Study

    study = Study("synthetic", "smoke", out_dir=tmp_path)
    everything = {s.name for s in study.train + study.val + study.test}
    tested = []
    for k in range(3):
        fold = study.cross_validation_fold(k, 3)
        test, train = {s.name for s in fold.test}, {s.name for s in fold.train + fold.val}
        assert test and not test & train and test | train == everything
        assert f":fold{k}of3:" in fold.data_tag  # its models are its own
        tested += sorted(test)
    assert sorted(tested) == sorted(everything)  # every image tested exactly once
    assert study.fold is None and {s.name for s in study.test} != set()  # the study itself is unchanged
    with pytest.raises(ValueError, match="fold must be"):
        study.cross_validation_fold(3, 3)


def _per_image(method: str, tps: list, group: str = "a") -> pd.DataFrame:
    """A per-image table at IoU 0.5 and 0.7: image i has tps[i] true positives of 10 nuclei, 10 predictions."""
    rows = []
    for i, tp in enumerate(tps):
        for thresh in (0.5, 0.7):
            rows.append(
                dict(
                    image=f"{group}{i}",
                    group=group,
                    thresh=thresh,
                    tp=tp,
                    fp=10 - tp,
                    fn=10 - tp,
                    n_true=10,
                    n_pred=10,
                    sum_iou=0.8 * tp,
                    merged=0,
                    merged_nuclei=0,
                    split=0,
                    split_pieces=0,
                    method=method,
                )
            )
    return pd.DataFrame(rows)


def test_summary_pools_all_images_and_pairs_the_difference():
    from nucseg_lib.study.cross_validation import summarize

    a = pd.concat([_per_image("A", [10, 10, 10]), _per_image("A", [8, 8], "b")])
    b = pd.concat([_per_image("B", [5, 5, 5]), _per_image("B", [8, 8], "b")])
    s = summarize(pd.concat([a, b]), "A", "B", n_boot=50).set_index(["group", "method", "metric"])
    assert s.loc[("all", "A", "f1@0.5"), "value"] == pytest.approx(46 / 50)  # pooled counts: 46 of 50 found
    assert s.loc[("all", "B", "f1@0.5"), "value"] == pytest.approx(31 / 50)
    assert s.loc[("all", "A-B", "f1@0.5"), "value"] == pytest.approx(15 / 50)
    assert s.loc[("all", "A-B", "f1@0.5"), "n_images"] == 5
    assert s.loc[("b", "A-B", "f1@0.5"), ["value", "ci_low", "ci_high"]].tolist() == [0, 0, 0]  # identical there
    assert s.loc[("a", "A-B", "f1@0.5"), "ci_low"] == pytest.approx(0.5)  # every draw of group a: +5 of 10
    with pytest.raises(ValueError, match="same images"):
        summarize(pd.concat([a, b.iloc[2:]]), "A", "B")


@pytest.mark.slow
def test_cross_validation_through_the_workflow(tmp_path):
    """``notebooks=10`` at the smoke profile: one job per method and fold, every image scored once per method."""
    from tests.conftest import snakemake

    out = tmp_path / "cv"
    snakemake(tmp_path, "profile=smoke", "notebooks=10", "cv_folds=2", f"out={out}", "book=false")
    per_image = pd.read_csv(out / "results" / "cv_per_image.csv")
    at05 = per_image[per_image.thresh.round(2) == 0.5]
    for method in ("unet_boundary", "stardist"):
        mine = at05[at05.method == method]
        assert sorted(mine.fold.unique()) == [0, 1] and mine.image.is_unique and len(mine) == 9
        assert (out / "results" / "cv" / f"{method}-fold1.csv").exists()
    summary = pd.read_csv(out / "results" / "summary.csv")
    diff = summary[(summary.method == "unet_boundary") & (summary.metric == "f1@0.5_minus_stardist")]
    assert len(diff) == 1 and diff.n_images.iloc[0] == 9 and diff.experiment.iloc[0] == "cross_validation"
    run = json.loads((out / "results" / "run.json").read_text())
    assert set(run["notebooks"]) == {"10_cross_validation"} and len(run["cv_folds_seconds"]) == 4


def test_all_leaves_the_cross_validation_out_and_naming_it_selects_it():
    from nucseg_lib.study.parameters import select_notebooks

    assert "10_cross_validation" not in select_notebooks("all") and len(select_notebooks("all")) == 9
    assert select_notebooks([10]) == ["10_cross_validation"] and select_notebooks("10") == ["10_cross_validation"]


def test_make_cv_trains_stardist_at_the_learning_rate_chosen_on_validation_images():
    """The fair pair: ``make cv`` passes the chosen StarDist learning rate (the U-Nets' is the cpu profile's)."""
    import re

    from nucseg_lib.study.profiles import STARDIST_LR_CHOSEN
    from tests.conftest import REPO

    recipe = re.search(r"^cv: .*?(?=^\S)", (REPO / "Makefile").read_text(), re.S | re.M).group(0)
    assert float(re.search(r"stardist_lr=(\S+)", recipe).group(1)) == STARDIST_LR_CHOSEN and "profile=cpu" in recipe
