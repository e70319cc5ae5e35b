import zipfile

import numpy as np
import pytest
import tifffile

from nucseg_lib.data import (
    DataError,
    Sample,
    coelho,
    kromp,
    load_dataset,
    normalize_percentile,
    read_image,
    read_labels,
    synthetic,
)
from nucseg_lib.data.common import pair_by_name, split_by_name
from nucseg_lib.data.download import fetch, safe_extract_zip, sha256sum


def test_synthetic_is_deterministic_and_well_typed():
    a = synthetic.generate("clustered", 128, seed=(1, 2))
    b = synthetic.generate("clustered", 128, seed=(1, 2))
    c = synthetic.generate("clustered", 128, seed=(1, 3))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert a.image.dtype == np.float32 and a.labels.dtype == np.int32 and a.image.shape == (128, 128)
    # labels are sequential and every nucleus is one connected piece
    from skimage.measure import label

    assert set(np.unique(a.labels)) == set(range(a.labels.max() + 1))
    for lab in range(1, a.labels.max() + 1):
        assert label(a.labels == lab, connectivity=1).max() == 1


def test_synthetic_conditions_differ_as_documented():
    dense = [synthetic.generate("small_dense", 256, seed=i).n_nuclei for i in range(3)]
    sparse = [synthetic.generate("sparse", 256, seed=i).n_nuclei for i in range(3)]
    assert min(dense) > max(sparse)
    # clustered images have touching nuclei: some label pixels border another label
    s = synthetic.generate("clustered", 256, seed=0)
    from scipy import ndimage as ndi

    grown = ndi.grey_dilation(s.labels, size=3)
    touching = (s.labels > 0) & (grown != s.labels) & (grown > 0)
    assert touching.sum() > 0

    # low_snr has a lower signal-to-noise ratio than sparse
    def snr(x):
        fg, bg = x.image[x.labels > 0], x.image[x.labels == 0]
        return (fg.mean() - bg.mean()) / bg.std()

    assert snr(synthetic.generate("low_snr", 256, seed=0)) < snr(synthetic.generate("sparse", 256, seed=0))


def test_synthetic_splits_are_independent():
    a = synthetic.load(n_train=3, n_test=1, size=64)
    b = synthetic.load(n_train=3, n_test=4, size=64)
    for x, y in zip([s for s in a if s.meta["split"] == "train"], [s for s in b if s.meta["split"] == "train"]):
        assert x.name == y.name and np.array_equal(x.image, y.image)
    assert {s.group for s in b} <= set(synthetic.CONDITIONS)


def test_normalize_percentile():
    x = np.arange(1000, dtype=np.float32)
    n = normalize_percentile(x)
    assert n.dtype == np.float32
    assert np.isclose(np.percentile(n, 1), 0, atol=1e-6) and np.isclose(np.percentile(n, 99.8), 1, atol=1e-6)


@pytest.mark.parametrize(
    "image,labels,msg",
    [
        (np.random.rand(10, 10), np.zeros((10, 12), int), "differ"),
        (np.random.rand(10, 10), np.zeros((10, 10), float), "integer"),
        (np.full((10, 10), np.nan), np.zeros((10, 10), int), "NaN"),
        (np.ones((10, 10)), np.zeros((10, 10), int), "constant"),
        (np.random.rand(10, 10, 3), np.zeros((10, 10), int), "2D"),
    ],
)
def test_sample_validation_names_the_problem(image, labels, msg):
    with pytest.raises(DataError, match=msg) as err:
        Sample(image, labels, name="img-7", group="g")
    assert "img-7" in str(err.value)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.tif")
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.random.randint(0, 255, (64, 64), np.uint8))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="broken.tif"):
        read_image(broken)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    floats = tmp_path / "float_labels.tif"
    tifffile.imwrite(floats, np.random.rand(8, 8).astype(np.float32))
    with pytest.raises(DataError, match="integer"):
        read_labels(floats)


def test_multichannel_tiff_gives_channel_0(tmp_path):
    rgb = np.zeros((3, 20, 30), np.uint16)
    rgb[0] = 7
    rgb[1] = 9
    tifffile.imwrite(tmp_path / "a.tif", rgb, photometric="rgb", planarconfig="separate")
    assert (read_image(tmp_path / "a.tif") == 7).all()
    hwc = np.zeros((20, 30, 3), np.uint8)
    hwc[..., 0] = 5
    tifffile.imwrite(tmp_path / "b.tif", hwc)
    assert (read_image(tmp_path / "b.tif") == 5).all()


def test_pair_by_name(tmp_path):
    from pathlib import Path

    pairs = pair_by_name(
        [Path("x/a.tif"), Path("x/b10.tif"), Path("x/b2.tif")], [Path("y/b2.tif"), Path("y/a.tif"), Path("y/b10.tif")]
    )
    assert [p[0].stem for p in pairs] == ["a", "b2", "b10"]
    with pytest.raises(DataError, match="c.tif"):
        pair_by_name([Path("x/a.tif"), Path("x/c.tif")], [Path("y/a.tif")])


def test_split_by_name_is_stable_when_files_are_added():
    names = [f"gnf/dna-{i}" for i in range(40)]
    a = split_by_name(names, 0.2, "s")
    b = split_by_name(names + [f"gnf/dna-{i}" for i in range(40, 80)], 0.2, "s")
    assert all(a[n] == b[n] for n in names)
    assert 0.05 < sum(v == "test" for v in b.values()) / 80 < 0.4


