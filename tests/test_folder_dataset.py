"""Your own annotated images as a dataset: images/ and labels/ paired by file name."""

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from nucseg_lib.data import DataError, load_dataset, synthetic


def make_folder(root, n=10, size=160, png_labels=True):
    """A folder dataset of ``n`` synthetic images: TIFF images, PNG (or TIFF) labels."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, s in enumerate(synthetic.load(n_train=n - 3, n_test=3, size=size, seed=3)):
        img = (s.image - s.image.min()) / (s.image.max() - s.image.min()) * 3000
        tifffile.imwrite(root / "images" / f"img{i:02d}.tif", img.astype(np.uint16))
        if png_labels:
            Image.fromarray(s.labels.astype(np.uint16)).save(root / "labels" / f"img{i:02d}.png")
        else:
            tifffile.imwrite(root / "labels" / f"img{i:02d}.tif", s.labels.astype(np.uint16))
    return root


def test_folder_dataset_pairs_by_name_and_splits_by_name(tmp_path):
    root = make_folder(tmp_path / "mydata")
    every = load_dataset("folder", "all", root=root)
    assert [s.name for s in every] == [f"img{i:02d}" for i in range(10)]
    train, test = load_dataset("folder", "train", root=root), load_dataset("folder", "test", root=root)
    assert len(train) + len(test) == 10 and len(test) >= 1
    # the split depends on each file's name only: removing a file moves no other one
    (root / "images" / "img00.tif").unlink()
    (root / "labels" / "img00.png").unlink()
    again = {s.name: s.meta["split"] for s in load_dataset("folder", "all", root=root)}
    assert all(again[s.name] == s.meta["split"] for s in every if s.name != "img00")
    labels = tifffile.imread(root / "images" / "img01.tif")
    assert every[1].labels.shape == labels.shape and every[1].group == "all"


def test_folder_dataset_split_csv_and_errors(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    pd.DataFrame(
        {
            "name": [f"img{i:02d}.tif" for i in range(4)],
            "split": ["train", "train", "test", "train"],
            "group": ["a", "b", "a", "b"],
        }
    ).to_csv(root / "split.csv", index=False)
    test = load_dataset("folder", "test", root=root)
    assert [s.name for s in test] == ["img02"] and test[0].group == "a"
    (root / "split.csv").write_text("name,split\nimg00,train\nimg01,validation\n")
    with pytest.raises(DataError, match=r"split.csv, line 3: split must be 'train' or 'test'"):
        load_dataset("folder", root=root)
    (root / "split.csv").write_text("name,split\nimg00,train\n")
    with pytest.raises(DataError, match=r"split.csv: no row for img01"):
        load_dataset("folder", root=root)
    (root / "split.csv").unlink()
    (root / "labels" / "img03.png").unlink()
    with pytest.raises(DataError, match=r"missing image/label pair for: .*img03.tif"):
        load_dataset("folder", root=root)
    with pytest.raises(DataError, match="empty: no images/ folder"):
        load_dataset("folder", root=tmp_path / "empty")
    bad = make_folder(tmp_path / "bad", n=4)
    tifffile.imwrite(bad / "images" / "img01.tif", np.zeros((50, 60), np.uint16))
    with pytest.raises(DataError, match="img01"):
        load_dataset("folder", root=bad)


# ---------------------------------------------------------------- data safety: nothing dropped or merged silently
def test_two_files_of_one_name_are_an_error_naming_both(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    Image.fromarray(np.zeros((160, 160), np.uint8)).save(root / "images" / "img01.png")
    with pytest.raises(DataError, match=r"img01.png and .*img01.tif|img01.tif and .*img01.png"):
        load_dataset("folder", root=root)


def test_a_name_listed_twice_in_split_csv_with_other_splits_is_an_error(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    rows = "name,split\nimg00,train\nimg01,test\nimg02,train\nimg03,train\nimg01.tif,train\n"
    (root / "split.csv").write_text(rows)
    with pytest.raises(DataError, match=r"split.csv, line 6: 'img01' is listed again with split 'train'"):
        load_dataset("folder", root=root)
    (root / "split.csv").write_text(rows.replace("img01.tif,train", "img01.tif,test"))  # a repeat that agrees
    assert [s.name for s in load_dataset("folder", "test", root=root)] == ["img01"]
