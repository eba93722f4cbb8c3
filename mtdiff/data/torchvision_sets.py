"""Datasets read through torchvision: ``cifar10``, ``pets`` and ``imagefolder``.

They are lazy (images decoded and resized per item) and yield the same item dict as the
embedded datasets: ``image`` float32 (3,H,W) in [-1, 1] (8-bit values, ``uint8 / 127.5 - 1``),
``label`` 0-dim int64 and, for ``pets``, ``mask`` (H,W) int64. ``root`` defaults to ``./data``.
Nothing is downloaded unless ``download=True``; missing, incomplete or corrupt files raise
:class:`~mtdiff.errors.DatasetError` naming the path that was looked at and how to obtain it.

``cifar10``
    ``torchvision.datasets.CIFAR10(root, train=split == "train")``: ``<root>/cifar-10-batches-py/``
    with ``data_batch_1..5``, ``test_batch``, ``batches.meta`` (the extracted python archive).
    torchvision checks the files' md5 sums. 32x32 (bilinear resize to other sizes), 10 classes.
``pets``
    ``torchvision.datasets.OxfordIIITPet(root, split="trainval"|"test",
    target_types=("category", "segmentation"))``: ``<root>/oxford-iiit-pet/images/*.jpg``,
    ``annotations/trimaps/*.png``, ``annotations/{trainval,test}.txt``. Label = breed (37
    classes, the official ids minus 1). The trimap (1 = pet, 2 = background, 3 = border) becomes
    the mask 0 = background, 1 = pet, 2 = border (``num_mask_classes = 3``). The image (bilinear)
    and the trimap (nearest) are resized so that the shorter side is ``image_size`` and then
    centre-cropped to a square (default 64).
``imagefolder``
    torchvision's ``ImageFolder`` layout and scan (``torchvision.datasets.folder.make_dataset``,
    same extensions), i.e. ``<root>/train/<class>/*.png|jpg``
    and ``<root>/test/<class>/...`` (e.g. ImageNet-64 with its validation set stored as ``test``).
    The class list is taken from ``<root>/train`` for both splits so that the label ids agree.
    Images are converted to RGB, resized (bilinear, shorter side) and centre-cropped (default 64).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mtdiff.data import DatasetInfo, subsample_indices
from mtdiff.errors import DatasetError

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
PETS_FOLDER = "oxford-iiit-pet"
PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
#: the 37 Oxford-IIIT Pet breeds in the order of their official class ids 1..37
PET_BREEDS = (
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle", "Bengal",
    "Birman", "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau",
    "English Cocker Spaniel", "English Setter", "German Shorthaired", "Great Pyrenees", "Havanese",
    "Japanese Chin", "Keeshond", "Leonberger", "Maine Coon", "Miniature Pinscher", "Newfoundland",
    "Persian", "Pomeranian", "Pug", "Ragdoll", "Russian Blue", "Saint Bernard", "Samoyed",
    "Scottish Terrier", "Shiba Inu", "Siamese", "Sphynx", "Staffordshire Bull Terrier",
    "Wheaten Terrier", "Yorkshire Terrier",
)  # fmt: skip
PET_MASK_NAMES = ("background", "pet", "border")
#: trimap value -> mask class (1 pet -> 1, 2 background -> 0, 3 border -> 2; anything else -> 0)
_TRIMAP_LUT = np.zeros(256, dtype=np.uint8)
_TRIMAP_LUT[1], _TRIMAP_LUT[3] = 1, 2


def _resize_center_crop(img: Image.Image, size: int, resample: int) -> Image.Image:
    """Resize so that the shorter side is ``size`` and crop the centre ``size x size``."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), resample=resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


class LazyImageDataset(Dataset):
    """A torchvision-backed split: decodes, resizes and scales one item per ``__getitem__``.

    Subclasses implement ``_raw_item(j)`` -> ``(uint8 image (3,H,W), label, uint8 mask (H,W) or
    None)`` for index ``j`` of the underlying data; ``indices`` selects the items of this split.
    Instances are picklable (DataLoader workers under the ``spawn`` start method).
    """

    def __init__(self, info: DatasetInfo, indices: np.ndarray, labels: np.ndarray) -> None:
        self.info = info
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)[self.indices])

    def _raw_item(self, j: int) -> tuple[np.ndarray, int, np.ndarray | None]:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def raw(self, i: int) -> tuple[np.ndarray, int, np.ndarray | None]:
        """Item ``i`` as uint8 numpy arrays: image (C,H,W), label, mask (H,W) or None."""
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self._raw_item(int(self.indices[i]))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, label, mask = self.raw(i)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32) / 127.5 - 1.0,
            "label": torch.tensor(int(label), dtype=torch.int64),
        }
        if mask is not None:
            item["mask"] = torch.from_numpy(mask.astype(np.int64))
        return item

    def numpy(self) -> dict[str, np.ndarray]:
        """The whole split in memory: ``images`` uint8 (N,C,H,W), ``labels`` int64, ``masks`` int64."""
        n, s, c = len(self), self.info.image_size, self.info.channels
        images = np.empty((n, c, s, s), np.uint8)
        labels = np.empty((n,), np.int64)
        masks = np.empty((n, s, s), np.int64) if "mask" in self.info.modalities else None
        for i in range(n):
            image, label, mask = self.raw(i)
            images[i], labels[i] = image, label
            if masks is not None:
                masks[i] = mask
        out = {"images": images, "labels": labels}
        if masks is not None:
            out["masks"] = masks
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name!r}, n={len(self)}, modalities={self.info.modalities})"


