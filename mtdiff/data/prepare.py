"""Write a dataset's splits, dataset card and preview to a folder, and read the splits back.

``prepare_dataset(name, out_dir, ...)`` (what ``mtdiff data --dataset NAME --out DIR`` runs)
writes into ``out_dir``:

``train.npz``, ``test.npz``
    ``images`` uint8 (N, C, H, W) 0..255, ``labels`` int64 (N,) and ``masks`` uint8 (N, H, W)
    (int64 above 256 mask classes) where the dataset has them. The zip entries carry a fixed
    timestamp, so the same arguments give byte-identical files (and the same sha256).
``card.json``
    name, description, :class:`~mtdiff.data.DatasetInfo`, split sizes, class balance per split
    (``{class_name: count}``), mask class pixel fractions per split, seed, ``num_samples``,
    options, and the sha256 and size of each ``.npz``.
``card.md``
    The same as markdown tables.
``preview.png``
    The first ``preview_count`` training images in a grid, and beside it (when the dataset has
    masks) the same grid of masks coloured with :data:`MASK_PALETTE` (0 = background = black).
    Small images are enlarged by an integer factor (nearest) so each panel is >= 384 px wide.

Every file is written to a temporary file in ``out_dir`` and moved into place with
``os.replace``, so an interrupted run never leaves a half-written file under the final name.
``load_prepared(out_dir, split)`` reads a split back as an :class:`~mtdiff.data.ArrayDataset`
(bit-identical to ``load_dataset`` for the embedded datasets) and checks it against the card.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from mtdiff.data import SPLITS, ArrayDataset, DatasetInfo, check_split, get_spec, load_dataset
from mtdiff.errors import ConfigError, DatasetError
from mtdiff.io import atomic_open, atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 1
CARD_JSON, CARD_MD, PREVIEW = "card.json", "card.md", "preview.png"
#: mask class -> RGB in the preview (class 0, background, is black); cycles after 20 classes
MASK_PALETTE = np.array(
    [
        (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
        (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0),
        (255, 215, 180), (0, 0, 128),
    ],
    dtype=np.uint8,
)  # fmt: skip
PREVIEW_MIN_PANEL_PX = 384
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def npz_name(split: str) -> str:
    return f"{split}.npz"


def _palette(num_classes: int) -> np.ndarray:
    reps = max(1, math.ceil(num_classes / len(MASK_PALETTE)))
    pal = np.concatenate([MASK_PALETTE] + [MASK_PALETTE[1:]] * reps)
    return pal[: max(num_classes, 1)]


# --------------------------------------------------------------------------------------------
# writing


def _write_npz(f: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps (reproducible bytes)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _split_arrays(ds) -> dict[str, np.ndarray]:
    """uint8 images, int64 labels, uint8/int64 masks of a loaded split."""
    info: DatasetInfo = ds.info
    if hasattr(ds, "numpy"):
        arrays = ds.numpy()
    else:  # a generic Dataset with the common item dict
        items = [ds[i] for i in range(len(ds))]
        images = torch.stack([it["image"] for it in items])
        arrays = {"images": ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()}
        if "label" in info.modalities:
            arrays["labels"] = torch.stack([it["label"] for it in items]).numpy()
        if "mask" in info.modalities:
            arrays["masks"] = torch.stack([it["mask"] for it in items]).numpy()
    out = {"images": np.ascontiguousarray(arrays["images"], dtype=np.uint8)}
    if "labels" in arrays:
        out["labels"] = np.asarray(arrays["labels"], dtype=np.int64)
    if "masks" in arrays:
        out["masks"] = np.asarray(arrays["masks"], dtype=np.uint8 if info.num_mask_classes <= 256 else np.int64)
    return out


def _split_stats(info: DatasetInfo, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    stats: dict[str, Any] = {"size": int(arrays["images"].shape[0])}
    if "labels" in arrays:
        counts = np.bincount(arrays["labels"], minlength=info.num_classes)
        stats["class_balance"] = {name: int(counts[i]) for i, name in enumerate(info.class_names)}
    if "masks" in arrays:
        counts = np.bincount(arrays["masks"].ravel(), minlength=info.num_mask_classes).astype(np.float64)
        total = max(counts.sum(), 1.0)
        stats["mask_pixel_fractions"] = {
            name: round(float(counts[i] / total), 6) for i, name in enumerate(info.mask_class_names)
        }
    return stats


def preview_image(images: np.ndarray, masks: np.ndarray | None = None, num_mask_classes: int = 0):
    """PIL image: a grid of uint8 ``images`` (N,C,H,W) and, if given, beside it their coloured masks."""
    n, _, h, w = images.shape
    nrow = max(1, math.ceil(math.sqrt(n)))
    factor = max(1, math.ceil(PREVIEW_MIN_PANEL_PX / (nrow * w)))

    def grid(batch_u8: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(batch_u8).to(torch.float32) / 255.0
        if factor > 1:
            t = t.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        return make_grid(t, nrow=nrow, padding=2, pad_value=1.0)

    panels = [grid(images)]
    if masks is not None:
        pal = _palette(max(num_mask_classes, int(masks.max()) + 1))
        panels.append(grid(pal[masks.astype(np.int64)].transpose(0, 3, 1, 2)))
    if len(panels) > 1:
        gap = torch.ones(3, panels[0].shape[1], 8)
        panels = [panels[0], gap, panels[1]]
    canvas = torch.cat(panels, dim=2)
    arr = (canvas.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def _card_markdown(card: dict) -> str:
    info = card["info"]
    lines = [
        f"# Dataset card: {card['name']}",
        "",
        card["description"],
        "",
        "| property | value |",
        "|---|---|",
        f"| image size | {info['image_size']}x{info['image_size']} |",
        f"| channels | {info['channels']} |",
        f"| modalities | {', '.join(info['modalities'])} |",
        f"| classes | {info['num_classes']} |",
        f"| mask classes (incl. background) | {info['num_mask_classes']} |",
        f"| seed | {card['seed']} |",
        f"| num_samples | {'default (whole split)' if card['num_samples'] is None else card['num_samples']} |",
        f"| options | {json.dumps(card['options'], sort_keys=True)} |",
    ]
    lines += [f"| {s} size | {card['sizes'][s]} |" for s in SPLITS]
    splits = card["splits"]
    if "class_balance" in splits["train"]:
        lines += ["", "## Class balance", "", "| class | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
        for name in info["class_names"]:
            lines.append(f"| {name} | " + " | ".join(str(splits[s]["class_balance"][name]) for s in SPLITS) + " |")
    if "mask_pixel_fractions" in splits["train"]:
        pal = _palette(info["num_mask_classes"])
        lines += [
            "",
            "## Mask classes (fraction of pixels)",
            "",
            "| id | mask class | preview colour | " + " | ".join(SPLITS) + " |",
            "|---:|---|---|" + "---:|" * len(SPLITS),
        ]
        for i, name in enumerate(info["mask_class_names"]):
            colour = "#%02x%02x%02x" % tuple(int(v) for v in pal[i])
            fr = " | ".join(f"{splits[s]['mask_pixel_fractions'][name]:.4f}" for s in SPLITS)
            lines.append(f"| {i} | {name} | `{colour}` | {fr} |")
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---:|---|"]
    for fname, meta in card["files"].items():
        lines.append(f"| {fname} | {meta['bytes']} | `{meta['sha256']}` |")
    lines += ["", f"![preview]({PREVIEW})", ""]
    return "\n".join(lines)


def prepare_dataset(
    name: str,
    out_dir: str | Path,
    *,
    image_size: int | None = None,
    root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    num_samples: int | None = None,
    preview_count: int = 64,
    **options: Any,
) -> dict:
    """Write ``train.npz``, ``test.npz``, ``card.json``, ``card.md``, ``preview.png``; return the card."""
    spec = get_spec(name)
    if isinstance(preview_count, bool) or not isinstance(preview_count, (int, np.integer)) or preview_count < 1:
        raise ConfigError(
            f"preview_count={preview_count!r} is not accepted; accepted: a positive integer (default 64); "
            f"pass a smaller or larger number of preview images"
        )
    kwargs = dict(image_size=image_size, root=root, download=download, seed=seed, num_samples=num_samples)
    loaded = {split: load_dataset(name, split, **kwargs, **options) for split in SPLITS}
    info: DatasetInfo = loaded["train"].info
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create output folder {out} ({e}); choose another --out") from None

    files: dict[str, dict] = {}
    splits: dict[str, dict] = {}
    train_arrays = None
    for split, ds in loaded.items():
        arrays = _split_arrays(ds)
        path = out / npz_name(split)
        with atomic_open(path) as f:
            _write_npz(f, arrays)
        files[path.name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
        splits[split] = _split_stats(info, arrays)
        if split == "train":
            train_arrays = arrays

    k = min(int(preview_count), train_arrays["images"].shape[0])
    masks = train_arrays["masks"][:k] if "masks" in train_arrays else None
    img = preview_image(train_arrays["images"][:k], masks, info.num_mask_classes)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    atomic_write_bytes(out / PREVIEW, buf.getvalue())

    card = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": spec.description,
        "info": info.to_dict(),
        "image_size": info.image_size,
        "channels": info.channels,
        "num_classes": info.num_classes,
        "num_mask_classes": info.num_mask_classes,
        "class_names": list(info.class_names),
        "mask_class_names": list(info.mask_class_names),
        "modalities": list(info.modalities),
        "sizes": {s: splits[s]["size"] for s in SPLITS},
        "seed": int(seed),
        "num_samples": num_samples,
        "options": spec.check_options(options),
        "root": str(root) if spec.needs_root and root is not None else None,
        "splits": splits,
        "files": files,
        "preview": {
            "file": PREVIEW,
            "count": k,
            "mask_palette": _palette(info.num_mask_classes).tolist() if masks is not None else None,
        },
    }
    text = json.dumps(card, indent=2, sort_keys=False) + "\n"
    atomic_write_text(out / CARD_MD, _card_markdown(card))
    atomic_write_text(out / CARD_JSON, text)  # last: marks the folder complete
    return card


# --------------------------------------------------------------------------------------------
# reading


def _rerun(out: Path, name: str | None) -> str:
    return f"rerun `mtdiff data --dataset {name or '<name>'} --out {out}`"


def read_card(out_dir: str | Path) -> dict:
    """``card.json`` of a prepared folder (DatasetError if missing or unreadable)."""
    out = Path(out_dir)
    path = out / CARD_JSON
    if not path.is_file():
        raise DatasetError(f"{path} is missing: {out} is not a prepared dataset folder; {_rerun(out, None)}")
    try:
        card = json.loads(path.read_text())
        DatasetInfo.from_dict(card["info"])
        card["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path} is corrupt ({type(e).__name__}: {e}); {_rerun(out, None)}") from None
    return card


def load_prepared(out_dir: str | Path, split: str = "train", *, verify: bool = True) -> ArrayDataset:
    """Read split ``split`` written by :func:`prepare_dataset` (checks the sha256 when ``verify``)."""
    split = check_split(split)
    out = Path(out_dir)
    card = read_card(out)
    info = DatasetInfo.from_dict(card["info"])
    rerun = _rerun(out, card.get("name"))
    path = out / npz_name(split)
    if not path.is_file():
        raise DatasetError(f"{path} is missing; {rerun}")
    expected = card["files"].get(path.name, {}).get("sha256")
    if verify and expected is not None and _sha256(path) != expected:
        raise DatasetError(f"{path} does not match the sha256 in {out / CARD_JSON} (changed or truncated); {rerun}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path} is corrupt ({type(e).__name__}: {e}); {rerun}") from None
    s, c = info.image_size, info.channels
    images = arrays.get("images")
    problems = []
    if images is None or images.dtype != np.uint8 or images.shape[1:] != (c, s, s):
        found = None if images is None else (str(images.dtype), images.shape)
        problems.append(f"images {found} instead of uint8 (N,{c},{s},{s})")
    n = 0 if images is None else images.shape[0]
    for key, modality, shape in (("labels", "label", (n,)), ("masks", "mask", (n, s, s))):
        if modality in info.modalities and (key not in arrays or arrays[key].shape != shape):
            problems.append(f"{key} missing or not of shape {shape}")
    if problems:
        raise DatasetError(f"{path} does not match {out / CARD_JSON}: {problems[0]}; {rerun}")
    return ArrayDataset(
        images,
        arrays["labels"] if "label" in info.modalities else None,
        arrays["masks"] if "mask" in info.modalities else None,
        info=info,
    )
