"""``raysteal report DIR``: Markdown tables and PNG figures from a results directory."""

from raysteal.report.render import render_report

__all__ = ["render_report"]
