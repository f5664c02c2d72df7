"""purge-old-logs: delete the log items older than the configured age.

A log item is old when its `created_at` lies before the cut-off: the database server's
UTC time at the start of the run minus the age. An item exactly at the cut-off stays.
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
    max_age_days: int | None = None
    """Overrides purge_old_logs.max_age_days for one run."""


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """Delete old log items in key-range batches; return the counts for the summary."""
    settings = context.settings
    max_age_days = options.max_age_days or settings["purge_old_logs.max_age_days"]
    cutoff = purging.cutoff(context.database, days=max_age_days)
    logger.info(
        "deleting log items created before %s (older than %d days)",
        purging.format_time(cutoff),
        max_age_days,
    )
    tally = purging.Tally()
    slowest = purging.delete_rows(
        context,
        models.LogItem,
        models.LogItem.created_at < cutoff,
        settings["purge_old_logs.batch_size"],
        tally,
    )

    return {
        "cutoff": purging.format_time(cutoff),
        "max_age_days": max_age_days,
        "slowest_batch_seconds": round(slowest, 3),
        **tally.as_details(),
    }
