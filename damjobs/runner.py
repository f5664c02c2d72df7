"""The runner shared by every job: claim, job status, heartbeat, signals, summary.

A job is claimed with a per-host file lock plus the `job_slot` row, so at most one run of
each job is enqueued or running across every host that shares the database. The slot's
`status_id` is the compare-and-set token: a claim or a takeover is one conditional write.
"""

import dataclasses
import datetime
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock
import peewee

from damjobs import db
from damjobs.config import Settings
from damjobs.db import migrations, models
from damjobs.errors import DamjobsError, JobAlreadyRunningError, StorageError
from damjobs.exit_codes import ExitCode
from damjobs.output import OutputOptions, ProgressReporter

logger = logging.getLogger(__name__)

HOST = socket.gethostname()


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Options every job takes from the command line."""

    dry_run: bool = False
    limit: int | None = None
    max_runtime_seconds: float | None = None
    trigger: str = "manual"


@dataclasses.dataclass
class JobSummary:
    """The outcome of one run, printed at the end and stored on its job status."""

    job: str
    status_id: int | None
    state: str
    exit_code: int
    dry_run: bool
    total: int | None = None
    processed: int = 0
    failed: int = 0
    skipped: int = 0
    left: int | None = None
    duration_seconds: float = 0.0
    message: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class StopRequest:
    """Reasons to stop a run early: a signal, --max-runtime or a lost claim."""

    def __init__(self, max_runtime_seconds: float | None) -> None:
        self.reason: str | None = None
        self.interrupted = False
        self.signal_notice: str | None = None
        self._deadline = (
            None
            if max_runtime_seconds is None
            else time.monotonic() + max_runtime_seconds
        )

    def request(self, reason: str, interrupted: bool = False) -> None:
        if self.reason is None:
            self.reason = reason
        self.interrupted = self.interrupted or interrupted

    def __bool__(self) -> bool:
        if self.signal_notice is not None:
            notice, self.signal_notice = self.signal_notice, None
            logger.warning("%s", notice)
        deadline_passed = (
            self._deadline is not None and time.monotonic() >= self._deadline
        )
        if self.reason is None and deadline_passed:
            self.request("--max-runtime reached")
        return self.reason is not None


class RunContext:
    """The settings, database, options, counters and stop flag that a job's `run` receives."""

    def __init__(
        self,
        job: str,
        settings: Settings,
        database: peewee.Database,
        options: RunOptions,
        output: OutputOptions,
        status_id: int | None,
    ) -> None:
        self.job = job
        self.settings = settings
        self.database = database
        self.options = options
        self.output = output
        self.status_id = status_id
        self.stop = StopRequest(options.max_runtime_seconds)
        self.total: int | None = None
        self.processed = 0
        self.failed = 0
        self.skipped = 0
        self.left: int | None = None
        self.progress = ProgressReporter(job, output)
        # For a dry run: a description of the live run that has claimed the same job.
        self.running_elsewhere: str | None = None

    @property
    def dry_run(self) -> bool:
        return self.options.dry_run

    def set_total(self, total: int | None) -> None:
        self.total = total
        self.progress.set_total(total)

    def count(self, processed: int = 0, failed: int = 0, skipped: int = 0) -> None:
        self.processed += processed
        self.failed += failed
        self.skipped += skipped
        self.progress.advance(processed, failed)

    def limit_reached(self) -> bool:
        """Return True when --limit items have been processed."""
        limit = self.options.limit

        return limit is not None and self.processed >= limit


