"""mtdiff.progress: periodic, log-friendly progress lines."""

import pytest

from mtdiff.errors import ConfigError
from mtdiff.progress import Progress, resolve_mode


def test_log_mode_writes_a_line_every_tenth_and_at_the_end(capsys):
    bar = Progress(100, "train ddpm step", mode="log", unit="step", interval_s=1e9, unit_scale=32)
    for _ in range(100):
        bar.update(1, loss=0.5)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 10  # every 10% of 100 steps; the last one is the 100% line, not repeated by close()
    assert lines[0].startswith("train ddpm step: 10/100 (10%), ") and "images/s" in lines[0] and "loss=0.5" in lines[0]
    assert "ETA" in lines[0] and "ETA" not in lines[-1] and lines[-1].startswith("train ddpm step: 100/100 (100%)")


def test_log_mode_time_interval_and_final_line(capsys, monkeypatch):
    clock = iter(range(1000))
    monkeypatch.setattr("mtdiff.progress.time.time", lambda: float(next(clock)))
    bar = Progress(1000, "sample batch", mode="log", unit="batch", interval_s=5, every_fraction=1.0)
    for _ in range(12):  # one second per call: a line at each 5 s
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(",")[0] for line in lines] == ["sample batch: 5/1000 (0%)", "sample batch: 10/1000 (1%)",
                                                      "sample batch: 12/1000 (1%)"]


def test_none_mode_is_silent_and_bad_modes_are_refused(capsys):
    with Progress(5, "x", mode="none") as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""
    assert resolve_mode(False) == "none" and resolve_mode("log") == "log"
    with pytest.raises(ConfigError, match="--progress='loud'.*accepted: auto, bar, log, none"):
        resolve_mode("loud")
