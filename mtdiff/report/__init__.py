"""The benchmark report: comparison tables, plots and a data-driven reading of the results.

Reads only what the workflow wrote under a results root ``R`` for a dataset ``D``:

* metric records ``R/D/metrics/*.jsonl`` (:mod:`mtdiff.metrics.records`),
* training summaries ``R/D/train/<model>/seed<k>/summary.json``,
* training logs ``R/D/train/<model>/seed<k>/train_log.jsonl``,
* sample grids ``R/D/samples/<model>/seed<k>/grid.png``,

and writes (``build_report``) into an output folder the files of :data:`REPORT_FILES`.

One module per job: :mod:`~mtdiff.report.vocabulary` (models, anchors, metrics, column names),
:mod:`~mtdiff.report.stats` (mean and 95% CI, paired differences, the convergence test),
:mod:`~mtdiff.report.load` (reading results), :mod:`~mtdiff.report.headline` (choosing headline
values; one precision per column), :mod:`~mtdiff.report.tables` (the comparison table and its
files), :mod:`~mtdiff.report.verdicts` (MT vs single-task, paired over seeds),
:mod:`~mtdiff.report.convergence` (converged yes/no per model), :mod:`~mtdiff.report.summary`
(the per-task tables of summary.md), :mod:`~mtdiff.report.findings` (the reading of the table),
:mod:`~mtdiff.report.figures` and :mod:`~mtdiff.report.plots` (the figures),
:mod:`~mtdiff.report.build` (one dataset's report), :mod:`~mtdiff.report.notebook` (the HTML
notebook) and :mod:`~mtdiff.report.cli` (``mtdiff report``). Their public names are all
reachable as ``mtdiff.report.<name>``.

Protocol of the comparison table (:func:`comparison_table`)
----------------------------------------------------------
* One column per *measured quantity*: the metric name plus what changes its meaning, in
  brackets: the feature extractor for generation metrics (``fid[mtdiff-domain]`` and
  ``fid[inception-v3-compat]`` are never mixed), a non-trivial sampling condition
  (``cond_fid[mtdiff-domain, label=balanced]``) and the inference procedure of label/mask
  prediction (``accuracy[head]``, ``accuracy[direct]``).
* The headline value of a (model, seed, column) is the record at the largest
  ``checkpoint_step`` and the headline NFE (``headline_nfe``; default: the most common NFE of
  the non-curve records). Records without an NFE (task metrics, anchors) always qualify. At
  the same step, a main evaluation beats a curve point (``extra.curve``), EMA beats raw
  weights, a larger ``n_generated`` beats a smaller one, and a later record beats an earlier one.
* Each cell is the mean over seeds with a 95% confidence interval from the t-distribution,
  ``t(0.975, n-1) * s / sqrt(n)``; with one seed the CI is NaN (shown as "—").
* Anchors (``real_floor``: real data of the other split vs the reference split;
  ``gaussian_baseline``: an independent-pixel Gaussian) are rows of their own.
* Equal-compute control: parameters, training steps, images seen, wall time and peak memory
  (means over the seeds' ``summary.json``) sit beside the metrics.
* One numeric precision per column: records stamped with different ``precision`` (a record
  without one takes its training run's from ``summary.json``; anchors have none) are refused with
  an error naming the models and precisions; each row carries ``numeric_precision`` and ``device``.

The paper's own numbers (:func:`reference_table`, ``mtdiff/paper_reference.csv``) are quoted,
never merged into the measured table.
"""

from mtdiff.lazy import lazy_attributes

# Lazy attribute access (PEP 562), as in mtdiff.metrics: `mtdiff.cli` imports this package to
# add the `report` subcommand for every command, and the plots and the notebook cost seconds to
# import (matplotlib, seaborn, nbconvert); each submodule is imported on first use of a name.
_SUBMODULES = {
    "vocabulary": ("ANCHORS", "DASH", "METRIC_NAMES", "REPORT_FILES", "ReportError", "column_key", "metric_direction",
                   "metric_family", "model_colour", "model_kind", "model_label", "model_order", "model_pairs",
                   "multi_task_models", "parse_column_key", "pretty_column", "single_task_models"),
    "stats": ("convergence_check", "intervals_overlap", "mean_ci95", "paired_difference"),
    "convergence": ("convergence_table", "format_convergence"),
    "verdicts": ("format_difference", "paired_verdicts", "verdict_sentence"),
    "summary": ("MEMORIZATION_FLAG_FACTOR", "compute_table", "summary_markdown", "task_tables"),
    "load": ("find_sample_grids", "load_records", "load_summaries", "load_train_logs"),
    "headline": ("default_headline_nfe", "headline_records", "headline_stats"),
    "tables": ("QUOTED_NOTE", "comparison_table", "format_mean_ci", "format_table", "latex_escape", "metric_columns",
               "reference_table", "table_caption", "table_convergence", "table_stats", "write_reference_table",
               "write_tables"),
    "plots": ("plot_bars", "plot_losses", "plot_metric_vs_nfe", "plot_training_curves"),
    "build": ("build_report", "make_report"),
    "notebook": ("inject_parameters", "render_notebook"),
    "cli": ("_cmd_report", "add_report_parser"),
}
__getattr__, __dir__ = lazy_attributes(__name__, _SUBMODULES)

# Eager, unlike the rest: the function `findings` shares its name with its module, and importing
# a submodule binds the module to the package attribute of its name; importing it here, once,
# leaves `mtdiff.report.findings` the function (costs pandas and scipy, not the plots).
from mtdiff.report.findings import findings  # noqa: E402

__all__ = sorted(["findings", *(n for names in _SUBMODULES.values() for n in names if not n.startswith("_"))])
