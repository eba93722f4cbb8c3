"""Generation metrics (FID, KID, precision/recall, IS) through torch-fidelity, CPU-safe and offline.

* Inputs are in-memory image sets: uint8 ``(N, C, H, W)`` in [0, 255] or float in [-1, 1]
  (``round((x + 1) * 127.5)``, clamped), ``C`` in {1, 3}; grey is repeated to 3 channels,
  which is what torch-fidelity expects.
* ``extractor="domain"`` (default) uses the mtdiff domain classifier (see
  :mod:`mtdiff.metrics.extractor`); ``extractor="inception"`` uses torch-fidelity's
  ``inception-v3-compat`` with a weights file the user supplies. Nothing is ever downloaded.
  Numbers from the two extractors (or from two different domain weights files) are not comparable.
* ``cuda`` is passed explicitly (torch-fidelity defaults to ``cuda=True``).
* Reference features/statistics are cached under ``cache_dir`` in files whose names carry the
  extractor, the SHA-256 of its weights and the SHA-256 of the reference images, so a stale
  cache cannot be hit by another reference set or another extractor.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import re
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch_fidelity
from torch.utils.data import Dataset

from mtdiff.errors import CheckpointError, ConfigError, MtdiffError, choice_error
from mtdiff.metrics.extractor import DOMAIN_EXTRACTOR_NAME, FEATURES_LAYER, LOGITS_LAYER, load_domain_classifier

#: torch-fidelity's Inception-v3 weights (the TF 2015-12-05 graph ported to PyTorch); the same
#: file is published by pytorch-fid as ``pt_inception-2015-12-05-6726825d.pth``.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)
#: torch.hub file-name convention: the suffix is the first 8 hex digits of the file's SHA-256.
#: torch-fidelity itself does not verify it, so a mismatch only warns unless ``expected_sha256``
#: is passed explicitly.
INCEPTION_SHA256_PREFIX = "6726825d"

EXTRACTORS = {"domain": DOMAIN_EXTRACTOR_NAME, "inception": "inception-v3-compat"}
METRICS = ("fid", "kid", "prc", "isc")
DEFAULT_KID_SUBSET_SIZE = 1000
MIN_SAMPLES = 2

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


class ChecksumError(MtdiffError, ValueError):
    """A weights file does not have the expected SHA-256."""


# --------------------------------------------------------------------------------------------
# inputs


def to_uint8_images(images, name: str = "images") -> torch.Tensor:
    """Validate an image set and return it as a contiguous uint8 CPU tensor ``(N, C, H, W)``.

    uint8 is taken as is; other integer types must lie in [0, 255]; floats are read as [-1, 1]
    and mapped with ``round((x + 1) * 127.5)`` clamped to [0, 255]. Float sets with values beyond
    +-10 are refused (they look like [0, 255] data), as are NaN/inf values.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not torch.is_tensor(images):
        raise ConfigError(f"{name} must be a torch.Tensor or numpy array (N, C, H, W), got {type(images).__name__}")
    images = images.detach().cpu()
    if images.dim() != 4:
        raise ConfigError(f"{name} must be (N, C, H, W) with C in {{1, 3}}, got shape {tuple(images.shape)}")
    n, c = images.shape[:2]
    if n == 0:
        raise ConfigError(f"{name} is empty (shape {tuple(images.shape)}); give at least {MIN_SAMPLES} images")
    if c not in (1, 3):
        raise ConfigError(f"{name} has {c} channels (shape {tuple(images.shape)}); accepted: 1 (grey) or 3 (RGB), channels first")
    if images.dtype == torch.uint8:
        return images.contiguous()
    if images.dtype == torch.bool:
        raise ConfigError(f"{name} is a bool tensor; give uint8 images in [0, 255] or float images in [-1, 1]")
    if not images.is_floating_point():
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise ConfigError(f"{name} is integer with values in [{lo}, {hi}]; integer images must lie in [0, 255]")
        return images.to(torch.uint8).contiguous()
    x = images.to(torch.float32)
    finite = torch.isfinite(x)
    if not finite.all():
        raise ConfigError(f"{name} contains {int((~finite).sum())} NaN/inf values; check the sampler output")
    lo, hi = float(x.min()), float(x.max())
    if lo < -10 or hi > 10:
        raise ConfigError(
            f"{name} is float with values in [{lo:.3g}, {hi:.3g}]; float images must be in [-1, 1] "
            f"(pass uint8 for [0, 255] data)"
        )
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).contiguous()