def _check_labels(info: DatasetInfo, labels, what: str) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise DatasetError(f"{what} holds no images; obtain the dataset again")
    if labels.min() < 0 or labels.max() >= info.num_classes:
        raise DatasetError(
            f"{what} has labels outside 0..{info.num_classes - 1} (found {labels.min()}..{labels.max()}); "
            f"the files are corrupt: delete them and obtain the dataset again"
        )
    return labels


def _ready(ds: LazyImageDataset) -> LazyImageDataset:
    ds.raw(0)  # decode one item now so that unreadable files fail at load time, not mid-training
    return ds


def _download_failed(name: str, root: Path, e: Exception, how: str) -> DatasetError:
    return DatasetError(f"downloading {name} into {root} failed ({type(e).__name__}: {e}); {how}")


# --------------------------------------------------------------------------------------------
# CIFAR-10


class CifarSplit(LazyImageDataset):
    def __init__(self, info, indices, data: np.ndarray, targets: np.ndarray) -> None:
        super().__init__(info, indices, targets)
        self.data = data  # (N, 32, 32, 3) uint8, as torchvision holds it
        self.targets = targets

    def _raw_item(self, j):
        img = self.data[j]
        size = self.info.image_size
        if size != img.shape[0]:
            img = np.asarray(_resize_center_crop(Image.fromarray(img), size, Image.BILINEAR))
        return np.ascontiguousarray(img.transpose(2, 0, 1)), int(self.targets[j]), None


def load_cifar10(*, split, image_size, root, download, seed, num_samples) -> CifarSplit:
    from torchvision.datasets import CIFAR10

    root = Path(root)
    folder = root / CIFAR_FOLDER
    how = (
        f"set data.download: true in the config, or place the folder {CIFAR_FOLDER} extracted from the "
        f"CIFAR-10 python archive ({CIFAR_URL}) under {root}"
    )
    try:
        base = CIFAR10(str(root), train=split == "train", download=download)
    except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError, pickle/OS errors, URLError
        if not folder.is_dir():
            if download:
                raise _download_failed("CIFAR-10", root, e, how) from None
            raise DatasetError(f"CIFAR-10 not found: {folder} does not exist; {how}") from None
        missing = [f for f in CIFAR_FILES if not (folder / f).is_file()]
        what = f"file {folder / missing[0]} is missing" if missing else f"{type(e).__name__}: {e}"
        raise DatasetError(
            f"CIFAR-10 at {folder} is incomplete or corrupt ({what}); delete {folder} and {how}"
        ) from None
    classes = tuple(str(c) for c in getattr(base, "classes", ()))
    data = np.asarray(base.data)
    if len(classes) != 10 or data.shape[1:] != (32, 32, 3) or data.dtype != np.uint8:
        raise DatasetError(
            f"CIFAR-10 at {folder} has an unexpected layout ({len(classes)} classes, images "
            f"{data.shape[1:]} {data.dtype}); delete {folder} and {how}"
        )
    info = DatasetInfo("cifar10", 3, image_size, 10, 0, classes, (), ("image", "label"))
    targets = _check_labels(info, base.targets, f"CIFAR-10 at {folder}")
    indices = subsample_indices(targets, targets.shape[0], num_samples, seed)
    return _ready(CifarSplit(info, indices, data, targets))


# --------------------------------------------------------------------------------------------
# Oxford-IIIT Pet


class PetsSplit(LazyImageDataset):
    def __init__(self, info, indices, labels, base, how: str) -> None:
        super().__init__(info, indices, labels)
        self.base = base  # torchvision OxfordIIITPet with target_types=("category", "segmentation")
        self.how = how

    def _raw_item(self, j):
        size = self.info.image_size
        paths = getattr(self.base, "_images", None)
        where = str(paths[j]) if paths is not None else f"item {j}"
        try:
            image, (label, trimap) = self.base[j]
            image = _resize_center_crop(image.convert("RGB"), size, Image.BILINEAR)
            trimap = _resize_center_crop(trimap, size, Image.NEAREST)
            mask = _TRIMAP_LUT[np.asarray(trimap, dtype=np.uint8)]
        except (OSError, ValueError, SyntaxError) as e:
            raise DatasetError(
                f"cannot read Oxford-IIIT Pet image {where} or its trimap ({type(e).__name__}: {e}); {self.how}"
            ) from None
        if mask.ndim != 2:
            raise DatasetError(f"the trimap of Oxford-IIIT Pet image {where} is not single-channel; {self.how}")
        return np.asarray(image).transpose(2, 0, 1).copy(), int(label), mask


