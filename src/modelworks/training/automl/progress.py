"""A rich progress bar over the time budget (``progress=True``)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class BudgetProgress:
    """Advances with the clock; its text shows trials run and the best score so far."""

    def __init__(self, budget: float, enabled: bool) -> None:
        self.budget = budget
        self.start = time.monotonic()
        self.progress: Progress | None = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]AutoML[/bold] {task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self.task = self.progress.add_task("starting", total=budget)

    def __enter__(self) -> BudgetProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def update(self, text: str) -> None:
        if self.progress is not None:
            elapsed = min(self.budget, time.monotonic() - self.start)
            self.progress.update(self.task, completed=elapsed, description=text)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=self.budget)
            self.progress.stop()
