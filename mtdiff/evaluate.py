"""``mtdiff evaluate``: measure and write protocol-stamped metric records (JSONL).

    mtdiff evaluate extractor   --config config/runs/digits.yaml --out results/digits/extractor/domain.pt
    mtdiff evaluate anchors     --config config/runs/digits.yaml --extractor-weights .../domain.pt --out anchors.jsonl
    mtdiff evaluate generation  --samples results/digits/samples/ddpm/seed0 --extractor-weights ... --out fid.jsonl
    mtdiff evaluate task        --run results/digits/train/mt_label/seed0 --task label --out acc.jsonl
    mtdiff evaluate conditional --samples .../samples_cond/mt_label/seed0 --judge .../train/classifier/seed0 --out c.jsonl
    mtdiff evaluate coherence   --samples .../samples/mt_all/seed0 --label-judge ... --mask-judge ... --out j.jsonl
    mtdiff evaluate curve       --run .../train/mt_label/seed0 --extractor-weights ... --out curve.jsonl
    mtdiff evaluate reference   --config config/runs/digits.yaml --extractor-weights ... --cache-dir DIR --out DIR/reference.json

With ``--cache-dir`` the reference split's features are read from (or first written to) that
folder; ``evaluate reference`` fills it once per (dataset, extractor, split) so every FID job of
the workflow reuses it, and each record names the cache it used (``extra.reference_cache``).
    mtdiff evaluate inpainting  --mt-run .../mt_masked/seed0 --baseline-run .../ddpm/seed0 --out inp.jsonl
    mtdiff evaluate representation --run .../train/mt_repr/seed0 --extractor-weights ... --out repr.jsonl
    mtdiff evaluate memorization --samples .../samples/ddpm/seed0 --extractor-weights ... --out m.jsonl --grid m.png
    mtdiff evaluate memorization-anchors --config config/runs/digits.yaml --extractor-weights ... --out ma.jsonl

Every record carries the protocol (mtdiff.metrics.records.PROTOCOL_FIELDS): dataset, model,
seed, checkpoint step, EMA, sampler and NFE, N generated, reference split and N, extractor,
metric, value, wall time, and the precision and device the measured network ran in
(:func:`mtdiff.metrics.records.metric_record` builds every record). Each command writes its
``--out`` file atomically (``--append`` adds to it instead). Generation metrics use the domain extractor unless the config says
``eval.extractor: inception`` with a local weights file.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# The generation metrics and the domain extractor are reached as `metrics.<name>`: mtdiff.metrics
# imports torch-fidelity (seconds) on first use of one of them only, so `evaluate task` and
# `evaluate conditional` never pay for it (PEP 562, mtdiff/metrics/__init__.py).
from mtdiff import metrics
from mtdiff.config import RunConfig, config_from_dict, load_config, merge, parse_overrides
from mtdiff.errors import ConfigError
from mtdiff.io import atomic_write_text
from mtdiff.metrics.records import MetricRecord, append_records, metric_record, ran_with
from mtdiff.metrics.task import classification_metrics, segmentation_metrics
from mtdiff.predict import predict_split
from mtdiff.progress import add_progress_argument
from mtdiff.checkpoints import list_checkpoints, load_run, read_checkpoint, read_run_config
from mtdiff.train import load_split

INCEPTION_NAME = "inception-v3-compat"
# Training images the independent-pixel Gaussian anchor is fitted to, at most (its per-pixel
# mean and std are then known to well under one grey level).
GAUSSIAN_FIT_IMAGES = 50_000


# ---------------------------------------------------------------------------------------------
# helpers


def _write(records: list[dict], out: str | Path, append: bool = False) -> None:
    records = [MetricRecord.from_dict(r) for r in records]  # validates every protocol field
    if append:
        append_records(out, records)
    else:
        atomic_write_text(out, "".join(json.dumps(r.to_dict()) + "\n" for r in records))
    print(f"wrote {len(records)} record(s) to {out}: " + ", ".join(f"{r.metric}={r.value:.4g}" for r in records if r.value is not None))


def _guidance_fields(meta: dict) -> dict:
    """The guidance a sample folder was generated with (sample.json; older folders: none)."""
    return {"guidance": meta.get("guidance", "none"), "guidance_scale": meta.get("guidance_scale", 0.0)}


def _samples(folder: str | Path) -> tuple[dict, dict]:
    folder = Path(folder)
    npz, meta = folder / "samples.npz", folder / "sample.json"
    if not npz.is_file() or not meta.is_file():
        raise ConfigError(f"{str(folder)!r} holds no samples (samples.npz and sample.json); run mtdiff sample first")
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    if len(arrays.get("images", [])) == 0:
        raise ConfigError(f"{str(npz)!r} holds no images")
    return arrays, json.loads(meta.read_text())


def _extractor(cfg: RunConfig, weights: str | Path | None) -> tuple[str, str | Path, str]:
    """(kind for metrics.generation_metrics, weights path, extractor name for records)."""
    if cfg.eval.extractor == "inception":
        return "inception", cfg.eval.feature_extractor_weights_path, INCEPTION_NAME
    if weights is None:
        raise ConfigError("--extractor-weights is required for the domain extractor (train it: mtdiff evaluate extractor)")
    return "domain", weights, metrics.DOMAIN_EXTRACTOR_NAME


def _fidelity(cfg: RunConfig, images, reference, weights, cache_dir=None, cache_name=None,
              progress="none") -> tuple[dict, str, float, dict]:
    """(metric values, extractor name, wall s, cache fields for the records' extra)."""
    kind, path, name = _extractor(cfg, weights)
    cache = {}
    if cache_dir is not None:
        sha = cfg.eval.feature_extractor_sha256 if kind == "inception" else None
        full, files = metrics.reference_cache_files(cache_dir, reference, extractor=kind, weights_path=path,
                                            reference_cache_name=cache_name, expected_sha256=sha)
        cache = {"reference_cache": str(Path(cache_dir) / full), "reference_cache_hit": bool(files)}
    t0 = time.time()
    # features on the GPU when there is one (torch-fidelity's cuda flag follows the device);
    # on CPU one thread, measured fastest for the small domain extractor on a shared machine
    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    values = metrics.generation_metrics(
        images, reference, extractor=kind, weights_path=path, metrics=("fid", "kid"), prc=cfg.eval.prc,
        kid_subset_size=cfg.eval.kid_subset_size, expected_sha256=cfg.eval.feature_extractor_sha256 if kind == "inception" else None,
        cache_dir=cache_dir, reference_cache_name=cache_name, device="cuda" if cuda else "cpu",
        num_threads=None if cuda else 1, progress=progress,
    )
    return values, name, time.time() - t0, cache


def _reference(cfg: RunConfig) -> torch.Tensor:
    return load_split(cfg, cfg.eval.reference_split, in_memory=True).images


def _load_judge(run, kind: str):
    model, _, cfg, info, state = load_run(run, device="cpu")
    if model.kind != kind:
        raise ConfigError(f"judge {str(run)!r} is a {model.kind}, a {kind} is needed")
    return model


def _to_float(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_u8).float() / 127.5 - 1


# ---------------------------------------------------------------------------------------------
# commands


def train_extractor(cfg: RunConfig, out: str | Path) -> dict:
    """Train the domain feature extractor of ``cfg.data`` (fixed recipe, seed 0)."""
    train, test = load_split(cfg, "train", in_memory=True), load_split(cfg, "test", in_memory=True)
    if train.labels is None:
        raise ConfigError(f"dataset {train.info.name!r} has no labels to train the domain extractor; use eval.extractor=inception")
    meta = metrics.train_domain_extractor(train.images, train.labels, num_classes=train.info.num_classes, out_path=out, seed=0,
                                  steps=cfg.eval.extractor_steps, dataset=train.info.name, val_images=test.images,
                                  val_labels=test.labels)
    print(f"wrote {out} (domain extractor: train accuracy {meta['train_accuracy']:.4f}, "
          f"test accuracy {meta.get('val_accuracy', float('nan')):.4f}, {meta.get('train_time_s', 0):.0f} s)")
    return meta


def anchors(cfg: RunConfig, weights, out, *, append=False, cache_dir=None, progress="none") -> list[dict]:
    """FID/KID anchors computed exactly like a model's: the real-data floor (the other split vs
    the reference split) and a trivially bad generator (independent-pixel Gaussian)."""
    ref_split = cfg.eval.reference_split
    other = "test" if ref_split == "train" else "train"
    reference = _reference(cfg)
    # Bounded work at any scale: the real-data floor compares eval.num_samples real images (the
    # other split's class-stratified first items, like a model's eval.num_samples samples), and
    # the Gaussian is fitted to at most GAUSSIAN_FIT_IMAGES training images (digits: all 1,437;
    # ImageNet-64: 50,000 of 1.28M, in chunks), never a whole large split decoded in memory.
    real = load_split(cfg, other, in_memory=True, max_items=cfg.eval.num_samples).images
    train = load_split(cfg, "train", in_memory=True, max_items=GAUSSIAN_FIT_IMAGES).images
    records = []
    for model, images, split in (("real_floor", real, other),
                                 ("gaussian_baseline", metrics.gaussian_baseline(train, cfg.eval.num_samples, seed=0), "train")):
        values, name, wall, cache = _fidelity(cfg, images, reference, weights, cache_dir,
                                              f"{cfg.data.dataset}-{ref_split}", progress)
        for metric, value in values.items():
            # no network made these images: precision and device do not apply
            records.append(metric_record(dataset=cfg.data.dataset, model=model, seed=0, n_generated=int(len(images)),
                                         reference_split=ref_split, n_reference=int(len(reference)), extractor=name,
                                         metric=metric, value=value, wall_time_s=wall, precision=None, device=None,
                                         extra={"images_from": split, **cache}))
    _write(records, out, append)
    return records


def generation(samples, weights, out, *, metric_prefix: str = "", append=False, cache_dir=None,
               config: RunConfig | None = None, progress="none", overrides: list[str] | None = None) -> list[dict]:
    """FID/KID (precision/recall) of a sample folder against the reference split (``out``
    None: the records are returned, not written)."""
    arrays, meta = _samples(samples)
    cfg = config or _run_config(meta["run"], overrides)
    reference = _reference(cfg)
    values, name, wall, cache = _fidelity(cfg, arrays["images"], reference, weights, cache_dir,
                                          f"{cfg.data.dataset}-{cfg.eval.reference_split}", progress)
    records = [
        metric_record(dataset=meta["dataset"], model=meta["model"], seed=meta["train_seed"],
                      checkpoint_step=meta["checkpoint_step"], ema=meta["ema"], sampler=meta["sampler"], nfe=meta["nfe"],
                      n_generated=int(len(arrays["images"])), reference_split=cfg.eval.reference_split,
                      n_reference=int(len(reference)), extractor=name, metric=metric_prefix + metric, value=value,
                      wall_time_s=wall, **ran_with(meta),
                      extra={"condition": meta["condition"], "eta": meta["eta"], "sample_seed": meta["seed"],
                       "images_seen": meta.get("images_seen"), **_guidance_fields(meta), **cache})
        for metric, value in values.items()
    ]
    if out is not None:
        _write(records, out, append)
    return records


def _run_config(run, overrides: list[str] | None = None) -> RunConfig:
    """The run's saved config with ``overrides`` (``KEY=VALUE`` pairs, as ``--set``) on top.

    The workflow passes the current values of the sections a job reads (eval, inference,
    sample): a run folder keeps those of training time, so without them a job rerun after a
    config edit would measure with the old values."""
    run = Path(run)
    saved = run / "config.yaml" if run.is_dir() else None
    if saved is not None and saved.exists():
        values = read_run_config(saved)  # one-line error naming the file if invalid
    else:
        values = read_checkpoint(run)["config"]
    if overrides:
        values = merge(values, parse_overrides(overrides))
    return config_from_dict(values)


def task(run, task_name: str, out, *, procedure=None, split="test", append=False, seed=0,
         overrides: list[str] | None = None) -> list[dict]:
    """Accuracy (labels) or mean IoU and pixel accuracy (masks) of a model on a real split."""
    pred_file = Path(out).with_suffix(f".{task_name}.npz")
    inf = _run_config(run, overrides).inference
    proto = predict_split(run, pred_file, task=task_name, split=split, procedure=procedure, seed=seed,
                          t_infer=inf.t_infer, num_draws=inf.num_draws, elbo_timesteps=inf.elbo_timesteps)
    with np.load(pred_file) as data:
        true, pred = data["true"], data["pred"]
    _, _, cfg, info, _ = load_run(run)
    common = dict(dataset=proto["dataset"], model=proto["model"], seed=proto["train_seed"],
                  checkpoint_step=proto["checkpoint_step"], ema=proto["ema"], reference_split=split,
                  n_reference=proto["n"], wall_time_s=proto["wall_s"], **ran_with(proto))
    extra = {"procedure": proto["procedure"], "t_infer": proto["t_infer"], "num_draws": proto["num_draws"]}
    if task_name == "label":
        m = classification_metrics(true, pred, info.num_classes)
        records = [metric_record(**common, metric="accuracy", value=m["accuracy"],
                           extra=dict(extra, per_class=m["per_class_accuracy"], confusion_matrix=m["confusion_matrix"]))]
    else:
        m = segmentation_metrics(true, pred, info.num_mask_classes)
        records = [metric_record(**common, metric="miou", value=m["mean_iou"], extra=dict(extra, per_class=m["per_class_iou"])),
                   metric_record(**common, metric="pixel_accuracy", value=m["pixel_accuracy"], extra=extra)]
    _write(records, out, append)
    return records


def conditional(samples, judge, out, *, append=False) -> list[dict]:
    """Conditional accuracy: samples generated given class k, judged by a trained classifier."""
    arrays, meta = _samples(samples)
    if "label" not in arrays or meta["condition"] in ("none", None):
        raise ConfigError(f"{str(samples)!r} was not generated given labels (--condition label=...)")
    clf = _load_judge(judge, "classifier")
    t0 = time.time()
    with torch.no_grad():
        pred = clf(_to_float(arrays["images"])).argmax(-1).numpy()
    m = classification_metrics(arrays["label"], pred, clf.label.num_classes)
    # the measured network is the generator (sample.json); the judge is a fixed fp32 instrument
    rec = metric_record(dataset=meta["dataset"], model=meta["model"], seed=meta["train_seed"],
                        checkpoint_step=meta["checkpoint_step"], ema=meta["ema"], sampler=meta["sampler"], nfe=meta["nfe"],
                        n_generated=int(len(pred)), metric="cond_accuracy", value=m["accuracy"],
                        wall_time_s=time.time() - t0, **ran_with(meta),
                        extra={"condition": meta["condition"], "judge": str(judge), "per_class": m["per_class_accuracy"],
                         **_guidance_fields(meta)})
    _write([rec], out, append)
    return [rec]


def coherence(samples, out, *, label_judge=None, mask_judge=None, append=False) -> list[dict]:
    """Joint coherence: do jointly generated labels / masks agree with a trained classifier /
    segmenter applied to the generated images?"""
    arrays, meta = _samples(samples)
    images = _to_float(arrays["images"])
    common = dict(dataset=meta["dataset"], model=meta["model"], seed=meta["train_seed"],
                  checkpoint_step=meta["checkpoint_step"], ema=meta["ema"], sampler=meta["sampler"], nfe=meta["nfe"],
                  n_generated=int(len(images)), **ran_with(meta))
    records = []
    with torch.no_grad():
        if label_judge is not None and "label" in arrays:
            t0 = time.time()
            clf = _load_judge(label_judge, "classifier")
            m = classification_metrics(arrays["label"], clf(images).argmax(-1).numpy(), clf.label.num_classes)
            records.append(metric_record(**common, metric="coherence_label", value=m["accuracy"], wall_time_s=time.time() - t0,
                                   extra={"judge": str(label_judge)}))
        if mask_judge is not None and "mask" in arrays:
            t0 = time.time()
            seg = _load_judge(mask_judge, "segmenter")
            m = segmentation_metrics(seg(images).argmax(1).numpy(), arrays["mask"], seg.mask.num_classes)
            records.append(metric_record(**common, metric="coherence_miou", value=m["mean_iou"], wall_time_s=time.time() - t0,
                                   extra={"judge": str(mask_judge)}))
    if not records:
        raise ConfigError(f"nothing to judge in {str(samples)!r}: it needs generated labels/masks and the matching judge")
    _write(records, out, append)
    return records


def curve(run, weights, out, *, what: str = "both", append=False, cache_dir=None, seed: int = 0,
          progress="none", overrides: list[str] | None = None) -> list[dict]:
    """FID/KID against training progress (every kept snapshot, EMA weights) and against NFE
    (final checkpoint), with ``eval.curve_num_samples`` images per point."""
    # lazy: mtdiff.generate imports torchvision (through mtdiff.viz; ~165 MB of memory, measured),
    # and mtdiff.cli imports this module for every command; only the curve samples images
    from mtdiff.generate import generate

    cfg = _run_config(run, overrides)
    run = Path(run)
    points: list[tuple[Path, int]] = []
    if what in ("steps", "both"):
        points += [(p, cfg.sample.steps) for _, p in list_checkpoints(run)]
    if what in ("nfe", "both"):
        final = run / "final.pt" if (run / "final.pt").exists() else list_checkpoints(run)[-1][1]
        points += [(final, nfe) for nfe in cfg.eval.curve_nfe if nfe != cfg.sample.steps or what == "nfe"]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (ckpt, nfe) in enumerate(points):
            folder = Path(tmp) / f"p{i}"
            generate(ckpt, folder, num_samples=cfg.eval.curve_num_samples, sampler=cfg.sample.sampler, steps=nfe,
                     eta=cfg.sample.eta, seed=seed, write_pngs=False, progress=progress, log=lambda *_: None)
            meta = json.loads((folder / "sample.json").read_text())
            meta["run"] = str(run)
            (folder / "sample.json").write_text(json.dumps(meta))
            recs = generation(folder, weights, None, cache_dir=cache_dir, config=cfg, progress=progress)
            kind = "nfe" if ckpt.name == "final.pt" else "steps"
            for r in recs:
                r["extra"]["curve"] = kind
            # the point by what it measured (the sample folder is a temporary one)
            print(f"curve point {i + 1}/{len(points)} ({kind}): checkpoint step {meta['checkpoint_step']}, "
                  f"NFE {meta['nfe']}, {len(recs)} records: "
                  + ", ".join(f"{r['metric']}={r['value']:.4g}" for r in recs if r["value"] is not None), flush=True)
            records += recs
    _write(records, out, append)
    return records


def reference(cfg: RunConfig, weights, cache_dir, out, *, progress="none") -> dict:
    """Extract the reference split's features (and FID statistics) once into ``cache_dir``, for
    every later ``--cache-dir`` job of the same (dataset, extractor, split); ``out``: a JSON
    description of the cache, written last (atomically), so its presence means the cache is
    complete."""
    reference_images = _reference(cfg)
    # torch-fidelity caches features of the reference (input2) while computing a metric: the
    # first images of the reference itself stand in for the generated set (their own features
    # are not cached). Same metric set and KID/PRC options as every FID job, so those jobs only
    # read the cache and never write to it.
    probe = reference_images[:16]  # enough for KID subsets and PRC's k=3 neighbourhoods
    values, name, wall, cache = _fidelity(cfg, probe, reference_images, weights, cache_dir,
                                          f"{cfg.data.dataset}-{cfg.eval.reference_split}", progress)
    kind, path, _ = _extractor(cfg, weights)
    _, files = metrics.reference_cache_files(
        cache_dir, reference_images, extractor=kind, weights_path=path,
        reference_cache_name=f"{cfg.data.dataset}-{cfg.eval.reference_split}",
        expected_sha256=cfg.eval.feature_extractor_sha256 if kind == "inception" else None)
    if not files:
        raise ConfigError(f"no reference features were cached in {str(cache_dir)!r}")
    desc = {"dataset": cfg.data.dataset, "extractor": name, "reference_split": cfg.eval.reference_split,
            "n_reference": int(len(reference_images)), "reference_cache": cache["reference_cache"],
            "files": [f.name for f in files], "wall_s": wall}
    atomic_write_text(out, json.dumps(desc, indent=2) + "\n")
    print(f"wrote {out}: {len(files)} cached file(s) for {len(reference_images)} {cfg.eval.reference_split} images "
          f"({name}) in {wall:.1f} s")
    return desc


# ---------------------------------------------------------------------------------------------
# CLI


def add_evaluate_parser(sub):
    """``mtdiff evaluate`` and its commands; returns the subparsers, to which mtdiff.cli adds the
    commands of mtdiff.evaluate_inpainting and mtdiff.evaluate_representation (they build on
    this module's helpers, so this module does not import them: no import cycle)."""
    p = sub.add_parser("evaluate", help="compute metrics and write protocol-stamped records (JSONL)")
    ev = p.add_subparsers(dest="what", required=True, metavar="WHAT")

    def common(q, config=True):
        if config:
            q.add_argument("--config", help="run config YAML (its data and eval sections)")
            q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        q.add_argument("--out", required=True)
        q.add_argument("--append", action="store_true", help="append to --out instead of replacing it")

    q = ev.add_parser("extractor", help="train the domain feature extractor of a dataset")
    q.add_argument("--config")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--out", required=True, help="weights file to write (.pt)")
    q.set_defaults(func=lambda a: train_extractor(load_config(a.config, a.overrides), a.out))

    q = ev.add_parser("anchors", help="FID anchors: real-data floor and the Gaussian bad generator")
    common(q)
    q.add_argument("--extractor-weights")
    q.add_argument("--cache-dir", help="folder of cached reference features (evaluate reference)")
    add_progress_argument(q, default="none")
    q.set_defaults(func=lambda a: anchors(load_config(a.config, a.overrides), a.extractor_weights, a.out,
                                          append=a.append, cache_dir=a.cache_dir, progress=a.progress))

    q = ev.add_parser("generation", help="FID/KID of a sample folder")
    common(q, config=False)
    q.add_argument("--samples", required=True)
    q.add_argument("--extractor-weights")
    q.add_argument("--metric-prefix", default="", help="e.g. cond_ for conditional FID")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config values on top of the run's config.yaml (the workflow passes the current ones)")
    q.add_argument("--cache-dir", help="folder of cached reference features (evaluate reference)")
    add_progress_argument(q, default="none")
    q.set_defaults(func=lambda a: generation(a.samples, a.extractor_weights, a.out, metric_prefix=a.metric_prefix,
                                             append=a.append, cache_dir=a.cache_dir, progress=a.progress,
                                             overrides=a.overrides))

    q = ev.add_parser("task", help="accuracy / mean IoU of a model on a real split")
    common(q, config=False)
    q.add_argument("--run", required=True)
    q.add_argument("--task", required=True, choices=["label", "mask"])
    q.add_argument("--procedure", default=None, help="MT models: head | elbo | elbo_joint (labels)")
    q.add_argument("--split", default="test", choices=["train", "test"])
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config values on top of the run's config.yaml (the workflow passes the current ones)")
    q.set_defaults(func=lambda a: task(a.run, a.task, a.out, procedure=a.procedure, split=a.split, append=a.append,
                                       overrides=a.overrides))

    q = ev.add_parser("conditional", help="accuracy of class-conditional samples, by a trained classifier")
    common(q, config=False)
    q.add_argument("--samples", required=True)
    q.add_argument("--judge", required=True, help="run folder of a trained classifier")
    q.set_defaults(func=lambda a: conditional(a.samples, a.judge, a.out, append=a.append))

    q = ev.add_parser("coherence", help="agreement of generated labels/masks with trained judges")
    common(q, config=False)
    q.add_argument("--samples", required=True)
    q.add_argument("--label-judge")
    q.add_argument("--mask-judge")
    q.set_defaults(func=lambda a: coherence(a.samples, a.out, label_judge=a.label_judge, mask_judge=a.mask_judge,
                                            append=a.append))

    q = ev.add_parser("curve", help="FID/KID vs training step (snapshots) and vs NFE")
    common(q, config=False)
    q.add_argument("--run", required=True)
    q.add_argument("--extractor-weights")
    q.add_argument("--what", default="both", choices=["steps", "nfe", "both"])
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config values on top of the run's config.yaml (the workflow passes the current ones)")
    q.add_argument("--cache-dir", help="folder of cached reference features (evaluate reference)")
    add_progress_argument(q, default="none")
    q.set_defaults(func=lambda a: curve(a.run, a.extractor_weights, a.out, what=a.what, append=a.append,
                                        cache_dir=a.cache_dir, progress=a.progress, overrides=a.overrides))

    q = ev.add_parser("reference", help="cache the reference split's features once, for --cache-dir")
    q.add_argument("--config", help="run config YAML (its data and eval sections)")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--extractor-weights")
    q.add_argument("--cache-dir", required=True, help="folder to cache the features in")
    q.add_argument("--out", required=True, help="JSON description of the cache, written last")
    add_progress_argument(q, default="none")
    q.set_defaults(func=lambda a: reference(load_config(a.config, a.overrides), a.extractor_weights, a.cache_dir,
                                            a.out, progress=a.progress))
    return ev
