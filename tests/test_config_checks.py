"""Invalid configs are refused before any work, from every source, naming the key (issue 13).

The three sources: a run config file, the workflow's `overrides` (a dict of dotted keys, the
call workflow/rules/common.smk makes) and `--set` (strings parsed as YAML). Each bad value is
tried through all three; the error is one line, names the key, and comes within 5 s. A few go
through the real `mtdiff train` CLI (no traceback, nothing written); the workflow dry runs
are in tests/test_workflow.py.
"""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mtdiff.config import (
    DataConfig, TrainConfig, flatten_dotted, load_config, load_yaml, nest_dotted, parse_overrides,
)
from mtdiff.diffusion import Diffusion, _aggregate_coefficients_loop, aggregate_coefficients
from mtdiff.errors import ConfigError, MtdiffError
from mtdiff.models import check_config, load_run_config

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / ".test" / "runs" / "digits_tiny.yaml"  # 16x16 digits, T = 100, sample.steps = 5

# (dotted key, bad value, text the message must contain: the key, or the key it is checked against)
INVALID = [
    ("train.lr", -0.001, "train.lr"),
    ("train.lr", math.nan, "train.lr"),
    ("train.lr", math.inf, "train.lr"),
    ("train.lr", "fast", "train.lr"),
    ("train.weight_decay", -1, "train.weight_decay"),
    ("train.betas", [2, 0.999], "train.betas"),
    ("train.betas", [0.9, 1.0], "train.betas"),
    ("train.betas", [0.9], "train.betas"),
    ("train.keep_last", 0, "train.keep_last"),
    ("train.keep_last", -1, "train.keep_last"),
    ("train.log_every_steps", 0, "train.log_every_steps"),
    ("train.threads", -1, "train.threads"),
    ("train.device", "tpu", "train.device"),
    ("train.batch_size", 10**9, "train.batch_size"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.total_kimg", math.inf, "train.total_kimg"),
    ("train.total_kimg", 0, "train.total_kimg"),
    ("train.grad_clip", -1, "train.grad_clip"),
    ("train.ema_halflife_kimg", -2, "train.ema_halflife_kimg"),
    ("train.ema_rampup_ratio", 0, "train.ema_rampup_ratio"),
    ("train.precision", "fp8", "train.precision"),
    ("train.seed", -1, "train.seed"),
    ("train.checkpoint_every_kimg", 0, "train.checkpoint_every_kimg"),
    ("train.snapshot_kimg", [0.032, -1], "train.snapshot_kimg"),
    ("train.num_workers", -1, "train.num_workers"),
    ("train.gpus", 0, "train.gpus"),
    ("train.lr_warmup_kimg", math.nan, "train.lr_warmup_kimg"),
    ("train.tf32", "maybe", "train.tf32"),
    ("train.lrr", 0.1, "train.lrr"),
    ("data.image_size", 7, "data.image_size"),
    ("data.image_size", 4096, "data.image_size"),
    ("data.image_size", 18, "data.image_size"),  # digits accepts multiples of 4 only
    ("data.num_train", 0, "data.num_train"),
    ("data.num_test", -5, "data.num_test"),
    ("data.options.bogus", 1, "data.options.bogus"),
    ("data.dataset", "imagenet", "data.dataset"),
    ("net.channel_mult", [], "net.channel_mult"),
    ("net.channel_mult", [1, 0], "net.channel_mult"),
    ("net.channel_mult", [1, 2, 2, 2, 2, 2], "net.channel_mult"),  # 6 levels on 16x16 images
    ("net.model_channels", 0, "net.model_channels"),
    ("net.head_channels", 7, "net.head_channels"),
    ("net.dropout", 1.0, "net.dropout"),
    ("net.num_res_blocks", 0, "net.num_res_blocks"),
    ("net.attention_resolutions", [3], "net.attention_resolutions"),
    ("diffusion.num_steps", 10_000_000, "diffusion.num_steps"),
    ("diffusion.num_steps", 1, "diffusion.num_steps"),
    ("diffusion.beta_start", 0, "diffusion.beta_start"),
    ("diffusion.beta_end", 1.5, "diffusion.beta_end"),
    ("diffusion.beta_start", 0.05, "diffusion.beta_start"),  # above beta_end = 0.02
    ("diffusion.noise_schedule", "sigmoid", "diffusion.noise_schedule"),
    ("diffusion.prediction", "score", "diffusion.prediction"),
    ("diffusion.max_terminal_coeff", 0, "diffusion.max_terminal_coeff"),
    ("modalities.label.weight_scale", -0.5, "modalities.label.weight_scale"),
    ("modalities.label.weight_scale", 50, "modalities.label"),  # c_T above max_terminal_coeff (eq. 5)
    ("modalities.label.encoder", "clip", "modalities.label.encoder"),
    ("modalities.label.weight_schedule", "cosine", "modalities.label.weight_schedule"),
    ("modalities.label.decay_start_frac", 1.5, "modalities.label.decay_start_frac"),
    ("modalities.mask.loss_weight", -1, "modalities.mask.loss_weight"),
    ("modalities.masked_image.mask_ratio", 1.0, "modalities.masked_image.mask_ratio"),
    ("modalities.masked_image.patch_size", 0, "modalities.masked_image.patch_size"),
    ("modalities.masked_image.mask_pattern", "stripes", "modalities.masked_image.mask_pattern"),
    ("modalities.audio.encoder", "fixed", "modalities.audio"),
    ("sample.steps", 0, "sample.steps"),
    ("sample.steps", 5000, "sample.steps"),
    ("sample.eta", 2, "sample.eta"),
    ("sample.sampler", "euler", "sample.sampler"),
    ("sample.default_num_images", 0, "sample.default_num_images"),
    ("inference.t_infer", 0, "inference.t_infer"),
    ("inference.t_infer", 101, "inference.t_infer"),
    ("inference.label_procedure", "posterior", "inference.label_procedure"),
    ("eval.num_samples", 1, "eval.num_samples"),
    ("eval.reference_split", "val", "eval.reference_split"),
    ("eval.extractor", "clip", "eval.extractor"),
    ("eval.feature_extractor_sha256", "abc", "eval.feature_extractor_sha256"),
    ("eval.curve_nfe", [0], "eval.curve_nfe"),
    ("model", "gan", "model"),
]


def _yaml_value(value) -> str:
    """``value`` as a --set string (YAML): .nan/.inf for the non-finite floats."""
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return json.dumps(value)


def _refused(load, key_text):
    start = time.perf_counter()
    with pytest.raises(MtdiffError) as exc:
        load()
    elapsed = time.perf_counter() - start
    message = str(exc.value)
    assert key_text in message, message
    assert "\n" not in message and "Traceback" not in message
    assert elapsed < 5, f"{elapsed:.1f} s"
    return message


@pytest.mark.parametrize("key, value, key_text", INVALID, ids=[f"{k}={v}" for k, v, _ in INVALID])
def test_invalid_value_in_run_config_file(tmp_path, key, value, key_text):
    values = load_yaml(BASE)
    merged = nest_dotted({**flatten_dotted(values), key: value}) if not isinstance(value, dict) else values
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(merged))
    _refused(lambda: load_run_config(path), key_text)


