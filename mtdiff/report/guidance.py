"""The guidance sweep's table and plot: conditional accuracy against class-balanced conditional
FID, one line per model, one point per guidance scale (records of :mod:`mtdiff.guidance_sweep`).

    python -m mtdiff.report_guidance results/digits/metrics/guidance_*.jsonl \
        --plot results/digits/report/guidance.png --table results/digits/report/guidance.csv

The table has one row per (model, guidance, scale): mean over seeds of accuracy, FID and KID,
and the number of seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from mtdiff.errors import ConfigError, exit_status
from mtdiff.io import atomic_path as _atomic_path
from mtdiff.io import atomic_write_text

COLUMNS = {"guided_cond_accuracy": "accuracy", "guided_cond_fid": "fid", "guided_cond_kid_mean": "kid"}


def sweep_table(paths) -> pd.DataFrame:
    """(model, guidance, scale) -> accuracy, fid, kid (means over seeds) and n_seeds."""
    from mtdiff.metrics import read_records

    df = read_records(paths)
    df = df[df["metric"].isin(list(COLUMNS))]
    if df.empty:
        raise ConfigError(f"no guidance-sweep records ({', '.join(COLUMNS)}) in {', '.join(map(str, paths))}")
    df = df.assign(guidance=df["extra.guidance"], scale=df["extra.guidance_scale"].astype(float))
    wide = df.pivot_table(index=["model", "guidance", "scale", "seed"], columns="metric", values="value").reset_index()
    wide = wide.rename(columns=COLUMNS)
    out = wide.groupby(["model", "guidance", "scale"], as_index=False).agg(
        accuracy=("accuracy", "mean"), fid=("fid", "mean"), kid=("kid", "mean"), n_seeds=("seed", "nunique"))
    return out.sort_values(["model", "scale"]).reset_index(drop=True)


def sweep_palette(models) -> dict[str, str]:
    """model -> its colour in every other figure (the registry's ModelSpec colour, via the
    report vocabulary), so a model keeps its colour across the report."""
    from mtdiff.report.vocabulary import model_colour

    return {m: model_colour(m) for m in models}


def plot_sweep(table: pd.DataFrame, out: str | Path) -> None:
    """Accuracy (y) vs FID (x), one line per model (in its registry colour), each point
    labelled with its scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        sns.lineplot(data=table, x="fid", y="accuracy", hue="model", style="guidance", markers=True, sort=False,
                     palette=sweep_palette(table["model"].unique()), ax=ax)
        for row in table.itertuples():
            ax.annotate(f"s={row.scale:g}", (row.fid, row.accuracy), textcoords="offset points", xytext=(4, 3),
                        fontsize=7)
        ax.set_xlabel("class-balanced conditional FID (lower is better)")
        ax.set_ylabel("conditional accuracy (judge: classifier)")
        ax.set_title("Guided conditional generation: accuracy vs FID")
        fig.tight_layout()
        with _atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=150, format="png")
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mtdiff.report_guidance", description=__doc__.split("\n\n")[0])
    p.add_argument("records", nargs="+", help="guidance-sweep JSONL files")
    p.add_argument("--plot", required=True, help="PNG to write")
    p.add_argument("--table", required=True, help="CSV to write")
    a = p.parse_args(argv)

    def work():
        table = sweep_table(a.records)
        Path(a.table).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.table, table.to_csv(index=False))
        plot_sweep(table, a.plot)
        print(table.to_string(index=False))

    return exit_status(work)


if __name__ == "__main__":
    sys.exit(main())
