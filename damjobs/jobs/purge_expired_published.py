"""purge-expired-published: delete the published files whose expiry time has passed.

A published file is expired when its `expires_at` is set and lies at or before the
cut-off: the database server's UTC time at the start of the run minus
purge_expired_published.grace_minutes. A row without an expiry never expires.

Each batch re-reads its rows inside its transaction (locking them on MySQL), deletes the
physical copies below the published root, then deletes the rows. A copy that is already
gone counts as deleted. A copy whose path another, still published row also uses is kept
and only the expired row goes. A path that leaves the published root fails that row,
which stays for an operator to look at.
"""

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import peewee

from damjobs import cache, db, runner
from damjobs.db import models
from damjobs.errors import PathOutsideRootError, StorageError
from damjobs.jobs import purging

logger = logging.getLogger(__name__)

TABLE = models.PublishedFile._meta.table_name


@dataclasses.dataclass(frozen=True)
class Options:
    pass


@dataclasses.dataclass
class BatchOutcome:
    """Counts of one batch, added to the run's tally only after its commit."""

    rows_deleted: int = 0
    rows_failed: int = 0
    files_deleted: int = 0
    files_already_gone: int = 0
    files_kept_shared: int = 0
    files_failed: int = 0


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """Delete expired published files, copy first and row second; return the counts."""
    settings = context.settings
    grace_minutes = settings["purge_expired_published.grace_minutes"]
    cutoff = purging.cutoff(context.database, minutes=grace_minutes)
    root: Path = settings["paths.published_root"]
    logger.info(
        "deleting published files that expired at or before %s (grace %d minutes)",
        purging.format_time(cutoff),
        grace_minutes,
    )
    expired = models.PublishedFile.expires_at.is_null(False) & (
        models.PublishedFile.expires_at <= cutoff
    )
    batches = purging.RangeBatches(
        models.PublishedFile, expired, settings["purge_expired_published.batch_size"]
    )
    tally = purging.Tally()
    with db.translated_errors("counting expired published files"):
        total, low, high = batches.bounds()
    context.set_total(total)
    details: dict[str, Any] = {
        "cutoff": purging.format_time(cutoff),
        "grace_minutes": grace_minutes,
    }

    if context.dry_run:
        _report_dry_run(
            batches, low, high, root, tally, listing=not context.output.json
        )
    elif low is not None and high is not None:
        _purge(context, batches, low, high, root, tally)

    return {**details, **tally.as_details()}


def _purge(
    context: runner.RunContext,
    batches: purging.RangeBatches,
    low: int,
    high: int,
    root: Path,
    tally: purging.Tally,
) -> None:
    database = context.database
    attempts = context.settings["purge.max_attempts"]
    with purging.short_lock_waits(
        database, context.settings["purge.lock_wait_timeout_seconds"]
    ):
        for key_range in batches.ranges(low, high):
            if context.stop:
                context.left = batches.count()
                break
            unlinked: set[str] = set()
            outcome = purging.retry_on_lock_conflict(
                functools.partial(
                    _purge_batch, database, batches, key_range, root, unlinked
                ),
                f"deleting {TABLE} rows {key_range.first}..{key_range.last}",
                attempts,
            )
            _add(tally, root, outcome)
            context.count(
                processed=outcome.rows_deleted + outcome.rows_failed,
                failed=outcome.rows_failed,
            )


def _purge_batch(
    database: peewee.Database,
    batches: purging.RangeBatches,
    key_range: purging.KeyRange,
    root: Path,
    unlinked: set[str],
) -> BatchOutcome:
    """
    Delete the copies and rows of one key range in one transaction.

    `unlinked` collects the paths deleted by this batch, so that a retry after a rolled
    back attempt still counts them as deleted rather than as already gone.
    """
    outcome = BatchOutcome()
    with purging.batch_transaction(database):
        query = models.PublishedFile.select(
            models.PublishedFile.id, models.PublishedFile.path
        ).where(batches.in_range(key_range))
        if db.is_mysql(database):
            query = query.for_update()
        rows = list(db.tuple_rows(query))
        if not rows:
            return outcome
        shared = _paths_still_published(rows)
        doomed = []
        for row_id, path in rows:
            if path in shared:
                outcome.files_kept_shared += 1
                doomed.append(row_id)
                continue
            try:
                if cache.delete_inside(root, path):
                    unlinked.add(path)
                    outcome.files_deleted += 1
                elif path in unlinked:
                    outcome.files_deleted += 1
                else:
                    outcome.files_already_gone += 1
            except (PathOutsideRootError, StorageError) as error:
                outcome.files_failed += 1
                outcome.rows_failed += 1
                logger.error(
                    "cannot delete published file %d: %s", row_id, error.message
                )
                continue
            doomed.append(row_id)
        if doomed:
            outcome.rows_deleted = (
                models.PublishedFile.delete()
                .where(models.PublishedFile.id.in_(doomed))
                .execute()
            )

    return outcome


def _paths_still_published(rows: list[tuple[int, str]]) -> set[str]:
    """Return the paths of `rows` that a row outside `rows` also uses."""
    ids = [row_id for row_id, _path in rows]
    paths = sorted({path for _row_id, path in rows})
    query = models.PublishedFile.select(models.PublishedFile.path).where(
        models.PublishedFile.path.in_(paths) & models.PublishedFile.id.not_in(ids)
    )

    return {path for (path,) in db.tuple_rows(query)}


def _add(tally: purging.Tally, root: Path, outcome: BatchOutcome) -> None:
    table = tally.table(TABLE)
    table["deleted"] += outcome.rows_deleted
    table["failed"] += outcome.rows_failed
    folder = tally.folder(str(root))
    folder["deleted"] += outcome.files_deleted
    folder["already_gone"] += outcome.files_already_gone
    folder["kept_shared"] += outcome.files_kept_shared
    folder["failed"] += outcome.files_failed


def _report_dry_run(
    batches: purging.RangeBatches,
    low: int | None,
    high: int | None,
    root: Path,
    tally: purging.Tally,
    listing: bool,
) -> None:
    """Count what a run would delete, and list it on stdout when `listing` is set."""
    table = tally.table(TABLE)
    folder = tally.folder(str(root))
    if low is None or high is None:
        return
    for key_range in batches.ranges(low, high):
        rows = list(
            db.tuple_rows(
                models.PublishedFile.select(
                    models.PublishedFile.id, models.PublishedFile.path
                ).where(batches.in_range(key_range))
            )
        )
        if not rows:
            continue
        shared = _paths_still_published(rows)
        for row_id, path in rows:
            exists = _exists_inside(root, path)
            table[
                "would_fail"
                if exists is None and path not in shared
                else "would_delete"
            ] += 1
            if path in shared:
                folder["would_keep_shared"] += 1
                state = "kept, still published by another row"
            elif exists is None:
                folder["would_fail"] += 1
                state = "path leaves the published root"
            elif exists:
                folder["would_delete"] += 1
                state = "delete"
            else:
                folder["already_gone"] += 1
                state = "already gone"
            if listing:
                print(f"published_file {row_id}\t{path}\t{state}")
    logger.info(
        "dry run: would delete %d %s rows and %d files in %s",
        table["would_delete"],
        TABLE,
        folder["would_delete"],
        root,
    )


def _exists_inside(root: Path, relative: str) -> bool | None:
    """Return whether the file exists, or None when its path leaves `root`."""
    try:
        path = cache.resolve_inside(root, relative)
    except PathOutsideRootError:
        return None

    return path.is_file() or path.is_symlink()
