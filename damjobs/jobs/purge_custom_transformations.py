"""purge-custom-transformations: delete custom transformations with their cache entries
and cached files.

Custom transformations are the ad-hoc renderings that live requests ask for; they are not
permanent, and later requests render them again on demand. A transformation is purged
when its `last_requested_at` lies before the cut-off: the database server's UTC time at
the start of the run minus the larger of purge_custom_transformations.grace_minutes and
--older-than. Cache entries whose transformation no longer exists (for example because
its file was deleted) are purged too, by their `planned_at`.

A transformation is left for the next run in three cases. One of its entries is still
being rendered (expected and planned within the grace period). A temporary file for one
of its cached files exists, so the file is being written. Or a cached file was modified
within the grace period. File ages come from the file system, so they use this host's
clock, unlike the cut-off.

Each batch re-reads its rows inside its transaction (locking them on MySQL) right before
it deletes any file, so a transformation requested again meanwhile no longer matches and
keeps its files. Files are deleted first and rows second; a file already gone counts as
deleted.
"""

import collections
import contextlib
import dataclasses
import datetime
import glob
import logging
import time
from pathlib import Path
from typing import Any

import peewee

from damjobs import cache, db, runner
from damjobs.db import models
from damjobs.errors import PathOutsideRootError, StorageError
from damjobs.jobs import purging

logger = logging.getLogger(__name__)

TRANSFORMATIONS = models.CustomTransformation._meta.table_name
ENTRIES = models.CacheEntry._meta.table_name


@dataclasses.dataclass(frozen=True)
class Options:
    older_than_minutes: float | None = None
    """Purge only transformations last requested longer ago than this."""
    file_id: int | None = None
    """Purge only the transformations of this file."""


@dataclasses.dataclass(frozen=True)
class EntryFile:
    id: int
    custom_id: int
    path: str | None
    state: str
    planned_at: datetime.datetime


@dataclasses.dataclass
class Outcome:
    """Counts of one batch, added to the run's tally only after its commit."""

    tables: dict[str, collections.Counter[str]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    files: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )


@dataclasses.dataclass(frozen=True)
class Limits:
    """The cut-offs of one run."""

    cutoff: datetime.datetime
    """Database time: rows requested or planned before it are purged."""
    grace_cutoff: datetime.datetime
    """Database time: an expected entry planned after it is still being rendered."""
    grace_seconds: float
    """A cached file modified less than this long ago (host clock) is left."""


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """Delete custom transformations, their entries and files; return the counts."""
    settings = context.settings
    database = context.database
    grace_minutes = settings["purge_custom_transformations.grace_minutes"]
    age_minutes = max(float(grace_minutes), options.older_than_minutes or 0.0)
    now = db.server_now(database)
    limits = Limits(
        cutoff=now - datetime.timedelta(minutes=age_minutes),
        grace_cutoff=now - datetime.timedelta(minutes=grace_minutes),
        grace_seconds=grace_minutes * 60.0,
    )
    logger.info(
        "deleting custom transformations last requested before %s",
        purging.format_time(limits.cutoff),
    )
    transformations = models.CustomTransformation.last_requested_at < limits.cutoff
    orphans = (
        (models.CacheEntry.custom_id > 0)
        & models.CacheEntry.custom_id.not_in(
            models.CustomTransformation.select(models.CustomTransformation.id)
        )
        & (models.CacheEntry.planned_at < limits.cutoff)
    )
    if options.file_id is not None:
        transformations &= models.CustomTransformation.file == options.file_id
        orphans &= models.CacheEntry.file_id == options.file_id

    batch_size = settings["purge_custom_transformations.batch_size"]
    parts = (
        purging.RangeBatches(models.CustomTransformation, transformations, batch_size),
        purging.RangeBatches(models.CacheEntry, orphans, batch_size),
    )
    tally = purging.Tally()
    root: Path = settings["paths.cache_root"]
    bounds = []
    with db.translated_errors("counting custom transformations to delete"):
        for part in parts:
            bounds.append(part.bounds())
    context.set_total(sum(count for count, _low, _high in bounds))

    with purging.short_lock_waits(
        database, settings["purge.lock_wait_timeout_seconds"]
    ):
        for part, (_count, low, high) in zip(parts, bounds, strict=True):
            if low is None or high is None or context.stop:
                continue
            for key_range in part.ranges(low, high):
                if context.stop:
                    break
                _run_batch(context, part, key_range, root, limits, tally)
    if context.stop:
        context.left = sum(part.count() for part in parts)
    if context.dry_run:
        logger.info(
            "dry run: would delete %d %s rows, %d %s rows and %d files in %s",
            tally.table_count(TRANSFORMATIONS, "would_delete"),
            TRANSFORMATIONS,
            tally.table_count(ENTRIES, "would_delete"),
            ENTRIES,
            tally.folder_count(str(root), "would_delete"),
            root,
        )

    return {
        "cutoff": purging.format_time(limits.cutoff),
        "grace_minutes": grace_minutes,
        **tally.as_details(),
    }


def _run_batch(
    context: runner.RunContext,
    part: purging.RangeBatches,
    key_range: purging.KeyRange,
    root: Path,
    limits: Limits,
    tally: purging.Tally,
) -> None:
    database = context.database
    unlinked: set[str] = set()
    table = part.model._meta.table_name
    if context.dry_run:
        outcome = _purge_batch(
            database, part, key_range, root, limits, unlinked, dry_run=True
        )
    else:
        outcome = purging.retry_on_lock_conflict(
            lambda: _purge_batch(database, part, key_range, root, limits, unlinked),
            f"deleting {table} rows {key_range.first}..{key_range.last}",
            context.settings["purge.max_attempts"],
        )
    for name, counts in outcome.tables.items():
        tally.table(name).update(counts)
    tally.folder(str(root)).update(outcome.files)
    main = outcome.tables[table]
    deleted = main["would_delete" if context.dry_run else "deleted"]
    context.count(
        processed=deleted + main["failed"],
        failed=main["failed"],
        skipped=main["skipped"],
    )


