"""Tests of mtdiff.data: embedded datasets, torchvision-backed loaders on fabricated files in
their exact on-disk formats, errors, and prepared splits. No test touches the network."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtdiff.data import (
    DATASETS,
    ArrayDataset,
    DatasetInfo,
    dataset_names,
    load_dataset,
    stratified_order,
)
from mtdiff.data.embedded import generate_shapes
from mtdiff.data.prepare import load_prepared, prepare_dataset
from mtdiff.errors import ConfigError, DatasetError

EMBEDDED = {"digits": {}, "shapes": {"num_samples": 300}, "mnist5k": {}}


# --------------------------------------------------------------------------------------------
# fixtures: tiny datasets in torchvision's on-disk formats


@pytest.fixture(autouse=True)
def data_no_downloads(monkeypatch):
    """Belt and braces: any torchvision download attempt in this file fails instead of going online."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.oxford_iiit_pet as tv_pets

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", refuse)
    monkeypatch.setattr(tv_pets, "download_and_extract_archive", refuse)


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def data_fake_cifar(tmp_path: Path) -> Path:
    """``<root>/cifar-10-batches-py`` as in the python archive: pickled dicts with ``data``
    (N, 3072) uint8 rows (R, G, B planes of 32x32) and ``labels``, plus ``batches.meta``."""
    root = tmp_path / "cifar_root"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = 20 if name != "test_batch" else 30
        labels = [int(x) for x in np.arange(n) % 10]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, :1024] = np.asarray(labels, dtype=np.uint8)[:, None] * 20  # red plane encodes the label
        entry = {"batch_label": f"fake {name}", "labels": labels, "data": data, "filenames": [f"{j}.png" for j in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": 20, "num_vis": 3072}, f)
    return root


@pytest.fixture
def data_skip_cifar_md5(monkeypatch):
    """torchvision checks each CIFAR-10 file against the md5 of the real archive, which fabricated
    files cannot match. Replace that check by an existence check; everything else (pickle
    format, reshaping, metadata) runs torchvision's real code."""
    import torchvision.datasets.cifar as tv_cifar

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(tv_cifar, "check_integrity", exists)


PET_ITEMS = {
    # image id: (official class id 1..37, species 1 cat / 2 dog, breed id within species)
    "trainval": [("Abyssinian_1", 1, 1, 1), ("Abyssinian_2", 1, 1, 1), ("american_bulldog_1", 2, 2, 1),
                 ("american_bulldog_2", 2, 2, 1), ("yorkshire_terrier_1", 37, 2, 25)],
    "test": [("Abyssinian_3", 1, 1, 1), ("yorkshire_terrier_2", 37, 2, 25), ("Bengal_1", 6, 1, 2)],
}  # fmt: skip


@pytest.fixture
def data_fake_pets(tmp_path: Path) -> Path:
    """``<root>/oxford-iiit-pet`` as torchvision reads it: ``images/<id>.jpg``,
    ``annotations/trimaps/<id>.png`` (1 pet, 2 background, 3 border) and
    ``annotations/{trainval,test}.txt`` with lines ``<id> <class id> <species> <breed id>``."""
    root = tmp_path / "pets_root"
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, items in PET_ITEMS.items():
        with open(base / "annotations" / f"{split}.txt", "w") as f:
            for image_id, cls, species, breed in items:
                f.write(f"{image_id} {cls} {species} {breed}\n")
                h, w = 30, 40  # landscape, to exercise resize + centre crop
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(base / "images" / f"{image_id}.jpg")
                tri = np.full((h, w), 2, np.uint8)  # background
                tri[5:25, 10:30] = 3  # border ring
                tri[8:22, 13:27] = 1  # pet
                Image.fromarray(tri, mode="L").save(base / "annotations" / "trimaps" / f"{image_id}.png")
    return root


@pytest.fixture
def data_fake_folder(tmp_path: Path) -> Path:
    """An ImageFolder: ``<root>/train/<class>/*.png|jpg`` and ``<root>/test/<class>/...``;
    the test split lacks the class ``ant`` so its ids must still follow the train classes."""
    root = tmp_path / "folder_root"
    rng = np.random.default_rng(2)
    layout = {"train": {"ant": 3, "bee": 2, "cat": 4}, "test": {"bee": 2, "cat": 1}}
    for split, classes in layout.items():
        for cls, n in classes.items():
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(root / "train" / "bee" / "gray.png")
    return root


# --------------------------------------------------------------------------------------------
# registry, info


def test_registry_lists_all_datasets():
    assert dataset_names() == sorted(["digits", "shapes", "mnist5k", "cifar10", "pets", "imagefolder"])
    for name, spec in DATASETS.items():
        assert spec.name == name and "image" in spec.modalities and spec.description
        assert spec.min_image_size <= spec.default_image_size <= spec.max_image_size
    assert not DATASETS["digits"].needs_root and DATASETS["cifar10"].needs_root


def test_info_to_dict_is_json_and_round_trips():
    info = load_dataset("digits", "test", num_samples=5).info
    d = json.loads(json.dumps(info.to_dict()))
    assert DatasetInfo.from_dict(d) == info
    assert (info.channels, info.image_size, info.num_classes, info.num_mask_classes) == (1, 16, 10, 11)
    assert info.mask_class_names[0] == "background" and len(info.mask_class_names) == 11


# --------------------------------------------------------------------------------------------
# embedded datasets


@pytest.mark.parametrize("name", list(EMBEDDED))
@pytest.mark.parametrize("split", ["train", "test"])
def test_embedded_items_shapes_dtypes_ranges(name, split):
    ds = load_dataset(name, split, **EMBEDDED[name])
    info = ds.info
    assert isinstance(ds, ArrayDataset) and info.name == name
    s, c = info.image_size, info.channels
    assert ds.images.dtype == torch.float32 and ds.images.shape == (len(ds), c, s, s)
    assert ds.images.min() >= -1 and ds.images.max() <= 1 and ds.images.min() == -1
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (len(ds),)
    assert 0 <= ds.labels.min() and ds.labels.max() < info.num_classes
    assert ds.masks.dtype == torch.int64 and ds.masks.shape == (len(ds), s, s)
    assert 0 <= ds.masks.min() and ds.masks.max() < info.num_mask_classes
    item = ds[3]
    assert set(item) == {"image", "label", "mask"}
    assert item["image"].shape == (c, s, s) and item["image"].dtype == torch.float32
    assert item["label"].shape == () and item["label"].dtype == torch.int64
    assert item["mask"].shape == (s, s) and item["mask"].dtype == torch.int64
    arrays = ds.numpy()
    assert arrays["images"].dtype == np.uint8 and arrays["images"].shape == (len(ds), c, s, s)
    # images are 8-bit values: numpy() and back is exact
    assert torch.equal(torch.from_numpy(arrays["images"]).float() / 127.5 - 1, ds.images)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, c, s, s) and batch["label"].shape == (4,) and batch["mask"].shape == (4, s, s)


def test_split_sizes_and_defaults():
    assert (len(load_dataset("digits", "train")), len(load_dataset("digits", "test"))) == (1437, 360)
    assert (len(load_dataset("mnist5k", "train")), len(load_dataset("mnist5k", "test"))) == (4000, 1000)
    assert len(load_dataset("shapes", "test")) == 1000
    assert load_dataset("mnist5k", "test", num_samples=3).info.image_size == 28
    assert load_dataset("shapes", "test", num_samples=3).images.shape == (3, 3, 32, 32)
    assert load_dataset("digits", "test", image_size=32).images.shape == (360, 1, 32, 32)
    assert load_dataset("mnist5k", "test", image_size=16, num_samples=10).masks.shape == (10, 16, 16)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_digit_masks_are_label_plus_one(name):
    for split in ("train", "test"):
        ds = load_dataset(name, split)
        expected = (ds.labels + 1)[:, None, None].expand_as(ds.masks)
        nonzero = ds.masks != 0
        assert torch.equal(ds.masks[nonzero], expected[nonzero])
        assert nonzero.flatten(1).any(1).all()  # every digit has stroke pixels
        # the mask is the thresholded intensity: stroke pixels are brighter than background ones
        intensity = (ds.images[:, 0] + 1) / 2
        assert intensity[nonzero].min() > 0.49 and intensity[~nonzero].max() < 0.51


def test_mask_threshold_option():
    low = load_dataset("digits", "test", mask_threshold=0.2)
    high = load_dataset("digits", "test", mask_threshold=0.8)
    assert (low.masks > 0).sum() > (high.masks > 0).sum() > 0
    assert torch.equal(low.images, high.images)


def test_shapes_label_is_class_with_most_visible_pixels():
    ds = load_dataset("shapes", "train", num_samples=2000)
    counts = torch.stack([(ds.masks == c).flatten(1).sum(1) for c in (1, 2, 3)], 1)
    assert (counts.gather(1, ds.labels[:, None]) > 0).all()  # the label class is in the mask
    assert torch.equal(counts.argmax(1), ds.labels)  # and has the most pixels (ties: lower class)
    assert torch.equal(counts.max(1).values, counts.gather(1, ds.labels[:, None])[:, 0])
    # all classes occur as labels, roughly balanced; shapes are visible (enough pixels)
    balance = torch.bincount(ds.labels, minlength=3)
    assert balance.min() > 0.25 * len(ds)
    assert counts.sum(1).min() >= 20
    # shapes stand out: mean colour distance between shape and background pixels is large
    img = (ds.images + 1) / 2
    fg = ds.masks > 0
    fg_mean = (img * fg[:, None]).sum((2, 3)) / fg.sum((1, 2))[:, None]
    bg_mean = (img * ~fg[:, None]).sum((2, 3)) / (~fg).sum((1, 2))[:, None]
    assert (fg_mean - bg_mean).norm(dim=1).median() > 0.3


def test_shapes_options_and_sizes():
    one = load_dataset("shapes", "train", num_samples=200, max_shapes=1)
    nshapes = torch.stack([(one.masks == c).flatten(1).any(1) for c in (1, 2, 3)], 1).sum(1)
    assert nshapes.max() == 1
    big = load_dataset("shapes", "test", num_samples=5, image_size=64)
    assert big.images.shape == (5, 3, 64, 64) and big.masks.shape == (5, 64, 64)


def test_determinism_same_args_same_bytes():
    for name, kw in EMBEDDED.items():
        a, b = load_dataset(name, "test", seed=3, **kw).numpy(), load_dataset(name, "test", seed=3, **kw).numpy()
        for key in a:
            assert a[key].tobytes() == b[key].tobytes(), (name, key)


def test_shapes_seeds_and_splits_differ():
    a = load_dataset("shapes", "train", num_samples=100, seed=0)
    b = load_dataset("shapes", "train", num_samples=100, seed=1)
    t = load_dataset("shapes", "test", num_samples=100, seed=0)
    assert not torch.equal(a.images, b.images)
    assert not torch.equal(a.images, t.images)
    # no scene of the train split appears in the test split
    flat_a = {bytes(x) for x in a.numpy()["images"].reshape(100, -1)}
    assert not flat_a & {bytes(x) for x in t.numpy()["images"].reshape(100, -1)}
    # a smaller num_samples is a prefix of a larger one
    more = load_dataset("shapes", "train", num_samples=300, seed=0)
    assert torch.equal(more.images[:100], a.images) and torch.equal(more.masks[:100], a.masks)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_fixed_split_is_stratified_and_seed_independent(name):
    train, test = load_dataset(name, "train"), load_dataset(name, "test")
    n_train = torch.bincount(train.labels, minlength=10)
    n_test = torch.bincount(test.labels, minlength=10)
    ideal = (n_train + n_test).double() * 0.2
    assert ((n_test.double() - ideal).abs() <= 1).all()
    # seed only reorders a split, it never changes which items are in it
    other = load_dataset(name, "test", seed=7)
    assert not torch.equal(other.labels, test.labels)
    key = lambda ds: sorted(bytes(x) for x in ds.numpy()["images"].reshape(len(ds), -1))  # noqa: E731
    assert key(other) == key(test)


def test_digits_train_and_test_are_disjoint():
    # at 8x8 the images are the raw sklearn digits (all 1,797 distinct), so bytes identify items
    tr = {bytes(x) for x in load_dataset("digits", "train", image_size=8).numpy()["images"].reshape(1437, -1)}
    te = {bytes(x) for x in load_dataset("digits", "test", image_size=8).numpy()["images"].reshape(360, -1)}
    assert len(tr) == 1437 and len(te) == 360 and not tr & te


def test_num_samples_is_a_stratified_prefix():
    full = load_dataset("digits", "train", seed=5)
    sub = load_dataset("digits", "train", seed=5, num_samples=100)
    assert torch.equal(full.images[:100], sub.images) and torch.equal(full.labels[:100], sub.labels)
    counts = torch.bincount(sub.labels, minlength=10).double()
    ideal = torch.bincount(full.labels, minlength=10).double() * 100 / len(full)
    assert ((counts - ideal).abs() <= 1).all()
    assert len(load_dataset("digits", "test", num_samples=10_000)) == 360  # larger than the split: all of it
    order = stratified_order(np.repeat(np.arange(3), [50, 30, 20]), 100, seed=0)
    assert sorted(order.tolist()) == list(range(100))


def test_shapes_ten_thousand_scenes():
    images, labels, masks = generate_shapes(10_000, 32, seed=0, split="train")
    assert images.shape == (10_000, 3, 32, 32) and labels.shape == (10_000,) and masks.shape == (10_000, 32, 32)
    assert images.dtype == np.uint8 and masks.max() == 3


# --------------------------------------------------------------------------------------------
# errors


def test_unknown_dataset_lists_accepted_names():
    with pytest.raises(ConfigError) as e:
        load_dataset("imagenet")
    msg = str(e.value)
    assert "'imagenet'" in msg and all(n in msg for n in dataset_names()) and "\n" not in msg


@pytest.mark.parametrize("size", [0, 4, 7, 10, 130, 256, -16, True, "16", 16.0])
def test_bad_image_size(size):
    with pytest.raises(ConfigError) as e:
        load_dataset("digits", image_size=size)
    assert repr(size) in str(e.value) and "8 to 128" in str(e.value)


def test_bad_split_num_samples_seed_and_options():
    with pytest.raises(ConfigError, match="'val'.*test, train"):
        load_dataset("digits", "val")
    with pytest.raises(ConfigError, match="num_samples=0"):
        load_dataset("digits", num_samples=0)
    with pytest.raises(ConfigError, match="seed=-1"):
        load_dataset("digits", seed=-1)
    with pytest.raises(ConfigError) as e:
        load_dataset("shapes", max_shape=2)
    assert "'max_shape'" in str(e.value) and "max_shapes" in str(e.value)
    with pytest.raises(ConfigError, match="'mask_threshold'.*accepted: none"):
        load_dataset("cifar10", mask_threshold=0.5)
    with pytest.raises(ConfigError, match="max_shapes=4"):
        load_dataset("shapes", max_shapes=4, num_samples=2)
    with pytest.raises(ConfigError, match="mask_threshold=1.5"):
        load_dataset("digits", mask_threshold=1.5)


# --------------------------------------------------------------------------------------------
# torchvision-backed datasets on fabricated files


def test_cifar10_fake_files(data_fake_cifar, data_skip_cifar_md5):
    train = load_dataset("cifar10", "train", root=data_fake_cifar)
    test = load_dataset("cifar10", "test", root=data_fake_cifar)
    assert (len(train), len(test)) == (100, 30)
    assert train.info.class_names == tuple(CIFAR_CLASSES) and train.info.modalities == ("image", "label")
    item = train[0]
    assert set(item) == {"image", "label"} and item["image"].shape == (3, 32, 32)
    assert item["image"].dtype == torch.float32 and -1 <= item["image"].min() and item["image"].max() <= 1
    # the red plane was set to label * 20: the channel layout and the label survive the loader
    for i in range(len(test)):
        it = test[i]
        red = torch.round((it["image"][0] + 1) * 127.5)
        assert (red == int(it["label"]) * 20).all()
    small = load_dataset("cifar10", "train", root=data_fake_cifar, image_size=16, num_samples=20)
    assert len(small) == 20 and small[5]["image"].shape == (3, 16, 16)
    assert torch.equal(torch.bincount(small.labels, minlength=10), torch.full((10,), 2))


def test_cifar10_missing_names_path(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", root=tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg and "data.download: true" in msg


def test_cifar10_download_failure_is_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="downloading CIFAR-10 into .* failed"):
        load_dataset("cifar10", root=tmp_path, download=True)


def test_cifar10_incomplete_and_corrupt(data_fake_cifar, data_skip_cifar_md5):
    folder = data_fake_cifar / "cifar-10-batches-py"
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])  # truncated pickle
    with pytest.raises(DatasetError, match="incomplete or corrupt"):
        load_dataset("cifar10", "train", root=data_fake_cifar)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", "train", root=data_fake_cifar)
    assert str(folder / "data_batch_2") in str(e.value)


