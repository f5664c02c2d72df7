"""precache: plan the cache entries that should exist, then enqueue build-missing.

The expected entries are, for every file: its original; for transformable files also
each AutoCache cropping, each AutoCache predefined setting, and each pair of an AutoCache
cropping with an AutoCache setting. Planning is a handful of set-based statements; no
Python loop walks the rows.
"""

import dataclasses
import logging
from typing import Any

import peewee

from damjobs import cache, db, runner
from damjobs.db import models

logger = logging.getLogger(__name__)

DERIVABLE_FORMATS = "('jpeg', 'png', 'webp')"
PARTS = ("original", "cropping", "setting", "cropping_setting")


@dataclasses.dataclass(frozen=True)
class Options:
    prune: bool = False


def crop_format_sql(default_format: str) -> str:
    """SQL for the output format of a cropping alone: the source's, or the default."""
    return f"CASE WHEN f.format IN {DERIVABLE_FORMATS} THEN f.format ELSE '{default_format}' END"


def expected_select(part: str, default_format: str) -> str:
    """
    Return a SELECT of the expected entries of one part.

    Columns: file_id, cropping_id, setting_id, output_format, file_version,
    cropping_version, setting_version.
    """
    crop_format = crop_format_sql(default_format)
    setting_format = f"COALESCE(s.output_format, {crop_format})"
    if part == "original":
        return (
            "SELECT f.id AS file_id, 0 AS cropping_id, 0 AS setting_id, "
            "'original' AS output_format, f.version AS file_version, "
            "0 AS cropping_version, 0 AS setting_version FROM file f"
        )
    if part == "cropping":
        return (
            "SELECT f.id AS file_id, c.id AS cropping_id, 0 AS setting_id, "
            f"{crop_format} AS output_format, f.version AS file_version, "
            "c.version AS cropping_version, 0 AS setting_version "
            "FROM cropping c JOIN file f ON f.id = c.file_id "
            "WHERE c.auto_cache = 1 AND f.is_transformable = 1"
        )
    if part == "setting":
        return (
            "SELECT f.id AS file_id, 0 AS cropping_id, s.id AS setting_id, "
            f"{setting_format} AS output_format, f.version AS file_version, "
            "0 AS cropping_version, s.version AS setting_version "
            "FROM file f CROSS JOIN predefined_setting s "
            "WHERE s.auto_cache = 1 AND f.is_transformable = 1"
        )
    if part == "cropping_setting":
        return (
            "SELECT f.id AS file_id, c.id AS cropping_id, s.id AS setting_id, "
            f"{setting_format} AS output_format, f.version AS file_version, "
            "c.version AS cropping_version, s.version AS setting_version "
            "FROM cropping c JOIN file f ON f.id = c.file_id "
            "CROSS JOIN predefined_setting s "
            "WHERE c.auto_cache = 1 AND s.auto_cache = 1 AND f.is_transformable = 1"
        )
    raise ValueError(f"unknown part {part!r}")


def still_expected_sql(default_format: str) -> str:
    """
    SQL condition, over `cache_entry e` joined to f, c and s, that is true exactly when
    the existing permanent entry e is still expected with its current key.
    """
    crop_format = crop_format_sql(default_format)
    setting_format = f"COALESCE(s.output_format, {crop_format})"
    file_ok = "f.id IS NOT NULL"
    image_ok = f"{file_ok} AND f.is_transformable = 1"
    crop_ok = "c.id IS NOT NULL AND c.auto_cache = 1 AND c.file_id = e.file_id"
    setting_ok = "s.id IS NOT NULL AND s.auto_cache = 1"

    return (
        "COALESCE(CASE "
        "WHEN e.cropping_id = 0 AND e.setting_id = 0 "
        f"THEN {file_ok} AND e.output_format = 'original' "
        "WHEN e.setting_id = 0 "
        f"THEN {image_ok} AND {crop_ok} AND e.output_format = {crop_format} "
        "WHEN e.cropping_id = 0 "
        f"THEN {image_ok} AND {setting_ok} AND e.output_format = {setting_format} "
        f"ELSE {image_ok} AND {crop_ok} AND {setting_ok} AND e.output_format = {setting_format} "
        "END, 0) = 1"
    )


ENTRY_JOINS = (
    "FROM cache_entry e "
    "LEFT JOIN file f ON f.id = e.file_id "
    "LEFT JOIN cropping c ON c.id = e.cropping_id "
    "LEFT JOIN predefined_setting s ON s.id = e.setting_id "
)

VERSION_CHANGED = (
    "(e.state = 'obsolete' OR e.file_version <> f.version "
    "OR e.cropping_version <> COALESCE(c.version, 0) "
    "OR e.setting_version <> COALESCE(s.version, 0))"
)


def new_entries_sql(part: str, default_format: str) -> str:
    """Return a SELECT of the expected entries of `part` that have no row yet."""
    return (
        f"SELECT * FROM ({expected_select(part, default_format)}) AS x "
        "WHERE NOT EXISTS (SELECT 1 FROM cache_entry e WHERE e.file_id = x.file_id "
        "AND e.cropping_id = x.cropping_id AND e.setting_id = x.setting_id "
        "AND e.custom_id = 0 AND e.output_format = x.output_format)"
    )


def obsolete_ids_sql(default_format: str) -> str:
    return (
        f"SELECT e.id {ENTRY_JOINS}"
        "WHERE e.custom_id = 0 AND e.state <> 'obsolete' "
        f"AND NOT ({still_expected_sql(default_format)})"
    )