def load_pets(*, split, image_size, root, download, seed, num_samples) -> PetsSplit:
    from torchvision.datasets import OxfordIIITPet

    root = Path(root)
    folder = root / PETS_FOLDER
    tv_split = "trainval" if split == "train" else "test"
    how = (
        f"set data.download: true in the config, or extract images.tar.gz and annotations.tar.gz from "
        f"{PETS_URL} into {folder} (giving {folder / 'images'} and {folder / 'annotations'})"
    )
    try:
        base = OxfordIIITPet(str(root), split=tv_split, target_types=("category", "segmentation"), download=download)
    except Exception as e:  # noqa: BLE001
        absent = [p for p in (folder / "images", folder / "annotations") if not p.is_dir()]
        if absent:
            if download:
                raise _download_failed("Oxford-IIIT Pet", root, e, how) from None
            raise DatasetError(f"Oxford-IIIT Pet not found: {absent[0]} does not exist; {how}") from None
        split_file = folder / "annotations" / f"{tv_split}.txt"
        what = f"file {split_file} is missing" if not split_file.is_file() else f"{type(e).__name__}: {e}"
        raise DatasetError(
            f"Oxford-IIIT Pet at {folder} is incomplete or corrupt ({what}); delete {folder} and {how}"
        ) from None
    info = DatasetInfo(
        "pets", 3, image_size, len(PET_BREEDS), len(PET_MASK_NAMES), PET_BREEDS, PET_MASK_NAMES,
        ("image", "label", "mask"),
    )
    labels = getattr(base, "_labels", None)
    if labels is None:  # another torchvision layout: read the labels through the public API
        labels = [base[j][1][0] for j in range(len(base))]
    labels = _check_labels(info, labels, f"Oxford-IIIT Pet at {folder} ({tv_split}.txt)")
    indices = subsample_indices(labels, labels.shape[0], num_samples, seed)
    return _ready(PetsSplit(info, indices, labels, base, how))


# --------------------------------------------------------------------------------------------
# ImageFolder


def _class_folders(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


class FolderSplit(LazyImageDataset):
    def __init__(self, info, indices, samples: list[tuple[str, int]]) -> None:
        super().__init__(info, indices, [c for _, c in samples])
        self.samples = samples

    def _raw_item(self, j):
        file, label = self.samples[j]
        try:
            with Image.open(file) as im:
                image = _resize_center_crop(im.convert("RGB"), self.info.image_size, Image.BILINEAR)
        except (OSError, ValueError, SyntaxError) as e:
            raise DatasetError(
                f"cannot read image {file} ({type(e).__name__}: {e}); replace or delete that file"
            ) from None
        return np.asarray(image).transpose(2, 0, 1).copy(), int(label), None


def load_imagefolder(*, split, image_size, root, download, seed, num_samples) -> FolderSplit:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    root = Path(root)
    path = root / split
    how = f"put the images as {root}/train/<class>/<image>.png|jpg and {root}/test/<class>/<image>.png|jpg"
    if download:
        raise DatasetError(f"dataset 'imagefolder' cannot be downloaded; set data.download: false and {how}")
    if not path.is_dir():
        raise DatasetError(f"image folder not found: {path} does not exist; {how}")
    class_dir = root / "train" if (root / "train").is_dir() else path
    classes = _class_folders(class_dir)
    if not classes:
        raise DatasetError(f"no class folders in {class_dir}; {how}")
    extra = sorted(set(_class_folders(path)) - set(classes))
    if extra:
        raise DatasetError(
            f"{path} has class folder {extra[0]!r} that {class_dir} lacks; both splits must use the classes "
            f"of {class_dir} ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
        )
    try:  # the scan of torchvision.datasets.ImageFolder, with the train split's class ids
        samples = make_dataset(
            str(path), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS, allow_empty=True
        )
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"cannot read image folder {path} ({type(e).__name__}: {e}); {how}") from None
    if not samples:
        raise DatasetError(f"no .png/.jpg images under {path}/<class>/; {how}")
    info = DatasetInfo("imagefolder", 3, image_size, len(classes), 0, tuple(classes), (), ("image", "label"))
    labels = _check_labels(info, [c for _, c in samples], f"image folder {path}")
    indices = subsample_indices(labels, labels.shape[0], num_samples, seed)
    return _ready(FolderSplit(info, indices, samples))
