"""What several test files share: paths, a one-thread fixture, a tensor closeness check,
requirement-name parsing, and fabricated results for the report tests.

Test files import the plain helpers with ``from conftest import ...`` (pytest puts this folder
on ``sys.path``); fixtures are found by name.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtdiff import report

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# the venv's bin first, so that snakemake's jobs find the same python and mtdiff
ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny ops: on a shared 2-core machine two spinning
    threads made the training steps ~8x slower (measured). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def assert_max_abs_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    """max |actual - expected| <= atol, compared in float64 (torch.testing.assert_close costs a
    1 s import)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = float((actual.detach().double() - expected.detach().double()).abs().max())
    assert err <= atol, f"max abs error {err:.3g} > {atol:.3g}"


# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}


def requirement_name(req: str) -> str:
    """The normalised package name of a requirement line (``torch>=2.2 # cpu`` -> ``torch``)."""
    return re.split(r"[<>=!~ \[;#]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


# ---------------------------------------------------------------------------------------------
# report tests: fabricated results in the workflow's layout

T975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)
T975_1 = 12.706204736174698  # scipy.stats.t.ppf(0.975, 1)
DOMAIN, INCEPTION = "mtdiff-domain", "inception-v3-compat"


# ---------------------------------------------------------------------------------------------
# fabricated results


def _rec(dataset, model, seed, metric, value, *, step=1000, nfe=50, n=1000, extractor=DOMAIN, ema=True,
         sampler="ddim", extra=None, **kw):
    r = dict(dataset=dataset, model=model, seed=seed, checkpoint_step=step, ema=ema, sampler=sampler, nfe=nfe,
             n_generated=n, reference_split="test", n_reference=360, extractor=extractor, metric=metric,
             value=value, wall_time_s=1.5, extra=extra if extra is not None else {"condition": "none"})
    r.update(kw)
    return r


def _task(dataset, model, seed, metric, value, procedure):
    return _rec(dataset, model, seed, metric, value, nfe=None, sampler=None, n=None, extractor=None,
                extra={"procedure": procedure})


DEFAULT_FID = {"ddpm": [30.0, 32.0, 34.0], "mt_label": [20.0, 22.0, 24.0]}