def test_cifar10_md5_mismatch_without_patch(data_fake_cifar):
    # torchvision's real md5 check rejects fabricated files; that must be a DatasetError too
    with pytest.raises(DatasetError, match="incomplete or corrupt"):
        load_dataset("cifar10", "test", root=data_fake_cifar)


def test_pets_fake_files(data_fake_pets):
    train = load_dataset("pets", "train", root=data_fake_pets, image_size=16)
    test = load_dataset("pets", "test", root=data_fake_pets, image_size=16)
    assert (len(train), len(test)) == (5, 3)
    info = train.info
    assert (info.num_classes, info.num_mask_classes) == (37, 3)
    assert info.mask_class_names == ("background", "pet", "border") and info.class_names[36] == "Yorkshire Terrier"
    assert sorted(train.labels.tolist()) == [0, 0, 1, 1, 36] and sorted(test.labels.tolist()) == [0, 5, 36]
    item = train[0]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (16, 16) and item["mask"].dtype == torch.int64
    mask = item["mask"]
    assert set(mask.unique().tolist()) == {0, 1, 2}
    assert mask[8, 8] == 1 and mask[0, 0] == 0  # centre is pet, corner background
    arrays = test.numpy()
    assert arrays["images"].dtype == np.uint8 and arrays["masks"].shape == (3, 16, 16)
    assert torch.equal(pickle.loads(pickle.dumps(test))[1]["mask"], test[1]["mask"])
    assert load_dataset("pets", "test", root=data_fake_pets)[0]["image"].shape == (3, 64, 64)


