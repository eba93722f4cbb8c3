"""The Snakemake workflow: config validation before any job, and the tiny config end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mtdiff.config import load_yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(tmp_path, config: dict, *args, timeout=900):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg_file),
         "--cores", "2", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def tiny_config(tmp_path, **dataset):
    config = load_yaml(ROOT / ".test" / "config.yaml")
    config["results"] = str(tmp_path / "results")
    d = config["datasets"]["digits"]
    d["run_config"] = str(ROOT / d["run_config"])
    d.update(dataset)
    return config


@pytest.mark.parametrize(
    "change, message",
    [
        ({"models": ["ddpm", "gan"]}, "gan"),
        ({"seeds": "zero"}, "seeds"),
        ({"typo_key": 1}, "typo_key"),
        ({"overrides": {"train.batchsize": 8}}, "did you mean train.batch_size"),
        ({"overrides": {"modalities.label.weight_scale": 40}}, "c_T="),
        # issue 13: values the dry run used to accept, and keys the workflow owns
        ({"overrides": {"train.lr": float("nan")}}, "train.lr=nan is not accepted"),
        ({"overrides": {"net.channel_mult": [1, 2, 2, 2, 2, 2]}}, "net.channel_mult"),
        ({"overrides": {"data.options.bogus": 1}}, "data.options.bogus"),
        ({"overrides": {"model": "gan"}}, "overrides sets model, which the workflow sets itself"),
        ({"overrides": {"train.seed": 3}}, "overrides sets train.seed"),
        ({"overrides": {"data": {"dataset": "shapes"}}}, "overrides sets data.dataset"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, change, message):
    res = snakemake(tmp_path, tiny_config(tmp_path, **change), "-n")
    assert res.returncode != 0
    assert message in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


def test_empty_results_path_is_refused(tmp_path):
    config = tiny_config(tmp_path)
    config["results"] = ""
    res = snakemake(tmp_path, config, "-n")
    assert res.returncode != 0 and "results" in res.stdout + res.stderr
    assert not (tmp_path / "digits").exists()


def test_duplicate_keys_in_workflow_and_run_configs_are_refused(tmp_path):
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text((ROOT / ".test/runs/digits_tiny.yaml").read_text() + "train: {lr: 0.1}\n")
    config = tiny_config(tmp_path, run_config=str(run_cfg))
    res = snakemake(tmp_path, config, "-n")
    assert res.returncode != 0
    assert f"{str(run_cfg)!r}: duplicate key 'train'" in res.stdout + res.stderr
    # the workflow config file itself (Snakemake's reader keeps the last of two equal keys)
    text = yaml.safe_dump(tiny_config(tmp_path)) + "threads_per_job: 1\n"
    (tmp_path / "wf.yaml").write_text(text)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    res = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                          str(tmp_path / "wf.yaml"), "--cores", "1", "-n"], capture_output=True, text=True, env=env)
    assert res.returncode != 0 and "duplicate key 'threads_per_job'" in res.stdout + res.stderr


def _planned(res) -> dict[str, int]:
    """Jobs per rule of a dry run (Snakemake's 'Job stats' table), without the target rule."""
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    text = res.stdout + res.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = {}
    for line in table.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    counts.pop("all", None)
    return counts


@pytest.mark.slow
def test_config_edit_reruns_exactly_the_jobs_it_affects(tmp_path):
    """Run configs enter the rules as params, so Snakemake's params trigger reruns what an edit
    invalidates: sampling (not training) after sample.steps, training and all after train.lr."""
    run_cfg = tmp_path / "run.yaml"
    base = (ROOT / ".test/runs/digits_tiny.yaml").read_text()
    run_cfg.write_text(base)
    config = tiny_config(tmp_path, run_config=str(run_cfg), label_procedures=["head"])
    # every output "done" (empty files) with Snakemake's metadata (params) recorded by --touch
    summary = snakemake(tmp_path, config, "--summary")
    for line in summary.stdout.splitlines()[1:]:
        out = Path(line.split("\t")[0])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch()
    assert snakemake(tmp_path, config, "--touch", "--forceall").returncode == 0  # every job, in DAG order
    assert _planned(snakemake(tmp_path, config, "-n")) == {}

    run_cfg.write_text(base.replace("sample: {steps: 5}", "sample: {steps: 4}"))
    res = snakemake(tmp_path, config, "-n", "-p")
    plan = _planned(res)
    assert plan.get("sample") == 4 and plan.get("sample_conditional") == 2, str(plan)  # ddpm, mt_label, mt_mask, mt_all
    assert plan.get("curve") == 4  # its step points use sample.steps
    for untouched in ("prepare_data", "train", "train_extractor", "anchors", "task"):
        assert untouched not in plan, plan
    assert "--steps 4" in res.stdout  # the new value reaches the command

    run_cfg.write_text(base.replace("precision: fp32}", "precision: fp32, lr: 0.001}"))
    plan = _planned(snakemake(tmp_path, config, "-n"))
    assert plan.get("train") == 6
    for untouched in ("prepare_data", "train_extractor", "anchors"):
        assert untouched not in plan, plan


def test_model_needing_a_missing_modality_is_refused(tmp_path):
    run_cfg = tmp_path / "cifar.yaml"
    run_cfg.write_text(yaml.safe_dump({"data": {"dataset": "cifar10"}}))
    config = {"results": str(tmp_path / "results"),
              "datasets": {"cifar10": {"run_config": str(run_cfg), "models": ["segmenter"], "seeds": [0]}}}
    res = snakemake(tmp_path, config, "-n")
    assert res.returncode != 0
    assert "model=segmenter needs mask" in res.stdout + res.stderr


@pytest.mark.slow
def test_tiny_workflow_end_to_end_and_rerun_is_a_no_op(tmp_path):
    config = tiny_config(tmp_path)
    res = snakemake(tmp_path, config)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    results = tmp_path / "results"
    digits = results / "digits"
    records = pd.read_csv(digits / "metrics" / "all_records.csv")
    models = set(records["model"])
    assert {"ddpm", "classifier", "segmenter", "mt_label", "mt_mask", "mt_all", "real_floor", "gaussian_baseline"} <= models
    metrics = set(records["metric"])
    assert {"fid", "kid_mean", "accuracy", "miou", "cond_accuracy", "coherence_label", "coherence_miou"} <= metrics
    assert set(records.loc[records.metric == "accuracy", "extra.procedure"]) >= {"head", "elbo", "direct"}
    table = pd.read_csv(digits / "report" / "comparison.csv")
    assert len(table) >= 8
    for f in ("report.html", "report.ipynb"):
        assert (results / f).stat().st_size > 10_000
    nb = json.loads((results / "report.ipynb").read_text())
    assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    summary = json.loads((digits / "train" / "mt_all" / "seed0" / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["seed"] == 0
    assert (digits / "benchmarks" / "train_mt_all_seed0.tsv").exists()
    assert (digits / "logs" / "train_mt_all_seed0.log").exists()
    # everything is done: a rerun has nothing to do
    res = snakemake(tmp_path, config, "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.parametrize("configfile", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").glob("*.yaml")))
def test_every_shipped_config_passes_the_schema_and_a_dry_run(tmp_path, configfile):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    res = subprocess.run([SNAKEMAKE, "-n", "--nolock", "--cores", "2", "--configfile", configfile,
                          "--config", f"results={tmp_path}/results"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "rule train:" in res.stdout or "train" in res.stdout