JobFunction = Callable[[RunContext, Any], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class JobDefinition:
    """A job as the registry lists it."""

    name: str
    summary: str
    periodic: bool
    run: JobFunction
    takes_limit: bool = True
    # Checks that need more than the configuration file, such as asking ImageMagick
    # about a colour. It runs before the claim and raises ConfigError.
    check_settings: Callable[[Settings], None] | None = None


# --- claiming ---------------------------------------------------------------------------


@dataclasses.dataclass
class Claim:
    job: str
    status_id: int
    lock: filelock.BaseFileLock


def write_transaction(database: peewee.Database) -> Any:
    """Return a transaction that takes the write lock at once on SQLite (no upgrade deadlock)."""
    if isinstance(database, peewee.SqliteDatabase):
        return database.atomic("IMMEDIATE")

    return database.atomic()


def lock_path(settings: Settings, job: str) -> Path:
    return Path(settings["paths.lock_dir"]) / f"{job}.lock"


def acquire_file_lock(settings: Settings, job: str) -> filelock.BaseFileLock:
    """Take the per-host lock of `job` without waiting; raise JobAlreadyRunningError if held."""
    path = lock_path(settings, job)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"cannot create the lock folder {path.parent}: {error.strerror}",
            hint="create it or set paths.lock_dir to a writable folder",
        ) from error
    lock = filelock.FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout as error:
        raise JobAlreadyRunningError(
            f"{job} is already running on this host (lock file {path} is held)"
        ) from error

    return lock


def claim(
    settings: Settings, database: peewee.Database, job: str, trigger: str
) -> Claim:
    """
    Claim `job` for this process and return the claim with a running job status.

    An enqueued slot, a slot of a dead process on this host and a slot whose heartbeat
    is stale are taken over; any other holder raises JobAlreadyRunningError.
    """
    try:
        lock = acquire_file_lock(settings, job)
    except JobAlreadyRunningError as error:
        slot = models.JobSlot.get_or_none(models.JobSlot.job == job)
        if slot is None or slot.state != "running":
            raise
        raise JobAlreadyRunningError(_holder_message(job, slot)) from error
    try:
        with write_transaction(database):
            status_id = _claim_slot(settings, database, job, trigger)
    except BaseException:
        lock.release()
        raise

    return Claim(job=job, status_id=status_id, lock=lock)


def _claim_slot(
    settings: Settings, database: peewee.Database, job: str, trigger: str
) -> int:
    now = db.now(database)
    pid = os.getpid()
    slot = models.JobSlot.get_or_none(models.JobSlot.job == job)
    if slot is None:
        status_id = _new_running_status(job, trigger, now)
        models.JobSlot.insert(
            job=job,
            state="running",
            status_id=status_id,
            host=HOST,
            pid=pid,
            updated_at=now,
        ).execute()
        return status_id

    reason = _takeover_reason(settings, database, slot)
    if reason is None:
        raise JobAlreadyRunningError(_holder_message(job, slot))

    if slot.state == "enqueued":
        status_id = slot.status_id
        models.JobStatus.update(
            state="running",
            trigger=trigger,
            host=HOST,
            pid=pid,
            started_at=now,
            updated_at=now,
        ).where(models.JobStatus.id == status_id).execute()
    else:
        logger.warning(
            "taking over %s from run %d on host %s (pid %s): %s",
            job,
            slot.status_id,
            slot.host,
            slot.pid,
            reason,
        )
        models.JobStatus.update(
            state="failed",
            finished_at=now,
            updated_at=now,
            message=f"abandoned: {reason}",
        ).where(
            (models.JobStatus.id == slot.status_id)
            & (models.JobStatus.state == "running")
        ).execute()
        status_id = _new_running_status(job, trigger, now)

    taken = (
        models.JobSlot.update(
            state="running", status_id=status_id, host=HOST, pid=pid, updated_at=now
        )
        .where(
            (models.JobSlot.job == job) & (models.JobSlot.status_id == slot.status_id)
        )
        .execute()
    )
    if taken != 1:
        raise JobAlreadyRunningError(
            f"{job} was claimed by another process at the same time"
        )

    return status_id


def _holder_message(job: str, slot: models.JobSlot) -> str:
    since = slot.updated_at.strftime("%Y-%m-%d %H:%M:%S UTC")

    return (
        f"{job} is already running: run {slot.status_id} on host {slot.host} "
        f"(pid {slot.pid}), last heartbeat {since}"
    )


