"""mtdiff.io: atomic writes leave a file complete or untouched; JSON Lines survive a crashed writer."""

import json
import os
import stat

import numpy as np
import pytest

from mtdiff.io import (
    JsonLinesError, append_jsonl, atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json,
    read_jsonl,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(path, "w") as fh:
        fh.write("half a file")
        raise RuntimeError("killed mid-write")
    assert read_json(path) == {"a": 1}
    assert os.listdir(path.parent) == ["out.json"]


def test_written_files_get_the_umask_permissions_not_mkstemps_private_ones(tmp_path):
    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "t.txt", "x\r\ny\n")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == b"x\r\ny\n"  # newlines as given


def test_npz_and_bytes_through_the_context_manager(tmp_path):
    with atomic_open(tmp_path / "a.npz") as fh:
        np.savez_compressed(fh, x=np.arange(5))
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2, 3, 4]
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="write mode"), atomic_open(tmp_path / "c", "r"):
        pass


def test_append_after_an_unfinished_line_starts_a_new_line(tmp_path):
    path = tmp_path / "log.jsonl"
    assert append_jsonl(path, [{"step": 1}, {"step": 2}]) == 2
    with open(path, "a") as fh:
        fh.write('{"step": 3, "lo')  # a writer killed mid-line
    with pytest.warns(UserWarning, match=r"log\.jsonl:3: skipped an unfinished last line"):
        assert [o["step"] for _, o in read_jsonl(path, skip_unfinished_last_line=True)] == [1, 2]
    with pytest.raises(JsonLinesError, match=r"log\.jsonl:3: malformed JSON line"):
        list(read_jsonl(path))
    assert append_jsonl(path, [{"step": 4}]) == 1
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1]) == {"step": 4} and lines[2] == '{"step": 3, "lo'
    # now the broken line is not the last one: it is an error even when skipping unfinished lines
    with pytest.raises(JsonLinesError, match=r"log\.jsonl:3"):
        list(read_jsonl(path, skip_unfinished_last_line=True))
    assert append_jsonl(path, []) == 0
