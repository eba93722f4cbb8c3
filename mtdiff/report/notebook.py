"""Executing the report notebook (``notebooks/report.ipynb``) with injected parameters, and
saving it executed and/or as a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

from mtdiff.errors import ConfigError
from mtdiff.io import atomic_write_text
from mtdiff.report.vocabulary import DEFAULT_NOTEBOOK, ReportError


def render_notebook(out_html=None, *, root="results", datasets: Sequence[str] = ("digits",),
                    headline_nfe: int | None = None, notebook=None, out_ipynb=None, timeout: int = 600,
                    kernel_name: str = "python3", show_code: bool = False) -> dict[str, Path]:
    """Execute the report notebook (``notebooks/report.ipynb``) for ``datasets`` under ``root``
    with the papermill convention (a cell tagged ``injected-parameters`` after the one tagged
    ``parameters``), save the executed notebook (``out_ipynb``) and/or its HTML (``out_html``;
    a self-contained page, code cells hidden unless ``show_code``)."""
    if isinstance(datasets, str):
        datasets = [datasets]
    nb_path = Path(notebook) if notebook is not None else DEFAULT_NOTEBOOK
    if not nb_path.is_file():
        raise ReportError(f"report notebook {str(nb_path)!r} not found; pass --notebook")
    if out_html is None and out_ipynb is None:
        raise ConfigError("render_notebook needs out_html and/or out_ipynb")
    nb = nbformat.read(nb_path, as_version=4)
    params = {"root": str(Path(root).resolve()), "datasets": list(datasets), "headline_nfe": headline_nfe}
    inject_parameters(nb, params)
    workdir = Path(out_html or out_ipynb).resolve().parent
    workdir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except CellExecutionError as e:
        msg = str(e).strip().splitlines()
        raise ReportError(f"the report notebook failed: {msg[-1] if msg else e}") from None
    out: dict[str, Path] = {}
    if out_ipynb is not None:
        out["ipynb"] = atomic_write_text(Path(out_ipynb), nbformat.writes(nb))
    if out_html is not None:
        body, _ = HTMLExporter(exclude_input=not show_code, exclude_input_prompt=True,
                               exclude_output_prompt=True).from_notebook_node(nb)
        out["html"] = atomic_write_text(Path(out_html), body)
    return out


def inject_parameters(nb, params: dict) -> None:
    """Papermill-style: insert (or replace) a cell tagged ``injected-parameters`` right after the
    cell tagged ``parameters`` (at the top if none)."""
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    at = next((i + 1 for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    cells.insert(at, cell)
    nb.cells = cells
