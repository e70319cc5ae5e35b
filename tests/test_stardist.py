"""StarDist baseline: a few training steps give a model that reloads and predicts; the packaged real image
goes through the same evaluation path as the U-Net."""

import numpy as np
import pytest

from nucseg_lib.metrics import evaluate_instances, instance_summary
from nucseg_lib.train.stardist import StarDistConfig, load_stardist, predict_stardist, train_stardist

pytestmark = pytest.mark.slow  # trains StarDist


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_synthetic):
    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    base = tmp_path_factory.mktemp("sd")
    cfg = StarDistConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=64, threads=2)
    model = train_stardist(cfg, tr[:4], tr[4:], base, name="tiny", verbose=0)
    return model, base / "tiny", small_synthetic


def test_trains_saves_and_reloads(trained, capsys):
    model, folder, samples = trained
    assert (folder / "DONE").exists() and (folder / "weights_best.h5").exists() and (folder / "history.csv").exists()
    assert model.keras_model.run_eagerly  # 2 steps: tracing the graphs would cost more (EAGER_MAX_STEPS)
    again = load_stardist(folder)
    assert again.thresholds == model.thresholds
    assert capsys.readouterr().out == ""  # loading prints nothing (StarDist's own lines would fill notebooks)
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


def test_the_same_seed_gives_the_same_training(tmp_path, small_synthetic):
    """Two trainings with one seed start from the same initial weights and see the same patches: their losses are
    equal, whatever drew random numbers in between (Keras takes a new model's weights from Python's random module)."""
    import random

    import pandas as pd

    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    cfg = StarDistConfig(epochs=2, steps_per_epoch=2, batch_size=2, patch_size=64, threads=1)
    losses = []
    for name in ("a", "b"):
        random.random()
        np.random.random()
        assert train_stardist(cfg, tr[:4], tr[4:], tmp_path, name=name, verbose=0, stop_after_epoch=1) is None
        losses.append(pd.read_csv(tmp_path / name / "history.csv")[["loss", "val_loss"]].to_numpy())
    assert np.isfinite(losses[0]).all() and np.array_equal(losses[0], losses[1])


def test_an_interrupted_training_resumes_as_if_it_had_not_stopped(tmp_path, small_synthetic):
    """After a stop at epoch 2 of 3 (and a kill that left a row of an unfinished epoch 3 behind), the run
    goes on with Adam's step count, the best validation loss and the plateau schedule of epoch 2."""
    import json

    import pandas as pd

    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    cfg = StarDistConfig(epochs=3, steps_per_epoch=2, batch_size=2, patch_size=64, threads=1)
    assert train_stardist(cfg, tr[:4], tr[4:], tmp_path, name="r", verbose=0, stop_after_epoch=2) is None
    folder = tmp_path / "r"
    state_file = folder / "resume" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["epochs"] == 2 and sorted(p.name for p in (folder / "resume").iterdir()) == [
        "epoch-000002.optimizer.npz",
        "epoch-000002.weights.h5",
        "state.json",
    ]
    assert not (folder / "weights_now.h5").exists()
    # a best loss no epoch can beat: if the restart forgot it, epoch 3 would become the "best" weights
    state["best_val_loss"], state["plateau"]["best"], state["plateau"]["wait"] = -1.0, -1.0, 7
    state_file.write_text(json.dumps(state))
    for table in ("history.csv", "epoch_seconds.csv"):  # the row of an epoch killed before its state was kept
        lines = (folder / table).read_text().splitlines()
        (folder / table).write_text("\n".join(lines + [lines[-1]]) + "\n")
    best_mtime = (folder / "weights_best.h5").stat().st_mtime_ns
    model = train_stardist(cfg, tr[:4], tr[4:], tmp_path, name="r", verbose=0)
    assert len(pd.read_csv(folder / "history.csv")) == 3 and len(pd.read_csv(folder / "epoch_seconds.csv")) == 3
    assert int(model.keras_model.optimizer.iterations) == 3 * 2  # a fresh optimizer would count 2
    checkpoint = next(c for c in model.callbacks if type(c).__name__ == "ModelCheckpoint")
    plateau = next(c for c in model.callbacks if type(c).__name__ == "ReduceLROnPlateau")
    assert checkpoint.best == -1.0 and (folder / "weights_best.h5").stat().st_mtime_ns == best_mtime
    assert plateau.wait == 8  # 7 carried over, plus epoch 3 that did not improve on the best
    assert (folder / "DONE").exists() and not (folder / "resume").exists()


def test_a_folder_from_before_the_resume_state_resumes_from_its_history(tmp_path, small_synthetic):
    """Folders that StarDist's own weights_now.h5 checkpointed (before resume/) resume from it, at the
    learning rate and with the best loss of their history.csv."""
    import shutil

    import pandas as pd

    from nucseg_lib.train.stardist import _state_from_history

    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    cfg = StarDistConfig(epochs=3, steps_per_epoch=2, batch_size=2, patch_size=64, threads=1)
    assert train_stardist(cfg, tr[:4], tr[4:], tmp_path, name="old", verbose=0, stop_after_epoch=2) is None
    folder = tmp_path / "old"
    from stardist.models import StarDist2D

    old = StarDist2D(None, name="old", basedir=str(tmp_path))  # StarDist's own epoch checkpoint, legacy HDF5
    old.load_weights("resume/epoch-000002.weights.h5")
    old.keras_model.save_weights(str(folder / "weights_now.h5"))
    shutil.rmtree(folder / "resume")
    hist = pd.read_csv(folder / "history.csv")
    hist["learning_rate"] = [3e-4, 1e-4]  # as if the plateau schedule had halved the rate (and more)
    hist.to_csv(folder / "history.csv", index=False)
    model = train_stardist(cfg, tr[:4], tr[4:], tmp_path, name="old", verbose=0)
    hist = pd.read_csv(folder / "history.csv")
    assert len(hist) == 3 and hist["learning_rate"].iloc[-1] == pytest.approx(1e-4)
    checkpoint = next(c for c in model.callbacks if type(c).__name__ == "ModelCheckpoint")
    assert checkpoint.best == pytest.approx(hist["val_loss"].min())
    (folder / "weights_now.h5").write_bytes(b"not hdf5")  # a file cut short by a kill: a clear error
    (folder / "DONE").unlink()
    shutil.rmtree(folder / "resume", ignore_errors=True)
    from nucseg_lib.train.unet import ModelFolderError

    with pytest.raises(ModelFolderError, match="weights_now.h5: cannot resume from it"):
        train_stardist(cfg, tr[:4], tr[4:], tmp_path, name="old", verbose=0)

    (tmp_path / "history.csv").write_text(
        "epoch,loss,learning_rate,val_loss\n0,2,3e-4,1.5\n1,1,3e-4,1.2\n2,1,1.5e-4,1.3\n"
    )
    state = _state_from_history(tmp_path / "history.csv")
    assert state["epochs"] == 3 and state["best_val_loss"] == 1.2 and state["learning_rate"] == 1.5e-4
    assert state["plateau"] == {"best": 1.2, "wait": 1, "cooldown_counter": 0}
