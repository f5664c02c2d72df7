"""purge-old-job-statuses on SQLite and MariaDB: the age boundary and the statuses kept."""

import datetime

import pytest

from damjobs.db import models
from damjobs.jobs import purge_old_job_statuses
from tests.helpers import make_workspace
from tests.purge_support import run_cli_json, run_in_process, server_now


@pytest.fixture
def workspace(tmp_path, database_url):
    return make_workspace(tmp_path / "ws", database_url)


def add_status(updated_at, job="precache", state="succeeded"):
    return models.JobStatus.insert(
        job=job, state=state, trigger="schedule", updated_at=updated_at
    ).execute()


def remaining(ids):
    return sorted(
        status.id
        for status in models.JobStatus.select().where(models.JobStatus.id.in_(ids))
    )


def test_boundary_of_one_day(workspace):
    cutoff = server_now(workspace) - datetime.timedelta(hours=24)
    older = add_status(cutoff - datetime.timedelta(seconds=5))
    younger = add_status(cutoff + datetime.timedelta(seconds=60))
    failed_older = add_status(cutoff - datetime.timedelta(days=3), state="failed")

    summary = run_in_process(
        workspace, "purge-old-job-statuses", purge_old_job_statuses.Options()
    )

    assert summary.exit_code == 0
    assert remaining([older, younger, failed_older]) == [younger]
    assert summary.details["tables"]["job_status"]["deleted"] == 2
    assert models.JobStatus.get_by_id(summary.status_id).job == "purge-old-job-statuses"


def test_status_held_by_slot_is_kept_and_skipped(workspace):
    old = server_now(workspace) - datetime.timedelta(days=5)
    held = add_status(old, job="build-missing", state="enqueued")
    models.JobSlot.insert(
        job="build-missing", state="enqueued", status_id=held, updated_at=old
    ).execute()
    free = add_status(old)

    summary = run_in_process(
        workspace, "purge-old-job-statuses", purge_old_job_statuses.Options()
    )

    assert remaining([held, free]) == [held]
    assert summary.skipped == 1
    assert summary.details["tables"]["job_status"]["skipped"] == 1


def test_cli_boundary_under_tokyo_time(workspace):
    cutoff = server_now(workspace) - datetime.timedelta(hours=24)
    older = add_status(cutoff - datetime.timedelta(minutes=2))
    younger = add_status(cutoff + datetime.timedelta(minutes=2))

    code, summary = run_cli_json(workspace, "purge-old-job-statuses")

    assert code == 0, summary
    assert remaining([older, younger]) == [younger]


def test_configured_hours_and_dry_run(workspace):
    cutoff = server_now(workspace) - datetime.timedelta(hours=2)
    older = add_status(cutoff - datetime.timedelta(minutes=2))
    younger = add_status(cutoff + datetime.timedelta(minutes=2))
    hours = {"DAMJOBS__PURGE_OLD_JOB_STATUSES__MAX_AGE_HOURS": "2"}

    code, dry = run_cli_json(workspace, "purge-old-job-statuses", "--dry-run", **hours)

    assert code == 0, dry
    assert dry["details"]["tables"]["job_status"]["would_delete"] == 1
    assert remaining([older, younger]) == [older, younger]

    code, summary = run_cli_json(workspace, "purge-old-job-statuses", **hours)

    assert code == 0, summary
    assert remaining([older, younger]) == [younger]