@pytest.mark.slow
def test_coelho_loader(coelho_root):
    samples = coelho.load(coelho_root)
    assert len(samples) == 87
    assert {s.group for s in samples} == {"U2OS", "NIH3T3"}
    s = samples[0]
    assert s.image.ndim == 2 and s.image.dtype == np.float32 and s.labels.dtype == np.int32
    assert s.labels.max() > 5
    for line in ("U2OS", "NIH3T3"):
        test = [x for x in samples if x.group == line and x.meta["split"] == "test"]
        assert 0.1 <= len(test) / sum(x.group == line for x in samples) <= 0.35
    assert {x.name for x in coelho.load(coelho_root, "test")} == {x.name for x in samples if x.meta["split"] == "test"}
    small = load_dataset("coelho2009", "test", root=coelho_root, scale=4)
    assert abs(small[0].image.shape[0] - samples[0].image.shape[0] / 4) <= 1
    # a capped load (the smoke profile) keeps the first images of each split, as slicing the whole set would
    capped = coelho.load(coelho_root, max_per_split={"train": 6, "test": 3})
    first = {s.name for sp, n in (("train", 6), ("test", 3)) for s in [x for x in samples if x.meta["split"] == sp][:n]}
    assert [s.name for s in capped] == [s.name for s in samples if s.name in first]


def test_a_split_or_capped_load_reads_only_the_files_it_keeps(tmp_path, monkeypatch):
    """Loaders select files before reading pixels: the test split reads the test images only, and a cap of
    2 training and 1 test image reads those 3 files (the first of each split, in the loader's order)."""
    from nucseg_lib.data import folder
    from tests.test_folder_dataset import make_folder

    root = make_folder(tmp_path / "mine", n=10, size=64)
    every = load_dataset("folder", "all", root=root)
    train = [s.name for s in every if s.meta["split"] == "train"]
    test = [s.name for s in every if s.meta["split"] == "test"]
    read, read_image = [], folder.read_image
    monkeypatch.setattr(folder, "read_image", lambda p, channel=0: read.append(p.stem) or read_image(p, channel))
    assert [s.name for s in load_dataset("folder", "test", root=root)] == test and read == test
    read.clear()
    capped = load_dataset("folder", "all", root=root, max_per_split={"train": 2, "test": 1})
    assert sorted(s.name for s in capped) == sorted(read) == sorted(train[:2] + test[:1])
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("folder", "validation", root=root)


def _fake_kromp(root, n=12):
    (root / "rawimages").mkdir(parents=True)
    (root / "groundtruth").mkdir()
    rows = ["Image_Name;Diagnosis;Train-/Testset split"]
    rng = np.random.default_rng(0)
    for i in range(n):
        kind = ["Neuroblastoma", "normal", "Ganglioneuroblastoma"][i % 3]
        name = f"{kind}_{i}"
        img = rng.integers(0, 4000, (40, 50)).astype(np.uint16)
        if i == 0:
            img = np.stack([img, img // 2, img // 3])  # a multi-channel raw image: nuclear signal in channel 0
        rgb = dict(photometric="rgb", planarconfig="separate") if img.ndim == 3 else {}
        tifffile.imwrite(root / "rawimages" / f"{name}.tif", img, **rgb)
        lab = np.zeros((40, 50), np.uint16)
        lab[5:15, 5:15] = 1
        lab[20:30, 20:35] = 2
        tifffile.imwrite(root / "groundtruth" / f"{name}.tif", lab)
        rows.append(f"{name};{kind};{'test' if i % 4 == 0 else 'train'}")
    (root / "image_description.csv").write_text("\n".join(rows))
    return root


def test_kromp_loader_on_a_small_copy(tmp_path):
    root = _fake_kromp(tmp_path / "kromp2020")
    samples = kromp.load(root)
    assert len(samples) == 12
    first = [s for s in samples if s.name == "Neuroblastoma_0"][0]
    raw = tifffile.imread(root / "rawimages" / "Neuroblastoma_0.tif")[0]
    assert np.array_equal(first.image, raw.astype(np.float32))
    assert first.group == "Neuroblastoma" and first.n_nuclei == 2
    sugg = kromp.load(root, split="test", scheme="suggested")
    assert sorted(s.name for s in sugg) == sorted(
        f"{['Neuroblastoma', 'normal', 'Ganglioneuroblastoma'][i % 3]}_{i}" for i in range(12) if i % 4 == 0
    )
    paper_test = kromp.load(root, split="test", scheme="paper")
    assert paper_test and len(paper_test) < 12
    assert [s.name for s in paper_test] == [s.name for s in kromp.load(root, split="test")]  # fixed seed


def test_kromp_download_verifies_checksum_and_extracts_safely(tmp_path):
    src = _fake_kromp(tmp_path / "src" / "dataset")
    root = tmp_path / "kromp2020"
    root.mkdir()
    archive = root / "dataset.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in src.rglob("*"):
            if p.is_file():
                zf.write(p, p.relative_to(src.parent))
    digest = sha256sum(archive)
    data_dir = kromp.download(root, url="https://example.invalid/dataset.zip", sha256=digest)
    assert (data_dir / "rawimages").is_dir() and len(kromp.load(root)) == 12
    # a file with the wrong checksum is refused, never silently replaced
    with pytest.raises(DataError, match="SHA-256"):
        fetch("https://example.invalid/x.zip", "0" * 64, archive)
    # no network: the error says where to put the file
    with pytest.raises(DataError, match="by hand"):
        fetch("https://example.invalid/none.zip", "0" * 64, tmp_path / "none.zip")


def test_safe_extract_refuses_path_escape(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="outside"):
        safe_extract_zip(evil, tmp_path / "target")
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.zip"):
        safe_extract_zip(tmp_path / "bad.zip", tmp_path / "t2")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("nope")
    with pytest.raises(DataError, match="not a Coelho"):
        coelho.load("/nonexistent/folder")
