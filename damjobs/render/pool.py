"""A pool of render worker processes with per-image time limits and crash isolation.

Each worker is a spawned process (no parent state is inherited) that renders one source
job at a time. The parent enforces the time limit itself. A worker that runs past
`timeout_seconds` is killed, and the job's entries fail with "timed_out". A worker that
dies (segmentation fault, abort, out of memory) fails its job with "crashed". Either
way a fresh worker takes the next job. Workers are replaced after `images_per_worker`
jobs to bound the memory that ImageMagick and the allocator keep. Each worker has its
own ImageMagick temporary folder below `temp_root`. The parent empties it before the
worker starts and deletes it after the worker ends, so files left by a killed worker go
too.

This module imports no Wand: the spawned worker sets its environment before it loads the
renderer.
"""

import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType

from damjobs.errors import RenderError
from damjobs.render.types import EntryResult, RenderSettings, SourceJob

logger = logging.getLogger(__name__)

RenderFunction = Callable[[SourceJob, RenderSettings], list[EntryResult]]

STARTUP_TIMEOUT_SECONDS = 60.0
"""How long a new worker may take to import the renderer and report ready."""
MAX_CONSECUTIVE_START_FAILURES = 3
SHUTDOWN_GRACE_SECONDS = 5.0


def render_source(job: SourceJob, settings: RenderSettings) -> list[EntryResult]:
    """Render `job` in this process; see damjobs.render.pipeline.render_source."""
    from damjobs.render import pipeline

    return pipeline.render_source(job, settings)


def _worker_main(
    connection: Connection,
    settings: RenderSettings,
    temp_folder: str,
    render: RenderFunction | None,
) -> None:
    """Set up ImageMagick in the worker, then render jobs until it receives None."""
    # The parent decides when work stops, and a Ctrl-C on the terminal reaches every
    # process of the group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # ImageMagick reads these when it is loaded, which happens on the import below.
    os.environ["MAGICK_THREAD_LIMIT"] = "1"
    os.environ["MAGICK_TEMPORARY_PATH"] = temp_folder
    os.environ["TMPDIR"] = temp_folder
    if render is None:
        from damjobs.render.pipeline import render_source

        render = render_source

    try:
        connection.send(("ready", os.getpid()))
        while True:
            job = connection.recv()
            if job is None:
                return
            try:
                results = render(job, settings)
            except Exception as error:
                # A bug in the renderer: the parent logs it and fails only this job.
                connection.send(("error", "".join(traceback.format_exception(error))))
                continue
            connection.send(("done", results))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        # The parent has gone (killed, or stopped without retiring this worker): the
        # result cannot be delivered, so the worker ends quietly.
        return


@dataclasses.dataclass
class _Worker:
    number: int
    process: BaseProcess
    connection: Connection
    temp_folder: Path
    started_at: float
    ready: bool = False
    job: SourceJob | None = None
    deadline: float = 0.0
    jobs_done: int = 0