class UInt8ImageDataset(Dataset):
    """Wraps a uint8 ``(N, C, H, W)`` tensor; items are uint8 ``3 x H x W`` (grey repeated)."""

    def __init__(self, images: torch.Tensor, progress=None):
        self.images = images
        # torch-fidelity reads items in the main process (save_cpu_ram: no workers), in order, so
        # counting items read is feature-extraction progress (its own bar is off: verbose=False)
        self.progress = progress

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.progress is not None:  # by index: torch-fidelity also reads item 0 once to check its type
            self.progress.update(max(0, i + 1 - self.progress.n))
        x = self.images[i]
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def _sha256_of_tensor(x: torch.Tensor) -> str:
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (memoised by path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _check_sha256(path: Path, expected: str, option: str = "expected_sha256") -> str:
    expected = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", expected):
        raise ConfigError(f"{option}={expected!r} is not a SHA-256 hex digest (or a prefix of at least 8 hex digits)")
    actual = file_sha256(path)
    if not actual.startswith(expected):
        raise ChecksumError(
            f"weights file {str(path)!r} has SHA-256 {actual} but {option} is {expected}; "
            f"replace the file with the expected one or update {option}"
        )
    return actual


@contextlib.contextmanager
def limit_threads(num_threads: int | None):
    """Temporarily cap torch's intra-op threads and the BLAS threads numpy uses (via threadpoolctl).

    ``None`` changes nothing. On a shared 2-core machine numpy's OpenBLAS with 2 threads made
    FID/KID 3-4x slower than with 1 (its threads spin against the other processes)."""
    if num_threads is None:
        yield
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ConfigError(f"num_threads={num_threads!r} is invalid; give a positive integer or None")
    old = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # scikit-learn depends on it; without it only torch is capped
            yield
        else:
            with threadpool_limits(limits=num_threads, user_api="blas"):
                yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def full_precision_matmuls():
    """TF32 off for cuDNN convolutions and CUDA matmuls while features are extracted.

    cuDNN allows TF32 by default (and train.tf32 may have switched matmuls on in this
    process): features with a 10-bit mantissa would make a FID computed on a GPU differ from
    the same FID on a CPU, so every FID/KID is computed in full fp32 wherever it runs."""
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


# --------------------------------------------------------------------------------------------
# metrics


def _resolve_device(device: str) -> bool:
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device={device!r} is not supported by the metrics; accepted: 'cpu', 'cuda', 'cuda:N'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available here; set device='cpu'")
    return device.startswith("cuda")


def _resolve_weights(extractor: str, weights_path, expected_sha256: str | None) -> tuple[Path, str]:
    if extractor == "inception":
        how = (
            f"download torch-fidelity's Inception-v3 weights {INCEPTION_WEIGHTS_FILE} (same file as pytorch-fid's "
            f"pt_inception-2015-12-05-6726825d.pth) from {INCEPTION_WEIGHTS_URL} on a machine with network and set "
            f"feature_extractor_weights_path to that file (nothing is downloaded at run time)"
        )
    else:
        how = (
            "train the domain extractor once per dataset with mtdiff.metrics.train_domain_extractor and set "
            "feature_extractor_weights_path to the file it writes"
        )
    if weights_path is None or str(weights_path) == "":
        raise ConfigError(f"extractor={extractor!r} needs feature_extractor_weights_path; {how}")
    path = Path(weights_path)
    if not path.is_file():
        raise ConfigError(f"feature_extractor_weights_path={str(path)!r} does not exist (extractor={extractor!r}); {how}")
    if expected_sha256 is not None:
        sha = _check_sha256(path, expected_sha256)
    else:
        sha = file_sha256(path)
    if extractor == "inception":
        _check_inception_state_dict(path)
        if expected_sha256 is None and not sha.startswith(INCEPTION_SHA256_PREFIX):
            warnings.warn(
                f"{str(path)!r} has SHA-256 {sha[:16]}..., not the {INCEPTION_SHA256_PREFIX}... of "
                f"{INCEPTION_WEIGHTS_FILE}; Inception FIDs from it are not comparable with published ones",
                stacklevel=3,
            )
    return path, sha


def _check_inception_state_dict(path: Path) -> None:
    """Refuse anything but a plain Inception state dict before torch-fidelity unpickles it
    (it calls ``torch.load(..., weights_only=False)``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        ok = isinstance(state, dict) and "Conv2d_1a_3x3.conv.weight" in state and "fc.weight" in state
    except Exception:
        ok = False
    if not ok:
        raise CheckpointError(
            f"feature_extractor_weights_path={str(path)!r} is not torch-fidelity's Inception-v3 state dict; "
            f"download {INCEPTION_WEIGHTS_FILE} from {INCEPTION_WEIGHTS_URL}"
        )


def _check_metrics(metrics, prc: bool) -> list[str]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    out = []
    for m in metrics:
        if m not in METRICS:
            raise choice_error("metrics", m, METRICS)
        if m not in out:
            out.append(m)
    if prc and "prc" not in out:
        out.append("prc")
    if not out:
        raise ConfigError(f"metrics={tuple(metrics)!r} is empty; give at least one of {', '.join(METRICS)}")
    return out


def generation_metrics(
    generated,
    reference,
    *,
    extractor: str = "domain",
    weights_path: str | Path | None = None,
    metrics: Iterable[str] = ("fid", "kid"),
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    prc: bool = False,
    device: str = "cpu",
    batch_size: int = 200,
    cache_dir: str | Path | None = None,
    reference_cache_name: str | None = None,
    expected_sha256: str | None = None,
    rng_seed: int = 2020,
    num_threads: int | None = 1,
    progress: str | bool = "none",
) -> dict[str, float]:
    """FID/KID (and precision/recall, IS) of ``generated`` against ``reference``.

    Returns plain floats: ``fid``; ``kid_mean``, ``kid_std``; ``precision``, ``recall`` (when
    ``prc`` or ``"prc"`` in ``metrics``; precision = share of generated samples inside the real
    manifold); ``isc_mean``, ``isc_std`` (``"isc"``, generated set only, from the logits).

    KID uses ``kid_subsets`` subsets of ``min(kid_subset_size or 1000, N_generated, N_reference)``
    samples (seeded by ``rng_seed``). Both sets must hold at least 2 images of the same
    ``(C, H, W)``. With ``cache_dir``, the reference features are cached there under
    ``<reference_cache_name or 'ref'>-<extractor>-w<weights sha>-d<reference sha>``.

    ``num_threads`` caps torch and BLAS threads during the call (default 1: fastest for the small
    domain extractor on a shared CPU; pass ``None`` to keep the process settings, e.g. for
    Inception features on a many-core CPU).

    ``progress`` (mtdiff.progress mode): report images read for feature extraction, per set
    (a cached reference is not read, so it reports nothing).
    """
    if extractor not in EXTRACTORS:
        raise choice_error("extractor", extractor, EXTRACTORS)
    wanted = _check_metrics(metrics, prc)
    cuda = _resolve_device(device)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is invalid; give a positive integer (e.g. 200)")
    gen = to_uint8_images(generated, "generated images")
    ref = to_uint8_images(reference, "reference images")
    if gen.shape[1:] != ref.shape[1:]:
        raise ConfigError(
            f"generated images {tuple(gen.shape)} and reference images {tuple(ref.shape)} differ in (C, H, W); "
            f"generate at the reference's size and channels"
        )
    n_gen, n_ref = gen.shape[0], ref.shape[0]
    if min(n_gen, n_ref) < MIN_SAMPLES:
        raise ConfigError(
            f"need at least {MIN_SAMPLES} images in each set for FID/KID, got {n_gen} generated and {n_ref} reference"
        )
    path, wsha = _resolve_weights(extractor, weights_path, expected_sha256)

    if extractor == "domain":
        _, meta = load_domain_classifier(path)
        want = (int(meta["in_channels"]), int(meta["image_size"]), int(meta["image_size"]))
        c, h, w = gen.shape[1:]
        if (c, h, w) != want:
            raise ConfigError(
                f"images are {c}x{h}x{w} but the domain extractor {str(path)!r} was trained on "
                f"{want[0]}x{want[1]}x{want[2]} ({meta.get('dataset') or 'unknown dataset'}); use the extractor "
                f"trained for this dataset and image size"
            )

    from mtdiff.progress import Progress

    bars = [Progress(n, f"features of the {what} images", mode=progress, unit="image")
            for n, what in ((n_gen, "generated"), (n_ref, "reference"))]
    kwargs = dict(
        input1=UInt8ImageDataset(gen, bars[0]),
        input2=UInt8ImageDataset(ref, bars[1]),
        cuda=cuda,
        batch_size=batch_size,
        fid="fid" in wanted,
        kid="kid" in wanted,
        prc="prc" in wanted,
        isc="isc" in wanted,
        feature_extractor=EXTRACTORS[extractor],
        feature_extractor_weights_path=str(path),
        verbose=False,
        save_cpu_ram=True,  # in torch-fidelity 0.4 this means num_workers=0: no DataLoader worker processes
        rng_seed=rng_seed,
        cache=False,
    )
    if extractor == "domain":
        for m in ("fid", "kid", "prc"):
            kwargs[f"feature_layer_{m}"] = FEATURES_LAYER
        kwargs["feature_layer_isc"] = LOGITS_LAYER
    if "kid" in wanted:
        if kid_subset_size is not None and (not isinstance(kid_subset_size, int) or kid_subset_size < MIN_SAMPLES):
            raise ConfigError(f"kid_subset_size={kid_subset_size!r} is invalid; give an integer >= {MIN_SAMPLES} or None")
        if not isinstance(kid_subsets, int) or kid_subsets < 1:
            raise ConfigError(f"kid_subsets={kid_subsets!r} is invalid; give a positive integer (e.g. 100)")
        kwargs["kid_subset_size"] = min(kid_subset_size or DEFAULT_KID_SUBSET_SIZE, n_gen, n_ref)
        kwargs["kid_subsets"] = kid_subsets
    if "prc" in wanted and min(n_gen, n_ref) < 5:
        raise ConfigError(
            f"precision/recall needs at least 5 images per set (k=3 neighbourhoods), got {n_gen} and {n_ref}"
        )
    if cache_dir is not None:
        label = reference_cache_name or "ref"
        if not re.fullmatch(r"[A-Za-z0-9._=+-]+", label):
            raise ConfigError(
                f"reference_cache_name={label!r} must be a plain file-name part (letters, digits, . _ = + -)"
            )
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        kwargs.update(cache=True, cache_root=str(cache_dir), input2_cache_name=_cache_name(label, extractor, wsha, ref))

    try:
        with limit_threads(num_threads), full_precision_matmuls(), \
                (torch.cuda.device(torch.device(device)) if cuda else contextlib.nullcontext()):
            raw = torch_fidelity.calculate_metrics(**kwargs)
    except MtdiffError:
        raise
    except ValueError as e:  # torch-fidelity's vassert
        raise MtdiffError(f"torch-fidelity rejected the inputs: {e}") from e
    finally:
        for bar in bars:
            bar.close()

    out: dict[str, float] = {}
    if "fid" in wanted:
        out["fid"] = float(raw[torch_fidelity.KEY_METRIC_FID])
    if "kid" in wanted:
        out["kid_mean"] = float(raw[torch_fidelity.KEY_METRIC_KID_MEAN])
        out["kid_std"] = float(raw[torch_fidelity.KEY_METRIC_KID_STD])
    if "prc" in wanted:
        out["precision"] = float(raw[torch_fidelity.KEY_METRIC_PRECISION])
        out["recall"] = float(raw[torch_fidelity.KEY_METRIC_RECALL])
    if "isc" in wanted:
        out["isc_mean"] = float(raw[torch_fidelity.KEY_METRIC_ISC_MEAN])
        out["isc_std"] = float(raw[torch_fidelity.KEY_METRIC_ISC_STD])
    return out


def _cache_name(label: str, extractor: str, weights_sha: str, reference: torch.Tensor) -> str:
    """torch-fidelity's cache name of a reference set: the set's label, the extractor, and the
    hashes of the weights and of the images, so stale features can never be matched."""
    return f"{label}-{extractor}-w{weights_sha[:16]}-d{_sha256_of_tensor(reference)[:16]}"


def reference_cache_files(cache_dir: str | Path, reference, *, extractor: str = "domain",
                          weights_path: str | Path | None = None, reference_cache_name: str | None = None,
                          expected_sha256: str | None = None) -> tuple[str, list[Path]]:
    """(cache name, files already cached) of ``reference`` under ``cache_dir``, as
    ``generation_metrics`` would name them: torch-fidelity writes ``<name>-<extractor>-features-*``
    and ``<name>-<extractor>-stat-fid-*`` there (atomically)."""
    if extractor not in EXTRACTORS:
        raise choice_error("extractor", extractor, EXTRACTORS)
    _, wsha = _resolve_weights(extractor, weights_path, expected_sha256)
    name = _cache_name(reference_cache_name or "ref", extractor, wsha, to_uint8_images(reference, "reference images"))
    return name, sorted(Path(cache_dir).glob(f"{glob.escape(name)}-*.pt")) if Path(cache_dir).is_dir() else []


def gaussian_baseline(images, n: int, seed: int = 0, chunk: int = 4096) -> torch.Tensor:
    """The "trivially bad generator": ``n`` samples of an independent-pixel Gaussian fitted to ``images``.

    Per-pixel (and per-channel) mean and standard deviation are estimated on the uint8 scale,
    samples are drawn with a seeded generator, rounded and clipped to [0, 255]. Returns uint8
    ``(n, C, H, W)``. The moments are accumulated in float64 over chunks of ``chunk`` images,
    so memory does not grow with the number of images fitted (a float64 copy of ImageNet's
    1.28M training images would take about 126 GB).
    """
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r} is invalid; give a positive number of samples")
    total, s1, s2 = 0, None, None
    for start in range(0, len(images), chunk):
        x = to_uint8_images(images[start : start + chunk], "training images").to(torch.float64)
        s1 = x.sum(0) if s1 is None else s1 + x.sum(0)
        s2 = x.pow(2).sum(0) if s2 is None else s2 + x.pow(2).sum(0)
        total += len(x)
    if not total:
        raise ConfigError("the Gaussian baseline needs at least one training image")
    mean = s1 / total
    std = (s2 / total - mean.pow(2)).clamp_min(0).sqrt()
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn((n, *mean.shape), generator=g, dtype=torch.float64)
    return (mean + std * z).round().clamp(0, 255).to(torch.uint8)