@pytest.mark.parametrize("key, value, key_text", INVALID, ids=[f"{k}={v}" for k, v, _ in INVALID])
def test_invalid_value_in_workflow_overrides(key, value, key_text):
    # what workflow/rules/common.smk does with a dataset's `overrides` (dotted keys, typed values)
    _refused(lambda: load_run_config(BASE, {key: value, "model": "mt_label"} if key != "model" else {key: value}),
             key_text)


@pytest.mark.parametrize("key, value, key_text", INVALID, ids=[f"{k}={v}" for k, v, _ in INVALID])
def test_invalid_value_in_set_option(key, value, key_text):
    _refused(lambda: load_run_config(BASE, [f"{key}={_yaml_value(value)}"]), key_text)


def test_message_names_value_and_what_is_accepted():
    message = _refused(lambda: load_run_config(BASE, ["train.lr=-0.001"]), "train.lr")
    assert "-0.001" in message and "accepted: a finite number > 0" in message
    message = _refused(lambda: load_run_config(BASE, ["train.device=tpu"]), "train.device")
    assert "'tpu'" in message and "auto|cpu|cuda" in message
    message = _refused(lambda: load_run_config(BASE, ["net.head_channels=7"]), "net.head_channels")
    assert "does not divide" in message


def test_more_levels_than_the_image_allows():
    # issue 13: 5 levels on 8x8 images (8 is not a multiple of 2**4)
    message = _refused(lambda: load_run_config(BASE, ["data.image_size=8", "net.channel_mult=[1,2,2,2,2]"]),
                       "net.channel_mult")
    assert "multiple of 16" in message


