"""The registry of jobs: one entry per job, keyed by its subcommand name.

The CLI builds one subcommand per entry, and `run-queued` starts enqueued jobs by name.
"""

from damjobs.jobs import (
    build_missing,
    precache,
    purge_custom_transformations,
    purge_expired_published,
    purge_old_job_statuses,
    purge_old_logs,
    rebuild_expired,
    rebuild_index,
    sources,
)
from damjobs.runner import JobDefinition

JOBS: dict[str, JobDefinition] = {
    "precache": JobDefinition(
        name="precache",
        summary="Plan the cache entries that should exist, then enqueue build-missing.",
        periodic=True,
        run=precache.run,
        takes_limit=False,
    ),
    "build-missing": JobDefinition(
        name="build-missing",
        summary="Render every planned cache entry whose file is absent, empty or never built.",
        periodic=True,
        run=build_missing.run,
        check_settings=sources.check_render_settings,
    ),
    "rebuild-expired": JobDefinition(
        name="rebuild-expired",
        summary="Render again the permanent cache entries whose expiry time has passed.",
        periodic=True,
        run=rebuild_expired.run,
        check_settings=sources.check_render_settings,
    ),
    "rebuild-index": JobDefinition(
        name="rebuild-index",
        summary="Rebuild the search index from the database, then swap the alias to it.",
        periodic=False,
        run=rebuild_index.run,
        takes_limit=False,
    ),
    "purge-custom-transformations": JobDefinition(
        name="purge-custom-transformations",
        summary="Delete custom transformations with their cache entries and cached files.",
        periodic=False,
        run=purge_custom_transformations.run,
        takes_limit=False,
    ),
    "purge-expired-published": JobDefinition(
        name="purge-expired-published",
        summary="Delete published files whose expiry time has passed, copy and row.",
        periodic=False,
        run=purge_expired_published.run,
        takes_limit=False,
    ),
    "purge-old-logs": JobDefinition(
        name="purge-old-logs",
        summary="Delete log items older than the configured age.",
        periodic=True,
        run=purge_old_logs.run,
        takes_limit=False,
    ),
    "purge-old-job-statuses": JobDefinition(
        name="purge-old-job-statuses",
        summary="Delete job statuses that have not been updated for the configured hours.",
        periodic=True,
        run=purge_old_job_statuses.run,
        takes_limit=False,
    ),
}
