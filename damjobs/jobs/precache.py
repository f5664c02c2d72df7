"""precache: plan the cache entries that should exist, then enqueue build-missing.

The expected entries are, for every file: its original; for transformable files also
each AutoCache cropping, each AutoCache predefined setting, and each pair of an AutoCache
cropping with an AutoCache setting. Planning is a handful of set-based statements; no
Python loop walks the rows.

Triggers log every change to file, cropping and predefined_setting in `plan_change`. A run
skips planning when no change arrived and the default output format is the same as at the
last plan, which `plan_state` records.
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
    full: bool = False
    """Plan even when nothing changed since the last plan."""


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


def part_expected_sql(part: str, default_format: str) -> str:
    """
    SQL condition, over an entry `e` of `part` joined to f, c and s, that is true (1)
    exactly when the entry is still expected with its current key. It is NULL or 0
    otherwise.
    """
    crop_format = crop_format_sql(default_format)
    setting_format = f"COALESCE(s.output_format, {crop_format})"
    file_ok = "f.id IS NOT NULL"
    image_ok = f"{file_ok} AND f.is_transformable = 1"
    crop_ok = "c.id IS NOT NULL AND c.auto_cache = 1 AND c.file_id = e.file_id"
    setting_ok = "s.id IS NOT NULL AND s.auto_cache = 1"
    conditions = {
        "original": f"{file_ok} AND e.output_format = 'original'",
        "cropping": f"{image_ok} AND {crop_ok} AND e.output_format = {crop_format}",
        "setting": f"{image_ok} AND {setting_ok} AND e.output_format = {setting_format}",
        "cropping_setting": (
            f"{image_ok} AND {crop_ok} AND {setting_ok} AND e.output_format = {setting_format}"
        ),
    }

    return conditions[part]


ENTRY_JOINS = (
    "FROM cache_entry e "
    "LEFT JOIN file f ON f.id = e.file_id "
    "LEFT JOIN cropping c ON c.id = e.cropping_id "
    "LEFT JOIN predefined_setting s ON s.id = e.setting_id "
)


def new_entries_sql(part: str, default_format: str) -> str:
    """Return a SELECT of the expected entries of `part` that have no row yet."""
    return f"SELECT x.* {matched_entries_sql(part, default_format)} WHERE e.id IS NULL"


def matched_entries_sql(part: str, default_format: str) -> str:
    """
    Return a FROM clause that pairs each expected entry of `part` with its row, if any.

    The join uses every column of the unique key, so the database probes that index once
    per expected entry and reads no table rows.
    """
    return (
        f"FROM ({expected_select(part, default_format)}) AS x "
        "LEFT JOIN cache_entry e ON e.file_id = x.file_id "
        "AND e.cropping_id = x.cropping_id AND e.setting_id = x.setting_id "
        "AND e.custom_id = 0 AND e.output_format = x.output_format"
    )


# The joins each part needs, and its shape written so that no index matches it: nearly
# every row has custom_id = 0, and most have cropping_id = 0, so reading the rows
# through one of those indexes is several times slower than scanning the table.
SURVEY_FROM = {
    "original": (
        "FROM cache_entry e LEFT JOIN file f ON f.id = e.file_id "
        "WHERE e.custom_id + 0 = 0 AND e.cropping_id + 0 = 0 AND e.setting_id + 0 = 0"
    ),
    "cropping": (
        "FROM cache_entry e LEFT JOIN file f ON f.id = e.file_id "
        "LEFT JOIN cropping c ON c.id = e.cropping_id "
        "WHERE e.custom_id + 0 = 0 AND e.cropping_id + 0 <> 0 AND e.setting_id + 0 = 0"
    ),
    "setting": (
        "FROM cache_entry e LEFT JOIN file f ON f.id = e.file_id "
        "LEFT JOIN predefined_setting s ON s.id = e.setting_id "
        "WHERE e.custom_id + 0 = 0 AND e.cropping_id + 0 = 0 AND e.setting_id + 0 <> 0"
    ),
    "cropping_setting": (
        f"{ENTRY_JOINS}"
        "WHERE e.custom_id + 0 = 0 AND e.cropping_id + 0 <> 0 AND e.setting_id + 0 <> 0"
    ),
}

# Used only together with the part's "still expected" condition, which guarantees
# that the joined sources exist.
PART_VERSION_CHANGED = {
    "original": "(e.state = 'obsolete' OR e.file_version <> f.version)",
    "cropping": (
        "(e.state = 'obsolete' OR e.file_version <> f.version "
        "OR e.cropping_version <> c.version)"
    ),
    "setting": (
        "(e.state = 'obsolete' OR e.file_version <> f.version "
        "OR e.setting_version <> s.version)"
    ),
    "cropping_setting": (
        "(e.state = 'obsolete' OR e.file_version <> f.version "
        "OR e.cropping_version <> c.version OR e.setting_version <> s.version)"
    ),
}


def survey(database: peewee.Database, default_format: str) -> dict[str, dict[str, int]]:
    """
    Count what planning would change, per part, reading each permanent entry once.

    One scan of cache_entry per part, joined to the part's sources by primary key,
    counts the rows that are still expected ("matched"), those of them that need
    re-planning ("replan") and the live rows that are no longer expected ("stray").
    Each part's expected total comes from its source tables alone, so "new" is the
    difference. Versions are stored only in the table rows, not in an index, so an exact
    check has to read every row, and a scan does that far faster than one index lookup
    per expected entry.
    """
    changes: dict[str, dict[str, int]] = {}
    for part in PARTS:
        # Classifying each row once and grouping evaluates the long "still expected"
        # condition once per row, where one SUM per count would evaluate it three times.
        expected = f"COALESCE({part_expected_sql(part, default_format)}, 0) = 1"
        classes = dict(
            database.execute_sql(
                f"SELECT CASE WHEN {expected} THEN "
                f"(CASE WHEN {PART_VERSION_CHANGED[part]} THEN 'replan' ELSE 'current' END) "
                "WHEN e.state <> 'obsolete' THEN 'stray' ELSE 'obsolete' END AS class, "
                f"COUNT(*) {SURVEY_FROM[part]} GROUP BY class"
            ).fetchall()
        )
        replan = int(classes.get("replan", 0))
        matched = int(classes.get("current", 0)) + replan
        stray = int(classes.get("stray", 0))
        total = database.execute_sql(
            f"SELECT COUNT(*) FROM ({expected_select(part, default_format)}) AS x"
        ).fetchone()[0]
        changes[part] = {
            "total": int(total),
            "matched": int(matched),
            "replan": int(replan),
            "stray": int(stray),
            "new": int(total) - int(matched),
        }

    return changes


def obsolete_ids_sql(default_format: str, parts: tuple[str, ...] = PARTS) -> str:
    """Return a SELECT of the ids of live permanent entries of `parts` that are no longer
    expected."""
    return " UNION ALL ".join(
        f"SELECT e.id {SURVEY_FROM[part]} AND e.state <> 'obsolete' "
        f"AND NOT (COALESCE({part_expected_sql(part, default_format)}, 0) = 1)"
        for part in parts
    )


def replan_ids_sql(default_format: str, parts: tuple[str, ...] = PARTS) -> str:
    """Return a SELECT of the ids of permanent entries of `parts` that are still expected
    but were planned from other versions or marked obsolete."""
    return " UNION ALL ".join(
        f"SELECT e.id {SURVEY_FROM[part]} "
        f"AND COALESCE({part_expected_sql(part, default_format)}, 0) = 1 "
        f"AND {PART_VERSION_CHANGED[part]}"
        for part in parts
    )


INSERT_COLUMNS = (
    "INSERT INTO cache_entry (file_id, cropping_id, setting_id, output_format, "
    "file_version, cropping_version, setting_version, custom_id, state, planned_at) "
    "SELECT file_id, cropping_id, setting_id, output_format, file_version, "
    "cropping_version, setting_version, 0, 'expected', "
)


def _is_empty(database: peewee.Database) -> bool:
    return database.execute_sql("SELECT 1 FROM cache_entry LIMIT 1").fetchone() is None


def insert_into_empty_table(
    database: peewee.Database, default_format: str, now_sql: str
) -> int:
    """
    Plan every part with one INSERT into the empty cache_entry table (MySQL and MariaDB).

    With unique_checks and foreign_key_checks off, MariaDB takes a bulk-load path for an
    INSERT into an empty InnoDB table. On MariaDB 10.11 that made a first run over 2.16
    million entries about 30 % faster than one INSERT per part, and the unique key was
    enforced again afterwards. The expected entries have distinct keys by construction,
    so the skipped unique check cannot let a duplicate in, and cache_entry has no foreign
    keys. Return the number of rows inserted.
    """
    parts = " UNION ALL ".join(expected_select(part, default_format) for part in PARTS)
    database.execute_sql("SET SESSION unique_checks = 0, foreign_key_checks = 0")
    try:
        with db.translated_errors("planning all cache entries"), database.atomic():
            return database.execute_sql(
                f"{INSERT_COLUMNS}{now_sql} FROM ({parts}) AS fresh"
            ).rowcount
    finally:
        database.execute_sql("SET SESSION unique_checks = 1, foreign_key_checks = 1")


def plan(context: runner.RunContext) -> dict[str, int]:
    """
    Bring the planned entries in line with the definitions; return counts per change.

    `survey` first counts the changes of every part, with one scan of cache_entry per
    part. Only the statements with work to do run afterwards, each limited to the parts
    that need it, so a run with nothing changed reads each entry once and writes nothing.
    """
    database = context.database
    default_format = context.settings["cache.default_output_format"]
    now_sql = db.now(database).sql
    with db.translated_errors("comparing planned cache entries with the definitions"):
        changes = survey(database, default_format)
    counts: dict[str, int] = {"obsolete": 0, "replanned": 0}

    stray_parts = tuple(part for part in PARTS if changes[part]["stray"] > 0)
    if stray_parts:
        with db.translated_errors("marking obsolete cache entries"), database.atomic():
            counts["obsolete"] = database.execute_sql(
                f"UPDATE cache_entry SET state = 'obsolete' WHERE id IN "
                f"(SELECT id FROM ({obsolete_ids_sql(default_format, stray_parts)}) AS doomed)"
            ).rowcount

    replan_parts = tuple(part for part in PARTS if changes[part]["replan"] > 0)
    if replan_parts:
        with (
            db.translated_errors("re-planning changed cache entries"),
            database.atomic(),
        ):
            counts["replanned"] = database.execute_sql(
                "UPDATE cache_entry SET state = 'expected', failure = NULL, error = NULL, "
                f"planned_at = {now_sql}, "
                "file_version = (SELECT version FROM file WHERE id = cache_entry.file_id), "
                "cropping_version = COALESCE((SELECT version FROM cropping "
                "WHERE id = cache_entry.cropping_id), 0), "
                "setting_version = COALESCE((SELECT version FROM predefined_setting "
                "WHERE id = cache_entry.setting_id), 0) "
                f"WHERE id IN (SELECT id FROM ({replan_ids_sql(default_format, replan_parts)}) "
                "AS changed)"
            ).rowcount

    if db.is_mysql(database) and _is_empty(database):
        inserted = insert_into_empty_table(database, default_format, now_sql)
        for part in PARTS:
            counts[f"new_{part}"] = changes[part]["total"]
        expected = sum(change["total"] for change in changes.values())
        if inserted != expected:
            logger.warning(
                "planned %d entries where the survey counted %d: the definitions changed "
                "during the run, so the counts per part are approximate",
                inserted,
                expected,
            )
        return counts

    for part in PARTS:
        counts[f"new_{part}"] = 0
        if not changes[part]["new"]:
            continue
        # When no expected entry of the part has a row, the anti-join would only probe
        # the unique index in vain. precache is the only writer of permanent entries and
        # runs once at a time, so no row can appear in between.
        if changes[part]["new"] == changes[part]["total"]:
            fresh = expected_select(part, default_format)
        else:
            fresh = new_entries_sql(part, default_format)
        with db.translated_errors(f"planning {part} cache entries"), database.atomic():
            counts[f"new_{part}"] = database.execute_sql(
                f"{INSERT_COLUMNS}{now_sql} FROM ({fresh}) AS fresh"
            ).rowcount

    return counts


def plan_dry_run(context: runner.RunContext) -> dict[str, int]:
    """Return the counts that `plan` would produce, changing nothing."""
    database = context.database
    default_format = context.settings["cache.default_output_format"]
    changes = survey(database, default_format)
    counts = {
        "obsolete": sum(change["stray"] for change in changes.values()),
        "replanned": sum(change["replan"] for change in changes.values()),
    }
    for part in PARTS:
        counts[f"new_{part}"] = changes[part]["new"]

    return counts


PLAN_STATE_ID = 1


@dataclasses.dataclass(frozen=True)
class ChangeLog:
    """The `plan_change` rows visible at one moment: the maximum id (0 if none), count."""

    max_id: int
    rows: int


def read_change_log(database: peewee.Database) -> ChangeLog:
    max_id, rows = database.execute_sql(
        "SELECT MAX(id), COUNT(*) FROM plan_change"
    ).fetchone()

    return ChangeLog(max_id=int(max_id or 0), rows=int(rows))


def current_plan(log: ChangeLog, default_format: str) -> models.PlanState | None:
    """
    Return the state of the last plan if it is still current, else None.

    The last plan is current when it covered the highest change id in `log`, used
    `default_format`, and no other change row is left. A plan deletes the rows it covered
    except the one with the highest id, so any other row is a change that committed after
    the plan read the log, with a lower id than a change committed before.
    """
    state = models.PlanState.get_or_none(models.PlanState.id == PLAN_STATE_ID)
    if state is None:
        return None
    if state.last_change_id != log.max_id:
        return None
    if state.default_output_format != default_format:
        return None
    if log.rows > (1 if log.max_id else 0):
        return None

    return state


def record_plan(database: peewee.Database, log: ChangeLog, default_format: str) -> None:
    """
    Store that a plan covered the changes in `log`, then delete the change rows it covered.

    The row with the highest covered id stays, so the next run finds the same maximum
    when nothing changed, even on a server that restarts its auto-increment counter at
    the highest id present. Changes logged while planning ran have higher ids and stay.
    """
    with db.translated_errors("recording the completed plan"):
        models.PlanState.replace(
            id=PLAN_STATE_ID,
            last_change_id=log.max_id,
            default_output_format=default_format,
            planned_at=db.now(database),
        ).execute()
    if log.max_id == 0:
        return

    try:
        with database.atomic():
            deleted = (
                models.PlanChange.delete()
                .where(models.PlanChange.id < log.max_id)
                .execute()
            )
    except peewee.OperationalError as error:
        # The rows that stay only make the next run plan again.
        logger.warning(
            "failed to delete the planned changes below id %d, so the next run plans "
            "again: %s",
            log.max_id,
            error,
        )
        return

    if deleted > log.rows - 1:
        # On MySQL and MariaDB a transaction can commit a change with a lower id after
        # a change with a higher id. Such a change may have missed this plan and its row
        # is gone now, so a new row makes the next run plan again.
        logger.warning(
            "deleted %d planned changes where %d were read before planning; logging a "
            "change so that the next run plans again",
            deleted,
            log.rows - 1,
        )
        with db.translated_errors("logging a change for the next plan"):
            models.PlanChange.insert(changed_at=db.now(database)).execute()


def unchanged_counts() -> dict[str, int]:
    """Return the counts of a run that skipped planning because nothing changed."""
    counts = {"obsolete": 0, "replanned": 0}
    for part in PARTS:
        counts[f"new_{part}"] = 0

    return counts


def _paths_in_use(paths: list[str]) -> set[str]:
    """Return the paths among `paths` that an entry other than an obsolete one records."""
    if not paths:
        return set()
    query = models.CacheEntry.select(models.CacheEntry.path).where(
        models.CacheEntry.path.in_(paths) & (models.CacheEntry.state != "obsolete")
    )

    return {row.path for row in query if row.path is not None}


def _delete_file(cache_root: Any, relative: str, dry_run: bool) -> bool:
    """Delete one cached file below the root, or in a dry run only check that it could."""
    if not dry_run:
        return cache.delete_inside(cache_root, relative)

    return cache.resolve_inside(cache_root, relative).is_file()


def prune(context: runner.RunContext) -> dict[str, int]:
    """Delete obsolete entries and their cached files, in short committed batches."""
    cache_root = context.settings["paths.cache_root"]
    deleted_rows = deleted_files = failed = 0
    last_id = 0
    while not context.stop:
        batch = list(
            models.CacheEntry.select(models.CacheEntry.id, models.CacheEntry.path)
            .where(
                (models.CacheEntry.state == "obsolete")
                & (models.CacheEntry.id > last_id)
            )
            .order_by(models.CacheEntry.id)
            .limit(1000)
        )
        if not batch:
            break
        last_id = batch[-1].id
        in_use = _paths_in_use([entry.path for entry in batch if entry.path])
        doomed = []
        for entry in batch:
            try:
                if entry.path and entry.path not in in_use:
                    deleted_files += _delete_file(
                        cache_root, entry.path, context.dry_run
                    )
                doomed.append(entry.id)
            except Exception as error:  # noqa: BLE001 - one bad path must not stop the prune
                failed += 1
                logger.error(
                    "cannot delete the file of cache entry %d: %s", entry.id, error
                )
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

    return {
        "pruned_entries": deleted_rows,
        "pruned_files": deleted_files,
        "prune_failed": failed,
    }


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """
    Plan the cache entries unless nothing changed, optionally prune obsolete ones, then
    enqueue build-missing.
    """
    database = context.database
    default_format = context.settings["cache.default_output_format"]
    # The log is read before planning, so a change that arrives while planning runs gets
    # a higher id than the one recorded and makes the next run plan again.
    with db.translated_errors("reading the plan change log"):
        log = read_change_log(database)
        last_plan = None if options.full else current_plan(log, default_format)

    if last_plan is not None:
        counts = unchanged_counts()
        logger.info(
            "nothing changed since the last plan at %s UTC, so planning was skipped: %s",
            last_plan.planned_at,
            _describe(counts),
        )
    elif context.dry_run:
        counts = plan_dry_run(context)
        logger.info("dry run: would plan %s", _describe(counts))
    else:
        counts = plan(context)
        logger.info("planned %s", _describe(counts))
        record_plan(database, log, default_format)
    context.count(processed=sum(counts.values()))
    counts["skipped_unchanged"] = last_plan is not None

    if options.prune:
        pruned = prune(context)
        if context.dry_run:
            # Planning did not run, so the entries it would make obsolete are not marked
            # yet; they would be pruned in the same run.
            pruned["pruned_entries"] += counts.get("obsolete", 0)
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
    return ", ".join(
        f"{value} {name.replace('_', ' ')}" for name, value in counts.items()
    )