class RenderPool:
    """
    Render source jobs in worker processes; use as a context manager.

    `render` replaces the render function in the workers, for tests that need a worker
    to hang or crash. It must be a module-level function, because it is pickled by name.
    """

    def __init__(
        self, settings: RenderSettings, render: RenderFunction | None = None
    ) -> None:
        if settings.workers < 1:
            raise ValueError(f"workers must be at least 1, got {settings.workers}")
        self.settings = settings
        self._render = render
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._numbers = itertools.count(1)
        self._stopping = False
        self._start_failures = 0
        self._next_job: SourceJob | None = None

    def __enter__(self) -> "RenderPool":
        self.settings.temp_root.mkdir(parents=True, exist_ok=True)
        _remove_orphaned_folders(self.settings.temp_root)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def stop(self) -> None:
        """
        Take no new jobs; `run` still yields the jobs in flight, then returns.

        A job that `run` already took from its iterator but had not sent to a worker
        yet is dropped without a result.
        """
        self._stopping = True

    def close(self) -> None:
        """Stop every worker (killing the ones that do not exit in time) and delete
        their temp folders.
        """
        for worker in self._workers:
            if worker.process.is_alive() and worker.job is None:
                with contextlib.suppress(OSError):
                    worker.connection.send(None)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for worker in list(self._workers):
            if worker.job is not None:
                worker.process.kill()
            worker.process.join(max(0.0, deadline - time.monotonic()))
            self._discard(worker)

    def run(
        self, jobs: Iterable[SourceJob]
    ) -> Iterator[tuple[SourceJob, list[EntryResult]]]:
        """
        Yield (job, results) for each job as it finishes, in completion order.

        Jobs are taken from `jobs` only when a worker is free, so at most `workers` are
        in flight. Raise RenderError when workers keep dying before they are ready.
        """
        pending = iter(jobs)
        exhausted = False
        while True:
            if not self._stopping and not exhausted:
                exhausted = self._assign_jobs(pending)
            taking_jobs = not exhausted and not self._stopping
            busy = [
                w
                for w in self._workers
                if w.job is not None or (taking_jobs and not w.ready)
            ]
            if not busy:
                return
            yield from self._wait_for_events(busy)

    def _assign_jobs(self, pending: Iterator[SourceJob]) -> bool:
        """
        Give a job to each ready, idle worker; return True when `pending` is exhausted.

        Workers are started only once a job is waiting, so an empty run spawns none.
        A job taken from `pending` while no worker is ready waits in `_next_job`.
        """
        if self._next_job is None:
            self._next_job = next(pending, None)
            if self._next_job is None:
                return True
        while len(self._workers) < self.settings.workers:
            self._start_worker()

        for worker in self._workers:
            if not worker.ready or worker.job is not None:
                continue
            job = self._next_job if self._next_job is not None else next(pending, None)
            self._next_job = None
            if job is None:
                return True
            # Mapping proxies and other read-only mappings do not pickle; a dict does.
            job = dataclasses.replace(job, resources=dict(job.resources))
            worker.connection.send(job)
            worker.job = job
            worker.deadline = time.monotonic() + self.settings.timeout_seconds
        return False

    def _wait_for_events(
        self, busy: list[_Worker]
    ) -> Iterator[tuple[SourceJob, list[EntryResult]]]:
        now = time.monotonic()
        deadlines = [
            w.deadline if w.ready else w.started_at + STARTUP_TIMEOUT_SECONDS
            for w in busy
        ]
        timeout = max(0.0, min(deadlines) - now)
        handles = [w.connection for w in busy] + [w.process.sentinel for w in busy]
        ready = set(multiprocessing.connection.wait(handles, timeout))

        for worker in busy:
            if worker.connection in ready or worker.connection.poll():
                result = self._receive(worker)
                if result is not None:
                    yield result
                continue
            if worker.process.sentinel in ready:
                result = self._worker_died(worker)
                if result is not None:
                    yield result
                continue
            limit = (
                worker.deadline
                if worker.ready
                else worker.started_at + STARTUP_TIMEOUT_SECONDS
            )
            if time.monotonic() >= limit:
                result = self._kill_overdue(worker)
                if result is not None:
                    yield result

    def _receive(self, worker: _Worker) -> tuple[SourceJob, list[EntryResult]] | None:
        try:
            kind, payload = worker.connection.recv()
        except (EOFError, OSError):
            return self._worker_died(worker)

        if kind == "ready":
            worker.ready = True
            self._start_failures = 0
            logger.debug("render worker %d (pid %s) is ready", worker.number, payload)
            return None

        job = worker.job
        assert job is not None
        worker.job = None
        worker.jobs_done += 1
        if kind == "error":
            logger.error(
                "rendering file %d raised an unexpected error:\n%s",
                job.file_id,
                payload,
            )
            last_line = payload.strip().splitlines()[-1]
            results = _fail_job(
                job, "crashed", f"rendering raised an unexpected error: {last_line}"
            )
        else:
            results = payload
        if worker.jobs_done >= self.settings.images_per_worker:
            logger.debug(
                "recycling render worker %d after %d images",
                worker.number,
                worker.jobs_done,
            )
            self._retire(worker)
        return job, results

    def _worker_died(
        self, worker: _Worker
    ) -> tuple[SourceJob, list[EntryResult]] | None:
        worker.process.join(SHUTDOWN_GRACE_SECONDS)
        code = worker.process.exitcode
        reason = _describe_exit(code)
        job = worker.job
        self._discard(worker)
        if job is None:
            self._count_start_failure(worker, reason)
            return None

        logger.warning(
            "render worker %d %s while rendering file %d",
            worker.number,
            reason,
            job.file_id,
        )
        return job, _fail_job(
            job, "crashed", f"the render worker {reason} while rendering this file"
        )

    def _kill_overdue(
        self, worker: _Worker
    ) -> tuple[SourceJob, list[EntryResult]] | None:
        worker.process.kill()
        worker.process.join(SHUTDOWN_GRACE_SECONDS)
        job = worker.job
        self._discard(worker)
        if job is None:
            self._count_start_failure(
                worker, f"did not start within {STARTUP_TIMEOUT_SECONDS:g} s"
            )
            return None

        logger.warning(
            "render worker %d killed: file %d exceeded timeout_seconds %g",
            worker.number,
            job.file_id,
            self.settings.timeout_seconds,
        )
        message = (
            f"rendering exceeded timeout_seconds {self.settings.timeout_seconds:g} "
            "and the worker was killed"
        )
        return job, _fail_job(job, "timed_out", message)

    def _count_start_failure(self, worker: _Worker, reason: str) -> None:
        self._start_failures += 1
        logger.error("render worker %d %s before it was ready", worker.number, reason)
        if self._start_failures >= MAX_CONSECUTIVE_START_FAILURES:
            raise RenderError(
                f"{self._start_failures} render workers in a row failed to start; "
                f"the last one {reason}",
                hint="run the job with workers = 1 and check the log for the error",
            )

    def _start_worker(self) -> None:
        number = next(self._numbers)
        temp_folder = self.settings.temp_root / f"worker-{os.getpid()}-{number}"
        shutil.rmtree(temp_folder, ignore_errors=True)
        temp_folder.mkdir(mode=0o700, parents=True)
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child_end, self.settings, str(temp_folder), self._render),
            name=f"damjobs-render-{number}",
            daemon=True,
        )
        # A spawned child inherits an ignored SIGINT, so a Ctrl-C that reaches the whole
        # process group while the worker is still importing cannot print a traceback.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        child_end.close()
        self._workers.append(
            _Worker(number, process, parent_end, temp_folder, time.monotonic())
        )

    def _retire(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            worker.connection.send(None)
        worker.process.join(SHUTDOWN_GRACE_SECONDS)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.connection.close()
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.process.close()
        shutil.rmtree(worker.temp_folder, ignore_errors=True)
        if worker in self._workers:
            self._workers.remove(worker)


def _remove_orphaned_folders(temp_root: Path) -> None:
    """Delete the temporary folders of workers whose parent process has ended.

    Folders are named worker-<parent pid>-<number>; a parent killed with SIGKILL could not
    remove its own.
    """
    for folder in temp_root.glob("worker-*-*"):
        parent_pid = folder.name.split("-")[1]
        if not parent_pid.isdigit() or int(parent_pid) == os.getpid():
            continue
        try:
            os.kill(int(parent_pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _fail_job(job: SourceJob, failure: str, message: str) -> list[EntryResult]:
    entry_ids = [copy.entry_id for copy in job.copies] + [
        derivative.entry_id for derivative in job.derivatives
    ]

    return [EntryResult(entry_id, None, failure, message) for entry_id in entry_ids]
