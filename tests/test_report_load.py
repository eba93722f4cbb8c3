"""mtdiff.report.load: reading records and summaries; bad input is a one-line error."""

from __future__ import annotations

import json

import pytest

from mtdiff import report
from mtdiff.errors import MtdiffError

from conftest import _rec


# ---------------------------------------------------------------------------------------------
# errors


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = tmp_path / "m.jsonl"
    good = json.dumps(_rec("digits", "ddpm", 0, "fid", 1.0))
    p.write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(MtdiffError, match=r"m\.jsonl:3"):
        report.load_records(p)


def test_missing_records_is_a_one_line_error(tmp_path):
    with pytest.raises(MtdiffError, match="no metric records"):
        report.build_report(tmp_path, "digits", tmp_path / "out")
