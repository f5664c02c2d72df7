"""Subcommands of the cache upkeep and purge jobs: rebuild-expired and the four purges."""

import re
from typing import Annotated

import typer

from damjobs.cli import app, boundary
from damjobs.cli.jobs import (
    DryRun,
    JsonSummary,
    MaxRuntime,
    RenderLimit,
    Trigger,
    run_registered_job,
)
from damjobs.errors import UsageError
from damjobs.jobs import (
    purge_custom_transformations,
    purge_expired_published,
    purge_old_job_statuses,
    purge_old_logs,
    rebuild_expired,
)

AGE_UNITS_IN_MINUTES = {"m": 1, "h": 60, "d": 24 * 60}


def parse_age_minutes(text: str | None) -> float | None:
    """Return minutes for an age such as "90m", "12h" or "7d"; raise UsageError otherwise."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhd])\s*", text)
    if match is None or float(match[1]) <= 0:
        raise UsageError(
            f"invalid --older-than {text!r}",
            hint="give a positive number with the unit m, h or d, such as 90m, 12h or 7d",
        )

    return float(match[1]) * AGE_UNITS_IN_MINUTES[match[2]]


@app.command("rebuild-expired")
@boundary
def rebuild_expired_command(
    limit: RenderLimit = None,
    dry_run: DryRun = False,
    max_runtime: MaxRuntime = None,
    json_output: JsonSummary = False,
    trigger: Trigger = "manual",
) -> int:
    """
    Render again the permanent cache entries whose expiry time has passed.

    Each file is replaced atomically, so readers keep the old file until the new one is
    complete, and the entry gets a new expiry time. Custom transformations are never
    rebuilt.

    Example cron line: 45 3 * * * damjobs -q rebuild-expired --max-runtime 2h
    """
    return run_registered_job(
        "rebuild-expired",
        rebuild_expired.Options(),
        dry_run,
        max_runtime,
        json_output,
        trigger,
        limit=limit,
    )


@app.command("purge-custom-transformations")
@boundary
def purge_custom_transformations_command(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Purge only transformations last requested longer ago than this, such as "
            "90m, 12h or 7d. The configured grace period applies in any case.",
            show_default=False,
        ),
    ] = None,
    file_id: Annotated[
        int | None,
        typer.Option(
            "--file-id",
            help="Purge only the transformations of this file.",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRun = False,
    max_runtime: MaxRuntime = None,
    json_output: JsonSummary = False,
    trigger: Trigger = "manual",
) -> int:
    """
    Delete custom transformations with their cache entries and cached files.

    Manual job: later requests render the purged transformations again on demand.
    """
    options = purge_custom_transformations.Options(
        older_than_minutes=parse_age_minutes(older_than), file_id=file_id
    )
    return run_registered_job(
        "purge-custom-transformations",
        options,
        dry_run,
        max_runtime,
        json_output,
        trigger,
    )


@app.command("purge-expired-published")
@boundary
def purge_expired_published_command(
    dry_run: DryRun = False,
    max_runtime: MaxRuntime = None,
    json_output: JsonSummary = False,
    trigger: Trigger = "manual",
) -> int:
    """
    Delete published files whose expiry time has passed: the copy first, then the row.

    Manual job. A published file without an expiry time never expires.
    """
    return run_registered_job(
        "purge-expired-published",
        purge_expired_published.Options(),
        dry_run,
        max_runtime,
        json_output,
        trigger,
    )


@app.command("purge-old-logs")
@boundary
def purge_old_logs_command(
    max_age_days: Annotated[
        int | None,
        typer.Option(
            "--max-age-days",
            min=1,
            help="Delete log items older than this many days, for this run only. Default: "
            "purge_old_logs.max_age_days.",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRun = False,
    max_runtime: MaxRuntime = None,
    json_output: JsonSummary = False,
    trigger: Trigger = "manual",
) -> int:
    """
    Delete log items older than the configured age, in short committed batches.

    Example cron line: 30 4 * * * damjobs -q purge-old-logs
    """
    return run_registered_job(
        "purge-old-logs",
        purge_old_logs.Options(max_age_days=max_age_days),
        dry_run,
        max_runtime,
        json_output,
        trigger,
    )


@app.command("purge-old-job-statuses")
@boundary
def purge_old_job_statuses_command(
    dry_run: DryRun = False,
    max_runtime: MaxRuntime = None,
    json_output: JsonSummary = False,
    trigger: Trigger = "manual",
) -> int:
    """
    Delete job statuses that have not been updated for the configured hours.

    The status of an enqueued or running run is never deleted.

    Example cron line: 40 4 * * * damjobs -q purge-old-job-statuses
    """
    return run_registered_job(
        "purge-old-job-statuses",
        purge_old_job_statuses.Options(),
        dry_run,
        max_runtime,
        json_output,
        trigger,
    )
