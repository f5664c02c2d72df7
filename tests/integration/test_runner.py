"""Claiming, releasing and enqueueing jobs through the job_slot table."""

import datetime
import os
import subprocess

import pytest

from damjobs import db, runner
from damjobs.db import models
from damjobs.errors import JobAlreadyRunningError
from damjobs.output import OutputOptions
from tests.helpers import make_workspace


@pytest.fixture
def workspace(tmp_path, database_url):
    return make_workspace(tmp_path / "ws", database_url)


def ended_pid():
    """Return the pid of a process that has already ended."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def occupy(database, job, host, minutes_ago=0, state="running", pid=4242):
    """Put a slot held by another host into the table, as that host's runner would."""
    beat = db.server_now(database) - datetime.timedelta(minutes=minutes_ago)
    status_id = models.JobStatus.insert(
        job=job, state=state, trigger="manual", host=host, pid=pid, updated_at=beat
    ).execute()
    models.JobSlot.insert(
        job=job, state=state, status_id=status_id, host=host, pid=pid, updated_at=beat
    ).execute()

    return status_id


def test_claim_inserts_running_slot(workspace):
    claim = runner.claim(workspace.settings, workspace.database, "precache", "manual")

    slot = models.JobSlot.get(models.JobSlot.job == "precache")
    assert slot.state == "running"
    assert slot.status_id == claim.status_id
    assert models.JobStatus.get_by_id(claim.status_id).state == "running"
    runner.release(workspace.database, claim)


def test_release_deletes_slot(workspace):
    claim = runner.claim(workspace.settings, workspace.database, "precache", "manual")

    enqueued_again = runner.release(workspace.database, claim)

    assert enqueued_again is False
    assert models.JobSlot.select().count() == 0


def test_live_holder_on_other_host_blocks(workspace):
    occupy(workspace.database, "precache", "other-host")

    with pytest.raises(JobAlreadyRunningError) as raised:
        runner.claim(workspace.settings, workspace.database, "precache", "manual")

    assert "other-host" in raised.value.message
    assert "pid 4242" in raised.value.message


def test_blocked_claim_frees_file_lock(workspace):
    occupy(workspace.database, "precache", "other-host")
    with pytest.raises(JobAlreadyRunningError):
        runner.claim(workspace.settings, workspace.database, "precache", "manual")

    lock = runner.acquire_file_lock(workspace.settings, "precache")

    assert lock.is_locked
    lock.release()


def test_stale_holder_on_other_host_is_taken_over(workspace):
    stale_after = workspace.settings["jobs.stale_after_minutes"]
    old_status = occupy(workspace.database, "precache", "other-host", stale_after + 1)

    claim = runner.claim(workspace.settings, workspace.database, "precache", "manual")

    assert claim.status_id != old_status
    old = models.JobStatus.get_by_id(old_status)
    assert old.state == "failed"
    assert "no heartbeat" in old.message
    runner.release(workspace.database, claim)


def test_dead_holder_on_this_host_is_taken_over_at_once(workspace):
    old_status = occupy(workspace.database, "precache", runner.HOST, pid=ended_pid())

    claim = runner.claim(workspace.settings, workspace.database, "precache", "manual")

    assert models.JobStatus.get_by_id(old_status).state == "failed"
    runner.release(workspace.database, claim)


def test_live_holder_on_this_host_with_other_lock_folder_blocks(workspace):
    occupy(workspace.database, "precache", runner.HOST, pid=os.getpid())

    with pytest.raises(JobAlreadyRunningError) as raised:
        runner.claim(workspace.settings, workspace.database, "precache", "manual")

    assert f"pid {os.getpid()}" in raised.value.message


def test_same_host_holder_with_lock_blocks(workspace):
    lock = runner.acquire_file_lock(workspace.settings, "precache")
    try:
        with pytest.raises(JobAlreadyRunningError) as raised:
            runner.claim(workspace.settings, workspace.database, "precache", "manual")
    finally:
        lock.release()

    assert "is already running on this host" in raised.value.message


def test_manual_start_takes_enqueued_slot(workspace):
    assert runner.enqueue(workspace.database, "build-missing") == "enqueued"
    enqueued_status = models.JobSlot.get(
        models.JobSlot.job == "build-missing"
    ).status_id

    claim = runner.claim(
        workspace.settings, workspace.database, "build-missing", "manual"
    )

    assert claim.status_id == enqueued_status
    assert models.JobStatus.get_by_id(claim.status_id).state == "running"
    runner.release(workspace.database, claim)


