import json

import numpy as np
import pandas as pd
import pytest
import torch

from nucseg_lib.inference import _window, predict_probabilities
from nucseg_lib.targets import three_class
from nucseg_lib.train.unet import (
    PatchSampler,
    TrainConfig,
    average_decay,
    load_trained,
    train,
    train_or_load,
    update_average,
)


def tiny_config(**kw):
    return TrainConfig(**{**dict(epochs=3, steps_per_epoch=2, batch_size=2, patch_size=32, seed=1), **kw})


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, small_synthetic):
    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    cfg = tiny_config()
    full, hist_full = train(cfg, tr[:4], tr[4:], tmp_path / "full", progress=False)
    part, _ = train(cfg, tr[:4], tr[4:], tmp_path / "resumed", progress=False, stop_after_epoch=1)
    assert not (tmp_path / "resumed" / "weights.pt").exists()
    resumed, hist_res = train(cfg, tr[:4], tr[4:], tmp_path / "resumed", progress=False)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert len(hist_res) == 3 and np.allclose(hist_full.train_loss, hist_res.train_loss)


def test_weight_average_known_answer():
    """decay 0.9 from 0 towards a constant 1: 0.1 after one step, 0.19 after two; counters are copied."""
    model, average = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.fill_(1.0), average.weight.zero_()
    model.num_batches_tracked.fill_(7)
    update_average(average, model, 0.9)
    assert torch.allclose(average.weight, torch.full((2,), 0.1)) and int(average.num_batches_tracked) == 7
    update_average(average, model, 0.9)
    assert torch.allclose(average.weight, torch.full((2,), 0.19))
    assert torch.equal(model.weight, torch.ones(2))  # the trained model is not touched


def test_weight_average_holds_no_share_of_the_initial_weights():
    """Weights 1, 2, 3 after three steps, the average started at 100: with the step's decay it is the mean of
    1, 2, 3 weighted 0.81, 0.9, 1 (decay 0.9), exactly; a constant decay would keep 0.729 x 100 of the start."""
    model, average = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        average.weight.fill_(100.0)
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(step))
        update_average(average, model, average_decay(0.9, step))
        if step == 1:
            assert average.weight.item() == 1.0  # the first step's decay is 0: the average becomes the weights
    expected = (0.81 * 1 + 0.9 * 2 + 1 * 3) / (0.81 + 0.9 + 1)
    assert average.weight.item() == pytest.approx(expected, rel=1e-6)
    assert average_decay(0.995, 100_000) == pytest.approx(0.995)
    with pytest.raises(ValueError, match="from 1"):
        average_decay(0.9, 0)


