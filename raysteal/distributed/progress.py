"""A progress display for experiment runs (rich when interactive, plain lines otherwise)."""

from __future__ import annotations

import sys
import time


class RunProgress:
    """Counts finished runs; shows a rich bar on a TTY and one line per run otherwise."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled, self.done = total, enabled, 0
        self._rich = None
        self._started = time.perf_counter()

    def __enter__(self) -> RunProgress:
        if self.enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._rich = Progress(
                TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}")
            )
            self._rich.start()
            self._task = self._rich.add_task("", total=self.total)
        return self

    def advance(self, message: str) -> None:
        self.done += 1
        self._say(message, advance=1)

    def note(self, message: str) -> None:
        """Say how something in progress stands (e.g. a target's training) without counting a run."""
        self._say(message, advance=0)

    def _say(self, message: str, advance: int) -> None:
        if self._rich is not None:
            self._rich.update(self._task, advance=advance, description=message)
        elif self.enabled:
            elapsed = time.perf_counter() - self._started
            print(f"[{self.done}/{self.total} {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()


def target_epoch_message(news: dict) -> str:
    """One line for a target-training epoch reported by ``deploy.prepare_target``."""
    phase = f" ({news['phase']})" if news.get("phase") else ""
    if "loss" not in news:  # "chosen": early stopping's choice, just before a refit (raysteal.training.refit)
        return f"training target {news['target']}{phase}: epoch {int(news['epoch'])}, valid NDCG@10 {news.get('best_valid_ndcg@10', float('nan')):.4f}"
    line = f"training target {news['target']}{phase}: epoch {int(news['epoch'])}/{int(news['epochs'])} loss {news['loss']:.4f}"
    if "valid_ndcg@10" in news:
        line += f" valid NDCG@10 {news['valid_ndcg@10']:.4f} (best {news['best_valid_ndcg@10']:.4f})"
    return line
