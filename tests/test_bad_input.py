"""Bad input gets a clear error naming the file and the problem; nothing is silently wrong.

One test (or more) per item of the data-safety review: labels, stacks and channels,
loss specifications, metrics inputs, probability maps, inference arguments, Kromp files.
"""

import numpy as np
import pytest
import tifffile

from nucseg_lib.data.common import DataError, Sample, as_labels, read_image, read_labels


# ---------------------------------------------------------------- label images
def test_colour_coded_label_png_gives_one_nucleus_per_colour(tmp_path):
    import imageio.v3 as iio

    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[2:10, 2:10] = (255, 0, 0)
    rgb[12:20, 2:10] = (0, 255, 0)
    rgb[22:30, 2:10] = (0, 0, 255)  # channel 0 alone would see one nucleus (and two as background)
    iio.imwrite(tmp_path / "lab.png", rgb)
    lab = read_labels(tmp_path / "lab.png")
    assert lab.dtype == np.int32 and len(np.unique(lab)) == 4 and (lab[0, 0] == 0)
    assert len({lab[5, 5], lab[15, 5], lab[25, 5]}) == 3
    grey = np.repeat((rgb.sum(axis=2) > 0).astype(np.uint8)[..., None] * 7, 3, axis=2)  # equal channels
    iio.imwrite(tmp_path / "grey.png", grey)
    assert set(np.unique(read_labels(tmp_path / "grey.png"))) == {0, 7}


def test_label_ids_beyond_int32_do_not_wrap(tmp_path):
    lab = np.zeros((20, 20), np.uint32)
    lab[1:5, 1:5] = 2**31
    lab[10:15, 10:15] = 2**31 + 2**30  # would become negative / merge after a plain int32 cast
    lab[1:5, 10:15] = 5
    tifffile.imwrite(tmp_path / "big.tif", lab)
    out = read_labels(tmp_path / "big.tif")
    assert out.min() == 0 and len(np.unique(out)) == 4
    assert len({out[2, 2], out[12, 12], out[2, 12]}) == 3
    s = Sample(np.random.rand(20, 20), lab.astype(np.uint64), "x", "g")
    assert s.labels.dtype == np.int32 and len(np.unique(s.labels)) == 4
    with pytest.raises(DataError, match="x: label image must be integer"):
        as_labels(np.full((3, 3), 0.5), "x")


def test_z_stack_tiff_is_refused_not_read_as_slice_0(tmp_path):
    stack = np.random.default_rng(0).integers(0, 255, (3, 32, 32)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "z.tif", stack, photometric="minisblack", metadata={"axes": "ZYX"})
    with pytest.raises(DataError, match=r"z.tif: a stack of 3 z-slices"):
        read_image(tmp_path / "z.tif")
    tifffile.imwrite(tmp_path / "pages.tif", stack, photometric="minisblack")
    with pytest.raises(DataError, match=r"pages.tif: a stack of 3 pages"):
        read_image(tmp_path / "pages.tif")
    tifffile.imwrite(tmp_path / "c.tif", stack, photometric="minisblack", metadata={"axes": "CYX"})  # channels are fine
    assert np.array_equal(read_image(tmp_path / "c.tif"), stack[0])


def test_rgb_image_with_signal_outside_channel_0_is_refused_with_the_channel(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 2] = np.random.default_rng(0).integers(0, 255, (32, 32))
    tifffile.imwrite(tmp_path / "blue.tif", rgb, photometric="rgb")
    with pytest.raises(DataError, match="blue.tif: channel 0 is constant.*channel=2"):
        read_image(tmp_path / "blue.tif")
    assert np.array_equal(read_image(tmp_path / "blue.tif", channel=2), rgb[..., 2])