def _purge_batch(
    database: peewee.Database,
    part: purging.RangeBatches,
    key_range: purging.KeyRange,
    root: Path,
    limits: Limits,
    unlinked: set[str],
    dry_run: bool = False,
) -> Outcome:
    """
    Purge the transformations (or orphan entries) of one key range in one transaction.

    `unlinked` collects the paths deleted by this batch, so that a retry after a rolled
    back attempt still counts them as deleted rather than as already gone.
    """
    outcome = Outcome()
    transaction = (
        contextlib.nullcontext() if dry_run else purging.batch_transaction(database)
    )
    with transaction:
        groups = _read_groups(database, part, key_range, lock=not dry_run)
        table = part.model._meta.table_name
        done_keys: list[int] = []
        done_entries: list[int] = []
        for key, entries in groups.items():
            reason = _busy_reason(entries, root, limits)
            if reason is not None:
                outcome.tables[table]["skipped"] += 1
                outcome.files["skipped"] += sum(1 for entry in entries if entry.path)
                logger.info("%s %d left for the next run: %s", table, key, reason)
                continue
            if dry_run:
                outcome.tables[table]["would_delete"] += 1
                outcome.tables[ENTRIES]["would_delete"] += len(entries)
                for entry in entries:
                    if entry.path:
                        outcome.files["would_delete"] += 1
                continue
            if not _delete_files(table, key, entries, root, unlinked, outcome):
                outcome.tables[table]["failed"] += 1
                continue
            done_keys.append(key)
            done_entries += [entry.id for entry in entries]

        if done_keys:
            _delete_rows(part, done_keys, done_entries, outcome)

    return outcome


def _read_groups(
    database: peewee.Database,
    part: purging.RangeBatches,
    key_range: purging.KeyRange,
    lock: bool,
) -> dict[int, list[EntryFile]]:
    """Return the matching keys of the range, each with its cache entries."""
    lock = lock and db.is_mysql(database)
    keys_query = (
        part.model.select(part.key).where(part.in_range(key_range)).order_by(part.key)
    )
    if lock:
        keys_query = keys_query.for_update()
    keys = [key for (key,) in db.tuple_rows(keys_query)]
    if not keys:
        return {}
    if part.model is models.CacheEntry:
        entry_condition = models.CacheEntry.id.in_(keys)
    else:
        entry_condition = models.CacheEntry.custom_id.in_(keys)
    entries_query = models.CacheEntry.select(
        models.CacheEntry.id,
        models.CacheEntry.custom_id,
        models.CacheEntry.path,
        models.CacheEntry.state,
        models.CacheEntry.planned_at,
    ).where(entry_condition)
    if lock:
        entries_query = entries_query.for_update()
    groups: dict[int, list[EntryFile]] = {key: [] for key in keys}
    for row in db.tuple_rows(entries_query):
        entry = EntryFile(*row)
        groups[entry.id if part.model is models.CacheEntry else entry.custom_id].append(
            entry
        )

    return groups


def _busy_reason(entries: list[EntryFile], root: Path, limits: Limits) -> str | None:
    """Return why these entries must be left for now, or None when they may go."""
    for entry in entries:
        if (
            entry.state == "expected"
            and _as_datetime(entry.planned_at) > limits.grace_cutoff
        ):
            return f"cache entry {entry.id} is still being rendered"
        if not entry.path:
            continue
        try:
            path = cache.resolve_inside(root, entry.path)
        except PathOutsideRootError:
            continue  # reported as a failure when the file is deleted
        pattern = f"{cache.TEMP_PREFIX}*-{glob.escape(path.name)}"
        if any(path.parent.glob(pattern)):
            return f"its cached file {entry.path} is being written"
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            continue
        if age < limits.grace_seconds:
            return f"its cached file {entry.path} was written {age:.0f} s ago, within the grace period"

    return None


def _as_datetime(value: datetime.datetime | str) -> datetime.datetime:
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value)
    return value


def _delete_files(
    table: str,
    key: int,
    entries: list[EntryFile],
    root: Path,
    unlinked: set[str],
    outcome: Outcome,
) -> bool:
    """Delete the cached files of one group; return False when one could not be deleted."""
    all_gone = True
    for entry in entries:
        if not entry.path:
            continue
        try:
            if cache.delete_inside(root, entry.path):
                unlinked.add(entry.path)
                outcome.files["deleted"] += 1
            elif entry.path in unlinked:
                outcome.files["deleted"] += 1
            else:
                outcome.files["already_gone"] += 1
        except (PathOutsideRootError, StorageError) as error:
            outcome.files["failed"] += 1
            all_gone = False
            logger.error(
                "cannot delete the cached file of cache entry %d (%s %d): %s",
                entry.id,
                table,
                key,
                error.message,
            )

    return all_gone


def _delete_rows(
    part: purging.RangeBatches, keys: list[int], entry_ids: list[int], outcome: Outcome
) -> None:
    if entry_ids:
        outcome.tables[ENTRIES]["deleted"] += (
            models.CacheEntry.delete()
            .where(models.CacheEntry.id.in_(entry_ids))
            .execute()
        )
    if part.model is models.CustomTransformation:
        outcome.tables[TRANSFORMATIONS]["deleted"] += (
            models.CustomTransformation.delete()
            .where(models.CustomTransformation.id.in_(keys))
            .execute()
        )