def fabricate(root: Path, dataset: str = "digits", *, fid=None, accuracy=None, curves=True, extra_models=True,
              grids=True, logs=True) -> Path:
    """Results of one dataset under ``root`` in the workflow's layout; returns the metrics dir."""
    fid = fid or DEFAULT_FID
    accuracy = accuracy or {"classifier": [0.95, 0.97], "mt_label": [0.90, 0.92, 0.91]}
    recs = []
    rng = np.random.default_rng(0)
    for model, values in fid.items():
        for seed, v in enumerate(values):
            recs.append(_rec(dataset, model, seed, "fid", v))
            recs.append(_rec(dataset, model, seed, "kid_mean", v / 1000))
            recs.append(_rec(dataset, model, seed, "kid_std", v / 10000))
            recs.append(_rec(dataset, model, seed, "fid", v * 3 + 7, extractor=INCEPTION))  # other extractor
            if curves:
                for step in (250, 500, 750, 1000):  # training-efficiency curve (N=500 per point)
                    cv = v * (1000 / step) ** 0.8 + rng.normal(0, 0.5)
                    recs.append(_rec(dataset, model, seed, "fid", cv, step=step, n=500,
                                     extra={"condition": "none", "curve": "steps", "images_seen": step * 64}))
                for nfe in (10, 25):  # metric vs NFE at the final checkpoint
                    recs.append(_rec(dataset, model, seed, "fid", v * (1 + 6 / nfe ** 1.2), nfe=nfe, n=500,
                                     extra={"condition": "none", "curve": "nfe", "images_seen": 64000}))
    for model, values in accuracy.items():
        for seed, v in enumerate(values):
            recs.append(_task(dataset, model, seed, "accuracy", v, "direct" if model == "classifier" else "head"))
    if extra_models:
        recs.append(_task(dataset, "segmenter", 0, "miou", 0.81, "direct"))  # one seed -> no CI
        for seed, v in enumerate([0.70, 0.74]):
            recs.append(_task(dataset, "mt_mask", seed, "miou", v, "head"))
        for seed, v in enumerate([0.88, 0.90, 0.86]):
            recs.append(_rec(dataset, "mt_label", seed, "coherence_label", v, extractor=None,
                             extra={"judge": "clf"}))
    for model, v in (("real_floor", 5.0), ("gaussian_baseline", 300.0)):
        for ext, val in ((DOMAIN, v), (INCEPTION, v * 3 + 7)):
            recs.append(_rec(dataset, model, 0, "fid", val, step=None, nfe=None, sampler=None, ema=None,
                             extractor=ext, extra={"images_from": "train" if model == "real_floor" else "gauss"}))
        recs.append(_rec(dataset, model, 0, "kid_mean", v / 1000, step=None, nfe=None, sampler=None, ema=None,
                         extra={"images_from": "train"}))
    mdir = root / dataset / "metrics"
    mdir.mkdir(parents=True, exist_ok=True)
    half = len(recs) // 2
    for name, part in (("a.jsonl", recs[:half]), ("b.jsonl", recs[half:])):
        (mdir / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    params = {"ddpm": 500_000, "mt_label": 520_000, "classifier": 120_000, "segmenter": 130_000, "mt_mask": 525_000}
    seeds = {"ddpm": 3, "mt_label": 3, "classifier": 2, "segmenter": 1, "mt_mask": 2}
    for model, k in seeds.items():
        if not extra_models and model in ("segmenter", "mt_mask"):
            continue
        for seed in range(k):
            d = root / dataset / "train" / model / f"seed{seed}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "summary.json").write_text(json.dumps(dict(
                model=model, dataset=dataset, seed=seed, parameters=params[model], steps=1000, images_seen=64000,
                batch_size=64, wall_s=100.0 + 10 * seed + (20 if model.startswith("mt_") else 0),
                peak_memory_mb=800.0 + seed, device="cpu", precision="bf16", world_size=1, done=True)))
            if logs:
                lines = []
                for step in range(10, 1001, 10):
                    base = 0.05 + 0.5 / (1 + step / 50) + rng.normal(0, 0.01)
                    rec = {"step": step, "kimg": step * 64 / 1000, "loss": base * (1.3 if model.startswith("mt_") else 1),
                           "lr": 2e-4, "images_per_s": 600.0, "wall_s": step / 10, "peak_memory_mb": 800.0}
                    if model in ("ddpm", "mt_label", "mt_mask"):
                        rec["loss_eps"] = base
                    if model == "mt_label":
                        rec["loss_label"] = 2.3 / (1 + step / 100)
                    if model in ("classifier", "segmenter"):
                        rec = {**rec, "loss": 2.3 / (1 + step / 80)}
                    lines.append(json.dumps(rec))
                (d / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    if grids:
        for model in ("ddpm", "mt_label"):
            d = root / dataset / "samples" / model / "seed0"
            d.mkdir(parents=True, exist_ok=True)
            arr = (rng.random((40, 80, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(d / "grid.png")
    return mdir


@pytest.fixture(scope="module")
def report_results(tmp_path_factory):
    """Fabricated results of two datasets (digits with every model, shapes with two)."""
    root = tmp_path_factory.mktemp("results")
    fabricate(root, "digits")
    fabricate(root, "shapes", fid={"ddpm": [40.0, 41.0], "mt_label": [45.0, 47.0]}, extra_models=False, grids=False)
    return root


@pytest.fixture(scope="module")
def digits_table(report_results):
    """(records, summaries, comparison table) of the fabricated digits results."""
    records = report.load_records(sorted((report_results / "digits" / "metrics").glob("*.jsonl")))
    summaries = report.load_summaries(report_results, "digits")
    return records, summaries, report.comparison_table(records, summaries, dataset="digits")
