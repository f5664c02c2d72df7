"""What the purge jobs share: cut-offs, primary-key range batches and lock-conflict retries.

Every purge deletes in short batches. A batch covers one range of primary keys that
contains at most `batch_size` rows, matching or not. Each batch is committed on its own,
so no statement keeps locks for long and the next run continues where an interrupted one
stopped. A batch that hits a deadlock or a lock-wait timeout is rolled back and retried
after a growing pause.

The counts that a purge returns for its summary are grouped by table and by folder:
`{"tables": {"log_item": {"deleted": 3, ...}}, "folders": {...}}`.
"""

import collections
import dataclasses
import datetime
import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import peewee

from damjobs import db, runner
from damjobs.errors import RepositoryError

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_RETRY_DELAY_SECONDS = 0.2
MAX_RETRY_DELAY_SECONDS = 5.0
MYSQL_LOCK_CONFLICTS = {1205: "lock-wait timeout", 1213: "deadlock"}


def cutoff(database: peewee.Database, **age: float) -> datetime.datetime:
    """
    Return the database server's current UTC time minus `age` (timedelta keywords).

    Stored times are naive UTC datetimes from the same clock, so the result compares
    with them directly whatever the host's time zone is.
    """
    return db.server_now(database) - datetime.timedelta(**age)


def format_time(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def lock_conflict(error: Exception) -> str | None:
    """Return "deadlock" or "lock-wait timeout" when `error` is one, else None."""
    code = error.args[0] if error.args else None
    if isinstance(code, int) and code in MYSQL_LOCK_CONFLICTS:
        return MYSQL_LOCK_CONFLICTS[code]
    if "database is locked" in str(error) or "database table is locked" in str(error):
        return "lock-wait timeout"

    return None


def retry_on_lock_conflict(
    action: Callable[[], T], description: str, max_attempts: int
) -> T:
    """
    Call `action` until it no longer fails with a deadlock or a lock-wait timeout.

    `action` must roll back its own work when it raises (a peewee transaction does).
    Each retry is logged. Raise RepositoryError after `max_attempts` failed attempts.
    """
    delay = FIRST_RETRY_DELAY_SECONDS
    for attempt in range(1, max_attempts + 1):
        try:
            return action()
        except (peewee.OperationalError, peewee.InternalError) as error:
            conflict = lock_conflict(error)
            if conflict is None:
                raise
            if attempt == max_attempts:
                raise RepositoryError(
                    f"{description} failed {max_attempts} times with a {conflict}: {error}",
                    hint="another process holds locks on these rows for long; run the job "
                    "again later or raise purge.max_attempts",
                ) from error
            pause = delay * random.uniform(0.5, 1.5)
            logger.warning(
                "%s hit a %s (attempt %d of %d); retrying in %.2f s",
                description,
                conflict,
                attempt,
                max_attempts,
                pause,
            )
            time.sleep(pause)
            delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)

    raise AssertionError("unreachable: the loop returns or raises")


