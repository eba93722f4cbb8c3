"""scripts/gpu_first_hour.py in its CPU smoke mode: every section runs and reports its fields
(the measurements themselves need a GPU; docs/benchmarks.md says how to read them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~20-60 s on 2 cores, most of it Inception-v3 at 299x299 on the CPU
def test_first_hour_script_smoke_mode_runs_every_section(tmp_path):
    out = tmp_path / "first_hour.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_first_hour.py"), "--smoke", "--json", str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    r = json.loads(out.read_text())
    assert r["ok"] and not r["errors"]
    assert r["mode"].startswith("smoke")
    assert r["env"]["torch"] and r["env"]["gpu_count"] == 0
    for net in ("cifar10", "imagenet64", "pets"):
        assert r["train"][net]["bare_images_per_s"] > 0 and r["train"][net]["gflop_per_image"] > 0
    for net in ("cifar10", "imagenet64"):  # trainer loop beside the bare step
        assert r["train"][net]["loop_images_per_s"] > 0
    assert {"images_per_s_0_workers", "images_per_s_2_workers"} <= set(r["loader"])
    assert r["fid"]["cached_equals_uncached"] and r["fid"]["feature_images_per_s"] > 0
    assert r["sample"]["finite"] and r["sample"]["hours_for_50k"] > 0
    assert r["resume"]["bit_exact"]  # CPU: an interrupted and resumed run equals a straight one
    assert "skipped" in r["ddp"]
    assert set(r["project"]) == {"cifar10", "imagenet64", "pets"}
    assert all(p["train_gpu_hours"] > 0 and p["estimate_in_config"] for p in r["project"].values())
    for heading in ("[env]", "[train]", "[loader]", "[fid]", "[sample]", "[resume]", "[ddp]", "[project]"):
        assert heading in res.stdout


def test_unknown_section_is_refused_in_one_line():
    res = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_first_hour.py"), "--smoke", "--sections", "env,fidd"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert res.returncode == 2
    assert res.stderr.startswith("error: --sections: unknown ['fidd']") and "Traceback" not in res.stderr
