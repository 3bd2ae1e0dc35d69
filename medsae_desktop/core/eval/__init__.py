"""Evaluation of SAE latents and raw embedding dimensions (DESIGN.md §5.3, §5.4).

Public API::

    from medsae_desktop.core.eval import EvalConfig, evaluate_job, write_report, load_report
    result = run_job(evaluate_job("c.h5", sae_dir="sae", config=EvalConfig(balanced=200)))
    write_report(result, "rep", compare_dir="rep_raw")
    report = load_report("rep")            # per-unit stats: report.unit_stats(k)

Array-level metrics live in :mod:`medsae_desktop.core.eval.metrics`; naming accuracy
(``medsae score-names``) in :mod:`medsae_desktop.core.eval.naming_accuracy`. Importing this
package imports numpy and h5py only (no torch, no matplotlib, no Qt).
"""

from medsae_desktop.core.eval.data import (
    UNCERTAINTY_POLICIES, EvalLabels, RawUnits, SaeUnits, balanced_subset, load_eval_labels,
    make_units)
from medsae_desktop.core.eval.engine import EvalConfig, EvalResult, evaluate_job
from medsae_desktop.core.eval.metrics import (
    BestUnits, UnitAccumulator, UnitMoments, alive_by_correlation, best_unit_per_label,
    correlation_matrix, monosemanticity_scores, precision_recall_f1, top_fraction_thresholds,
    unit_entropy)
from medsae_desktop.core.eval.report import (
    Report, UnitStats, compare_reports, comparison_lines, evaluate_report_job, load_report,
    write_report)

__all__ = [
    "UNCERTAINTY_POLICIES", "BestUnits", "EvalConfig", "EvalLabels", "EvalResult", "RawUnits",
    "Report", "SaeUnits", "UnitAccumulator", "UnitMoments", "UnitStats", "alive_by_correlation",
    "balanced_subset", "best_unit_per_label", "compare_reports", "comparison_lines",
    "correlation_matrix", "evaluate_job", "evaluate_report_job", "load_eval_labels", "load_report", "make_units",
    "monosemanticity_scores", "precision_recall_f1", "top_fraction_thresholds", "unit_entropy",
    "write_report",
]
