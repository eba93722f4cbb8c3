"""Execute the report notebook on a results folder and render it to HTML.

    python -m mtdiff.report_notebook --notebook notebooks/report.ipynb --root results \
        --datasets digits --out results/report.ipynb --html results/report.html

Parameters are injected papermill-style: a cell tagged ``injected-parameters`` is inserted
after the cell tagged ``parameters``. The executed notebook is the output (not only a log), so
its tables and figures are inspectable; the HTML is rendered offline by nbconvert.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from mtdiff.errors import ConfigError, MtdiffError
from mtdiff.utils import atomic_write_text


def inject_parameters(nb, params: dict) -> None:
    idx = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if idx is None:
        raise ConfigError("the notebook has no cell tagged 'parameters'")
    source = "# Parameters injected by mtdiff.report_notebook\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(idx + 1, cell)


def execute(notebook: str | Path, out: str | Path, html: str | Path | None, params: dict, timeout: int = 600) -> None:
    notebook = Path(notebook)
    if not notebook.is_file():
        raise ConfigError(f"notebook {str(notebook)!r} does not exist")
    nb = nbformat.read(notebook, as_version=4)
    inject_parameters(nb, params)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(Path.cwd())}})
    client.execute()
    atomic_write_text(out, nbformat.writes(nb))
    if html is not None:
        body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
        atomic_write_text(html, body)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--notebook", default="notebooks/report.ipynb")
    p.add_argument("--root", default="results")
    p.add_argument("--datasets", default="digits", help="comma-separated")
    p.add_argument("--out", required=True, help="executed notebook to write")
    p.add_argument("--html", default=None, help="HTML render to write")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    a = p.parse_args(argv)
    try:
        execute(a.notebook, a.out, a.html, {"root": a.root, "datasets": a.datasets.split(",")}, a.timeout)
    except MtdiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}" + (f" and {a.html}" if a.html else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
