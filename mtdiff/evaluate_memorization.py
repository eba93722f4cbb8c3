"""``mtdiff evaluate memorization``: is a generated set closer to the training images than real
data is? (docs/method.md, "Memorization check", eqs. M1-M3; :mod:`mtdiff.metrics.memorization`)

    mtdiff evaluate memorization --samples results/digits/samples/ddpm/seed0 \
        --extractor-weights results/digits/extractor/domain.pt \
        --out results/digits/metrics/memo_ddpm_seed0.jsonl --grid results/digits/metrics/memo_ddpm_seed0.png
    mtdiff evaluate memorization-anchors --config config/runs/digits.yaml \
        --extractor-weights results/digits/extractor/domain.pt --out results/digits/metrics/memo_anchors.jsonl

Records (one per set and space): ``memorized_fraction`` (eq. M3) and ``nn_distance_ratio``
(median nearest-training distance, samples / test), in pixels (extractor null) and in the FID
extractor's features (extractor named as in the FID records); ``n_reference`` is the number of
training images searched, ``extra`` holds the threshold tau (eq. M2), the percentile, the test
split's size and a one-sided binomial p-value against the percentile. The anchors are
``real_floor`` (the test split: about the percentile, by construction) and ``copier`` (training
images: 100%, by construction). ``--grid``: the closest (sample, nearest training image) pairs
in pixels, with their distances.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mtdiff.errors import ConfigError
from mtdiff.metrics.records import metric_record, ran_with
from mtdiff.metrics.memorization import DEFAULT_PERCENTILE, closest_pairs, copier_images, memorization, nearest_training

DEFAULT_GRID_PAIRS = 32
# Training (and test) images searched, at most: the first of the split's class-stratified order
# (mtdiff.data), so a large split is never decoded whole (ImageNet-64's 1.28M training images
# would take ~63 GB as floats). Digits (1,437), CIFAR-10 (50,000): every training image. Where
# the cap bites, only copies of the searched images are detected, which records state
# (n_reference is the number searched).
MAX_SPLIT_IMAGES = 50_000
# Metric records of the check; the extra keys of the summary that go into every record.
METRICS = ("memorized_fraction", "nn_distance_ratio")
EXTRA_KEYS = ("threshold", "percentile", "median_distance", "test_median_distance", "binomial_p", "n_test")


def extractor_features(cfg, weights, images) -> tuple[np.ndarray, str]:
    """(features, extractor name) of ``images`` by the extractor the FID uses: the same
    torch-fidelity feature extractor and layer (``get_default_feature_layer_for_metric("fid")``)
    on the same uint8 images (:func:`mtdiff.metrics.fidelity.to_uint8_images`), so "features"
    here are the FID's features."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    from mtdiff.evaluate import _extractor
    from mtdiff.metrics.fidelity import (EXTRACTORS, UInt8ImageDataset, _resolve_weights, full_precision_matmuls,
                                         limit_threads, to_uint8_images)

    kind, path, name = _extractor(cfg, weights)
    path, _ = _resolve_weights(kind, path, cfg.eval.feature_extractor_sha256 if kind == "inception" else None)
    fe_name = EXTRACTORS[kind]
    layer = FEATURE_EXTRACTORS_REGISTRY[fe_name].get_default_feature_layer_for_metric("fid")
    # as the FID jobs: the GPU when there is one and the run may use it, else one CPU thread
    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    with limit_threads(None if cuda else 1), full_precision_matmuls():
        fe = create_feature_extractor(fe_name, [layer], cuda=cuda, feature_extractor_weights_path=str(path),
                                      verbose=False)
        feats = get_featuresdict_from_dataset(UInt8ImageDataset(to_uint8_images(images)), fe, batch_size=200,
                                              cuda=cuda, save_cpu_ram=True, verbose=False)[layer]
    return feats.double().numpy(), name


