import numpy as np
import pytest
import torch

from nucseg_lib import instances as I
from nucseg_lib.erf import effective_receptive_field, erf_radius, largest_nucleus_diameter
from nucseg_lib.metrics import match_image
from nucseg_lib.model import UNet
from nucseg_lib.targets import three_class
from tests.conftest import disk


def touching_pair():
    lab = np.zeros((60, 80), np.int32)
    lab[disk(lab.shape, (30, 25), 12)] = 1
    lab[disk(lab.shape, (30, 47), 12) & (lab == 0)] = 2
    return lab


def test_oracle_propagation_follows_the_paper():
    truth = touching_pair()
    mask = truth > 0  # a clumped prediction: one blob
    assert I.connected_components(mask.astype(float)).max() == 1
    oracle = I.oracle_propagation(mask, truth)
    assert np.array_equal(oracle, truth)  # the ground truth splits the blob
    # predicted pixels outside any nucleus take the nearest nucleus' label; background stays 0
    grown = np.zeros_like(mask)
    grown[10:50, 5:75] = True
    out = I.oracle_propagation(grown, truth)
    assert set(np.unique(out)) == {0, 1, 2} and (out[~grown] == 0).all() and out[30, 6] == 1 and out[30, 74] == 2
    assert I.oracle_propagation(np.zeros_like(mask), truth).max() == 0


def test_boundary_watershed_recovers_labels_from_a_perfect_three_class_map():
    truth = touching_pair()
    onehot = np.eye(3)[three_class(truth)].transpose(2, 0, 1)
    out = I.watershed_boundary(onehot)
    df = match_image(truth, out).set_index("thresh")
    assert df.loc[0.5, "tp"] == 2 and df.loc[0.5, "fp"] == 0
    assert I.remove_small(np.array([[1, 1, 2]]), 2).tolist() == [[1, 1, 0]]


def test_erf_radius_known_answers():
    delta = np.zeros((21, 21))
    delta[10, 10] = 1
    assert erf_radius(delta) == 0
    ring = np.zeros((41, 41))
    ring[disk(ring.shape, (20, 20), 8)] = 1
    assert 7 <= erf_radius(ring, mass=0.95) <= 8.5


def test_erf_is_centred_on_the_output_pixel():
    torch.manual_seed(0)
    model = UNet()
    imgs = [np.random.default_rng(i).random((64, 64)).astype(np.float32) for i in range(2)]
    centre = effective_receptive_field(model, imgs, (32, 32), 64, n_images=2)
    corner = effective_receptive_field(model, imgs, (4, 4), 64, n_images=2)
    assert centre.shape == (64, 64)
    assert np.hypot(*(np.array(np.unravel_index(centre.argmax(), centre.shape)) - 32)) < 8
    assert np.hypot(*np.unravel_index(corner.argmax(), corner.shape)) < 12
    shallow = effective_receptive_field(model, imgs, (32, 32), 64, n_images=2, layer="stem (/2)")
    deep = effective_receptive_field(model, imgs, (32, 32), 64, n_images=2, layer="layer3 (/16)")
    assert erf_radius(deep) > erf_radius(shallow)  # deeper layers see further
    assert model.training  # restored


def test_largest_nucleus_diameter():
    lab = np.zeros((50, 50), np.int32)
    lab[10:14, 5:45] = 1
    assert 39 <= largest_nucleus_diameter([lab]) <= 41.5


def test_boundary_watershed_distance_seeds_split_a_neck_the_seam_missed():
    # two discs whose boundary seam is missing: interior everywhere, boundary on the outer rim only
    truth = touching_pair()
    fg = truth > 0
    from skimage.segmentation import find_boundaries

    rim = find_boundaries(fg, mode="inner") & fg
    cls = np.where(rim, 2, fg.astype(int))
    onehot = np.eye(3)[cls].transpose(2, 0, 1)
    assert I.watershed_boundary(onehot, h=None).max() == 1  # one seed per interior region: merged
    out = I.watershed_boundary(onehot, h=2.0)
    assert match_image(truth, out).set_index("thresh").loc[0.5, "tp"] == 2
    with pytest.raises(ValueError, match="3, H, W"):
        I.watershed_boundary(onehot[:2])


def test_tune_watershed_prefers_parameters_that_split_touching_nuclei():
    truth = touching_pair()
    fg = truth > 0
    from skimage.segmentation import find_boundaries

    cls = np.where(find_boundaries(fg, mode="inner") & fg, 2, fg.astype(int))
    onehot = np.eye(3)[cls].transpose(2, 0, 1)
    best, table = I.tune_watershed([onehot], [truth], grid={"h": [None, 2.0]})
    assert best == {"h": 2.0}
    assert table.f1.iloc[0] == 1.0 and table.merged.iloc[1] == 1
