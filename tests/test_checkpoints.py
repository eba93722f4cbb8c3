"""Damaged run folders (issue 13): each case ends in a one-line error or a fallback with a
warning naming the file, and a resumed run that matches an uninterrupted one bit for bit."""

import io
import json
from pathlib import Path

import pytest
import torch
from test_train import assert_same_state, tiny, weights

from mtdiff.checkpoints import (
    digest_path, latest_checkpoint, list_checkpoints, load_run, read_checkpoint, write_checkpoint,
)
from mtdiff.errors import CheckpointError, ConfigError
from mtdiff.train import train


def _train(cfg, run, messages=None, **kw):
    log = messages.append if messages is not None else (lambda *_: None)
    return train(cfg, run, progress=False, log=log, **kw)


def _log_steps(run):
    return [json.loads(line)["step"] for line in (Path(run) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run of the tiny ddpm config: 8 steps, checkpoints every 2, log every 1."""
    run = tmp_path_factory.mktemp("straight")
    _train(tiny("ddpm", train__log_every_steps=1), run)
    return run


def _same_final(run, straight):
    for key in ("model", "ema"):
        assert_same_state(weights(run, key), weights(straight, key))
    assert _log_steps(run) == _log_steps(straight) == list(range(1, 9))


def test_flipped_bytes_are_detected_and_the_run_falls_back(tmp_path, straight):
    cfg = tiny("ddpm", train__log_every_steps=1)
    _train(cfg, tmp_path, stop_after_steps=6)
    newest = list_checkpoints(tmp_path)[-1][1]
    assert newest.name == "ckpt-00000006.pt"
    data = bytearray(newest.read_bytes())
    for i in range(16):  # 16 flipped bytes in the middle of the tensor data: torch would load them
        data[len(data) // 2 + 7 * i] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its checksum") as exc:
        read_checkpoint(newest)
    assert newest.name in str(exc.value) and "\n" not in str(exc.value)
    messages = []
    _train(cfg, tmp_path, messages)
    warnings = [m for m in messages if m.startswith("warning:")]
    assert any("ckpt-00000006.pt" in m and "checksum" in m for m in warnings), messages
    assert any("resuming" in m and "step 4" in m for m in messages)
    _same_final(tmp_path, straight)


def test_checkpoint_of_another_architecture_is_skipped_with_a_warning(tmp_path, straight):
    cfg = tiny("ddpm", train__log_every_steps=1)
    _train(cfg, tmp_path / "run", stop_after_steps=4)
    other = tmp_path / "other"
    _train(tiny("ddpm", net__model_channels=16, net__head_channels=16), other)
    # weights of another width under this run's config and a later step: only the shapes tell
    state = read_checkpoint(list_checkpoints(other)[-1][1])
    state["config"], state["step"] = cfg.to_dict(), 6
    foreign = tmp_path / "run" / "checkpoints" / "ckpt-00000006.pt"
    write_checkpoint(state, foreign)
    messages = []
    _train(cfg, tmp_path / "run", messages)
    assert any("ckpt-00000006.pt" in m and "another architecture" in m for m in messages), messages
    _same_final(tmp_path / "run", straight)
    assert (foreign.parent / "ckpt-00000006.pt.rejected").exists()  # set aside, not deleted

    # a checkpoint of another config (its own config says so)
    run2 = tmp_path / "run2"
    _train(cfg, run2, stop_after_steps=4)
    write_checkpoint(dict(read_checkpoint(list_checkpoints(other)[-1][1]), step=6),
                     run2 / "checkpoints" / "ckpt-00000006.pt")
    messages = []
    _train(cfg, run2, messages)
    assert any("ckpt-00000006.pt" in m and "differs at net.head_channels, net.model_channels" in m for m in messages)
    _same_final(run2, straight)


def test_loading_weights_of_another_architecture_is_one_line(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    _train(tiny("ddpm"), run)
    _train(tiny("ddpm", net__model_channels=16, net__head_channels=16), other)
    state = read_checkpoint(run / "final.pt")
    state["ema"] = read_checkpoint(other / "final.pt")["ema"]
    write_checkpoint(state, run / "final.pt")
    with pytest.raises(CheckpointError) as exc:
        load_run(run)
    message = str(exc.value)
    assert "final.pt" in message and "another architecture" in message and "\n" not in message


@pytest.mark.parametrize("text, expected", [
    ("train: [1, 2\n", "is not valid YAML"),
    ("train:\n  lr: -1\n", "train.lr=-1"),
    ("- just\n- a list\n", "mapping at the top level"),
    ("train: {lr: 0.1}\ntrain: {lr: 0.2}\n", "duplicate key 'train'"),
])
def test_invalid_run_config_yaml_is_one_line_naming_the_file(tmp_path, text, expected):
    cfg = tiny("ddpm")
    _train(cfg, tmp_path, stop_after_steps=2)
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        _train(cfg, tmp_path)
    message = str(exc.value)
    assert str(tmp_path / "config.yaml") in message and expected in message and "\n" not in message


def test_leftover_temp_files_are_cleaned_on_the_next_start(tmp_path, straight):
    cfg = tiny("ddpm", train__log_every_steps=1)
    _train(cfg, tmp_path, stop_after_steps=4)
    leftovers = [tmp_path / "checkpoints" / ".ckpt-00000006.pt.k1ll3d.tmp", tmp_path / ".summary.json.x9.tmp",
                 tmp_path / "checkpoints" / "ckpt-00000006.pt.sha256"]  # digest written, checkpoint not
    for p in leftovers:
        p.write_bytes(b"partial")
    messages = []
    _train(cfg, tmp_path, messages)
    assert not any(p.exists() for p in leftovers[:2])
    assert any("removed 3 leftover file(s)" in m for m in messages), messages
    assert not list(tmp_path.rglob("*.tmp"))
    _same_final(tmp_path, straight)


def test_resumed_run_writes_no_duplicate_log_records(tmp_path, straight):
    cfg = tiny("ddpm", train__log_every_steps=1)
    _train(cfg, tmp_path, stop_after_steps=5)  # records 1..5, checkpoints at 2 and 4
    with open(tmp_path / "train_log.jsonl", "a") as fh:
        fh.write('{"step": 6, "lo')  # a record cut by a kill
    assert list_checkpoints(tmp_path)[-1][0] == 4
    messages = []
    _train(cfg, tmp_path, messages)
    assert any("dropped 2 record(s)" in m for m in messages), messages
    _same_final(tmp_path, straight)


def test_shorter_budget_on_an_unfinished_run_resumes_from_a_checkpoint_within_it(tmp_path):
    short = tiny("ddpm", train__total_kimg=0.064, train__log_every_steps=1)  # 4 steps
    _train(short, tmp_path / "fresh")
    long = tiny("ddpm", train__log_every_steps=1)
    _train(long, tmp_path / "run", stop_after_steps=6)  # checkpoints at 4 and 6 of 8
    messages = []
    summary = _train(short, tmp_path / "run", messages)
    assert summary["steps"] == 4
    assert any("ckpt-00000006.pt" in m and "past this budget" in m for m in messages), messages
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [4]
    assert (tmp_path / "run" / "checkpoints" / "ckpt-00000006.pt.rejected").exists()
    assert_same_state(weights(tmp_path / "run"), weights(tmp_path / "fresh"))
    assert _log_steps(tmp_path / "run") == [1, 2, 3, 4]


def test_finished_run_refuses_another_budget_naming_the_key(tmp_path):
    _train(tiny("ddpm"), tmp_path)
    before = (tmp_path / "final.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"finished run .*differs at train.total_kimg\)"):
        _train(tiny("ddpm", train__total_kimg=0.064), tmp_path)
    assert (tmp_path / "final.pt").read_bytes() == before
    _train(tiny("ddpm"), tmp_path)  # the same config again is fine: nothing to train
    again = torch.load(io.BytesIO(before), weights_only=False)["model"]
    assert_same_state(weights(tmp_path), again)


def test_checkpoint_without_its_checksum_is_not_trusted(tmp_path):
    _train(tiny("ddpm"), tmp_path, stop_after_steps=4)
    newest = list_checkpoints(tmp_path)[-1][1]
    digest_path(newest).unlink()
    messages = []
    state = latest_checkpoint(tmp_path, log=messages.append)
    assert state["step"] == 2 and "no checksum file" in messages[0] and newest.name in messages[0]


def test_restart_on_change_sets_the_old_run_aside(tmp_path):
    """The workflow's train rule (rerun by Snakemake when the config training reads changed)
    starts over instead of refusing; the CLI without the flag refuses."""
    _train(tiny("ddpm", train__lr=1e-3), tmp_path / "fresh")
    _train(tiny("ddpm"), tmp_path / "run", stop_after_steps=4)
    with pytest.raises(ConfigError, match="differs at train.lr"):
        _train(tiny("ddpm", train__lr=1e-3), tmp_path / "run")
    messages = []
    _train(tiny("ddpm", train__lr=1e-3), tmp_path / "run", messages, restart_on_change=True)
    assert any("differs at train.lr" in m and "starting over" in m for m in messages)
    assert (tmp_path / "run" / "checkpoints.replaced").is_dir()
    assert_same_state(weights(tmp_path / "run"), weights(tmp_path / "fresh"))
    assert _log_steps(tmp_path / "run") == _log_steps(tmp_path / "fresh")


def test_evaluate_reads_the_current_settings_over_the_run_folders(tmp_path):
    """A run folder keeps the eval / inference values of training time; `mtdiff evaluate ...
    --set` (what the workflow passes) measures with the current ones instead."""
    from mtdiff.config import load_config
    from mtdiff.evaluate import _run_config

    cfg = load_config(None, {"eval": {"kid_subset_size": 100}, "inference": {"num_draws": 4}})
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    assert _run_config(tmp_path).eval.kid_subset_size == 100
    cfg = _run_config(tmp_path, ["eval.kid_subset_size=7", "inference.num_draws=2", 'inference.label_procedure="elbo"'])
    assert (cfg.eval.kid_subset_size, cfg.inference.num_draws, cfg.inference.label_procedure) == (7, 2, "elbo")
