"""One registry entry is all a new model needs: mtdiff.models.MODELS drives the workflow's jobs,
the config's accepted names and the report's labels, colours and comparisons."""

import subprocess
import sys

import pytest
import yaml

from conftest import ENV, ROOT, SNAKEMAKE, fabricate
from mtdiff import report
from mtdiff.models import MODELS, ModelSpec, models_where

# A model no file of the code base names: a second joint image+label model.
NEW_NAME = "mt_label_twin"
NEW_SPEC = ModelSpec(
    "diffusion", ("label",), description="MT-Diffusion image+label, registered by a test",
    label="mt_label_twin (MT: image + label, test entry)", colour="#123456", baselines=("ddpm", "classifier"),
)
# The same registration, in the snakemake process the dry run starts.
REGISTER_AND_RUN_SNAKEMAKE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from mtdiff.models import MODELS, ModelSpec
MODELS[{NEW_NAME!r}] = {NEW_SPEC!r}
from snakemake.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def new_model(monkeypatch):
    monkeypatch.setitem(MODELS, NEW_NAME, NEW_SPEC)
    return NEW_NAME


def _dry_run(tmp_path, models, register: bool):
    config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["datasets"]["digits"].update(run_config=str(ROOT / ".test/runs/digits_tiny.yaml"), models=models)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    args = ["-n", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(cfg_file),
            "--cores", "1"]
    cmd = [sys.executable, "-c", REGISTER_AND_RUN_SNAKEMAKE, *args] if register else [SNAKEMAKE, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, cwd=tmp_path)


def test_spec_properties_of_the_registered_models():
    assert set(models_where(lambda s: s.kind == "diffusion")) == {
        "ddpm", "ddpm_cond", "mt_label", "mt_mask", "mt_masked", "mt_all", "mt_repr"}
    assert set(models_where(lambda s: s.generates_given_class)) == {"ddpm_cond", "mt_label", "mt_all"}
    assert set(models_where(lambda s: s.label_head)) == {"classifier", "mt_label", "mt_all"}
    assert set(models_where(lambda s: s.mask_head)) == {"segmenter", "mt_mask", "mt_all"}
    assert MODELS["mt_all"].generates == ("image", "label", "mask") and MODELS["classifier"].generates == ()
    for name, spec in MODELS.items():
        assert spec.label.startswith(name) and spec.colour.startswith("#"), name
        for base in spec.baselines:  # a baseline is a single-task model that says what it is compared on
            assert not MODELS[base].multi_task and MODELS[base].compared_on, (name, base)
        assert bool(spec.baselines) == spec.multi_task, name


@pytest.mark.slow  # a snakemake dry run: ~12 s on the busy 2-core machine
def test_workflow_dry_run_plans_the_jobs_of_a_newly_registered_model(tmp_path):
    res = _dry_run(tmp_path, ["ddpm", "classifier", NEW_NAME], register=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    metrics = tmp_path / "results" / "digits" / "metrics"
    for name in (f"fid_{NEW_NAME}_seed0", f"curve_{NEW_NAME}_seed0", f"task_{NEW_NAME}_seed0_label_head",
                 f"task_{NEW_NAME}_seed0_label_elbo", f"condfid_{NEW_NAME}_seed0", f"cond_{NEW_NAME}_seed0",
                 f"coherence_{NEW_NAME}_seed0"):
        assert f"{metrics}/{name}.jsonl" in out, name
    assert f"train/{NEW_NAME}/seed0/final.pt" in out
    assert f"task_{NEW_NAME}_seed0_mask" not in out  # no mask head: no mask job


@pytest.mark.slow  # a snakemake dry run: ~12 s on the busy 2-core machine
def test_unregistered_model_is_refused_with_a_suggestion(tmp_path):
    res = _dry_run(tmp_path, ["ddpm", "mt_lable"], register=False)
    assert res.returncode != 0
    assert "datasets.digits.models='mt_lable' is not known (did you mean mt_label?)" in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


def test_report_picks_up_a_newly_registered_model(new_model, tmp_path):
    assert report.model_label(new_model) == NEW_SPEC.label and report.model_colour(new_model) == "#123456"
    assert report.model_kind(new_model) == "multi-task"
    assert any(mt == new_model and base == "ddpm" and "fid" in on for mt, base, on in report.model_pairs())
    assert (new_model, "classifier", ("accuracy",)) in report.model_pairs()
    # rows after the registered MT models, before the anchors
    assert report.model_order().index(new_model) == report.model_order().index("gaussian_baseline") - 2
    fabricate(tmp_path, fid={"ddpm": [30.0, 32.0, 34.0], new_model: [20.0, 21.0, 22.0]},
              accuracy={"classifier": [0.95, 0.97], new_model: [0.90, 0.92]}, extra_models=False, curves=False,
              grids=False, logs=False)
    table = report.comparison_table(report.load_records(tmp_path / "digits" / "metrics"), dataset="digits")
    assert table.loc[new_model, "label"] == NEW_SPEC.label and table.loc[new_model, "kind"] == "multi-task"
    lines = report.findings(table)
    assert any(line.startswith(f"{new_model}'s fid[mtdiff-domain] is better than ddpm's") for line in lines), lines
    assert any(line.startswith(f"{new_model} (head)'s accuracy is worse than classifier (direct)'s") for line in lines), lines
