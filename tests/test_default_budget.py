"""The default digits run's budget is shaped for the convergence check (design.md §9, issue 14):
equal network and budget for every model, and kept snapshots whose last one lies a meaningful
step before the end, so "last two checkpoints differ by less than the seed-to-seed CI" compares
two distinct points near convergence, and earlier ones show the curve."""
from pathlib import Path

import yaml

from mtdiff.config import load_config
from mtdiff.models import check_config

ROOT = Path(__file__).resolve().parents[1]
RUN_CONFIG = ROOT / "config/runs/digits.yaml"
# keys that must be equal for every model of the comparison ("equal backbone and budget")
SHARED_PREFIXES = ("net.", "train.total_kimg", "train.batch_size", "train.lr", "train.snapshot_kimg",
                   "train.ema_halflife_kimg", "train.lr_warmup_kimg")


def _flat(d, prefix=""):
    for key, value in (d or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flat(value, f"{name}.")
        else:
            yield name, value


def test_default_snapshots_bracket_the_end_of_the_budget():
    tc = load_config(RUN_CONFIG).train
    snaps = list(tc.snapshot_kimg)
    assert snaps == sorted(set(snaps)), "snapshot_kimg must be increasing"
    assert snaps[-1] < tc.total_kimg
    # the second-to-last point of the convergence check: 70-90% of the budget
    assert 0.7 * tc.total_kimg <= snaps[-1] <= 0.9 * tc.total_kimg
    # the curve starts early (shows the fall, not only the plateau)
    assert snaps[0] <= 0.25 * tc.total_kimg and len(snaps) >= 4
    # every point is a whole number of batches, so the snapshot steps are the stated kimg
    for kimg in [*snaps, tc.total_kimg]:
        assert (kimg * 1000) % tc.batch_size == 0, kimg


def test_default_models_share_network_and_budget():
    workflow = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for name, dataset in workflow["datasets"].items():
        per_model = dataset.get("model_overrides") or {}
        for model, sets in per_model.items():
            for key, _ in _flat(sets):
                assert not key.startswith(SHARED_PREFIXES), f"{name}/{model} overrides {key}"
        for model in dataset["models"]:
            check_config(load_config(ROOT / dataset["run_config"], {"model": model}))