@contextmanager
def short_lock_waits(database: peewee.Database, seconds: int) -> Iterator[None]:
    """
    Make this connection wait at most `seconds` for a lock, then restore the old limit.

    A purge batch that waits long holds up its own work and the writers behind it, so it
    gives up early and retries after a pause instead. MySQL: innodb_lock_wait_timeout;
    SQLite: busy_timeout.
    """
    if db.is_mysql(database):
        previous = database.execute_sql(
            "SELECT @@SESSION.innodb_lock_wait_timeout"
        ).fetchone()[0]
        database.execute_sql(f"SET SESSION innodb_lock_wait_timeout = {int(seconds)}")
        try:
            yield
        finally:
            database.execute_sql(
                f"SET SESSION innodb_lock_wait_timeout = {int(previous)}"
            )
        return

    previous = database.execute_sql("PRAGMA busy_timeout").fetchone()[0]
    database.execute_sql(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
    try:
        yield
    finally:
        database.execute_sql(f"PRAGMA busy_timeout = {int(previous)}")


@contextmanager
def batch_transaction(database: peewee.Database) -> Iterator[None]:
    """
    Open the transaction of one batch.

    On MySQL it runs at READ COMMITTED, so the range delete takes no gap locks and
    locks only the rows it deletes: writers that insert meanwhile do not wait for it.
    On SQLite it takes the write lock at once.
    """
    if db.is_mysql(database):
        # Without SESSION or GLOBAL this applies to the next transaction only.
        database.execute_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    with runner.write_transaction(database):
        yield


@dataclasses.dataclass
class KeyRange:
    """The primary keys `first`..`last` (inclusive) of one batch."""

    first: int
    last: int


class RangeBatches:
    """
    Split the rows of `model` that match `condition` into primary-key ranges.

    `bounds` reads the matching count and the lowest and highest key once. `ranges` then
    walks from the lowest to the highest key. Each range contains at most `batch_size`
    rows of the table, so a batch never scans more than that many rows.
    """

    def __init__(
        self, model: type[peewee.Model], condition: Any, batch_size: int
    ) -> None:
        self.model = model
        self.condition = condition
        self.batch_size = batch_size
        self.key = model._meta.primary_key

    def bounds(self) -> tuple[int, int | None, int | None]:
        """Return (matching rows, lowest key, highest key); the keys are None when none match."""
        query = self.model.select(
            peewee.fn.COUNT(self.key), peewee.fn.MIN(self.key), peewee.fn.MAX(self.key)
        ).where(self.condition)
        # The stubs type the row of a tuples query as a model instance.
        count, low, high = cast("tuple[Any, Any, Any]", query.tuples().get())

        return int(count or 0), low, high

    def count(self) -> int:
        return self.model.select().where(self.condition).count()

    def ranges(self, low: int, high: int) -> Iterator[KeyRange]:
        """Yield consecutive key ranges covering `low`..`high`."""
        first = low
        while first <= high:
            end = (
                self.model.select(self.key)
                .where((self.key >= first) & (self.key <= high))
                .order_by(self.key)
                .limit(1)
                .offset(self.batch_size - 1)
                .scalar()
            )
            last = high if end is None else end
            yield KeyRange(first, last)
            first = last + 1

    def in_range(self, key_range: KeyRange) -> Any:
        """Return the condition for the matching rows inside `key_range`."""
        return (
            (self.key >= key_range.first)
            & (self.key <= key_range.last)
            & self.condition
        )


class Tally:
    """Counts of one run per table and per folder, as the summary reports them."""

    def __init__(self) -> None:
        self.tables: dict[str, collections.Counter[str]] = {}
        self.folders: dict[str, collections.Counter[str]] = {}

    def table(self, name: str) -> collections.Counter[str]:
        return self.tables.setdefault(name, collections.Counter())

    def folder(self, name: str) -> collections.Counter[str]:
        return self.folders.setdefault(name, collections.Counter())

    def table_count(self, name: str, key: str) -> int:
        """Return one count of a table, 0 when there is none, without adding the table."""
        return self.tables.get(name, collections.Counter())[key]

    def folder_count(self, name: str, key: str) -> int:
        """Return one count of a folder, 0 when there is none, without adding the folder."""
        return self.folders.get(name, collections.Counter())[key]

    def as_details(self) -> dict[str, Any]:
        return {
            "tables": {name: dict(counts) for name, counts in self.tables.items()},
            "folders": {name: dict(counts) for name, counts in self.folders.items()},
        }


def delete_rows(
    context: runner.RunContext,
    model: type[peewee.Model],
    condition: Any,
    batch_size: int,
    tally: Tally,
) -> float:
    """
    Delete the rows of `model` matching `condition` in committed key-range batches.

    The row counts go to `tally` under the table name and to the run's progress. A dry
    run only counts what would be deleted. A stop request ends the run between batches
    and sets how many matching rows are left. Return the longest batch in seconds.
    """
    database = context.database
    table = model._meta.table_name
    counts = tally.table(table)
    batches = RangeBatches(model, condition, batch_size)
    with db.translated_errors(f"counting the rows to delete from {table}"):
        total, low, high = batches.bounds()
    context.set_total(total)
    if context.dry_run:
        counts["would_delete"] += total
        logger.info("dry run: would delete %d rows from %s", total, table)
        return 0.0
    if low is None or high is None:
        logger.info("no rows to delete from %s", table)
        return 0.0

    slowest = 0.0
    attempts = context.settings["purge.max_attempts"]
    with short_lock_waits(
        database, context.settings["purge.lock_wait_timeout_seconds"]
    ):
        for key_range in batches.ranges(low, high):
            if context.stop:
                break
            started = time.monotonic()
            deleted = retry_on_lock_conflict(
                functools.partial(_delete_range, database, model, batches, key_range),
                f"deleting {table} rows {key_range.first}..{key_range.last}",
                attempts,
            )
            slowest = max(slowest, time.monotonic() - started)
            counts["deleted"] += deleted
            context.count(processed=deleted)
    if context.stop:
        context.left = batches.count()
    logger.info("deleted %d rows from %s", counts["deleted"], table)

    return slowest


def _delete_range(
    database: peewee.Database,
    model: type[peewee.Model],
    batches: RangeBatches,
    key_range: KeyRange,
) -> int:
    with batch_transaction(database):
        return model.delete().where(batches.in_range(key_range)).execute()