def test_upper_case_suffixes_are_found(tmp_path):
    from nucseg_lib.data import kromp
    from tests.test_data import _fake_kromp

    root = _fake_kromp(tmp_path / "k", n=4)
    for sub in ("rawimages", "groundtruth"):
        p = root / sub / "normal_1.tif"
        p.rename(p.with_name("normal_1.TIF"))
    assert "normal_1" in {s.name for s in kromp.load(root)}


# ---------------------------------------------------------------- Kromp files
def test_corrupt_kromp_description_csv_names_the_file(tmp_path):
    from nucseg_lib.data import kromp
    from tests.test_data import _fake_kromp

    root = _fake_kromp(tmp_path / "k", n=4)
    (root / "image_description.csv").write_text("")
    with pytest.raises(DataError, match="image_description.csv: not a readable CSV"):
        kromp.load(root)


def test_failed_extraction_leaves_no_dataset_behind(tmp_path):
    import zipfile

    from nucseg_lib.data import kromp
    from nucseg_lib.data.download import safe_extract_zip
    from tests.test_data import _fake_kromp

    src = _fake_kromp(tmp_path / "src" / "dataset", n=4)
    archive = tmp_path / "dataset.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.rglob("*")):
            zf.write(f, f.relative_to(src.parent))
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        last = zf.infolist()[-1]
    # corrupt the compressed bytes of the last member (its CRC check fails during extraction)
    start = last.header_offset + 30 + len(last.filename.encode()) + len(last.extra)
    data[start : start + 8] = b"\0" * 8
    archive.write_bytes(bytes(data))
    target = tmp_path / "kromp2020"
    with pytest.raises(DataError, match="dataset.zip: extraction failed"):
        safe_extract_zip(archive, target)
    assert list(target.iterdir()) == []  # nothing half-extracted
    assert kromp._find_data_dir(target) is None


# ---------------------------------------------------------------- loss specifications
@pytest.mark.parametrize(
    "spec, msg",
    [
        ("topk:1.5", "fraction in"),
        ("bce:5", "takes no argument"),
        ("dice:foo", "takes no argument"),
        ("dice+boundary_ce", "cannot be summed"),
        ("-1*dice", "positive"),
        ("nan*dice", "positive"),
        ("dice+0*bce", "positive"),
        ("topk:-3", "positive"),
        ("boundary_ce:nan", "positive"),
        ("topk:x", "number"),
        ("topk", "number"),
    ],
)
def test_bad_loss_specs_are_refused(spec, msg):
    from nucseg_lib.losses import make_loss

    with pytest.raises(ValueError, match=msg):
        make_loss(spec)


def test_topk_in_pixels_larger_than_the_patch_is_an_error_not_clipped():
    from nucseg_lib.losses import TopKBCELoss, make_loss
    from nucseg_lib.train.unet import TrainConfig

    assert TopKBCELoss(6000).n_pixels(128 * 128) == 6000 and TopKBCELoss(0.1).n_pixels(1000) == 100
    with pytest.raises(ValueError, match="20000 pixels is more than the 16384"):
        TopKBCELoss(20000).n_pixels(128 * 128)
    with pytest.raises(ValueError, match="more than the 16384"):
        TrainConfig(loss="dice+topk:20000", patch_size=128)
    assert make_loss("dice+0.5*topk:0.1").weights == [1.0, 0.5]


def test_notebook_list_parameters_accept_papermill_text():
    from nucseg_lib.study.study import parameter_list

    assert parameter_list("[0.05, 0.3]", "k") == [0.05, 0.3]
    assert parameter_list([0.1], "k") == [0.1] and parameter_list(0.2, "k") == [0.2]
    with pytest.raises(ValueError, match="parameter k_fractions"):
        parameter_list("[0.05, 'a']", "k_fractions")
    with pytest.raises(ValueError, match="parameter k_fractions"):
        parameter_list("0.05 0.3", "k_fractions")


