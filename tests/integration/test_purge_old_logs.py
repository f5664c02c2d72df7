"""purge-old-logs on SQLite and MariaDB: boundaries, batches, concurrent writers, retries,
interruption."""

import datetime
import logging
import signal
import subprocess
import sys
import threading
import time

import peewee
import pytest

from damjobs import db, runner
from damjobs.db import models
from damjobs.jobs import purge_old_logs, purging
from damjobs.output import OutputOptions
from tests.helpers import cli_environment, make_workspace, with_settings
from tests.purge_support import run_cli_json, run_in_process, server_now


@pytest.fixture
def workspace(tmp_path, database_url):
    return make_workspace(tmp_path / "ws", database_url)


def add_logs(database, created_at, count, message="old"):
    rows = [
        {"created_at": created_at, "level": "info", "message": message}
        for _ in range(count)
    ]
    for start in range(0, len(rows), 1000):
        models.LogItem.insert_many(rows[start : start + 1000]).execute()


def messages(message):
    return models.LogItem.select().where(models.LogItem.message == message).count()


def test_boundary_of_default_age(workspace):
    now = server_now(workspace)
    cutoff = now - datetime.timedelta(days=30)
    add_logs(workspace.database, cutoff - datetime.timedelta(seconds=5), 3, "older")
    add_logs(workspace.database, cutoff + datetime.timedelta(seconds=60), 2, "younger")

    summary = run_in_process(workspace, "purge-old-logs", purge_old_logs.Options())

    assert summary.exit_code == 0
    assert messages("older") == 0
    assert messages("younger") == 2
    assert summary.processed == 3
    assert summary.details["tables"]["log_item"]["deleted"] == 3


def test_max_age_days_option_under_tokyo_time(workspace):
    now = server_now(workspace)
    cutoff = now - datetime.timedelta(days=7)
    add_logs(workspace.database, cutoff - datetime.timedelta(minutes=2), 4, "older")
    add_logs(workspace.database, cutoff + datetime.timedelta(minutes=2), 5, "younger")

    code, summary = run_cli_json(workspace, "purge-old-logs", "--max-age-days", "7")

    assert code == 0, summary
    assert summary["details"]["max_age_days"] == 7
    assert summary["details"]["tables"]["log_item"]["deleted"] == 4
    assert messages("older") == 0
    assert messages("younger") == 5


def test_config_age_under_negative_offset_zone(workspace):
    now = server_now(workspace)
    cutoff = now - datetime.timedelta(days=30)
    add_logs(workspace.database, cutoff - datetime.timedelta(minutes=2), 1, "older")
    add_logs(workspace.database, cutoff + datetime.timedelta(minutes=2), 1, "younger")

    code, summary = run_cli_json(
        workspace, "purge-old-logs", zone="America/Los_Angeles"
    )

    assert code == 0, summary
    assert messages("older") == 0
    assert messages("younger") == 1


def test_dry_run_counts_and_keeps_rows(workspace):
    now = server_now(workspace)
    add_logs(workspace.database, now - datetime.timedelta(days=40), 6, "older")

    summary = run_in_process(
        workspace, "purge-old-logs", purge_old_logs.Options(), dry_run=True
    )

    assert summary.details["tables"]["log_item"] == {"would_delete": 6}
    assert messages("older") == 6


def test_small_batches_skip_interleaved_young_rows(workspace):
    now = server_now(workspace)
    for _ in range(5):
        add_logs(workspace.database, now - datetime.timedelta(days=45), 9, "older")
        add_logs(workspace.database, now - datetime.timedelta(days=1), 4, "younger")
    settings = with_settings(workspace, purge_old_logs__batch_size=7)

    summary = run_in_process(
        workspace, "purge-old-logs", purge_old_logs.Options(), settings
    )

    assert summary.exit_code == 0
    assert messages("older") == 0
    assert messages("younger") == 20
    assert summary.processed == 45


def test_purge_while_another_connection_inserts(workspace, database_url):
    now = server_now(workspace)
    add_logs(workspace.database, now - datetime.timedelta(days=60), 20000, "older")
    settings = with_settings(workspace, purge_old_logs__batch_size=500)
    stop = threading.Event()
    inserted = []
    errors = []

    def write_log_items():
        writer = db.make_database(database_url)
        try:
            writer.connect()
            while not stop.is_set():
                with writer.atomic():
                    writer.execute_sql(
                        "INSERT INTO log_item (created_at, level, message) "
                        f"VALUES ({db.now(writer).sql}, 'info', 'fresh')"
                    )
                inserted.append(1)
        except peewee.PeeweeException as error:
            errors.append(error)
        finally:
            writer.close()

    thread = threading.Thread(target=write_log_items)
    thread.start()
    try:
        summary = run_in_process(
            workspace, "purge-old-logs", purge_old_logs.Options(), settings
        )
    finally:
        stop.set()
        thread.join(30)

    assert errors == []
    assert summary.exit_code == 0, summary.message
    assert messages("older") == 0
    assert len(inserted) > 0
    assert messages("fresh") == len(inserted)


def test_interrupted_run_continues_on_rerun(workspace):
    now = server_now(workspace)
    add_logs(workspace.database, now - datetime.timedelta(days=60), 30000, "older")
    batch_override = {"DAMJOBS__PURGE_OLD_LOGS__BATCH_SIZE": "10"}
    process = popen_with_env(workspace, batch_override, "purge-old-logs")
    try:
        wait_for(lambda: messages("older") < 29000, process)
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 130, stderr
    left_after_stop = messages("older")
    assert 0 < left_after_stop < 30000
    status = models.JobStatus.select().order_by(models.JobStatus.id.desc()).get()
    assert status.state == "cancelled"
    assert models.JobSlot.select().count() == 0

    code, summary = run_cli_json(workspace, "purge-old-logs")

    assert code == 0, summary
    assert summary["details"]["tables"]["log_item"]["deleted"] == left_after_stop
    assert messages("older") == 0


def popen_with_env(workspace, overrides, *arguments):
    environment = cli_environment()
    environment.update(overrides)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "damjobs",
            "--config",
            str(workspace.config_path),
            *arguments,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def wait_for(condition, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def hold_lock(database_url, locked, seconds):
    """Hold a lock that blocks deleting the old log items for `seconds`, from this thread."""
    holder = db.make_database(database_url)
    holder.connect()
    try:
        if db.is_mysql(holder):
            holder.execute_sql("BEGIN")
            holder.execute_sql(
                "SELECT id FROM log_item WHERE message = 'older' ORDER BY id LIMIT 1 FOR UPDATE"
            )
        else:
            holder.execute_sql("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        holder.execute_sql("ROLLBACK")
    finally:
        holder.close()


def test_batch_retries_after_lock_conflict(workspace, database_url, caplog):
    now = server_now(workspace)
    add_logs(workspace.database, now - datetime.timedelta(days=60), 50, "older")
    settings = with_settings(workspace, purge__lock_wait_timeout_seconds=1)
    context = runner.RunContext(
        "purge-old-logs",
        settings,
        workspace.database,
        runner.RunOptions(),
        OutputOptions(),
        None,
    )
    locked = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(database_url, locked, 2.5))
    holder.start()
    assert locked.wait(30)
    try:
        with caplog.at_level(logging.WARNING, logger="damjobs.jobs.purging"):
            purging.delete_rows(
                context,
                models.LogItem,
                models.LogItem.message == "older",
                1000,
                purging.Tally(),
            )
    finally:
        holder.join(30)

    assert messages("older") == 0
    assert context.processed == 50
    assert "lock-wait timeout" in caplog.text
    assert "retrying" in caplog.text
