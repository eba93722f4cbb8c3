"""The Snakemake workflow: config validation before any job, the tiny config end to end (run as
a user would, with a PATH that lacks the venv), `--report`, reruns, `--lint` and snakefmt."""

import json
import subprocess
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mtdiff.config import load_yaml
from mtdiff.report.vocabulary import ANCHORS

from conftest import ROOT, SNAKEMAKE

VENV_BIN = str(Path(sys.executable).parent)
# The user's view: `.venv/bin/snakemake` without an activated venv, so PATH lacks the venv's
# bin folder (jobs must still run mtdiff, torch and jupyter-nbconvert from the venv).
USER_ENV = dict(os.environ, PATH=os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                                 if p and Path(p).resolve() != Path(VENV_BIN).resolve()))


def snakemake(tmp_path, config: dict, *args, timeout=900):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg_file),
         "--cores", "2", *args],
        capture_output=True, text=True, env=USER_ENV, timeout=timeout,
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
        ({"model_overrides": {"mt_lable": {"train.lr": 0.001}}}, "did you mean mt_label"),
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
    seeds = len(config["datasets"]["digits"]["seeds"])
    assert seeds == 2  # .test/config.yaml: two paired seeds
    # per seed: ddpm, mt_label, mt_mask, mt_all (joint); mt_label, mt_all (conditional)
    assert plan.get("sample") == 4 * seeds and plan.get("sample_conditional") == 2 * seeds, str(plan)
    assert plan.get("curve") == 4 * seeds  # its step points use sample.steps
    for untouched in ("prepare_data", "train", "train_extractor", "anchors", "task"):
        assert untouched not in plan, plan
    assert "--steps 4" in res.stdout  # the new value reaches the command
    assert "--set sample.steps=4" in res.stdout  # ... and the curve jobs (not the run folder's old value)

    run_cfg.write_text(base.replace("inference: {num_draws: 1,", "inference: {num_draws: 2,"))
    res = snakemake(tmp_path, config, "-n", "-p")
    plan = _planned(res)
    assert plan.get("task", 0) >= 1 and "--set inference.num_draws=2" in res.stdout, str(plan)
    for untouched in ("prepare_data", "train", "sample", "anchors"):
        assert untouched not in plan, plan

    run_cfg.write_text(base.replace("precision: fp32}", "precision: fp32, lr: 0.001}"))
    plan = _planned(snakemake(tmp_path, config, "-n"))
    assert plan.get("train") == 6 * seeds
    for untouched in ("prepare_data", "train_extractor", "anchors"):
        assert untouched not in plan, plan

    # how a run executes (mtdiff.config.EXECUTION_KEYS) is not what it trains: nothing to redo
    run_cfg.write_text(base.replace("precision: fp32}", "precision: fp32, compile: true, num_workers: 2}"))
    assert _planned(snakemake(tmp_path, config, "-n")) == {}


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
    # every record says how the measured network ran; the anchors ran none
    no_network = records.model.isin(ANCHORS)
    assert "copier" in set(records.model)  # the memorization anchor is among them
    assert set(records.loc[~no_network, "device"]) == {"cpu"} and records.loc[~no_network, "precision"].notna().all()
    assert records.loc[no_network, ["precision", "device"]].isna().all().all()
    table = pd.read_csv(digits / "report" / "comparison.csv")
    assert len(table) >= 8
    # the per-task tables (summary.md): headed by the command and config, one table per task
    summary_md = (digits / "report" / "summary.md").read_text()
    assert summary_md.startswith("## Results: digits\n\nGenerated by `snakemake` (`make run`) with config `")
    for title in ("### Unconditional generation", "### Classification", "### Segmentation", "### Compute"):
        assert title in summary_md, title
    assert "mt_label (head)" in summary_md and "vs classifier (direct): " in summary_md and "converged" in summary_md
    for f in ("report.html", "report.ipynb"):
        assert (results / f).stat().st_size > 10_000
    nb = json.loads((results / "report.ipynb").read_text())
    assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert nb["metadata"]["language_info"]["name"] == "python"
    assert any("snakemake-job-properties" in c["metadata"].get("tags", []) for c in nb["cells"])  # notebook directive
    summary = json.loads((digits / "train" / "mt_all" / "seed0" / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["seed"] == 0
    assert (digits / "benchmarks" / "train_mt_all_seed0.tsv").exists()

    # progress in the logs while jobs run: one line per 10% (8 steps: every step), not one at the end
    train_log = (digits / "logs" / "train_mt_all_seed0.log").read_text()
    progress = [line for line in train_log.splitlines() if line.startswith("train mt_all step: ")]
    # the loss is read (a GPU sync) only at log steps, so it shows from the first logged step on
    assert len(progress) == 8 and "images/s" in progress[0] and "ETA" in progress[0] and "loss=" in progress[-1]
    assert progress[-1].startswith("train mt_all step: 8/8 (100%)")
    assert "sample mt_all (NFE 5) batch: " in (digits / "logs" / "sample_mt_all_seed0.log").read_text()
    curve_log = (digits / "logs" / "curve_mt_all_seed0.log").read_text()
    assert "curve point 1/" in curve_log and "checkpoint step 4, NFE 5" in curve_log
    assert "r.jsonl" not in curve_log and "/p0" not in curve_log  # not the temporary folder of a point
    assert "features of the generated images: 48/48 (100%)" in (digits / "logs" / "fid_mt_all_seed0.log").read_text()

    # the reference features were extracted once, by their own job, and every FID job read them
    reference = json.loads((digits / "reference" / "domain_train" / "reference.json").read_text())
    assert reference["n_reference"] == 256 and len(reference["files"]) == 2
    fid_like = records[records.metric.isin(["fid", "cond_fid"])]
    assert len(fid_like) >= 12  # anchors, joint, conditional and curve points
    assert set(fid_like["extra.reference_cache"]) == {reference["reference_cache"]}
    assert fid_like["extra.reference_cache_hit"].all()
    # memorization check: every diffusion model's samples and both anchors, in pixels and features
    memo = records[records.metric == "memorized_fraction"]
    assert set(memo.model) == {"ddpm", "mt_label", "mt_mask", "mt_all", "real_floor", "copier"}
    assert set(memo.extractor.fillna("pixels")) == {"pixels", "mtdiff-domain"}
    assert (memo.loc[memo.model == "copier", "value"] == 1).all() and len(memo) == 20  # 4 models x 2 seeds, 2 anchors
    curve = records[records["extra.curve"].notna() & (records.metric == "fid")]
    assert {(int(r.checkpoint_step), int(r.nfe)) for r in curve.itertuples() if r.model == "mt_all"} == {(4, 5), (8, 5), (8, 2)}
    # each question on the seeds it needs (config/README.md): metric vs step on every seed, metric
    # vs NFE (NFE 2 here) and the guidance sweep on the first seed only
    for seed in (0, 1):
        steps = {(int(r.checkpoint_step), int(r.nfe)) for r in curve.itertuples() if r.model == "mt_all" and r.seed == seed}
        assert steps == ({(4, 5), (8, 5), (8, 2)} if seed == 0 else {(4, 5), (8, 5)}), (seed, steps)
    assert sorted((digits / "metrics").glob("guidance_*_seed1.jsonl")) == []
    assert sorted(p.name for p in (digits / "metrics").glob("guidance_*_seed0.jsonl")) == [
        "guidance_mt_all_seed0.jsonl", "guidance_mt_label_seed0.jsonl"]

    # Snakemake's own report: figures, tables and the notebook's HTML, with their captions
    res = snakemake(tmp_path, config, "--report", str(tmp_path / "report.zip"))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    with zipfile.ZipFile(tmp_path / "report.zip") as zf:
        names = [n for n in zf.namelist() if "/data/raw/" in n]  # the report's files, one folder each
        for part in ("preview.png", "headline_bars.png", "training_curves.png", "comparison.csv", "report.html",
                     "summary.md"):
            assert any(n.endswith("/" + part) for n in names), (part, names)
        assert sum(n.endswith("/grid.png") for n in names) == 8  # ddpm, mt_label, mt_mask, mt_all; two seeds
        assert sum("/memo_" in n and n.endswith(".png") for n in names) == 9  # the same four, two seeds, and the anchors
        page = next(zf.read(n).decode() for n in zf.namelist() if n.count("/") == 1 and n.endswith("/report.html"))
    for caption in ("Training images of the dataset", "The executed report notebook", "mean and 95% confidence",
                    "The first 64 joint samples of mt_all", "multi-task diffusion (MT-Diffusion",
                    "Memorization check on digits"):
        assert caption in page, caption

    # the light jobs' environment (workflow/envs/report.yaml) has no torch: their command runs without it
    from test_envs import run_without_torch

    res = run_without_torch("import sys; from mtdiff.report.__main__ import main; sys.exit(main())",
                            "--root", str(results), "--dataset", "digits", "--out", str(tmp_path / "no_torch"))
    assert res.returncode == 0 and (tmp_path / "no_torch" / "comparison.csv").exists(), res.stderr[-3000:]

    # everything is done: a rerun has nothing to do
    res = snakemake(tmp_path, config, "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr

    # a failing job leaves nothing a rerun would trust: its output is removed and it is rerun
    target = digits / "metrics" / "fid_ddpm_seed0.jsonl"
    features = next((digits / "reference" / "domain_train").glob("*-features-*.pt"))
    saved = features.read_bytes()
    features.write_bytes(b"not a torch file")
    try:
        res = snakemake(tmp_path, config, "--force", str(target))
        assert res.returncode != 0 and not target.exists()
    finally:
        features.write_bytes(saved)
    res = snakemake(tmp_path, config, "-n", str(target))  # the failed job is the one to run again
    assert res.returncode == 0 and "rule fid:" in res.stdout and str(target) in res.stdout


@pytest.mark.parametrize("configfile", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").glob("*.yaml")))
def test_every_shipped_config_passes_the_schema_and_a_dry_run(tmp_path, configfile):
    env = USER_ENV
    res = subprocess.run([SNAKEMAKE, "-n", "--nolock", "--cores", "2", "--configfile", configfile,
                          "--config", f"results={tmp_path}/results"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "rule train:" in res.stdout or "train" in res.stdout


def test_lint_is_clean():
    res = subprocess.run([SNAKEMAKE, "--lint"], cwd=ROOT, capture_output=True, text=True, env=USER_ENV, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    assert "Lints for" not in res.stdout + res.stderr


def test_rule_files_are_snakefmt_formatted():
    snakefmt = shutil.which("snakefmt", path=VENV_BIN)
    if snakefmt is None:
        pytest.fail("snakefmt is not installed in the venv; pip install -e '.[test]'")
    files = ["Snakefile", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "workflow" / "rules").glob("*.smk"))]
    res = subprocess.run([snakefmt, "--check", *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]


def test_config_readme_documents_every_schema_key():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    dataset_keys = schema["properties"]["datasets"]["additionalProperties"]["properties"]
    text = (ROOT / "config" / "README.md").read_text()
    for key in schema["properties"]:
        assert f"`{key}`" in text, key
    for key in dataset_keys:
        assert f"`datasets.<name>.{key}`" in text, key


def test_license_matches_pyproject():
    import tomllib

    licence = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert licence == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
