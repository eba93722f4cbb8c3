"""Same config, seed and precision twice on one machine: identical records (issue 14).

A tiny run is trained twice into two folders, sampled from each, and its FID/KID records are
computed for each the way the workflow's FID job does (mtdiff.evaluate.generation with the
shared reference-feature cache). Everything must agree but the fields that measure time
(``wall_time_s``, ``wall_s``) and whether the reference cache was already there."""

from __future__ import annotations

import json

import numpy as np
import torch

from mtdiff import evaluate
from mtdiff.checkpoints import read_checkpoint
from mtdiff.config import load_config
from mtdiff.generate import generate
from mtdiff.train import train

TINY = {
    "model": "mt_label",
    "data": {"dataset": "digits", "image_size": 8, "num_train": 96, "num_test": 32},
    "diffusion": {"num_steps": 40},
    "net": {"model_channels": 8, "head_channels": 8, "label_head_hidden": 16, "attention_resolutions": []},
    "train": {"total_kimg": 0.064, "batch_size": 16, "lr_warmup_kimg": 0.016, "checkpoint_every_kimg": 0.032,
              "log_every_steps": 1, "precision": "fp32", "threads": 1, "device": "cpu", "seed": 3},
    "sample": {"steps": 3, "seed": 5},
    "eval": {"num_samples": 24, "extractor_steps": 10, "kid_subset_size": 12},
}
# fields that measure time or the process (speed, memory), or say whether a cache was already
# filled: allowed to differ
TIME_FIELDS = {"wall_time_s", "wall_s", "reference_cache_hit", "images_per_s", "peak_memory_mb"}


def _without_time(obj):
    if isinstance(obj, dict):
        return {k: _without_time(v) for k, v in obj.items() if k not in TIME_FIELDS}
    if isinstance(obj, list):
        return [_without_time(v) for v in obj]
    return obj


def _one_run(cfg, root, name, weights):
    run, samples = root / "train" / name, root / "samples" / name
    train(cfg, run, progress=False, log=lambda *_: None)
    generate(run, samples, write_pngs=False, progress=False, log=lambda *_: None)
    records = evaluate.generation(samples, weights, root / f"fid_{name}.jsonl", cache_dir=root / "reference")
    return run, samples, records


def test_same_config_seed_and_precision_twice_gives_identical_records(tmp_path, one_torch_thread):
    cfg = load_config(None, TINY)
    weights = tmp_path / "domain.pt"
    evaluate.train_extractor(cfg, weights)
    run_a, samples_a, records_a = _one_run(cfg, tmp_path, "a", weights)
    run_b, samples_b, records_b = _one_run(cfg, tmp_path, "b", weights)

    # the weights: raw and EMA, tensor for tensor
    final_a, final_b = read_checkpoint(run_a / "final.pt"), read_checkpoint(run_b / "final.pt")
    for key in ("model", "ema"):
        assert final_a[key].keys() == final_b[key].keys()
        for name, tensor in final_a[key].items():
            assert torch.equal(tensor, final_b[key][name]), f"{key}.{name} differs between the two trainings"
    # the samples, and their protocol but for the run folder's name and the wall time
    with np.load(samples_a / "samples.npz") as a, np.load(samples_b / "samples.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    meta_a, meta_b = (json.loads((s / "sample.json").read_text()) for s in (samples_a, samples_b))
    assert _without_time({**meta_a, "run": None}) == _without_time({**meta_b, "run": None})
    # the records as written, field for field
    lines_a, lines_b = ([json.loads(x) for x in (tmp_path / f"fid_{n}.jsonl").read_text().splitlines()] for n in "ab")
    assert len(lines_a) == len(records_a) >= 3
    assert {r["metric"] for r in lines_a} >= {"fid", "kid_mean"}
    assert _without_time(lines_a) == _without_time(lines_b)
    assert all(r["precision"] == "fp32" and r["device"] == "cpu" for r in lines_a)
    # the first FID job filled the reference cache, the second read it
    assert [r["extra"]["reference_cache_hit"] for r in (lines_a[0], lines_b[0])] == [False, True]
    # and the training logs agree but for time
    logs = [[json.loads(x) for x in (r / "train_log.jsonl").read_text().splitlines()] for r in (run_a, run_b)]
    assert _without_time(logs[0]) == _without_time(logs[1])