def test_pets_missing_and_corrupt(data_fake_pets, tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("pets", root=tmp_path / "empty")
    assert str(tmp_path / "empty" / "oxford-iiit-pet" / "images") in str(e.value)
    base = data_fake_pets / "oxford-iiit-pet"
    (base / "annotations" / "test.txt").write_text("Abyssinian_3 1\n")  # malformed line
    with pytest.raises(DatasetError, match="incomplete or corrupt"):
        load_dataset("pets", "test", root=data_fake_pets)
    (base / "annotations" / "test.txt").unlink()
    with pytest.raises(DatasetError, match="test.txt is missing"):
        load_dataset("pets", "test", root=data_fake_pets)
    ds = load_dataset("pets", "train", root=data_fake_pets, image_size=16)
    (base / "images" / "yorkshire_terrier_1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="yorkshire_terrier_1.jpg"):
        [ds[i] for i in range(len(ds))]


def test_imagefolder_fake_files(data_fake_folder):
    train = load_dataset("imagefolder", "train", root=data_fake_folder, image_size=16)
    test = load_dataset("imagefolder", "test", root=data_fake_folder, image_size=16)
    assert train.info.class_names == ("ant", "bee", "cat") and test.info.class_names == ("ant", "bee", "cat")
    assert (len(train), len(test)) == (10, 3)
    assert sorted(test.labels.tolist()) == [1, 1, 2]  # ids follow the train classes
    assert all(train[i]["image"].shape == (3, 16, 16) for i in range(len(train)))  # gray PNG -> RGB
    assert set(train[0]) == {"image", "label"}
    # picklable, for DataLoader workers started with "spawn"
    again = pickle.loads(pickle.dumps(train))
    assert torch.equal(again[4]["image"], train[4]["image"]) and again.info == train.info


def test_imagefolder_errors(data_fake_folder, tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("imagefolder", root=tmp_path / "none")
    assert str(tmp_path / "none" / "train") in str(e.value)
    with pytest.raises(DatasetError, match="cannot be downloaded"):
        load_dataset("imagefolder", root=data_fake_folder, download=True)
    bad = data_fake_folder / "test" / "bee" / "0.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError) as e:
        ds = load_dataset("imagefolder", "test", root=data_fake_folder, image_size=16)
        [ds[i] for i in range(len(ds))]
    assert str(bad) in str(e.value)


# --------------------------------------------------------------------------------------------
# prepared splits


def test_prepare_and_load_prepared_round_trip(tmp_path):
    out = tmp_path / "prep"
    card = prepare_dataset("digits", out, num_samples=100, preview_count=16)
    names = {p.name for p in out.iterdir()}
    assert names == {"train.npz", "test.npz", "card.json", "card.md", "preview.png"}  # no temp files left
    on_disk = json.loads((out / "card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert card["sizes"] == {"train": 100, "test": 100} and card["num_classes"] == 10
    assert sum(card["splits"]["train"]["class_balance"].values()) == 100
    assert abs(sum(card["splits"]["test"]["mask_pixel_fractions"].values()) - 1) < 1e-4
    assert card["options"] == {"mask_threshold": 0.5} and len(card["files"]["train.npz"]["sha256"]) == 64
    assert "| 0 |" in (out / "card.md").read_text()
    for split in ("train", "test"):
        back = load_prepared(out, split)
        direct = load_dataset("digits", split, num_samples=100)
        assert back.info == direct.info
        assert torch.equal(back.images, direct.images) and torch.equal(back.labels, direct.labels)
        assert torch.equal(back.masks, direct.masks)
    with Image.open(out / "preview.png") as im:
        im.load()
        assert im.mode == "RGB" and im.width >= 256
    # same arguments -> byte-identical files
    card2 = prepare_dataset("digits", tmp_path / "again", num_samples=100, preview_count=16)
    assert card2["files"] == card["files"]
    assert (tmp_path / "again" / "preview.png").read_bytes() == (out / "preview.png").read_bytes()


def test_prepare_shapes_and_lazy_datasets(tmp_path, data_fake_pets, data_fake_cifar, data_skip_cifar_md5):
    card = prepare_dataset("shapes", tmp_path / "s", num_samples=40)
    assert card["sizes"] == {"train": 40, "test": 40}
    assert torch.equal(load_prepared(tmp_path / "s", "test").masks, load_dataset("shapes", "test", num_samples=40).masks)
    card = prepare_dataset("pets", tmp_path / "p", root=data_fake_pets, image_size=16)
    back = load_prepared(tmp_path / "p", "train")
    assert back.masks.shape == (5, 16, 16) and card["splits"]["train"]["class_balance"]["Abyssinian"] == 2
    direct = load_dataset("pets", "train", root=data_fake_pets, image_size=16)
    assert torch.equal(back.images[0], direct[0]["image"]) and torch.equal(back.masks[0], direct[0]["mask"])
    card = prepare_dataset("cifar10", tmp_path / "c", root=data_fake_cifar, num_samples=20)
    back = load_prepared(tmp_path / "c", "test")
    assert back.masks is None and back.labels.shape == (20,) and "mask_pixel_fractions" not in card["splits"]["test"]
    with Image.open(tmp_path / "c" / "preview.png") as im:
        assert im.width >= 256


def test_load_prepared_errors(tmp_path):
    with pytest.raises(DatasetError, match="card.json is missing.*mtdiff data"):
        load_prepared(tmp_path / "nothing", "train")
    out = tmp_path / "prep"
    prepare_dataset("digits", out, num_samples=20, preview_count=4)
    (out / "test.npz").unlink()
    with pytest.raises(DatasetError) as e:
        load_prepared(out, "test")
    assert str(out / "test.npz") in str(e.value) and "mtdiff data --dataset digits" in str(e.value)
    raw = (out / "train.npz").read_bytes()
    (out / "train.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="sha256"):
        load_prepared(out, "train")
    with pytest.raises(DatasetError, match="corrupt"):
        load_prepared(out, "train", verify=False)
    (out / "card.json").write_text("{not json")
    with pytest.raises(DatasetError, match="card.json is corrupt"):
        load_prepared(out, "train")
    with pytest.raises(ConfigError, match="preview_count=0"):
        prepare_dataset("digits", tmp_path / "x", preview_count=0)