def test_every_option_declares_what_it_accepts_or_is_free_text():
    """Numbers, counts and choices all carry an Accepts rule where they are declared."""
    import dataclasses

    from mtdiff import config

    free = {"root", "download", "options", "hflip", "tf32", "channels_last", "compile", "ema", "clip_x0", "prc",
            "feature_extractor_weights_path", "extractor_path"}
    for cls in (config.DataConfig, config.DiffusionConfig, config.ModalityConfig, config.NetConfig,
                config.TrainConfig, config.SampleConfig, config.InferenceConfig, config.EvalConfig):
        for f in dataclasses.fields(cls):
            assert f.name in free or "accepts" in f.metadata, f"{cls.__name__}.{f.name} declares no valid values"


def test_shipped_configs_and_defaults_pass():
    load_run_config()
    for path in sorted((ROOT / "config" / "runs").glob("*.yaml")) + [BASE]:
        load_run_config(path)


def test_checking_is_fast_whatever_the_values():
    start = time.perf_counter()
    cfg = load_run_config(None, {"model": "mt_all", "diffusion": {"num_steps": 100_000},
                                 "modalities": {"mask": {"weight_schedule": "constant_decay"}}})
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="diffusion.num_steps"):
        load_run_config(None, {"diffusion": {"num_steps": 10_000_000}})
    assert time.perf_counter() - start < 1.0
    check_config(cfg)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("num_steps", [10, 1000, 20_000])
def test_closed_form_coefficients_equal_the_recursion(schedule, num_steps):
    """aggregate_coefficients (cumprod/cumsum) == the step-by-step recursion of eq. 3 to float64
    precision, for both shipped weight schedules and an arbitrary signed weight sequence."""
    d = Diffusion(num_steps, schedule)
    g = torch.Generator().manual_seed(0)
    sequences = [torch.randn(num_steps + 1, generator=g, dtype=torch.float64) * 0.01]
    for ws in ("noise_tied", "constant_decay"):
        d.add_modality(ws, ws, 0.5, None, decay_start_frac=0.1, decay_end_frac=0.3)
        sequences.append(d.weights[ws])
    for w in sequences:
        fast, loop = aggregate_coefficients(d.alphas, w), _aggregate_coefficients_loop(d.alphas, w)
        scale = loop.abs().max().clamp(min=1e-300)
        assert float((fast - loop).abs().max() / scale) < 1e-12


def test_duplicate_yaml_key_is_refused_naming_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 0.001\nnet:\n  dropout: 0.1\ntrain:\n  batch_size: 8\n")
    message = _refused(lambda: load_config(path), "duplicate key 'train'")
    assert str(path) in message and "line 5" in message
    path.write_text("train: {lr: 0.001, lr: 0.002}\n")
    _refused(lambda: load_yaml(path), "duplicate key 'lr'")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        path.write_text("train: [1, 2\n")
        load_config(path)


def test_sources_agree_on_typed_values(tmp_path):
    """A value reaches the config the same from a file, a dotted dict and --set."""
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 0.003\n  betas: [0.8, 0.99]\n")
    a = load_config(path)
    b = load_config(None, {"train.lr": 0.003, "train.betas": [0.8, 0.99]})
    c = load_config(None, parse_overrides(["train.lr=0.003", "train.betas=[0.8, 0.99]"]))
    assert a == b == c and a.train == TrainConfig(lr=0.003, betas=(0.8, 0.99))
    assert load_config(None, {"data.options.mask_threshold": 0.2}).data == DataConfig(options={"mask_threshold": 0.2})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mtdiff.cli", *args], capture_output=True, text=True, timeout=60)


def test_cli_refuses_before_writing_anything(tmp_path):
    # one subprocess (its start-up, torch's import, is seconds); the values are covered above
    setting, key = "net.channel_mult=[1,2,2,2,2,2]", "net.channel_mult"
    out = tmp_path / "run"
    res = _cli("train", "--config", str(BASE), "--out", str(out), "--set", setting, "--no-progress")
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and key in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not out.exists()


def test_config_is_a_leaf_module():
    """mtdiff.config imports nothing of mtdiff but its errors and two leaves (no cycle through models)."""
    code = ("import sys, mtdiff.config; "
            "print(sorted(m for m in sys.modules if m.startswith('mtdiff')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "['mtdiff', 'mtdiff.config', 'mtdiff.errors', 'mtdiff.io', 'mtdiff.options']"
