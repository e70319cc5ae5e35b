"""Segmenting your own images: scale handling (known answers), the nucseg command, exported models."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from nucseg_lib.metrics import evaluate_instances, pool
from nucseg_lib.predict.segmenter import ModelError, Segmenter, equivalent_diameters, export_model, read_settings
from tests.conftest import REPO, disk

NUCSEG = [sys.executable, "-m", "nucseg_lib.predict.cli"]


def disks_image(shape=(400, 400), diameter=40, spacing=80):
    """Bright disks of a known diameter on a dark background, and their labels."""
    labels = np.zeros(shape, np.int32)
    n = 0
    for y in range(spacing // 2, shape[0] - diameter, spacing):
        for x in range(spacing // 2, shape[1] - diameter, spacing):
            n += 1
            labels[disk(shape, (y, x), diameter / 2)] = n
    image = np.where(labels > 0, 200.0, 20.0) + np.random.default_rng(0).normal(0, 2, shape)
    return image.astype(np.float32), labels


class ThresholdSegmenter(Segmenter):
    """A Segmenter whose "network" thresholds the image, trained (by fiat) on nuclei of 10 px at 1 um/px."""

    def __init__(self, pixel_size=1.0):
        self.method, self.diameter, self.pixel_size, self.post = "test", 10.0, pixel_size, {}
        self.settings, self.folder, self.calls = {"scale": 1.0}, "threshold-model", []

    def _instances(self, image):
        from skimage.measure import label

        self.calls.append(image.shape)
        return label(image > image.mean()).astype(np.int32)


def f1(truth, pred):
    return pool(evaluate_instances([truth], [pred], ["x"], thresholds=(0.5,))).f1.iloc[0]


def test_nucleus_diameter_brings_the_input_to_the_models_scale():
    image, truth = disks_image()
    seg = ThresholdSegmenter()
    labels, info = seg.segment(image, nucleus_diameter=40)
    assert info["factor"] == pytest.approx(4.0) and seg.calls == [(100, 100)]  # predicted at 1/4 size
    assert labels.shape == image.shape and f1(truth, labels) == 1.0  # labels back at the input's size


def test_pixel_size_rescales_a_wrong_scale_input():
    image, truth = disks_image()  # 40-px nuclei: at 0.25 um/px they are 10 um, the model's 10 px at 1 um/px
    seg = ThresholdSegmenter(pixel_size=1.0)
    labels, info = seg.segment(image, pixel_size=0.25)
    assert info["factor"] == pytest.approx(4.0) and seg.calls == [(100, 100)] and f1(truth, labels) == 1.0
    with pytest.raises(ValueError, match="records no pixel size"):
        ThresholdSegmenter(pixel_size=None).segment(image, pixel_size=0.25)
    with pytest.raises(ValueError, match="smaller than 16 pixels"):
        seg.segment(image, pixel_size=0.01)  # nuclei would have to be 1000 px wide


def test_diameter_is_estimated_when_not_given():
    image, truth = disks_image()
    seg = ThresholdSegmenter()
    labels, info = seg.segment(image)
    assert info["how"] == "estimated" and info["factor"] == pytest.approx(4.0, rel=0.05)
    assert seg.calls[0] == (400, 400) and seg.calls[-1] == (round(400 / info["factor"]),) * 2
    assert f1(truth, labels) == 1.0
    assert equivalent_diameters(truth) == pytest.approx(40, rel=0.03)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A smoke-trained boundary U-Net exported as a model folder (its predictions are rough)."""
    from nucseg_lib.study.study import Study

    tmp = tmp_path_factory.mktemp("exported")
    study = Study("synthetic", "smoke", out_dir=tmp / "run")
    _, _, folder = study.unet("boundary_ce:3")
    return export_model(
        tmp / "model",
        "unet_boundary",
        {"seed_threshold": 0.5, "h": None},
        [s.labels for s in study.train],
        scale=1.0,
        source=folder,
    )


