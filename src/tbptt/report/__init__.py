"""Report layer: plots and written reports from recorded metrics."""

from tbptt.report.claims import Verdict, verdicts
from tbptt.report.compare import ReportPaths, table_rows, write_report
from tbptt.report.plots import plot_predictions, plot_training
from tbptt.report.summary import Stat, run_summary, strategy_rows

__all__ = [
    "plot_training",
    "plot_predictions",
    "ReportPaths",
    "table_rows",
    "write_report",
    "Stat",
    "Verdict",
    "run_summary",
    "strategy_rows",
    "verdicts",
]
