"""One subcommand per job in the registry, all run through `run_registered_job`."""

import json
import logging
import re
from typing import Annotated, Any

import typer

from damjobs import runner
from damjobs.cli import GLOBAL, app, boundary, load_settings, open_database, set_json
from damjobs.errors import DamjobsError, JobAlreadyRunningError, UsageError
from damjobs.jobs import JOBS, build_missing, precache

logger = logging.getLogger("damjobs.cli")

TRIGGERS = ("manual", "schedule", "queued")

DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Report what the job would do and change nothing."),
]
MaxRuntime = Annotated[
    str | None,
    typer.Option(
        "--max-runtime",
        help="Stop taking new work after this long, e.g. 900, 90s, 30m or 2h; the run "
        "succeeds and its summary says how much is left.",
        show_default=False,
    ),
]
RenderLimit = Annotated[
    int | None,
    typer.Option(
        "--limit", help="Render at most this many entries.", show_default=False
    ),
]
JsonSummary = Annotated[
    bool,
    typer.Option("--json", help="Print the run summary as one JSON object on stdout."),
]
Trigger = Annotated[
    str,
    typer.Option(
        "--trigger",
        help="What started the run, recorded on its job status: manual, schedule or queued.",
    ),
]


def parse_duration(text: str | None) -> float | None:
    """Return seconds for "900", "90s", "30m" or "2h"; raise UsageError for anything else."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None or float(match[1]) <= 0:
        raise UsageError(
            f"invalid --max-runtime {text!r}",
            hint="give a positive number of seconds, or a number with s, m or h such as 30m",
        )

    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def run_registered_job(
    name: str,
    job_options: Any,
    dry_run: bool,
    max_runtime: str | None,
    json_output: bool,
    trigger: str,
    limit: int | None = None,
) -> int:
    """Load the configuration, run one job from the registry and print its summary."""
    if trigger not in TRIGGERS:
        raise UsageError(
            f"invalid --trigger {trigger!r}", hint=f"use one of {', '.join(TRIGGERS)}"
        )
    if limit is not None and limit < 1:
        raise UsageError(
            f"invalid --limit {limit}", hint="give a whole number of at least 1"
        )
    set_json(json_output)
    run_options = runner.RunOptions(
        dry_run=dry_run,
        limit=limit,
        max_runtime_seconds=parse_duration(max_runtime),
        trigger=trigger,
    )
    try:
        settings = load_settings()
        database = open_database(settings)
        summary = runner.run_job(
            JOBS[name], settings, database, run_options, job_options, GLOBAL.output
        )
    except DamjobsError as error:
        if GLOBAL.output.json:
            # A script that reads stdout gets an object for a run that never started too.
            state = (
                "already_running"
                if isinstance(error, JobAlreadyRunningError)
                else "not_started"
            )
            summary = runner.JobSummary(
                name, None, state, error.exit_code, dry_run, message=error.message
            )
            print(json.dumps(summary.as_dict(), default=str, sort_keys=True))
        raise
    print_summary(summary)

    return summary.exit_code


def print_summary(summary: runner.JobSummary) -> None:
    """Print the summary: JSON on stdout with --json, else one log line on stderr."""
    if GLOBAL.output.json:
        print(json.dumps(summary.as_dict(), default=str, sort_keys=True))
        return

    parts = [f"{summary.processed} processed", f"{summary.failed} failed"]
    if summary.skipped:
        parts.append(f"{summary.skipped} skipped")
    if summary.left:
        parts.append(f"{summary.left} left")
    label = "dry run " if summary.dry_run else ""
    line = (
        f"{summary.job} {label}{summary.state} in {summary.duration_seconds:.1f}s: "
        + ", ".join(parts)
    )
    if summary.message:
        line += f" ({summary.message})"
    level = logging.INFO if summary.exit_code == 0 else logging.ERROR
    logger.log(level, "%s", line)


@app.command("precache")
@boundary
def precache_command(
    prune: Annotated[
        bool,
        typer.Option(
            "--prune", help="Also delete obsolete entries and their cached files."
        ),
    ] = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Plan all entries even when nothing changed since the last plan.",
        ),
    ] = False,
    dry_run: DryRun = False,
    max_runtime: MaxRuntime = None,
    json_output: JsonSummary = False,
    trigger: Trigger = "manual",
) -> int:
    """
    Plan the cache entries that should exist, then enqueue build-missing.

    Every original gets an entry; transformable files also get one per AutoCache
    cropping, per AutoCache predefined setting, and per pair of both. Entries that are
    no longer wanted become obsolete. Planning is skipped when nothing changed since the
    last plan, unless --full is given.

    Example cron line: 15 2 * * * damjobs -q precache
    """
    return run_registered_job(
        "precache",
        precache.Options(prune=prune, full=full),
        dry_run,
        max_runtime,
        json_output,
        trigger,
    )


@app.command("build-missing")
@boundary
def build_missing_command(
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="Also render entries whose last attempt failed."
        ),
    ] = False,
    limit: RenderLimit = None,
    dry_run: DryRun = False,
    max_runtime: MaxRuntime = None,
    json_output: JsonSummary = False,
    trigger: Trigger = "manual",
) -> int:
    """
    Render every planned cache entry whose file is absent, empty or never built.

    Example cron line: */30 * * * * damjobs -q build-missing --max-runtime 25m
    """
    return run_registered_job(
        "build-missing",
        build_missing.Options(retry_failed=retry_failed),
        dry_run,
        max_runtime,
        json_output,
        trigger,
        limit=limit,
    )
