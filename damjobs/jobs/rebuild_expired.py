"""rebuild-expired: render again the permanent cache entries whose expiry time has passed.

The item set is that of precache (originals, AutoCache croppings, AutoCache predefined
settings and their pairs), never custom transformations: built permanent entries whose
`expires_at` lies at or before the database server's UTC time at the start of the run.
Rendering goes through the same catalog, worker pool and untrusted-input checks as
build-missing. Each new file is written under a temporary name and renamed over the old
one, so readers get the old file until the new one is complete. The recorder stores the
new built time and an expiry of built time plus the TTL (the setting's, else
cache.ttl_days). An expired entry whose file is also missing is rebuilt here once, and
the summary counts it under `missing_files`.
"""

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from damjobs import cache, db, runner
from damjobs.db import models
from damjobs.jobs import purging, sources
from damjobs.render import types as render_types

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
    pass


@dataclasses.dataclass
class Plan:
    """Counts of the entries handed to the renderer."""

    entries: int = 0
    missing_files: int = 0


def iter_work(
    context: runner.RunContext,
    expired: Any,
    catalog: sources.Catalog,
    recorder: sources.ResultRecorder | None,
    plan: Plan,
) -> Iterator[render_types.SourceJob]:
    """
    Yield one SourceJob per original with expired entries, until a stop or --limit.

    Entries that cannot be described (a deleted cropping, invalid steps) are failed
    through `recorder` at once; a dry run passes no recorder and only lists.
    """
    cache_root: Path = context.settings["paths.cache_root"]
    for file_row, entries in sources.iter_entry_groups(
        context.database, ("built",), expired
    ):
        if context.stop:
            return
        entries = sources.trim_to_limit(context, entries, plan.entries)
        if not entries:
            return
        plan.entries += len(entries)
        for entry in entries:
            if not entry.path or not cache.file_size(cache_root, entry.path):
                plan.missing_files += 1
        job = sources.prepare_job(catalog, recorder, file_row, entries)
        if job is not None:
            yield job


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """Render the expired cache entries again; return the counts for the summary."""
    settings = context.settings
    database = context.database
    cache_root: Path = settings["paths.cache_root"]
    now = db.server_now(database)
    expired = models.CacheEntry.expires_at <= now
    logger.info(
        "rebuilding cache entries that expired at or before %s",
        purging.format_time(now),
    )
    catalog = sources.Catalog(database, settings)
    context.set_total(sources.count_entries(database, ("built",), expired))
    plan = Plan()
    details: dict[str, Any] = {"expired_before": purging.format_time(now)}
    sources.check_roots(settings, database, context.dry_run)
    if context.dry_run:
        listed = sources.list_work(
            context, iter_work(context, expired, catalog, None, plan)
        )
        logger.info("dry run: would rebuild %d cache entries", listed)
        return {**details, "would_rebuild": listed, "missing_files": plan.missing_files}

    cache.sweep_temp_files(
        cache_root, max(3600.0, 2 * settings["render.timeout_seconds"])
    )
    recorder = sources.ResultRecorder(context, catalog)
    sources.render_jobs(
        context, iter_work(context, expired, catalog, recorder, plan), recorder
    )
    context.left = sources.count_entries(database, ("built",), expired)

    return {
        **details,
        "rebuilt": recorder.rendered,
        "missing_files": plan.missing_files,
        "failed_by_class": dict(recorder.failed_by_class),
    }