def test_exported_model_folder_is_complete_and_half_precision(exported):
    import torch

    settings = read_settings(exported)
    assert settings["method"] == "unet_boundary" and settings["nucleus_diameter_px"] > 0
    state = torch.load(exported / "weights.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    seg = Segmenter(exported)
    image, _ = disks_image((128, 128), diameter=12, spacing=32)
    labels, _ = seg.segment(image, nucleus_diameter=settings["nucleus_diameter_px"])
    assert labels.shape == image.shape and labels.dtype == np.int32
    (exported.parent / "broken").mkdir()
    (exported.parent / "broken" / "nucseg-model.json").write_text("{not json")
    with pytest.raises(ModelError, match="broken/nucseg-model.json: cannot read"):
        read_settings(exported.parent / "broken")
    with pytest.raises(ModelError, match="not an exported model"):
        read_settings(exported.parent)


def test_nucseg_predict_command_batch_with_a_corrupt_file(exported, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        image, _ = disks_image((96, 128), diameter=12, spacing=32)
        tifffile.imwrite(inputs / f"good{i}.tif", image.astype(np.uint16))
    (inputs / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 10)
    out = tmp_path / "out"
    cmd = NUCSEG + ["predict", "-m", str(exported), "-o", str(out), "--nucleus-diameter", "12", str(inputs)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1, r.stderr
    assert "corrupt.tif" in r.stderr and "2 of 3 images segmented" in r.stdout
    for i in range(2):
        labels = tifffile.imread(out / f"good{i}_labels.tif")
        assert labels.shape == (96, 128) and labels.dtype == np.uint16
        table = pd.read_csv(out / f"good{i}_nuclei.csv")
        assert list(table.columns) == [
            "label",
            "area_px",
            "centroid_y",
            "centroid_x",
            "mean_intensity",
            "eccentricity",
            "solidity",
        ]
        assert len(table) == labels.max()
        assert (out / f"good{i}_overlay.png").stat().st_size > 0
    assert not (out / "corrupt_labels.tif").exists()
    (inputs / "corrupt.tif").unlink()
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and "skipping 2 of 2" in again.stdout
    bad = subprocess.run(
        NUCSEG + ["predict", "-m", str(tmp_path), "-o", str(out), "--overwrite", str(inputs)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "not an exported model" in bad.stderr
    missing = subprocess.run(
        NUCSEG + ["predict", "-m", str(exported), "-o", str(out), str(tmp_path / "nope.tif")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert missing.returncode != 0 and "nope.tif: no such file" in missing.stderr


def test_pixel_size_gives_areas_in_square_micrometres():
    from nucseg_lib.predict.segmenter import nucleus_table

    labels = np.zeros((20, 20), np.int32)
    labels[2:6, 2:7] = 1
    t = nucleus_table(labels, np.ones((20, 20)), pixel_size=0.5)
    assert t.area_px[0] == 20 and t.area_um2[0] == pytest.approx(5.0)
    assert (t.centroid_y[0], t.centroid_x[0]) == (3.5, 4.0)


PUBLISHED = REPO / "models" / "unet_boundary-coelho2009"


def _cli_labels(tmp_path, name, image, *args):
    """Run ``nucseg predict`` (as documented) on one image; returns its labels and the scale it chose."""
    import re

    folder = tmp_path / f"in-{name}"
    folder.mkdir()
    tifffile.imwrite(folder / f"{name}.tif", image)
    r = subprocess.run(
        NUCSEG + ["predict", "-o", str(tmp_path / "out"), *args, str(folder)], capture_output=True, text=True, cwd=REPO
    )
    assert r.returncode == 0, r.stdout + r.stderr
    factor = float(re.search(r"scaled by 1/([0-9.]+)", r.stdout).group(1))
    return tifffile.imread(tmp_path / "out" / f"{name}_labels.tif").astype(np.int32), factor


def _study_path_f1(segmenter, images, truths, factor):
    """Notebook 8's path: the image downscaled to the model's scale, watershed with the tuned parameters,
    scored against the downscaled ground truth."""
    from nucseg_lib.data.common import Sample, rescale_sample

    small = [
        rescale_sample(Sample(im.astype(np.float32), t, name="x", group=""), factor) for im, t in zip(images, truths)
    ]
    preds = [segmenter._instances(s.image) for s in small]
    return pool(
        evaluate_instances([s.labels for s in small], preds, [str(i) for i in range(len(small))], thresholds=(0.5,))
    ).f1.iloc[0]


@pytest.mark.slow
def test_published_model_on_a_coelho_image_at_native_size(tmp_path, coelho_test):
    settings = read_settings(PUBLISHED)
    assert settings["method"] == "unet_boundary" and settings["scale"] == 4
    size = sum(f.stat().st_size for f in PUBLISHED.rglob("*") if f.is_file())
    assert size < 10 * 2**20  # what enters git stays small (float16 weights)
    s = coelho_test[0]
    labels, factor = _cli_labels(tmp_path, "coelho", s.image.astype(np.uint8))  # nucleus size estimated
    assert labels.shape == s.image.shape and 3.0 < factor < 5.5  # near the 4x the model was trained at
    cli_f1 = f1(s.labels, labels)
    study_f1 = _study_path_f1(Segmenter(PUBLISHED), [s.image], [s.labels], 4.0)
    assert abs(cli_f1 - study_f1) <= 0.02, (cli_f1, study_f1)
    assert cli_f1 > 0.8


@pytest.mark.slow
def test_published_model_on_stardists_sample_image(tmp_path):
    from stardist.data import test_image_nuclei_2d

    from nucseg_lib.predict.segmenter import median_diameter

    image, truth = test_image_nuclei_2d(return_mask=True)
    diameter = median_diameter([truth])  # the user knows their nuclei's size
    labels, factor = _cli_labels(tmp_path, "stardist_sample", image, "--nucleus-diameter", f"{diameter:.1f}")
    seg = Segmenter(PUBLISHED)
    assert factor == pytest.approx(diameter / seg.diameter, rel=0.01)
    cli_f1 = f1(truth, labels)
    assert abs(cli_f1 - _study_path_f1(seg, [image], [truth], factor)) <= 0.02
    assert cli_f1 > 0.5


@pytest.mark.slow
def test_published_model_as_a_bioimageio_package(tmp_path):
    """The bioimage.io package passes bioimage.io's own test and predicts what nucseg's inference predicts."""
    from bioimageio.core import load_model_description, predict

    from nucseg_lib.data import synthetic
    from nucseg_lib.inference import predict_probabilities
    from nucseg_lib.predict.bioimageio import export_bioimageio, test_package

    rdf = export_bioimageio(PUBLISHED, tmp_path)
    result = test_package(rdf)
    assert result["status"] == "passed", result["details"]
    image = synthetic.load(n_train=1, n_test=0, size=256, seed=3)[0].image  # not the package's test image
    out = predict(model=load_model_description(rdf), inputs=image[None, None])
    package_probs = out.members["probabilities"].data.values[0]
    ours = predict_probabilities(Segmenter(PUBLISHED).model, image, tile=None, precision="fp32")
    assert package_probs.shape == ours.shape == (3, 256, 256)
    assert np.abs(package_probs - ours).max() < 1e-4
    assert ours[1].max() > 0.5 and ours[2].max() > 0.5  # interior and boundary both found on the nuclei


def test_only_unets_are_packaged_for_bioimageio(exported, tmp_path):
    import json
    import shutil

    from nucseg_lib.predict.bioimageio import export_bioimageio

    folder = shutil.copytree(exported, tmp_path / "as_stardist")
    settings = json.loads((folder / "nucseg-model.json").read_text())
    (folder / "nucseg-model.json").write_text(json.dumps({**settings, "method": "stardist"}))
    with pytest.raises(ValueError, match="only U-Net models can be packaged"):
        export_bioimageio(folder, tmp_path / "out")


def _fake_export(folder, method):
    """A folder with just the ``nucseg-model.json`` of an exported ``method`` model (enough to be chosen)."""
    folder.mkdir(parents=True)
    (folder / "nucseg-model.json").write_text(json.dumps({"method": method, "nucleus_diameter_px": 10.0}))
    return folder


def test_method_picks_one_model_of_a_folder_of_them(tmp_path):
    from nucseg_lib.predict.cli import UsageError, model_folder

    export = tmp_path / "export"  # what notebook 08 writes into a run: one folder per method
    boundary, stardist = (
        _fake_export(export / "unet_boundary", "unet_boundary"),
        _fake_export(export / "sd", "stardist"),
    )
    assert model_folder(export, "stardist") == stardist
    assert model_folder(export, None) == boundary  # the default method
    assert model_folder(stardist, None) == stardist and model_folder(stardist, "stardist") == stardist
    with pytest.raises(UsageError, match=r"--method unet_dice_cc: .* holds: stardist \(.*sd\), unet_boundary"):
        model_folder(export, "unet_dice_cc")
    with pytest.raises(UsageError, match="--method unet_boundary: .* holds: stardist"):
        model_folder(stardist, "unet_boundary")  # a single model folder of another method
    with pytest.raises(UsageError, match="not an exported model folder, nor a folder of them"):
        model_folder(tmp_path / "export" / "..", None)
    _fake_export(export / "another", "stardist")
    with pytest.raises(ModelError, match="another and sd are both stardist models"):
        model_folder(export, "stardist")


def test_nucseg_predict_method_lists_what_the_published_models_hold(tmp_path):
    """The published models/ holds the boundary U-Net only: --method stardist is a usage error that says so."""
    r = subprocess.run(
        NUCSEG + ["predict", "--method", "stardist", "-o", str(tmp_path / "out"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 2 and "holds no such model; it holds: unet_boundary" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()  # nothing was written
    helped = subprocess.run(NUCSEG + ["predict", "--help"], capture_output=True, text=True, cwd=REPO).stdout
    assert all(m in helped for m in ("unet_boundary", "unet_dice_cc", "stardist"))
