"""The training and sampling engine: resume, checkpoints, EMA, determinism, DDP, NaN guard, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtdiff.config import load_config
from mtdiff.errors import CheckpointError, ConfigError
from mtdiff.train import (
    BatchStream, TrainingDiverged, ema_beta, ema_update, latest_checkpoint, list_checkpoints, load_run, train,
)


# A tiny model on a 128-image subset of digits: a step takes milliseconds.
TINY = {
    "net": {"model_channels": 8, "head_channels": 8, "label_head_hidden": 16},
    "data": {"num_train": 128, "num_test": 64},
    "train": {"total_kimg": 0.128, "batch_size": 16, "lr_warmup_kimg": 0.032, "checkpoint_every_kimg": 0.032,
              "log_every_steps": 2, "threads": 1, "precision": "fp32"},
    "diffusion": {"num_steps": 50},
}


def tiny(model="mt_label", **extra):
    import copy

    values = copy.deepcopy(TINY)
    values["model"] = model
    for key, val in extra.items():
        section, name = key.split("__")
        values.setdefault(section, {})[name] = val
    return load_config(None, values)


def weights(run_dir, key="model"):
    return torch.load(Path(run_dir) / "final.pt", weights_only=False)[key]


def assert_same_state(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    cfg = tiny("mt_all")
    train(cfg, tmp_path / "straight", progress=False, log=lambda *_: None)
    stop = int(np.random.default_rng().integers(1, 8))  # a random step; 8 steps in all
    train(cfg, tmp_path / "resumed", progress=False, stop_after_steps=stop, log=lambda *_: None)
    assert not (tmp_path / "resumed" / "final.pt").exists()
    summary = train(cfg, tmp_path / "resumed", progress=False, log=lambda *_: None)
    assert summary["steps"] == 8 and summary["done"]
    for key in ("model", "ema", "optimizer"):
        a, b = weights(tmp_path / "straight", key), weights(tmp_path / "resumed", key)
        if key == "optimizer":
            a, b = {str(k): v["exp_avg"] for k, v in a["state"].items()}, {str(k): v["exp_avg"] for k, v in b["state"].items()}
        assert_same_state(a, b)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    train(tiny("ddpm"), tmp_path / "a", progress=False, log=lambda *_: None)
    train(tiny("ddpm"), tmp_path / "b", progress=False, log=lambda *_: None)
    train(tiny("ddpm", train__seed=1), tmp_path / "c", progress=False, log=lambda *_: None)
    assert_same_state(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["unet.input_conv.weight"], weights(tmp_path / "c")["unet.input_conv.weight"])


def test_compile_traces_the_forward_and_leaves_weights_and_checkpoints_unchanged(tmp_path, monkeypatch):
    """train.compile: true runs the forward through torch.compile. Dynamo captures the whole
    U-Net and its heads (fullgraph: a graph break fails the test) and runs the captured graph
    with the `eager` backend (the same ops, so bit-identical weights; inductor's code generation,
    which fuses kernels and so only agrees to float rounding, is what a GPU run adds). The
    checkpoint holds the uncompiled module's keys, so a run may resume with either value."""
    real_compile, compiled = torch.compile, []

    def traced(module, **kwargs):
        compiled.append(module)
        return real_compile(module, backend="eager", fullgraph=True)

    monkeypatch.setattr(torch, "compile", traced)
    for model in ("mt_all", "classifier"):
        torch._dynamo.reset()
        eager = tiny(model)
        train(eager, tmp_path / f"{model}_eager", progress=False, log=lambda *_: None)
        train(tiny(model, train__compile=True), tmp_path / f"{model}_compiled", progress=False, log=lambda *_: None)
        assert_same_state(weights(tmp_path / f"{model}_eager"), weights(tmp_path / f"{model}_compiled"))
        assert json.loads((tmp_path / f"{model}_compiled" / "run.json").read_text())["compile"] is True
    assert len(compiled) == 2 and all(isinstance(m, torch.nn.Module) for m in compiled)
    # resumable with the other value: an interrupted compiled run finishes eagerly, same weights
    train(tiny("mt_all", train__compile=True), tmp_path / "mixed", progress=False, stop_after_steps=3,
          log=lambda *_: None)
    train(tiny("mt_all"), tmp_path / "mixed", progress=False, log=lambda *_: None)
    assert_same_state(weights(tmp_path / "mt_all_eager"), weights(tmp_path / "mixed"))