def live_holder(settings: Settings, database: peewee.Database, job: str) -> str | None:
    """Describe the live run that has claimed `job` and would stop a claim, or return None."""
    slot = models.JobSlot.get_or_none(models.JobSlot.job == job)
    if slot is None or _takeover_reason(settings, database, slot) is not None:
        return None

    return _holder_message(job, slot)


def _process_exists(pid: int | None) -> bool:
    """Return True when a process with this pid runs on this host."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

    return True


def _takeover_reason(
    settings: Settings, database: peewee.Database, slot: models.JobSlot
) -> str | None:
    if slot.state == "enqueued":
        return "enqueued"
    if slot.host == HOST and not _process_exists(slot.pid):
        # The holder ran on this host and its process is gone. A live holder that used
        # another lock folder is only taken over once its heartbeat is stale.
        return f"its process {slot.pid} on this host has ended"
    stale_after = datetime.timedelta(minutes=settings["jobs.stale_after_minutes"])
    if db.server_now(database) - slot.updated_at > stale_after:
        return (
            f"no heartbeat for more than {settings['jobs.stale_after_minutes']} minutes"
        )

    return None


def _new_running_status(job: str, trigger: str, now: peewee.SQL) -> int:
    return models.JobStatus.insert(
        job=job,
        state="running",
        trigger=trigger,
        host=HOST,
        pid=os.getpid(),
        started_at=now,
        updated_at=now,
    ).execute()


def release(database: peewee.Database, claim_: Claim) -> bool:
    """
    Release the slot; when a rerun was requested meanwhile, enqueue the job once more.

    Return True when the job was enqueued again.
    """
    try:
        with write_transaction(database):
            slot = models.JobSlot.get_or_none(
                (models.JobSlot.job == claim_.job)
                & (models.JobSlot.status_id == claim_.status_id)
            )
            if slot is None:
                return False
            if not slot.rerun_requested:
                slot.delete_instance()
                return False
            now = db.now(database)
            status_id = models.JobStatus.insert(
                job=claim_.job,
                state="enqueued",
                trigger="rerun",
                enqueued_at=now,
                updated_at=now,
            ).execute()
            models.JobSlot.update(
                state="enqueued",
                status_id=status_id,
                host=None,
                pid=None,
                updated_at=now,
                rerun_requested=False,
            ).where(models.JobSlot.job == claim_.job).execute()
            return True
    finally:
        claim_.lock.release()


# --- enqueueing -------------------------------------------------------------------------


def enqueue(database: peewee.Database, job: str, trigger: str = "manual") -> str:
    """
    Enqueue `job`, or ask its active run to run again when it ends.

    Return "enqueued", "rerun requested" or "already enqueued".
    """
    with write_transaction(database):
        slot = models.JobSlot.get_or_none(models.JobSlot.job == job)
        if slot is None:
            now = db.now(database)
            status_id = models.JobStatus.insert(
                job=job,
                state="enqueued",
                trigger=trigger,
                enqueued_at=now,
                updated_at=now,
            ).execute()
            models.JobSlot.insert(
                job=job, state="enqueued", status_id=status_id, updated_at=now
            ).execute()
            return "enqueued"
        if slot.state == "enqueued":
            return "already enqueued"
        models.JobSlot.update(rerun_requested=True).where(
            (models.JobSlot.job == job) & (models.JobSlot.status_id == slot.status_id)
        ).execute()

        return "rerun requested"


def enqueued_jobs(database: peewee.Database) -> list[str]:
    """Return the jobs whose slot is enqueued, by name."""
    query = models.JobSlot.select(models.JobSlot.job).where(
        models.JobSlot.state == "enqueued"
    )

    return sorted(slot.job for slot in query)


# --- heartbeat and log items ------------------------------------------------------------


class Heartbeat(threading.Thread):
    """Refresh the run's status and slot every few seconds from a thread of its own."""

    def __init__(
        self, context: RunContext, claim_: Claim, interval_seconds: float
    ) -> None:
        super().__init__(name=f"heartbeat-{claim_.job}", daemon=True)
        self.context = context
        self.claim = claim_
        self.interval_seconds = interval_seconds
        self._stopped = threading.Event()

    def run(self) -> None:
        database = self.context.database
        while not self._stopped.wait(self.interval_seconds):
            try:
                with database.connection_context():
                    self.beat()
            except peewee.PeeweeException as error:
                logger.warning(
                    "heartbeat of %s failed, will retry: %s", self.claim.job, error
                )

    def beat(self) -> None:
        database = self.context.database
        now = db.now(database)
        with write_transaction(database):
            held = (
                models.JobSlot.update(updated_at=now)
                .where(
                    (models.JobSlot.job == self.claim.job)
                    & (models.JobSlot.status_id == self.claim.status_id)
                )
                .execute()
            )
            _update_counts(self.context, now)
        if held == 0:
            logger.error(
                "%s lost its slot to another process; stopping", self.claim.job
            )
            self.context.stop.request("the job slot was taken over by another process")

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=self.interval_seconds + 5)


