"""StarDist baseline: a few training steps give a model that reloads and predicts; the packaged real image
goes through the same evaluation path as the U-Net."""

import numpy as np
import pytest

from nucseg_lib.metrics import evaluate_instances, instance_summary
from nucseg_lib.stardist_baseline import StarDistConfig, load_stardist, predict_stardist, train_stardist


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_synthetic):
    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    base = tmp_path_factory.mktemp("sd")
    cfg = StarDistConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=64, threads=2)
    model = train_stardist(cfg, tr[:4], tr[4:], base, name="tiny", verbose=0)
    return model, base / "tiny", small_synthetic


def test_trains_saves_and_reloads(trained):
    model, folder, samples = trained
    assert (folder / "DONE").exists() and (folder / "weights_best.h5").exists() and (folder / "history.csv").exists()
    again = load_stardist(folder)
    assert again.thresholds == model.thresholds
    test = [s for s in samples if s.meta["split"] == "test"][0]
    lab = predict_stardist(again, test.image)
    assert lab.shape == test.image.shape and lab.dtype == np.int32 and lab.min() >= 0
    # a finished folder is loaded, not retrained
    cfg = StarDistConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=64)
    mtime = (folder / "DONE").stat().st_mtime
    train_stardist(cfg, [], [], folder.parent, name="tiny")
    assert (folder / "DONE").stat().st_mtime == mtime


def test_packaged_real_image_through_the_evaluation_path(trained):
    from stardist.data import test_image_nuclei_2d

    img, mask = test_image_nuclei_2d(return_mask=True)
    assert img.shape == (512, 512) and len(np.unique(mask)) - 1 == 125
    model = trained[0]
    pred = predict_stardist(model, img)
    per_image = evaluate_instances([mask], [pred], ["nuclei_2d"], ["stardist-sample"])
    summ = instance_summary(per_image, n_boot=10).set_index("metric")
    assert 0 <= summ.loc["f1@0.5", "value"] <= 1
    assert per_image.n_true.iloc[0] == 125
    # the ground truth scored against itself is perfect on the same path
    perfect = instance_summary(evaluate_instances([mask], [mask], ["x"]), n_boot=10).set_index("metric")
    assert perfect.loc["f1@0.5", "value"] == 1.0 and perfect.loc["pq@0.5", "value"] == 1.0


def test_refuses_patches_larger_than_images(tmp_path, small_synthetic):
    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    with pytest.raises(ValueError, match="smaller than the patch size"):
        train_stardist(StarDistConfig(patch_size=128), tr[:2], tr[2:3], tmp_path)