def test_checkpoint_retention_and_corrupt_fallback(tmp_path):
    cfg = tiny("classifier", train__keep_last=2, train__snapshot_kimg=[0.032])
    train(cfg, tmp_path, progress=False, log=lambda *_: None)
    steps = [s for s, _ in list_checkpoints(tmp_path)]
    assert steps == [2, 6, 8]  # snapshot at 0.032 kimg = step 2, plus the last two
    newest = list_checkpoints(tmp_path)[-1][1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncate, as a killed copy would
    messages = []
    state = latest_checkpoint(tmp_path, log=messages.append)
    assert state["step"] == 6
    assert "does not match its checksum" in messages[0] and newest.name in messages[0]
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_run(newest)


def test_ema_update_rule_and_half_life():
    ema, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        model.weight.fill_(3.0)
    ema_update(ema, model, beta=0.75)
    assert torch.allclose(ema.weight, torch.full_like(ema.weight, 0.75 * 1 + 0.25 * 3))
    # after half-life images, the old average keeps exactly half its weight
    beta = ema_beta(batch_size=64, images_seen=10**9, halflife_kimg=0.64, rampup_ratio=None)
    assert beta**10 == pytest.approx(0.5)
    # ramp-up: early on the half-life is at most rampup_ratio * images seen
    assert ema_beta(64, 640, 10.0, 0.1) == pytest.approx(0.5)


def test_batch_stream_is_a_permutation_per_epoch():
    stream = BatchStream(10, 5, seed=3)
    epoch0 = torch.cat([stream.batch_at(0), stream.batch_at(1)])
    assert sorted(epoch0.tolist()) == list(range(10))
    assert not torch.equal(epoch0, torch.cat([stream.batch_at(2), stream.batch_at(3)]))
    with pytest.raises(ConfigError, match="batch_size"):
        BatchStream(4, 8, 0)


def test_nan_loss_stops_with_step_and_term_keeping_last_checkpoint(tmp_path, monkeypatch):
    from mtdiff import models

    real = models.MTDiffusion.loss
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        total, terms = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 5:
            terms["label"] = terms["label"] * float("nan")
            total = total + terms["label"]
        return total, terms

    monkeypatch.setattr(models.MTDiffusion, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss term label is nan at step 4"):
        train(tiny("mt_label"), tmp_path, progress=False, log=lambda *_: None)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    assert not (tmp_path / "final.pt").exists()


def test_run_folder_of_another_config_is_refused(tmp_path):
    train(tiny("ddpm"), tmp_path, progress=False, log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"different config \(differs at net.model_channels"):
        train(tiny("ddpm", net__model_channels=16), tmp_path, progress=False)
    # a finished run is never reused with another budget: its final.pt and summary.json would
    # describe the old one (issue 13); an unfinished one continues with a larger budget
    with pytest.raises(ConfigError, match=r"finished run of a different config \(differs at train.total_kimg\)"):
        train(tiny("ddpm", train__total_kimg=0.16), tmp_path, progress=False, log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"differs at sample.steps"):
        train(tiny("ddpm", sample__steps=7), tmp_path, progress=False, log=lambda *_: None)
    train(tiny("ddpm"), tmp_path / "b", progress=False, stop_after_steps=3, log=lambda *_: None)
    summary = train(tiny("ddpm", train__total_kimg=0.16), tmp_path / "b", progress=False, log=lambda *_: None)
    assert summary["steps"] == 10


def test_training_lowers_each_kind_of_loss(tmp_path):
    for model in ("classifier", "segmenter", "mt_all"):
        cfg = tiny(model, train__total_kimg=0.96, train__lr=3e-3, train__log_every_steps=1)
        train(cfg, tmp_path / model, progress=False, log=lambda *_: None)
        recs = [json.loads(line) for line in (tmp_path / model / "train_log.jsonl").read_text().splitlines()]
        terms = [k for k in recs[0] if k.startswith("loss_")]
        for term in terms:
            first = np.mean([r[term] for r in recs[:10]])
            last = np.mean([r[term] for r in recs[-10:]])
            assert last < first, (model, term, first, last)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mtdiff.cli", *args], capture_output=True, text=True, env=env)


def test_cli_train_sample_predict(tmp_path):
    run = tmp_path / "run"
    overrides = ["model=mt_all", "net.model_channels=8", "net.head_channels=8", "data.num_train=64",
                 "data.num_test=32", "train.total_kimg=0.032", "train.batch_size=16", "train.threads=1",
                 "diffusion.num_steps=20", "sample.steps=10"]
    res = _cli("train", "--out", str(run), "--no-progress", *sum((["--set", o] for o in overrides), []))
    assert res.returncode == 0, res.stderr
    assert "final.pt" in res.stdout
    for f in ("config.yaml", "run.json", "train_log.jsonl", "summary.json", "final.pt"):
        assert (run / f).exists(), f
    res = _cli("sample", "--run", str(run), "--out", str(tmp_path / "s"), "--num-samples", "10", "--steps", "5",
               "--no-progress")
    assert res.returncode == 0, res.stderr
    arrays = np.load(tmp_path / "s" / "samples.npz")
    assert arrays["images"].shape == (10, 1, 16, 16) and arrays["images"].dtype == np.uint8
    assert arrays["label"].shape == (10,) and arrays["mask"].shape == (10, 16, 16)
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 10
    protocol = json.loads((tmp_path / "s" / "sample.json").read_text())
    assert protocol["nfe"] == 5 and protocol["ema"] is True and protocol["checkpoint_step"] == 2
    res = _cli("sample", "--run", str(run), "--out", str(tmp_path / "c"), "--num-samples", "4", "--steps", "3",
               "--condition", "label=7", "--no-progress", "--no-pngs")
    assert res.returncode == 0, res.stderr
    assert (np.load(tmp_path / "c" / "samples.npz")["label"] == 7).all()
    res = _cli("predict", "--run", str(run), "--task", "mask", "--out", str(tmp_path / "p.npz"))
    assert res.returncode == 0, res.stderr
    pred = np.load(tmp_path / "p.npz")
    assert pred["true"].shape == pred["pred"].shape == (32, 16, 16)
    # bad input: one line, no traceback
    res = _cli("sample", "--run", str(run), "--out", str(tmp_path / "x"), "--condition", "label=42")
    assert res.returncode == 2 and "0..9" in res.stderr and "Traceback" not in res.stderr
    res = _cli("train", "--out", str(tmp_path / "y"), "--set", "train.batchsize=3")
    assert res.returncode == 2 and "did you mean train.batch_size" in res.stderr


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    """torchrun with 2 gloo processes and the same global batch ends where one process does
    (up to float summation order: atol 1e-5 after 8 steps)."""
    overrides = ["model=mt_label", "net.model_channels=8", "net.head_channels=8", "net.label_head_hidden=16",
                 "data.num_train=128", "train.total_kimg=0.128", "train.batch_size=16", "train.threads=1",
                 "train.precision=fp32", "diffusion.num_steps=50"]
    sets = sum((["--set", o] for o in overrides), [])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                          "-m", "mtdiff.cli", "train", "--out", str(tmp_path / "ddp"), "--no-progress", *sets],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _cli("train", "--out", str(tmp_path / "one"), "--no-progress", *sets).returncode == 0
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["world_size"] == 2
    assert_same_state(weights(tmp_path / "ddp"), weights(tmp_path / "one"), atol=1e-5)


def test_lazy_dataset_trains_and_is_evaluated_in_memory(tmp_path):
    """A torchvision-backed (lazy) split: training fetches items, evaluation materialises it."""
    from PIL import Image

    from mtdiff.evaluate import task
    from mtdiff.train import load_split

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / "folder" / split / cls
            folder.mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = load_config(None, {
        "model": "classifier", "data": {"dataset": "imagefolder", "root": str(tmp_path / "folder"), "image_size": 8},
        "net": {"model_channels": 8, "head_channels": 8, "label_head_hidden": 16, "attention_resolutions": [4]},
        "train": {"total_kimg": 0.016, "batch_size": 8, "threads": 1, "precision": "fp32", "num_workers": 1},
    })
    assert getattr(load_split(cfg, "test"), "images", None) is None  # lazy
    split = load_split(cfg, "test", in_memory=True)
    assert split.images.shape == (16, 3, 8, 8) and split.labels.tolist().count(1) == 8
    train(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    records = task(tmp_path / "run", "label", tmp_path / "acc.jsonl")
    assert records[0]["metric"] == "accuracy" and records[0]["n_reference"] == 16