def _update_counts(context: RunContext, now: peewee.SQL) -> None:
    models.JobStatus.update(
        updated_at=now,
        total=context.total,
        processed=context.processed,
        failed=context.failed,
        skipped=context.skipped,
    ).where(models.JobStatus.id == context.status_id).execute()


class LogItemHandler(logging.Handler):
    """Store the warnings and errors of one run as log items, up to a maximum per run."""

    def __init__(self, context: RunContext, max_items: int) -> None:
        super().__init__(level=logging.WARNING)
        self.context = context
        self.max_items = max_items
        self.stored = 0
        self.dropped = 0
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if threading.get_ident() != self._thread:
            return
        if self.stored >= self.max_items:
            self.dropped += 1
            return
        try:
            models.LogItem.insert(
                created_at=db.now(self.context.database),
                level=record.levelname.lower(),
                job=self.context.job,
                status_id=self.context.status_id,
                file_id=getattr(record, "file_id", None),
                message=record.getMessage()[:10000],
            ).execute()
            self.stored += 1
        except peewee.PeeweeException:
            self.dropped += 1


# --- one run ----------------------------------------------------------------------------


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """Turn the first SIGTERM or SIGINT into a stop request; a second SIGINT interrupts."""

    def handle(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.interrupted and signum == signal.SIGINT:
            raise KeyboardInterrupt
        # No logging here: the log-item handler writes to the database, and the signal can
        # arrive while the same connection is in the middle of a query. The notice is
        # logged when the run next checks its stop request.
        stop.signal_notice = f"received {name}; stopping after the current item"
        stop.request(f"received {name}", interrupted=True)

    previous = {
        sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_job(
    definition: JobDefinition,
    settings: Settings,
    database: peewee.Database,
    run_options: RunOptions,
    job_options: Any,
    output: OutputOptions,
) -> JobSummary:
    """
    Run one job under a claim (or without one for --dry-run) and return its summary.

    Raise JobAlreadyRunningError when another process has claimed the job.
    """
    with db.translated_errors("checking the schema version"):
        migrations.check_version(database)
    if definition.check_settings is not None:
        definition.check_settings(settings)
    if run_options.dry_run:
        return _run_unclaimed(
            definition, settings, database, run_options, job_options, output
        )

    # Signals are handled from before the claim, so a SIGTERM that arrives between the
    # claim and the job's first step still ends the run as cancelled, never half-claimed.
    stop = StopRequest(run_options.max_runtime_seconds)
    with stop_on_signals(stop):
        claim_ = claim(settings, database, definition.name, run_options.trigger)
        context = RunContext(
            definition.name, settings, database, run_options, output, claim_.status_id
        )
        context.stop = stop
        heartbeat = Heartbeat(context, claim_, settings["jobs.heartbeat_seconds"])
        log_handler = LogItemHandler(context, settings["jobs.max_log_items_per_run"])
        logging.getLogger().addHandler(log_handler)
        started = time.monotonic()
        summary = JobSummary(definition.name, claim_.status_id, "running", 0, False)
        rerun = False
        try:
            heartbeat.start()
            logger.info("%s started (run %d)", definition.name, claim_.status_id)
            summary = _execute(definition, context, job_options, summary)
        finally:
            heartbeat.stop()
            logging.getLogger().removeHandler(log_handler)
            summary.duration_seconds = round(time.monotonic() - started, 3)
            if log_handler.dropped:
                summary.details["log_items_not_stored"] = log_handler.dropped
            _finish_status(database, context, summary)
            rerun = release(database, claim_)
    if rerun:
        logger.info("%s was asked to run again and is enqueued", definition.name)

    return summary


def _run_unclaimed(
    definition: JobDefinition,
    settings: Settings,
    database: peewee.Database,
    run_options: RunOptions,
    job_options: Any,
    output: OutputOptions,
) -> JobSummary:
    context = RunContext(definition.name, settings, database, run_options, output, None)
    context.running_elsewhere = live_holder(settings, database, definition.name)
    if context.running_elsewhere:
        logger.warning(
            "%s; this dry run shows what a run would do once it has finished, and a "
            "run started now would exit 3",
            context.running_elsewhere,
        )
    summary = JobSummary(definition.name, None, "running", 0, True)
    started = time.monotonic()
    summary = _execute(definition, context, job_options, summary)
    if context.running_elsewhere:
        summary.details["running_elsewhere"] = context.running_elsewhere
    summary.duration_seconds = round(time.monotonic() - started, 3)

    return summary


def _execute(
    definition: JobDefinition,
    context: RunContext,
    job_options: Any,
    summary: JobSummary,
) -> JobSummary:
    try:
        with stop_on_signals(context.stop), context.progress:
            summary.details = definition.run(context, job_options) or {}
    except KeyboardInterrupt:
        context.stop.request("interrupted", interrupted=True)
    except BrokenPipeError:
        # The reader of stdout went away (`damjobs ... | head`); the CLI ends quietly.
        raise
    except DamjobsError as error:
        summary.state = "failed"
        summary.exit_code = error.exit_code
        summary.message = error.message
        logger.critical("%s failed: %s", definition.name, error.message)
    except Exception as error:
        summary.state = "failed"
        summary.exit_code = ExitCode.FAILED
        summary.message = f"unexpected error: {type(error).__name__}: {error}"
        logger.critical(
            "%s failed with an unexpected error: %s: %s",
            definition.name,
            type(error).__name__,
            error,
            exc_info=context.output.verbosity >= 1,
        )

    summary.total = context.total
    summary.processed = context.processed
    summary.failed = context.failed
    summary.skipped = context.skipped
    summary.left = context.left
    if summary.state == "failed":
        return summary
    if context.stop.interrupted:
        summary.state = "cancelled"
        summary.exit_code = ExitCode.INTERRUPTED
        summary.message = f"cancelled: {context.stop.reason}"
    elif context.failed:
        summary.state = "succeeded_with_failures"
        summary.exit_code = ExitCode.ITEMS_FAILED
    else:
        summary.state = "succeeded"
        summary.exit_code = ExitCode.SUCCEEDED
    if context.stop.reason and not context.stop.interrupted:
        summary.message = f"stopped early: {context.stop.reason}"

    return summary


def _finish_status(
    database: peewee.Database, context: RunContext, summary: JobSummary
) -> None:
    now = db.now(database)
    with write_transaction(database):
        _update_counts(context, now)
        models.JobStatus.update(
            state=summary.state,
            finished_at=now,
            message=summary.message or None,
            summary=json.dumps(summary.as_dict(), default=str),
        ).where(models.JobStatus.id == context.status_id).execute()
