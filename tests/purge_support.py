"""Helpers for the purge and rebuild tests: rows at chosen times, runs in-process and in a
subprocess whose host time zone is not UTC."""

import datetime
import json
import os

from damjobs import db, runner
from damjobs.db import models
from damjobs.jobs import JOBS
from damjobs.output import OutputOptions
from tests.helpers import Workspace, cli_environment

NON_UTC_ZONE = "Asia/Tokyo"
"""UTC+9 all year: a host clock that disagrees with UTC by hours."""


def server_now(workspace: Workspace) -> datetime.datetime:
    return db.server_now(workspace.database)


def run_in_process(
    workspace: Workspace, job: str, options: object, settings=None, dry_run=False
):
    """Run `job` through the runner in this process and return its summary."""
    return runner.run_job(
        JOBS[job],
        settings or workspace.settings,
        workspace.database,
        runner.RunOptions(dry_run=dry_run),
        options,
        OutputOptions(),
    )


def run_cli_json(
    workspace: Workspace, *arguments: str, zone: str = NON_UTC_ZONE, **env: str
):
    """Run the CLI with --json under the time zone `zone`; return (exit code, summary)."""
    environment = cli_environment()
    environment["TZ"] = zone
    environment.update(env)
    completed = workspace.cli(*arguments, "--json", env=environment)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else None
    assert summary is not None, completed.stderr

    return completed.returncode, summary


def add_folder_and_file(workspace: Workspace, path: str = "a.jpg") -> int:
    """Return the id of the file row at `path`, inserting it (and the root folder) if needed."""
    database = workspace.database
    existing = models.File.get_or_none(models.File.path == path)
    if existing is not None:
        return existing.id
    now = db.now(database)
    folder = models.Folder.get_or_none(models.Folder.name == "")
    if folder is None:
        folder = models.Folder.create(
            parent=None, name="", created_at=server_now(workspace)
        )
    return models.File.insert(
        folder=folder,
        name=path,
        path=path,
        extension=path.rsplit(".", 1)[-1],
        format="jpeg",
        media_type="image/jpeg",
        size_bytes=1,
        width=100,
        height=100,
        checksum="0" * 64,
        is_transformable=True,
        created_at=now,
        updated_at=now,
    ).execute()


def host_is_utc() -> bool:
    return os.environ.get("TZ") in (None, "", "UTC")
