"""Logging and terminal output: rich on a terminal, plain lines under cron, JSON on request.

Diagnostics go to stderr, results (tables, the --json summary) to stdout.
"""

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

logger = logging.getLogger(__name__)

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
FILE_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
CHATTY_LOGGERS = ("opensearch", "urllib3", "elastic_transport", "filelock")


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """How much to print and where: set once from the global command-line options."""

    verbosity: int = 0  # -1 quiet, 0 normal, 1 verbose, 2 also SQL
    log_file: Path | None = None
    json: bool = False


def use_colour(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Return True when `stream` is a terminal and NO_COLOR is unset or empty."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("NO_COLOR"):
        return False

    return stream.isatty()


def stderr_console() -> Console:
    """Return a console on stderr that colours only a terminal without NO_COLOR."""
    colour = use_colour(sys.stderr)

    return Console(
        stderr=True,
        no_color=not colour,
        highlight=False,
        force_terminal=colour,
        soft_wrap=True,
    )


def configure_logging(options: OutputOptions) -> None:
    """Set up the root logger for one command from the -q/-v and --log-file options."""
    levels = {-1: logging.ERROR, 0: logging.INFO, 1: logging.DEBUG, 2: logging.DEBUG}
    level = levels[max(-1, min(2, options.verbosity))]
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG)

    if use_colour(sys.stderr):
        console_handler: logging.Handler = RichHandler(
            console=stderr_console(),
            show_path=False,
            show_time=False,
            rich_tracebacks=False,
            markup=False,
        )
    else:
        console_handler = logging.StreamHandler(sys.stderr)
        console_handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    console_handler.setLevel(level)
    root.addHandler(console_handler)

    if options.log_file is not None:
        file_handler = logging.FileHandler(options.log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
        file_handler.setLevel(logging.DEBUG)
        root.addHandler(file_handler)

    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("peewee").setLevel(
        logging.DEBUG if options.verbosity >= 2 else logging.WARNING
    )
    # opensearch-py logs a WARNING for every request that fails, also for the 413 and 429
    # responses that damjobs retries and reports in its own lines; -v shows them again.
    logging.getLogger("opensearch").setLevel(
        logging.WARNING if options.verbosity >= 1 else logging.ERROR
    )


class ProgressReporter:
    """
    Show the progress of a run: a rich bar with rate and ETA on a terminal, otherwise a
    plain log line at most every `interval_seconds`.
    """

    def __init__(
        self, label: str, options: OutputOptions, interval_seconds: float = 60.0
    ):
        self.label = label
        self.interval_seconds = interval_seconds
        self.total: int | None = None
        self.done = 0
        self.failed = 0
        self._last_line = time.monotonic()
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task_id: TaskID | None = None
        if options.verbosity >= 0 and not options.json and sys.stderr.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=True,
            )

    def __enter__(self) -> "ProgressReporter":
        if self._bar is not None:
            self._bar.start()
            self._task_id = self._bar.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None and self._task_id is not None:
            self._bar.update(self._task_id, total=total)

    def advance(self, done: int = 1, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        if self._bar is not None and self._task_id is not None:
            rate = self.done / max(time.monotonic() - self._started, 1e-6)
            self._bar.update(
                self._task_id,
                advance=done,
                description=f"{self.label} ({rate:.1f}/s, {self.failed} failed)",
            )
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_seconds:
            self._last_line = now
            rate = self.done / max(now - self._started, 1e-6)
            of_total = f"/{self.total}" if self.total is not None else ""
            logger.info(
                "%s: %d%s done, %d failed, %.1f per second",
                self.label,
                self.done,
                of_total,
                self.failed,
                rate,
            )
