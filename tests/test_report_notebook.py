"""mtdiff.report.notebook: the report notebook, its parameters and its execution."""

from __future__ import annotations


import nbformat
import pytest

from mtdiff import report

from conftest import ROOT


# ---------------------------------------------------------------------------------------------
# the notebook


def test_notebook_metadata():
    nb = nbformat.read(ROOT / "notebooks" / "report.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["language_info"]["name"] == "python"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    src = params[0].source
    assert 'root = "results"' in src and 'datasets = ["digits"]' in src and "headline_nfe = None" in src
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_notebook_executes_on_fabricated_results(report_results, tmp_path):
    paths = report.render_notebook(tmp_path / "report.html", root=report_results, datasets=["digits", "shapes"],
                                   out_ipynb=tmp_path / "report.ipynb", timeout=120)
    html = paths["html"].read_text()
    for text in ("digits", "shapes", "mt_label (MT: image + label)", "anchor: real data (train vs test)",
                 "32.0 ± 5.0", "QUOTED", "mt_label has the lowest value", "data:image/png;base64",
                 "Unconditional generation", "is better than ddpm", "Converged (fid[mtdiff-domain]"):
        assert text in html, text
    nb = nbformat.read(paths["ipynb"], as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert nb.cells[[i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])][0] + 1] \
        .metadata["tags"] == ["injected-parameters"]