class MemorizationSpaces:
    """The training and test images of a run config, in pixels and (given an extractor) in
    features, with the test images' nearest-training distances computed once per space, so
    several generated sets (the anchors) are checked against them without repeating work."""

    def __init__(self, cfg, weights=None, *, features: bool = True, max_images: int = MAX_SPLIT_IMAGES):
        from mtdiff.train import load_split

        self.cfg, self.weights = cfg, weights
        self.train = load_split(cfg, "train", in_memory=True, max_items=max_images).images
        self.test = load_split(cfg, "test", in_memory=True, max_items=max_images).images
        self.spaces: dict[str | None, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # extractor -> train, test, d
        self._add(None, self.train, self.test)
        if features:
            train_f, name = extractor_features(cfg, weights, self.train)
            test_f, _ = extractor_features(cfg, weights, self.test)
            self._add(name, train_f, test_f)

    def _add(self, extractor, train, test) -> None:
        test_d, _ = nearest_training(test, train, name="test images")
        self.spaces[extractor] = (train, test, test_d)

    def check(self, images, percentile: float) -> dict[str | None, dict]:
        """eqs. M1-M3 for ``images`` in every space: extractor name (None: pixels) -> summary."""
        out = {}
        for extractor, (train, test, test_d) in self.spaces.items():
            x = images if extractor is None else extractor_features(self.cfg, self.weights, images)[0]
            out[extractor] = memorization(x, train, test, percentile=percentile, test_distances=test_d)
        return out


def _records(results: dict, common: dict, extra: dict, wall: float) -> list[dict]:
    records = []
    for extractor, res in results.items():
        for metric in METRICS:
            records.append(metric_record(**common, reference_split="train", n_reference=res["n_train"], extractor=extractor,
                                   n_generated=res["n_samples"], metric=metric, value=res[metric], wall_time_s=wall,
                                   extra=dict(extra, **{k: res[k] for k in EXTRA_KEYS})))
    return records


def write_pair_grid(images, train, result: dict, out, *, k: int = DEFAULT_GRID_PAIRS) -> Path:
    """PNG of the ``k`` samples closest to a training image (pixels), each beside that image;
    captions: the sample's distance (d<tau marked with *) and the training image's index."""
    from mtdiff.io import atomic_path
    from mtdiff.metrics.fidelity import to_uint8_images
    from mtdiff.viz import pair_grid

    order = closest_pairs(result["distances"], k)
    nearest = result["nearest"][order]
    left = to_uint8_images(torch.as_tensor(np.asarray(images)[order]), "samples")
    right = to_uint8_images(torch.as_tensor(np.asarray(train)[nearest]), "training images")
    tau = result["threshold"]
    captions = [f"{d:.2f}{'*' if d < tau else ''}" for d in result["distances"][order]]
    grid = pair_grid(left, right, captions, [f"#{i}" for i in nearest])
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG")
    return Path(out)


def _check_options(percentile: float, grid_pairs: int) -> float:
    if not 0 < percentile < 100:
        raise ConfigError(f"--percentile={percentile!r} is not accepted; accepted: a number strictly between 0 and 100")
    if isinstance(grid_pairs, bool) or not isinstance(grid_pairs, int) or grid_pairs < 1:
        raise ConfigError(f"--grid-pairs={grid_pairs!r} is not accepted; accepted: a positive number of pairs")
    return float(percentile)


def memorization_of_samples(samples, out, *, weights=None, grid=None, grid_pairs: int = DEFAULT_GRID_PAIRS,
                            percentile: float = DEFAULT_PERCENTILE, features: bool = True, append=False,
                            overrides: list[str] | None = None) -> list[dict]:
    """The check for one sample folder (``mtdiff sample``'s samples.npz), pixels and features."""
    from mtdiff.evaluate import _guidance_fields, _run_config, _samples, _write

    percentile = _check_options(percentile, grid_pairs)
    arrays, meta = _samples(samples)
    cfg = _run_config(meta["run"], overrides)
    t0 = time.time()
    spaces = MemorizationSpaces(cfg, weights, features=features)
    results = spaces.check(arrays["images"], percentile)
    wall = time.time() - t0
    common = dict(dataset=meta["dataset"], model=meta["model"], seed=meta["train_seed"],
                  checkpoint_step=meta["checkpoint_step"], ema=meta["ema"], sampler=meta["sampler"], nfe=meta["nfe"],
                  **ran_with(meta))
    extra = {"condition": meta["condition"], "sample_seed": meta["seed"], **_guidance_fields(meta)}
    records = _records(results, common, extra, wall)
    if grid is not None:
        write_pair_grid(arrays["images"], spaces.train, results[None], grid, k=grid_pairs)
    _write(records, out, append)
    return records


def memorization_anchors(cfg, out, *, weights=None, grid=None, grid_pairs: int = DEFAULT_GRID_PAIRS,
                         percentile: float = DEFAULT_PERCENTILE, features: bool = True, seed: int = 0,
                         append=False) -> list[dict]:
    """The anchors, checked exactly like a model's samples: ``real_floor`` (the whole test
    split: the set tau is calibrated on, so about ``percentile``% by construction) and
    ``copier`` (eval.num_samples training images drawn with ``seed``, like a generated set of
    a model that returns training images: distance 0, so 100% by construction). ``grid``: the
    test split's closest pairs (what "close" looks like between real digits)."""
    from mtdiff.evaluate import _write

    percentile = _check_options(percentile, grid_pairs)
    t0 = time.time()
    spaces = MemorizationSpaces(cfg, weights, features=features)
    copied, copied_idx = copier_images(spaces.train, cfg.eval.num_samples, seed=seed)
    records = []
    for model, images, split in (("real_floor", spaces.test, "test"), ("copier", copied, "train")):
        t1 = time.time()
        results = spaces.check(images, percentile)
        if model == "real_floor" and grid is not None:
            write_pair_grid(images, spaces.train, results[None], grid, k=grid_pairs)
        wall = time.time() - t1 + (t1 - t0 if model == "real_floor" else 0.0)  # set-up counted once
        no_network = dict(precision=None, device=None)  # anchors: no network ran
        extra = {"images_from": split, **({"copier_seed": seed} if model == "copier" else {})}
        records += _records(results, dict(dataset=cfg.data.dataset, model=model, seed=0, **no_network), extra, wall)
    _write(records, out, append)
    return records


def add_memorization_parser(ev) -> None:
    """``mtdiff evaluate memorization`` and ``memorization-anchors`` (called from
    mtdiff.evaluate.add_evaluate_parser)."""
    from mtdiff.config import load_config

    def common(q):
        q.add_argument("--out", required=True, help="JSONL records file to write")
        q.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
        q.add_argument("--extractor-weights", help="domain extractor weights (the FID's features)")
        q.add_argument("--pixels-only", action="store_true", help="skip the feature space (no extractor needed)")
        q.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                       help="percentile of the test split's nearest-training distances used as threshold (0-100)")
        q.add_argument("--grid", help="PNG of the closest (image, nearest training image) pairs, in pixels")
        q.add_argument("--grid-pairs", type=int, default=DEFAULT_GRID_PAIRS, help="pairs in --grid")
        q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="run-config values on top of the run's config.yaml (the workflow passes the current ones)")

    q = ev.add_parser("memorization", help="memorized fraction of a sample folder (pixels and features)")
    q.add_argument("--samples", required=True, help="sample folder (samples.npz, sample.json)")
    common(q)
    q.set_defaults(func=lambda a: memorization_of_samples(
        a.samples, a.out, weights=a.extractor_weights, grid=a.grid, grid_pairs=a.grid_pairs, percentile=a.percentile,
        features=not a.pixels_only, append=a.append, overrides=a.overrides))

    q = ev.add_parser("memorization-anchors", help="memorized fraction of the test split and of a training-image copier")
    q.add_argument("--config", help="run config YAML (its data and eval sections)")
    q.add_argument("--seed", type=int, default=0, help="seed of the copier's draw of training images")
    common(q)
    q.set_defaults(func=lambda a: memorization_anchors(
        load_config(a.config, a.overrides), a.out, weights=a.extractor_weights, grid=a.grid, grid_pairs=a.grid_pairs,
        percentile=a.percentile, features=not a.pixels_only, seed=a.seed, append=a.append))
