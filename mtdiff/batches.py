"""What each training step trains on: the global batch of items, and every random draw of the
step (timesteps, noise, masked-image patterns, horizontal flips).

Seeds are paired across models: the data order depends on the seed alone (:class:`BatchStream`),
and the step's t, noise and flips on (seed, step) alone, drawn before any model-specific draw,
so seed k of ddpm and of every MT model trains on the same images, t and noise.

One rule makes DDP exact: everything random is drawn for the *global* batch from a generator
seeded by (seed, step), in the same order on every rank, and each rank takes its slice. N
processes then see exactly what one process sees with the same global batch (same items, same
t, same noise, same masks, same flips), and an interrupted run resumes bit-exactly because the
draws of step k depend on nothing but the seed and k.

    stream = BatchStream(len(dataset), batch_size=64, seed=0)
    batch = {k: v[local] for k, v in fetch(dataset, stream.batch_at(step)).items()}
    batch.update(step_randomness(model, diffusion, step, seed=0, global_batch=64,
                                 image_shape=(1, 8, 8), local=local, device=dev))
"""

from __future__ import annotations

import torch

from mtdiff.errors import ConfigError


class BatchStream:
    """Global batches of indices: a fresh seeded permutation per epoch, resumable from a step.

    Every DDP rank computes the same global batch and takes its slice, so N processes see
    exactly what one process sees with the same global batch. The epoch's permutation is kept,
    not redrawn every step (a randperm of 1.28M items costs ~11 ms).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int):
        if num_items < batch_size:
            raise ConfigError(f"train.batch_size={batch_size} is larger than the training set ({num_items} items)")
        self.n, self.batch, self.seed = num_items, batch_size, seed
        self.per_epoch = num_items // batch_size  # drop the ragged end of each epoch
        self._epoch, self._perm = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def batch_at(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.per_epoch)
        return self.permutation(epoch)[pos * self.batch : (pos + 1) * self.batch]


class StepBatches(torch.utils.data.Sampler):
    """This rank's slice of the global batch of every step in [start, stop), for a DataLoader:
    lazy (decoded-from-disk) datasets are then read by ``train.num_workers`` worker processes,
    each rank decoding only its own images."""

    def __init__(self, stream: BatchStream, start: int, stop: int, local: slice):
        self.stream, self.start, self.stop, self.local = stream, start, stop, local

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.stream.batch_at(step)[self.local].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def fetch(dataset, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Collate items ``idx``; in-memory datasets are sliced directly (no per-item overhead)."""
    if getattr(dataset, "images", None) is not None:
        out = {"image": dataset.images[idx]}
        if getattr(dataset, "labels", None) is not None:
            out["label"] = dataset.labels[idx]
        if getattr(dataset, "masks", None) is not None:
            out["mask"] = dataset.masks[idx]
        return out
    return torch.utils.data.default_collate([dataset[int(i)] for i in idx])


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of a step's draws (a function of seed and step only)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 17)


def step_randomness(model, diffusion, step: int, *, seed: int, global_batch: int, image_shape: tuple[int, ...],
                    local: slice, device: torch.device, hflip: bool = False) -> dict[str, torch.Tensor]:
    """This rank's slice of the step's random draws, made for the global batch.

    Returns ``t`` and ``noise`` (diffusion models), each modality's training draws (e.g.
    ``keep:masked_image``, the visible-pixel mask) and ``hflip`` (bool per example, when
    ``hflip``). The CPU generator draws t and the modality patterns (small); on CUDA the noise,
    the one large draw, comes from a CUDA generator seeded the same way, so no rank creates a
    global batch of noise on the host and copies it over.
    """
    g = step_generator(seed, step)
    out = {}
    # Order of the draws: what every diffusion model shares (t, noise, flips) comes first and
    # the model-specific modality draws last, so the same train.seed gives every diffusion model
    # the same images, t and noise at every step: seeds are paired across models (issue 14).
    # (An extra modality's draws before the flips would give mt_masked other flips than ddpm.)
    if diffusion is not None:
        shape = (global_batch, *image_shape)
        out["t"] = torch.randint(1, diffusion.num_steps + 1, (global_batch,), generator=g)
        if device.type == "cuda":
            gd = torch.Generator(device).manual_seed(seed * 1_000_003 + step + 17)
            out["noise"] = torch.randn(shape, generator=gd, device=device)
        else:
            out["noise"] = torch.randn(shape, generator=g)
    if hflip:
        out["hflip"] = torch.rand(global_batch, generator=g) < 0.5
    if diffusion is not None:
        for mod in getattr(model, "modalities", {}).values():
            out.update(mod.training_draws(global_batch, image_shape, g))
    return {k: v[local].to(device, non_blocking=True) for k, v in out.items()}


def apply_hflip(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mirror the flagged examples left-right: the image and its mask together (a mask stays
    aligned with its image); labels are unchanged. Pops the ``hflip`` flags."""
    out = dict(batch)
    flip = out.pop("hflip", None)
    if flip is None:
        return out
    for key in ("image", "mask"):
        if key in out:
            v = out[key]
            sel = flip.view(-1, *([1] * (v.dim() - 1)))
            out[key] = torch.where(sel, v.flip(-1), v)
    return out
