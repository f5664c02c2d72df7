"""Admin commands: init, check-config, db upgrade, status, enqueue, run-queued, import,
define and entries."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, cast

import peewee
import typer

from damjobs import config, db, runner
from damjobs.cli import GLOBAL, app, boundary, load_settings, open_database
from damjobs.db import migrations, models
from damjobs.errors import RepositoryError, UsageError
from damjobs.exit_codes import ExitCode
from damjobs.jobs import JOBS
from damjobs.render import steps

logger = logging.getLogger("damjobs.cli")

db_app = typer.Typer(
    help="Create and upgrade the database schema.", no_args_is_help=True
)
app.add_typer(db_app, name="db")

JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _job_name(name: str) -> str:
    if name not in JOBS:
        raise UsageError(f"unknown job {name!r}", hint=f"jobs: {', '.join(JOBS)}")
    return name


@app.command("init")
@boundary
def init_command(
    folder: Annotated[
        Path, typer.Argument(help="Folder for the config, database and roots.")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing damjobs.toml.")
    ] = False,
) -> int:
    """
    Write a commented starter configuration and create its folders and SQLite schema.

    Example: damjobs init ~/dam && damjobs --config ~/dam/damjobs.toml check-config
    """
    folder = folder.expanduser().resolve()
    path = folder / "damjobs.toml"
    if folder.exists() and not folder.is_dir():
        raise UsageError(
            f"{folder} is a file, but init needs a folder",
            hint=f"pass a folder, such as {folder.parent}, to write "
            f"{folder.parent / 'damjobs.toml'}",
        )
    if path.exists() and not force:
        raise UsageError(f"{path} exists already", hint="pass --force to overwrite it")
    try:
        for name in ("originals", "cache", "published", "locks"):
            (folder / name).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"cannot create the folders under {folder}: {error.strerror}",
            hint="pass a folder you can write to",
        ) from error
    path.write_text(config.starter_text(folder), encoding="utf-8")
    settings = config.load(path, {})
    database = open_database(settings)
    for migration in migrations.pending(database):
        migrations.apply(database, migration)
    print(f"wrote {path}")
    print(f"next: damjobs --config {path} check-config")

    return ExitCode.SUCCEEDED


class _LinePrinter:
    """
    Print lines to stdout until its reader goes away (`check-config | head -1`), then
    drop the rest, so that the command still runs every check and exits with its result.
    """

    def __init__(self) -> None:
        self.closed = False

    def __call__(self, line: str) -> None:
        if self.closed:
            return
        try:
            print(line, flush=True)
        except BrokenPipeError:
            self.closed = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@app.command("check-config")
@boundary
def check_config_command() -> int:
    """
    Validate the configuration, connect to the database and check the folders.

    Prints one line per check and exits 0 only when all of them pass: 2 for an invalid
    setting, 1 for a database or folder problem.
    """
    settings = load_settings()
    say = _LinePrinter()
    say(f"configuration: {settings.path}: valid")
    problems = 0
    url = settings["database.url"]
    if (
        url.startswith("sqlite:///")
        and not Path(url.removeprefix("sqlite:///")).is_file()
    ):
        say(f"database: {url}: no such file; run `damjobs db upgrade` to create it")
        return ExitCode.FAILED
    database = open_database(settings)
    say(f"database: {db.describe_url(settings['database.url'])}: connected")
    version = migrations.current_version(database)
    if version == migrations.LATEST_VERSION:
        say(f"schema: version {version}: current")
    else:
        problems += 1
        say(
            f"schema: version {version}, expected {migrations.LATEST_VERSION}: "
            "run `damjobs db upgrade`"
        )
    for key in (
        "paths.originals_root",
        "paths.cache_root",
        "paths.published_root",
        "paths.lock_dir",
    ):
        folder: Path = settings[key]
        writable = key != "paths.originals_root"
        ok = folder.is_dir() and os.access(folder, os.W_OK if writable else os.R_OK)
        if ok:
            state = "ok"
        elif folder.is_dir():
            state = "not writable"
        else:
            state = "missing"
        problems += not ok
        say(f"{key}: {folder}: {state}")
    for key in ("render.srgb_profile", "render.cmyk_profile"):
        state = (
            "ok"
            if settings[key].is_file()
            else "missing (colour conversion is less exact)"
        )
        say(f"{key}: {settings[key]}: {state}")
    from damjobs.render import wand_setup  # noqa: PLC0415 - loads Wand only here

    background = settings["render.default_background"]
    invalid_settings = 0
    if wand_setup.is_known_colour(background):
        say(f"render.default_background: {background}: ok")
    else:
        invalid_settings += 1
        say(
            f"render.default_background: {background}: not a colour ImageMagick "
            f"knows; {steps.COLOUR_HINT}"
        )
    limits = wand_setup.pixel_cache_limits()
    mib = 1024 * 1024
    say(
        f"imagemagick limits: memory {limits['memory'] // mib} MiB, map "
        f"{limits['map'] // mib} MiB, disk {limits['disk'] // mib} MiB"
    )
    max_pixels = settings["render.max_pixels"]
    needed = wand_setup.pixel_cache_bytes(max_pixels, 1)
    if needed > limits["memory"]:
        say(
            f"render.max_pixels: {max_pixels}: note: an image of that size needs "
            f"{needed // mib} MiB of pixel cache, above ImageMagick's memory limit, so "
            f"it is decoded through a mapped or disk file and may fail as too_large; "
            f"{wand_setup.RESOURCE_LIMIT_HINT}"
        )

    if invalid_settings:
        return ExitCode.USAGE_ERROR

    return ExitCode.SUCCEEDED if problems == 0 else ExitCode.FAILED


@db_app.command("upgrade")
@boundary
def db_upgrade_command() -> int:
    """
    Create the schema or apply the migrations it lacks; refused while a job runs.
    """
    settings = load_settings()
    database = open_database(settings)
    version = migrations.current_version(database)
    if version > migrations.LATEST_VERSION:
        raise RepositoryError(
            f"the database schema is at version {version}, newer than version "
            f"{migrations.LATEST_VERSION} that this damjobs knows",
            hint="install the damjobs release that upgraded the database",
        )
    pending = migrations.pending(database)
    if not pending:
        print(f"schema is current (version {migrations.LATEST_VERSION})")
        return ExitCode.SUCCEEDED
    if migrations.current_version(database) > 0:
        running = [
            slot.job
            for slot in models.JobSlot.select().where(models.JobSlot.state == "running")
        ]
        if running:
            raise RepositoryError(
                f"jobs are running: {', '.join(running)}",
                hint="wait until they finish (see `damjobs status`), then upgrade",
            )
    for migration in pending:
        migrations.apply(database, migration)
        print(f"applied {migration.version:04d} {migration.name}")

    return ExitCode.SUCCEEDED


@app.command("status")
@boundary
def status_command(
    runs: Annotated[
        int, typer.Option("--runs", min=0, help="Finished runs to show per job.")
    ] = 3,
    json_output: JsonOutput = False,
) -> int:
    """Show running and enqueued jobs and the last runs of each job."""
    settings = load_settings()
    database = open_database(settings)
    migrations.check_version(database)
    now = db.server_now(database)
    slots = {slot.job: slot for slot in models.JobSlot.select()}
    report: dict[str, Any] = {"server_time_utc": now.isoformat(sep=" "), "jobs": {}}
    for name in JOBS:
        recent = (
            models.JobStatus.select()
            .where(models.JobStatus.job == name)
            .order_by(models.JobStatus.id.desc())
            .limit(runs)
        )
        slot = slots.get(name)
        report["jobs"][name] = {
            "slot": None
            if slot is None
            else {
                "state": slot.state,
                "run": slot.status_id,
                "host": slot.host,
                "pid": slot.pid,
                "heartbeat": str(slot.updated_at),
                "rerun_requested": bool(slot.rerun_requested),
            },
            "runs": [_status_dict(row) for row in recent],
        }
    if json_output:
        print(json.dumps(report, sort_keys=True))
        return ExitCode.SUCCEEDED

    for name, job in report["jobs"].items():
        slot = job["slot"]
        active = "idle" if slot is None else f"{slot['state']} (run {slot['run']})"
        if slot and slot["state"] == "running":
            active += (
                f" on {slot['host']} pid {slot['pid']}, heartbeat {slot['heartbeat']}"
            )
        print(f"{name}: {active}")
        for run in job["runs"]:
            print(
                f"  run {run['id']} {run['state']} started {run['started_at'] or '-'} "
                f"finished {run['finished_at'] or '-'}: {run['processed']} processed, "
                f"{run['failed']} failed"
                + (f" ({run['message']})" if run["message"] else "")
            )

    return ExitCode.SUCCEEDED


def _status_dict(row: models.JobStatus) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": row.state,
        "trigger": row.trigger,
        "host": row.host,
        "enqueued_at": _text(row.enqueued_at),
        "started_at": _text(row.started_at),
        "finished_at": _text(row.finished_at),
        "updated_at": _text(row.updated_at),
        "total": row.total,
        "processed": row.processed,
        "failed": row.failed,
        "message": row.message,
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@app.command("enqueue")
@boundary
def enqueue_command(
    job: Annotated[str, typer.Argument(help="Job name, e.g. build-missing.")],
) -> int:
    """
    Enqueue a job for the next `run-queued`; a running job is asked to run once more.
    """
    name = _job_name(job)
    settings = load_settings()
    database = open_database(settings)
    migrations.check_version(database)
    outcome = runner.enqueue(database, name)
    logger.info("%s: %s", name, outcome)

    return ExitCode.SUCCEEDED


@app.command("run-queued")
@boundary
def run_queued_command() -> int:
    """
    Start every enqueued job, each in its own process, and wait for them.

    Meant for a cron line every minute: * * * * * damjobs -q run-queued
    Exits with the most severe exit code of the jobs it started.
    """
    settings = load_settings()
    database = open_database(settings)
    migrations.check_version(database)
    names = runner.enqueued_jobs(database)
    database.close()
    if not names:
        logger.debug("no job is enqueued")
        return ExitCode.SUCCEEDED

    children = []
    for name in names:
        command = [
            sys.executable,
            "-m",
            "damjobs",
            *_global_arguments(settings),
            name,
            "--trigger",
            "queued",
        ]
        logger.info("starting %s", name)
        children.append((name, subprocess.Popen(command)))
    codes = []
    for name, child in children:
        code = child.wait()
        logger.debug("%s exited with %d", name, code)
        codes.append(code)

    return _most_severe(codes)


def _global_arguments(settings: config.Settings) -> list[str]:
    arguments = ["--config", str(settings.path)]
    verbosity = GLOBAL.output.verbosity
    if verbosity < 0:
        arguments.append("-q")
    arguments += ["-v"] * max(verbosity, 0)
    if GLOBAL.output.log_file is not None:
        arguments += ["--log-file", str(GLOBAL.output.log_file)]

    return arguments


def _most_severe(codes: list[int]) -> int:
    """Return the exit code for several jobs: failures first, then item failures."""
    severity = (
        ExitCode.FAILED,
        ExitCode.INTERRUPTED,
        ExitCode.ITEMS_FAILED,
        ExitCode.USAGE_ERROR,
    )
    for code in severity:
        if code in codes:
            return code
    others = [code for code in codes if code not in (0, ExitCode.ALREADY_RUNNING)]

    return others[0] if others else ExitCode.SUCCEEDED


@app.command("import")
@boundary
def import_command(
    source: Annotated[Path, typer.Argument(help="Folder of files to import.")],
    into: Annotated[
        str | None,
        typer.Option(
            "--into",
            help="Folder below the originals root to copy into; default: the source "
            "folder's name. Ignored for a folder already inside the root.",
            show_default=False,
        ),
    ] = None,
) -> int:
    """
    Register every file below a folder as a DAM file, with format, size, checksum and EXIF.

    Example: damjobs import /srv/photos/2026 --into photos/2026
    """
    from damjobs import content  # noqa: PLC0415 - loads Wand only for this command

    settings = load_settings()
    database = open_database(settings)
    migrations.check_version(database)
    counts = content.import_folder(database, settings, source, into)
    print(
        f"imported {source}: {counts.added} added, {counts.updated} updated, "
        f"{counts.unchanged} unchanged, {counts.skipped} skipped, {counts.failed} failed"
    )

    return ExitCode.ITEMS_FAILED if counts.failed else ExitCode.SUCCEEDED


@app.command("define")
@boundary
def define_command(
    path: Annotated[
        Path, typer.Argument(help="TOML file with [[setting]] and [[cropping]].")
    ],
) -> int:
    """
    Create or update predefined settings and croppings from a TOML file.

    See docs/definitions.md for the format. Nothing changes unless the whole file is valid.
    """
    from damjobs import content  # noqa: PLC0415

    settings = load_settings()
    database = open_database(settings)
    migrations.check_version(database)
    counts = content.load_definitions(database, path)
    print(
        f"settings: {counts.settings_added} added, {counts.settings_changed} changed, "
        f"{counts.settings_unchanged} unchanged; croppings: {counts.croppings_added} added, "
        f"{counts.croppings_changed} changed, {counts.croppings_unchanged} unchanged"
    )

    return ExitCode.SUCCEEDED


@app.command("entries")
@boundary
def entries_command(
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="Only entries in this state: expected, built, failed, obsolete.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Maximum number of entries to list.")
    ] = 50,
    json_output: JsonOutput = False,
) -> int:
    """List cache entries with their source file, state and cached file path."""
    if state is not None and state not in models.ENTRY_STATES:
        raise UsageError(
            f"invalid --state {state!r}",
            hint=f"use one of {', '.join(models.ENTRY_STATES)}",
        )
    settings = load_settings()
    database = open_database(settings)
    migrations.check_version(database)
    query = (
        models.CacheEntry.select(models.CacheEntry, models.File.path.alias("source"))
        .join(
            models.File,
            peewee.JOIN.LEFT_OUTER,
            on=(models.File.id == models.CacheEntry.file_id),
        )
        .order_by(models.CacheEntry.id)
        .limit(limit)
    )
    if state is not None:
        query = query.where(models.CacheEntry.state == state)
    cache_root: Path = settings["paths.cache_root"]
    rows = []
    for entry in query.objects():
        rows.append(
            {
                "id": entry.id,
                "file_id": entry.file_id,
                # objects() sets the joined path as an attribute the model does not declare.
                "source": cast(Any, entry).source,
                "cropping_id": entry.cropping_id,
                "setting_id": entry.setting_id,
                "format": entry.output_format,
                "state": entry.state,
                "path": str(cache_root / entry.path) if entry.path else None,
                "size_bytes": entry.size_bytes,
                "failure": entry.failure,
                "error": entry.error,
            }
        )
    if json_output:
        print(json.dumps(rows))
        return ExitCode.SUCCEEDED
    from damjobs.jobs.sources import printable  # noqa: PLC0415

    for row in rows:
        detail = row["path"] or "-"
        if row["failure"]:
            detail = f"{row['failure']}: {row['error']}"
        source = printable(row["source"] or "-")
        print(
            f"{row['id']}\t{row['state']}\t{row['format']}\t{source}\t"
            f"cropping {row['cropping_id']} setting {row['setting_id']}\t"
            f"{printable(detail)}"
        )

    return ExitCode.SUCCEEDED
