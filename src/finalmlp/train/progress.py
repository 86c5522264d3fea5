"""Live training progress: a Rich bar with loss and samples/s, one line per validation."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

if TYPE_CHECKING:
    from finalmlp.train.records import Validation

console = Console(stderr=True, highlight=False, soft_wrap=True)


class TrainingProgress:
    """Context manager around ``rich.progress.Progress``; a no-op bar when disabled."""

    def __init__(self, enabled: bool, total: int, log: bool = True) -> None:
        self.enabled = enabled
        self.log = log  # per-validation lines (off on every rank but 0 under torchrun)
        self.total = total
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.loss_ema: float | None = None
        self.epoch_rows = 0
        self.epoch_started = time.perf_counter()

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]} samples/s"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.__exit__(exc_type, exc, tb)

    def start_epoch(self, epoch: int, max_epochs: int) -> None:
        self.epoch_rows = 0
        self.epoch_started = time.perf_counter()
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"epoch {epoch}/{max_epochs}", total=self.total, loss="-", speed="-"
        )

    def advance(self, loss: float, rows: int) -> None:
        self.loss_ema = loss if self.loss_ema is None else 0.95 * self.loss_ema + 0.05 * loss
        self.epoch_rows += rows
        if self.progress is None or self.task is None:
            return
        speed = self.epoch_rows / max(time.perf_counter() - self.epoch_started, 1e-9)
        self.progress.update(
            self.task, advance=1, loss=f"{self.loss_ema:.4f}", speed=f"{speed:,.0f}"
        )

    def log_validation(self, record: Validation) -> None:
        if not self.log:
            return
        metrics = "  ".join(f"{k} {v:.5f}" for k, v in record.metrics.items())
        mark = "  [green]best[/green]" if record.improved else ""
        console.print(
            f"epoch {record.epoch:>3}  step {record.step:>6}  train loss {record.train_loss:.5f}"
            f"  valid {metrics}  lr {record.learning_rate:.0e}{mark}"
        )
