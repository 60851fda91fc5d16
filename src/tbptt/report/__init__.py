"""Report layer: plots and written reports from recorded metrics."""

from tbptt.report.plots import plot_training

__all__ = ["plot_training"]