def test_enqueue_twice_keeps_one_slot(workspace):
    runner.enqueue(workspace.database, "build-missing")

    assert runner.enqueue(workspace.database, "build-missing") == "already enqueued"
    assert models.JobStatus.select().count() == 1


def test_enqueue_while_running_reruns_after_release(workspace):
    claim = runner.claim(
        workspace.settings, workspace.database, "build-missing", "manual"
    )

    assert runner.enqueue(workspace.database, "build-missing") == "rerun requested"
    assert runner.release(workspace.database, claim) is True
    slot = models.JobSlot.get(models.JobSlot.job == "build-missing")
    assert slot.state == "enqueued"
    assert models.JobStatus.get_by_id(slot.status_id).trigger == "rerun"
    assert runner.enqueued_jobs(workspace.database) == ["build-missing"]


def test_run_job_records_succeeded_status(workspace):
    definition = runner.JobDefinition(
        "precache", "test job", True, lambda ctx, opts: {"n": 1}
    )

    summary = runner.run_job(
        definition,
        workspace.settings,
        workspace.database,
        runner.RunOptions(),
        None,
        OutputOptions(),
    )

    status = models.JobStatus.get_by_id(summary.status_id)
    assert summary.exit_code == 0
    assert status.state == "succeeded"
    assert status.finished_at is not None
    assert models.JobSlot.select().count() == 0


def test_run_job_failure_marks_status_failed(workspace):
    def explode(context, options):
        raise RuntimeError("disk on fire")

    definition = runner.JobDefinition("precache", "test job", True, explode)

    summary = runner.run_job(
        definition,
        workspace.settings,
        workspace.database,
        runner.RunOptions(),
        None,
        OutputOptions(),
    )

    assert summary.exit_code == 1
    assert models.JobStatus.get_by_id(summary.status_id).state == "failed"
    assert "disk on fire" in summary.message
    assert models.JobSlot.select().count() == 0


def test_item_failures_give_exit_4_and_log_items(workspace):
    def fail_two(context, options):
        for number in range(2):
            runner.logger.error("item %d failed", number)
            context.count(processed=1, failed=1)
        return {}

    definition = runner.JobDefinition("precache", "test job", True, fail_two)

    summary = runner.run_job(
        definition,
        workspace.settings,
        workspace.database,
        runner.RunOptions(),
        None,
        OutputOptions(),
    )

    assert summary.exit_code == 4
    assert summary.state == "succeeded_with_failures"
    items = models.LogItem.select().where(models.LogItem.status_id == summary.status_id)
    assert [item.message for item in items] == ["item 0 failed", "item 1 failed"]


def test_log_items_are_capped_per_run(workspace):
    def shout(context, options):
        for number in range(5):
            runner.logger.warning("warning %d", number)
        return {}

    values = dict(workspace.settings.values)
    values["jobs.max_log_items_per_run"] = 2
    settings = type(workspace.settings)(workspace.settings.path, values)
    definition = runner.JobDefinition("precache", "test job", True, shout)

    summary = runner.run_job(
        definition,
        settings,
        workspace.database,
        runner.RunOptions(),
        None,
        OutputOptions(),
    )

    assert models.LogItem.select().count() == 2
    assert summary.details["log_items_not_stored"] == 3


def dry_run_precache(workspace, run):
    """Dry-run a job named precache whose work is `run`, and return its summary."""
    definition = runner.JobDefinition("precache", "test job", True, run)

    return runner.run_job(
        definition,
        workspace.settings,
        workspace.database,
        runner.RunOptions(dry_run=True),
        None,
        OutputOptions(),
    )


def test_dry_run_claims_nothing(workspace):
    occupy(workspace.database, "precache", "other-host")

    summary = dry_run_precache(workspace, lambda context, options: {})

    assert summary.exit_code == 0
    assert summary.status_id is None


@pytest.mark.parametrize(
    ("minutes_ago", "warned"), [(0, True), (60, False)], ids=["live", "stale"]
)
def test_dry_run_warns_about_live_run(workspace, caplog, minutes_ago, warned):
    occupy(workspace.database, "precache", "other-host", minutes_ago=minutes_ago)
    seen = []

    dry_run_precache(
        workspace, lambda context, options: seen.append(context.running_elsewhere)
    )

    assert ("precache is already running" in caplog.text) is warned
    assert (seen[0] is not None) is warned
