"""purge-old-job-statuses: delete the job statuses not updated for the configured hours.

A status is old when its `updated_at` lies before the cut-off (the database server's UTC
time at the start of the run minus purge_old_job_statuses.max_age_hours). A live run
refreshes `updated_at` with every heartbeat, so its status never gets old. A status that a
job slot refers to (an enqueued or running run) is never deleted, whatever its age; the
summary counts those as skipped.
"""

import dataclasses
import logging
from typing import Any

from damjobs import runner
from damjobs.db import models
from damjobs.jobs import purging

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
    pass


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """Delete old job statuses in key-range batches; return the counts for the summary."""
    settings = context.settings
    max_age_hours = settings["purge_old_job_statuses.max_age_hours"]
    cutoff = purging.cutoff(context.database, hours=max_age_hours)
    logger.info(
        "deleting job statuses last updated before %s (more than %d hours ago)",
        purging.format_time(cutoff),
        max_age_hours,
    )
    old = models.JobStatus.updated_at < cutoff
    referenced_by_slot = models.JobStatus.id.in_(
        models.JobSlot.select(models.JobSlot.status_id)
    )
    tally = purging.Tally()
    protected = models.JobStatus.select().where(old & referenced_by_slot).count()
    tally.table("job_status")["skipped"] += protected
    context.count(skipped=protected)
    slowest = purging.delete_rows(
        context,
        models.JobStatus,
        old & ~referenced_by_slot,
        settings["purge_old_job_statuses.batch_size"],
        tally,
    )

    return {
        "cutoff": purging.format_time(cutoff),
        "max_age_hours": max_age_hours,
        "slowest_batch_seconds": round(slowest, 3),
        **tally.as_details(),
    }