def replan_ids_sql(default_format: str) -> str:
    return (
        f"SELECT e.id {ENTRY_JOINS}"
        f"WHERE e.custom_id = 0 AND {still_expected_sql(default_format)} AND {VERSION_CHANGED}"
    )


def count(database: peewee.Database, select_sql: str) -> int:
    return database.execute_sql(f"SELECT COUNT(*) FROM ({select_sql}) AS counted").fetchone()[0]


def plan(context: runner.RunContext) -> dict[str, int]:
    """Bring the planned entries in line with the definitions; return counts per change."""
    database = context.database
    default_format = context.settings["cache.default_output_format"]
    now_sql = db.now(database).sql
    counts: dict[str, int] = {}

    with db.translated_errors("marking obsolete cache entries"), database.atomic():
        counts["obsolete"] = database.execute_sql(
            f"UPDATE cache_entry SET state = 'obsolete' WHERE id IN "
            f"(SELECT id FROM ({obsolete_ids_sql(default_format)}) AS doomed)"
        ).rowcount

    with db.translated_errors("re-planning changed cache entries"), database.atomic():
        counts["replanned"] = database.execute_sql(
            "UPDATE cache_entry SET state = 'expected', failure = NULL, error = NULL, "
            f"planned_at = {now_sql}, "
            "file_version = (SELECT version FROM file WHERE id = cache_entry.file_id), "
            "cropping_version = COALESCE((SELECT version FROM cropping "
            "WHERE id = cache_entry.cropping_id), 0), "
            "setting_version = COALESCE((SELECT version FROM predefined_setting "
            "WHERE id = cache_entry.setting_id), 0) "
            f"WHERE id IN (SELECT id FROM ({replan_ids_sql(default_format)}) AS changed)"
        ).rowcount

    for part in PARTS:
        with db.translated_errors(f"planning {part} cache entries"), database.atomic():
            counts[f"new_{part}"] = database.execute_sql(
                "INSERT INTO cache_entry (file_id, cropping_id, setting_id, output_format, "
                "file_version, cropping_version, setting_version, custom_id, state, "
                "planned_at) "
                "SELECT file_id, cropping_id, setting_id, output_format, file_version, "
                f"cropping_version, setting_version, 0, 'expected', {now_sql} "
                f"FROM ({new_entries_sql(part, default_format)}) AS fresh"
            ).rowcount

    return counts


def plan_dry_run(context: runner.RunContext) -> dict[str, int]:
    """Return the counts that `plan` would produce, changing nothing."""
    database = context.database
    default_format = context.settings["cache.default_output_format"]
    counts = {
        "obsolete": count(database, obsolete_ids_sql(default_format)),
        "replanned": count(database, replan_ids_sql(default_format)),
    }
    for part in PARTS:
        counts[f"new_{part}"] = count(database, new_entries_sql(part, default_format))

    return counts


def prune(context: runner.RunContext) -> dict[str, int]:
    """Delete obsolete entries and their cached files, in short committed batches."""
    cache_root = context.settings["paths.cache_root"]
    deleted_rows = deleted_files = failed = 0
    last_id = 0
    while not context.stop:
        batch = list(
            models.CacheEntry.select(models.CacheEntry.id, models.CacheEntry.path)
            .where((models.CacheEntry.state == "obsolete") & (models.CacheEntry.id > last_id))
            .order_by(models.CacheEntry.id)
            .limit(1000)
        )
        if not batch:
            break
        last_id = batch[-1].id
        doomed = []
        for entry in batch:
            try:
                if entry.path and not context.dry_run:
                    deleted_files += cache.delete_inside(cache_root, entry.path)
                doomed.append(entry.id)
            except Exception as error:  # noqa: BLE001 - one bad path must not stop the prune
                failed += 1
                logger.error("cannot delete the file of cache entry %d: %s", entry.id, error)
        if not context.dry_run and doomed:
            with context.database.atomic():
                deleted_rows += (
                    models.CacheEntry.delete()
                    .where(
                        models.CacheEntry.id.in_(doomed)
                        & (models.CacheEntry.state == "obsolete")
                    )
                    .execute()
                )
        elif context.dry_run:
            deleted_rows += len(doomed)

    return {"pruned_entries": deleted_rows, "pruned_files": deleted_files, "prune_failed": failed}


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """Plan the cache entries, optionally prune obsolete ones, then enqueue build-missing."""
    if context.dry_run:
        counts = plan_dry_run(context)
        logger.info("dry run: would plan %s", _describe(counts))
    else:
        counts = plan(context)
        logger.info("planned %s", _describe(counts))
    context.count(processed=sum(counts.values()))

    if options.prune:
        pruned = prune(context)
        counts.update(pruned)
        context.count(failed=pruned["prune_failed"])
        verb = "would prune" if context.dry_run else "pruned"
        logger.info("%s %d obsolete entries", verb, pruned["pruned_entries"])

    counts["expected_total"] = (
        models.CacheEntry.select().where(models.CacheEntry.state == "expected").count()
    )
    if not context.dry_run:
        outcome = runner.enqueue(context.database, "build-missing", trigger="chained")
        counts["build_missing"] = outcome  # type: ignore[assignment]
        logger.info("build-missing: %s", outcome)

    return counts


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} {name.replace('_', ' ')}" for name, value in counts.items())
