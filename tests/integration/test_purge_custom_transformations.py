"""purge-custom-transformations on SQLite and MariaDB: cut-offs, files left alone, orphans."""

import datetime
import logging
import os
import time

import pytest

from damjobs import cache
from damjobs.db import models
from damjobs.jobs import purge_custom_transformations
from tests.helpers import make_workspace
from tests.purge_support import (
    add_folder_and_file,
    run_cli_json,
    run_in_process,
    server_now,
)

HOUR = datetime.timedelta(hours=1)


@pytest.fixture
def workspace(tmp_path, database_url):
    return make_workspace(tmp_path / "ws", database_url)


def add_custom(
    workspace,
    last_requested_at,
    name,
    file_path="a.jpg",
    file_age_seconds=7200,
    state="built",
):
    """Insert a custom transformation with one cache entry and its cached file."""
    file_id = add_folder_and_file(workspace, file_path)
    custom_id = models.CustomTransformation.insert(
        file=file_id,
        params="{}",
        output_format="png",
        created_at=last_requested_at,
        last_requested_at=last_requested_at,
    ).execute()
    relative = f"cu/st/{name}.png"
    cached = workspace.cache / relative
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"custom rendering")
    stamp = time.time() - file_age_seconds
    os.utime(cached, (stamp, stamp))
    models.CacheEntry.insert(
        file_id=file_id,
        custom_id=custom_id,
        output_format="png",
        state=state,
        file_version=1,
        path=relative,
        planned_at=last_requested_at,
    ).execute()
    return custom_id


def customs():
    return sorted(row.id for row in models.CustomTransformation.select())


def cached(workspace, name):
    return (workspace.cache / f"cu/st/{name}.png").exists()


def purge(workspace, dry_run=False, **options):
    return run_in_process(
        workspace,
        "purge-custom-transformations",
        purge_custom_transformations.Options(**options),
        dry_run=dry_run,
    )


def test_grace_boundary_and_permanent_entries(workspace):
    now = server_now(workspace)
    add_custom(workspace, now - HOUR - datetime.timedelta(seconds=5), "old")
    recent = add_custom(workspace, now - datetime.timedelta(minutes=59), "recent")
    file_id = add_folder_and_file(workspace)
    models.CacheEntry.insert(
        file_id=file_id,
        output_format="original",
        state="built",
        file_version=1,
        path="pe/rm/original.jpg",
        planned_at=now - 48 * HOUR,
    ).execute()

    summary = purge(workspace)

    assert summary.exit_code == 0
    assert customs() == [recent]
    assert not cached(workspace, "old")
    assert cached(workspace, "recent")
    assert (
        models.CacheEntry.select().where(models.CacheEntry.custom_id == 0).count() == 1
    )
    assert summary.details["tables"]["custom_transformation"]["deleted"] == 1
    assert summary.details["tables"]["cache_entry"]["deleted"] == 1
    assert summary.details["folders"][str(workspace.cache)]["deleted"] == 1


def test_older_than_narrows_the_purge(workspace):
    now = server_now(workspace)
    add_custom(workspace, now - 25 * HOUR, "day-old")
    kept = add_custom(workspace, now - 23 * HOUR, "hours-old")

    summary = purge(workspace, older_than_minutes=24 * 60)

    assert summary.exit_code == 0
    assert customs() == [kept]
    assert cached(workspace, "hours-old")


def test_file_id_narrows_the_purge(workspace):
    old = server_now(workspace) - 5 * HOUR
    add_custom(workspace, old, "first", file_path="first.jpg")
    kept = add_custom(workspace, old, "second", file_path="second.jpg")
    first_file = models.File.get(models.File.path == "first.jpg").id

    purge(workspace, file_id=first_file)

    assert customs() == [kept]


def test_file_being_written_is_left(workspace):
    busy = add_custom(workspace, server_now(workspace) - 5 * HOUR, "busy")
    temp = workspace.cache / "cu/st" / cache.temp_name("busy.png")
    temp.write_bytes(b"half")

    summary = purge(workspace)

    assert customs() == [busy]
    assert cached(workspace, "busy")
    assert summary.skipped == 1
    assert summary.details["tables"]["custom_transformation"]["skipped"] == 1


def test_young_file_is_left(workspace):
    young = add_custom(
        workspace, server_now(workspace) - 5 * HOUR, "young", file_age_seconds=60
    )

    summary = purge(workspace)

    assert customs() == [young]
    assert cached(workspace, "young")
    assert summary.skipped == 1


def test_entry_still_rendering_is_left(workspace):
    now = server_now(workspace)
    rendering = add_custom(workspace, now - 5 * HOUR, "rendering", state="expected")
    models.CacheEntry.update(planned_at=now - datetime.timedelta(minutes=5)).where(
        models.CacheEntry.custom_id == rendering
    ).execute()

    purge(workspace)

    assert customs() == [rendering]


def test_file_already_gone_is_counted(workspace):
    add_custom(workspace, server_now(workspace) - 5 * HOUR, "gone")
    (workspace.cache / "cu/st/gone.png").unlink()

    summary = purge(workspace)

    assert summary.exit_code == 0
    assert customs() == []
    assert summary.details["folders"][str(workspace.cache)]["already_gone"] == 1


def test_orphan_entries_are_purged(workspace):
    orphan = add_custom(workspace, server_now(workspace) - 5 * HOUR, "orphan")
    models.CustomTransformation.delete().where(
        models.CustomTransformation.id == orphan
    ).execute()

    summary = purge(workspace)

    assert summary.exit_code == 0
    assert models.CacheEntry.select().count() == 0
    assert not cached(workspace, "orphan")


def test_path_outside_cache_root_fails(workspace):
    custom_id = add_custom(workspace, server_now(workspace) - 5 * HOUR, "escape")
    outside = workspace.folder / "outside.png"
    outside.write_bytes(b"not cache")
    models.CacheEntry.update(path="../outside.png").where(
        models.CacheEntry.custom_id == custom_id
    ).execute()

    summary = purge(workspace)

    assert summary.exit_code == 4
    assert outside.exists()
    assert customs() == [custom_id]


def test_dry_run_changes_nothing(workspace, caplog):
    old = add_custom(workspace, server_now(workspace) - 5 * HOUR, "old")

    with caplog.at_level(logging.INFO):
        summary = purge(workspace, dry_run=True)

    assert summary.details["tables"]["custom_transformation"] == {"would_delete": 1}
    assert summary.details["folders"][str(workspace.cache)] == {"would_delete": 1}
    assert customs() == [old]
    assert cached(workspace, "old")
    assert "dry run: would delete 1 custom_transformation rows" in caplog.text


def test_cli_older_than_under_tokyo_time(workspace):
    now = server_now(workspace)
    add_custom(workspace, now - 2 * HOUR - datetime.timedelta(minutes=2), "older")
    kept = add_custom(
        workspace, now - 2 * HOUR + datetime.timedelta(minutes=2), "younger"
    )

    code, summary = run_cli_json(
        workspace, "purge-custom-transformations", "--older-than", "2h"
    )

    assert code == 0, summary
    assert customs() == [kept]


def test_cli_rejects_invalid_older_than(workspace):
    completed = workspace.cli("purge-custom-transformations", "--older-than", "2 weeks")

    assert completed.returncode == 2
    assert "invalid --older-than" in completed.stderr
