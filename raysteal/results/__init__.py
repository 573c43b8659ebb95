"""Experiment results: Parquet rows (one per run), summaries and paper comparisons."""

from raysteal.results.store import ResultStore, run_id

__all__ = ["ResultStore", "run_id"]
