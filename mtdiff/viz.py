"""Pictures of samples: uint8 conversion, coloured masks, labelled grids (PNG via PIL)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

# Fixed mask palette: 0 = background (black), then well-separated colours (tab20-like).
_PALETTE = np.array(
    [[0, 0, 0], [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
     [174, 199, 232], [255, 187, 120], [152, 223, 138], [255, 152, 150], [197, 176, 213]],
    dtype=np.uint8,
)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 0..255 (same rounding everywhere: metrics and pictures)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def colorize_masks(masks: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, H, W) class ids -> (N, 3, H, W) uint8 colours from the fixed palette."""
    m = np.asarray(masks, dtype=np.int64)
    colours = _PALETTE[m % len(_PALETTE)]  # N, H, W, 3
    return torch.from_numpy(colours).permute(0, 3, 1, 2).contiguous()


def sample_grid(images_u8: torch.Tensor, masks=None, labels=None, class_names=None, *, nrow: int = 8,
                min_cell: int = 48) -> Image.Image:
    """Grid of images (uint8 N,C,H,W); each mask shown coloured to the right of its image;
    labels written under each cell."""
    x = images_u8
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    cells = [x] if masks is None else [x, colorize_masks(masks)]
    cell = torch.cat(cells, dim=3)  # image | mask side by side
    scale = max(1, -(-min_cell // cell.shape[2]))
    cell = cell.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    text_h = 12 if labels is not None else 0
    if text_h:
        cell = torch.cat([cell, torch.zeros(cell.shape[0], 3, text_h, cell.shape[3], dtype=torch.uint8)], dim=2)
    grid = make_grid(cell, nrow=nrow, padding=2, pad_value=255)
    img = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if labels is not None:
        draw = ImageDraw.Draw(img)
        h, w = cell.shape[2], cell.shape[3]
        for i, lab in enumerate(np.asarray(labels).tolist()):
            r, c = divmod(i, nrow)
            name = class_names[lab] if class_names is not None and 0 <= lab < len(class_names) else str(lab)
            draw.text((2 + c * (w + 2) + 2, 2 + r * (h + 2) + h - text_h), str(name), fill=(255, 255, 0))
    return img


def pair_grid(left_u8: torch.Tensor, right_u8: torch.Tensor, left_captions, right_captions, *,
              pairs_per_row: int = 4, min_cell: int = 48) -> Image.Image:
    """Grid of image pairs (uint8 N,C,H,W each): pair i is left[i] beside right[i], each with
    its caption (e.g. a generated sample with its distance, and its nearest training image)."""
    if left_u8.shape != right_u8.shape or len(left_captions) != len(left_u8) or len(right_captions) != len(right_u8):
        raise ValueError(f"pair_grid needs as many left as right images and captions, got {tuple(left_u8.shape)}, "
                         f"{tuple(right_u8.shape)}, {len(left_captions)} and {len(right_captions)} captions")
    images = torch.stack([left_u8, right_u8], dim=1).flatten(0, 1)  # l0, r0, l1, r1, ...
    captions = [c for pair in zip(left_captions, right_captions) for c in pair]
    return sample_grid(images, labels=np.array(captions, dtype=object), nrow=2 * pairs_per_row, min_cell=min_cell)