def test_weight_average_is_saved_resumed_and_keyed(tmp_path, small_synthetic):
    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    assert TrainConfig().key() == "56e8e87ac8"  # ema=0 keeps the cache keys of models trained before it existed
    assert tiny_config(ema=0.5).key() != tiny_config().key()
    with pytest.raises(ValueError, match="ema"):
        tiny_config(ema=1.0)
    plain, _ = train(tiny_config(), tr[:4], tr[4:], tmp_path / "plain", progress=False)
    cfg = tiny_config(ema=0.5)
    # the last epoch's checkpoint holds the raw weights; finishing removes it (test_finished_training_...)
    train(cfg, tr[:4], tr[4:], tmp_path / "full", progress=False, stop_after_epoch=cfg.epochs)
    raw = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    full, _ = train(cfg, tr[:4], tr[4:], tmp_path / "full", progress=False)
    saved = torch.load(tmp_path / "full" / "weights.pt", weights_only=True)
    name = "head.weight"
    assert torch.equal(raw[name], plain.state_dict()[name])  # the average does not change the training
    assert not torch.equal(saved[name], raw[name]) and torch.equal(saved[name], full.state_dict()[name])
    train(cfg, tr[:4], tr[4:], tmp_path / "resumed", progress=False, stop_after_epoch=1)
    resumed, _ = train(cfg, tr[:4], tr[4:], tmp_path / "resumed", progress=False)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_finished_training_removes_its_checkpoint_and_is_loaded_not_trained_again(tmp_path, small_synthetic):
    """The checkpoint (model, Adam's two moments) is three times the weights; once weights.pt is written it goes
    (checked without the weight average, whose copy makes it four times).
    train() on the finished folder then loads weights.pt: it neither trains from scratch nor writes over it."""
    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    cfg = tiny_config(epochs=2)
    folder = tmp_path / "m"
    train(cfg, tr[:4], tr[4:], folder, progress=False, stop_after_epoch=1)
    assert (folder / "checkpoint.pt").is_file() and not (folder / "weights.pt").exists()
    model, hist = train(cfg, tr[:4], tr[4:], folder, progress=False)
    assert (folder / "weights.pt").is_file() and not (folder / "checkpoint.pt").exists()
    written = (folder / "weights.pt").stat().st_mtime_ns
    again, hist_again = train(cfg, tr[:4], tr[4:], folder, progress=False)
    assert (folder / "weights.pt").stat().st_mtime_ns == written and not (folder / "checkpoint.pt").exists()
    assert list(hist_again.epoch) == list(hist.epoch) == [1, 2] and not again.training
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_model_folder_and_cache(tmp_path, small_synthetic):
    tr = [s for s in small_synthetic if s.meta["split"] == "train"]
    cfg = tiny_config(epochs=1, loss="boundary_ce")
    model, hist, folder = train_or_load(cfg, tr[:4], tr[4:], tmp_path)
    conf = json.loads((folder / "config.json").read_text())
    assert (
        conf["loss"] == "boundary_ce" and conf["out_channels"] == 3 and conf["train_images"] == [s.name for s in tr[:4]]
    )
    history = pd.read_csv(folder / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_dice", "seconds"] and len(history) == 1
    mtime = (folder / "weights.pt").stat().st_mtime
    again, _, folder2 = train_or_load(cfg, tr[:4], tr[4:], tmp_path)
    assert folder2 == folder and (folder / "weights.pt").stat().st_mtime == mtime  # reused, not retrained
    loaded, cfg2, _ = load_trained(folder)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), again.eval()(x))
    with pytest.raises(FileNotFoundError, match="weights.pt"):
        load_trained(tmp_path / "nothing")


def test_patch_sampler_keeps_image_and_labels_aligned(small_synthetic):
    s = small_synthetic[0]
    sampler = PatchSampler([s], 48, 3, augment=True)
    rng = np.random.default_rng(0)
    for _ in range(5):
        img, lab = sampler.patch_pair(rng)
        assert img.shape == lab.shape == (48, 48)
        if (lab > 0).any() and (lab == 0).any():
            # nuclei are brighter than background after any augmentation
            assert img[lab > 0].mean() > img[lab == 0].mean()
        assert set(np.unique(lab)) <= set(np.unique(s.labels))  # nearest interpolation: no new label values
    x, y = sampler.batch(rng, 3)
    assert x.shape == (3, 1, 48, 48) and y.shape == (3, 48, 48) and set(torch.unique(y).tolist()) <= {0, 1, 2}


def test_three_class_target_separates_touching_nuclei():
    lab = np.zeros((10, 20), np.int32)
    lab[2:8, 2:10] = 1
    lab[2:8, 10:18] = 2
    t = three_class(lab)
    assert (t[:, 9] == 2)[2:8].all() and (t[:, 10] == 2)[2:8].all()  # the seam is boundary
    assert t[5, 5] == 1 and t[0, 0] == 0


class Pointwise(torch.nn.Module):
    """A model without spatial context: tiled and whole-image prediction must agree exactly."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.conv(x)

    def probabilities(self, logits):
        return torch.sigmoid(logits)


def test_tiled_prediction_blends_without_seams():
    m = Pointwise()
    img = np.random.default_rng(0).random((150, 230)).astype(np.float32)
    whole = predict_probabilities(m, img, tile=None)
    tiled = predict_probabilities(m, img, tile=64, overlap=16)
    assert tiled.shape == (1, 150, 230)
    assert np.allclose(whole, tiled, atol=1e-6)
    assert _window(10, 3)[0] < _window(10, 3)[5] == 1.0
    with pytest.raises(ValueError, match="NaN"):
        predict_probabilities(m, np.full((20, 20), np.nan))
    with pytest.raises(ValueError, match="2D"):
        predict_probabilities(m, np.zeros((2, 10, 10)))
