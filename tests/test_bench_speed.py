"""benchmarks/bench_speed.py: one run prints one JSON object with every speed figure."""

import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_speed  # noqa: E402

TINY = ["--set", "net.model_channels=8", "--set", "net.head_channels=8", "--set", "net.label_head_hidden=16",
        "--set", "sample.steps=2", "--warmup", "0", "--iters", "1", "--trainer-steps", "2", "--num-samples", "4"]


def test_tiny_run_prints_every_figure_as_positive_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert bench_speed.main(TINY + ["--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert {"machine", "config", "command", "bare_step", "trainer", "unet", "diffusers_unet2d", "sampling"} <= set(printed)
    assert set(printed["machine"]["cpu_flags"]) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    # the run config the default workflow trains, in the precision it pins, with the tiny overrides on top
    assert printed["config"]["precision"] == "fp32" and printed["config"]["model_channels"] == 8
    assert printed["config"]["sample_steps"] == 2 and printed["sampling"]["nfe"] == 2
    for key in ("bare_step", "trainer", "unet", "sampling"):
        assert printed[key]["images_per_s"] > 0, key
    assert printed["trainer"]["steps"] == 2
    diffusers = printed["diffusers_unet2d"]
    try:
        import diffusers as _  # noqa: F401
    except ImportError:
        assert diffusers == "not installed"  # never a number without the library
    else:
        assert diffusers["images_per_s"] > 0
        assert abs(diffusers["parameters"] - printed["unet"]["parameters"]) <= 128  # equal size (bench_backbone)


@pytest.mark.parametrize("args, message", [(["--iters", "0"], "--iters=0"), (["--set", "net.model_channels"], "KEY=VALUE")])
def test_bad_options_name_the_option(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_speed.main(args)
    text = capsys.readouterr().err + str(exc.value.code)
    assert message in text and "accepted" in text, text
