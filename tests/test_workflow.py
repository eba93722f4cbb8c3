"""The Snakemake workflow: config validation before any job, and the tiny config end to end."""

import json
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import ENV, ROOT, SNAKEMAKE


def snakemake(tmp_path, config: dict, *args, timeout=900):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg_file),
         "--cores", "2", *args],
        capture_output=True, text=True, env=ENV, timeout=timeout,
    )


def tiny_config(tmp_path, **dataset):
    config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
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
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, change, message):
    res = snakemake(tmp_path, tiny_config(tmp_path, **change), "-n")
    assert res.returncode != 0
    assert message in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


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
    res = subprocess.run([SNAKEMAKE, "-n", "--nolock", "--cores", "2", "--configfile", configfile,
                          "--config", f"results={tmp_path}/results"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "rule train:" in res.stdout or "train" in res.stdout
