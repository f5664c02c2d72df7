"""The registry of jobs: one entry per job, keyed by its subcommand name.

The CLI builds one subcommand per entry, and `run-queued` starts enqueued jobs by name.
"""

from damjobs.jobs import build_missing, precache
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
    ),
}