# ---------------------------------------------------------------- metrics inputs
def test_evaluate_instances_refuses_short_groups_and_duplicate_names():
    from nucseg_lib.metrics import evaluate_instances

    lab = np.zeros((20, 20), np.int32)
    lab[2:8, 2:8] = 1
    with pytest.raises(ValueError, match="groups has 1 entries for 2 images"):
        evaluate_instances([lab, lab], [lab, lab], ["a", "b"], groups=["g"])
    with pytest.raises(ValueError, match="unique.*'a'"):
        evaluate_instances([lab, lab], [lab, lab], ["a", "a"])


def test_match_image_refuses_a_probability_map():
    from nucseg_lib.metrics import match_image

    lab = np.zeros((20, 20), np.int32)
    lab[2:8, 2:8] = 1
    with pytest.raises(ValueError, match="pred: expected an integer label image.*float"):
        match_image(lab, lab * 0.9)


def test_nan_probability_maps_are_refused():
    from nucseg_lib.inference import foreground_probability
    from nucseg_lib.instances import connected_components, watershed_boundary

    prob = np.full((1, 20, 20), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        foreground_probability(prob)
    with pytest.raises(ValueError, match="NaN"):
        connected_components(prob[0])
    with pytest.raises(ValueError, match="NaN"):
        watershed_boundary(np.full((3, 20, 20), np.nan))
    with pytest.raises(ValueError, match="2 axes"):
        connected_components(np.zeros(20))


# ---------------------------------------------------------------- inference arguments
def test_prediction_arguments_say_what_is_wrong():
    from nucseg_lib.inference import predict_probabilities
    from nucseg_lib.model import build_model

    m = build_model(1, "scratch").eval()
    img = np.random.default_rng(0).random((100, 100)).astype(np.float32)
    with pytest.raises(ValueError, match="tile = 32 .* larger than overlap = 64"):
        predict_probabilities(m, img, tile=32, overlap=64)
    with pytest.raises(ValueError, match=r"shape \(1, 50\) is smaller than 16 pixels"):
        predict_probabilities(m, np.random.rand(1, 50))
    with pytest.raises(ValueError, match="RGB or multi-channel image: pass the nuclear channel"):
        predict_probabilities(m, np.random.rand(50, 50, 3))


def test_list_parameters_from_snakemake_config_text_are_numbers():
    from nucseg_lib.study.study import parameter_list

    # snakemake --config "k_fractions=[0.05,0.3]" hands the notebook ['0.05', '0.3']
    assert parameter_list(["0.05", "0.3"], "k_fractions") == [0.05, 0.3]
    with pytest.raises(ValueError, match="parameter k_fractions"):
        parameter_list(["0.05", "many"], "k_fractions")


def test_colour_labels_split_a_reused_colour_and_find_a_white_background(tmp_path):
    import imageio.v3 as iio

    rgb = np.full((40, 40, 3), 255, np.uint8)  # white background, no black pixel
    rgb[2:10, 2:10] = (255, 0, 0)
    rgb[30:38, 30:38] = (255, 0, 0)  # the palette's red again, for a nucleus that does not touch the first
    rgb[2:10, 30:38] = (0, 128, 0)
    iio.imwrite(tmp_path / "lab.png", rgb)
    lab = read_labels(tmp_path / "lab.png")
    assert lab[0, 0] == 0 and lab[20, 20] == 0  # white is background, not a nucleus
    assert len({lab[5, 5], lab[34, 34], lab[5, 34]}) == 3 and 0 not in {lab[5, 5], lab[34, 34], lab[5, 34]}
    assert lab.max() == 3 and (lab > 0).sum() == 3 * 64
    rgb[:] = 0  # black background: black wins even where another colour is more frequent
    rgb[:, :30] = (0, 0, 200)
    lab = read_labels_from(tmp_path, rgb)
    assert lab[0, 39] == 0 and lab.max() == 1 and (lab == 1).sum() == 40 * 30


def read_labels_from(folder, rgb):
    import imageio.v3 as iio

    iio.imwrite(folder / "again.png", rgb)
    return read_labels(folder / "again.png")
