"""purge-expired-published on SQLite and MariaDB: expiry boundary, grace, files and roots."""

import datetime

import pytest

from damjobs.db import models
from damjobs.jobs import purge_expired_published
from tests.helpers import make_workspace, with_settings
from tests.purge_support import (
    add_folder_and_file,
    run_cli_json,
    run_in_process,
    server_now,
)


@pytest.fixture
def workspace(tmp_path, database_url):
    return make_workspace(tmp_path / "ws", database_url)


def publish(workspace, path, expires_at, write=True):
    if write:
        copy = workspace.folder / "published" / path
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(b"published copy")
    file_id = add_folder_and_file(workspace)
    return models.PublishedFile.insert(
        file=file_id,
        path=path,
        published_at=server_now(workspace),
        expires_at=expires_at,
    ).execute()


def rows():
    return sorted(row.path for row in models.PublishedFile.select())


def published(workspace, path):
    return (workspace.folder / "published" / path).exists()


def purge(workspace, settings=None, dry_run=False):
    return run_in_process(
        workspace,
        "purge-expired-published",
        purge_expired_published.Options(),
        settings,
        dry_run,
    )


def test_expiry_boundary_and_no_expiry(workspace):
    now = server_now(workspace)
    publish(workspace, "a/expired.jpg", now - datetime.timedelta(seconds=5))
    publish(workspace, "a/later.jpg", now + datetime.timedelta(seconds=60))
    publish(workspace, "a/forever.jpg", None)

    summary = purge(workspace)

    assert summary.exit_code == 0
    assert rows() == ["a/forever.jpg", "a/later.jpg"]
    assert not published(workspace, "a/expired.jpg")
    assert published(workspace, "a/later.jpg")
    assert published(workspace, "a/forever.jpg")
    folder = summary.details["folders"][str(workspace.folder / "published")]
    assert folder["deleted"] == 1
    assert summary.details["tables"]["published_file"]["deleted"] == 1


def test_grace_period_keeps_recent_expiry(workspace):
    now = server_now(workspace)
    publish(workspace, "recent.jpg", now - datetime.timedelta(minutes=50))
    publish(workspace, "long-ago.jpg", now - datetime.timedelta(minutes=70))
    settings = with_settings(workspace, purge_expired_published__grace_minutes=60)

    purge(workspace, settings)

    assert rows() == ["recent.jpg"]
    assert published(workspace, "recent.jpg")
    assert not published(workspace, "long-ago.jpg")


def test_copy_already_gone_is_counted(workspace):
    publish(
        workspace,
        "gone.jpg",
        server_now(workspace) - datetime.timedelta(days=1),
        write=False,
    )

    summary = purge(workspace)

    assert summary.exit_code == 0
    assert rows() == []
    folder = summary.details["folders"][str(workspace.folder / "published")]
    assert folder["already_gone"] == 1


def test_path_outside_root_fails_and_keeps_row(workspace):
    outside = workspace.folder / "outside.txt"
    outside.write_bytes(b"not published")
    publish(
        workspace,
        "../outside.txt",
        server_now(workspace) - datetime.timedelta(days=1),
        write=False,
    )

    summary = purge(workspace)

    assert summary.exit_code == 4
    assert summary.failed == 1
    assert outside.exists()
    assert rows() == ["../outside.txt"]


def test_copy_shared_with_live_row_is_kept(workspace):
    now = server_now(workspace)
    publish(workspace, "shared.jpg", now - datetime.timedelta(days=1))
    publish(workspace, "shared.jpg", now + datetime.timedelta(days=1), write=False)

    summary = purge(workspace)

    assert summary.exit_code == 0
    assert rows() == ["shared.jpg"]
    assert published(workspace, "shared.jpg")
    folder = summary.details["folders"][str(workspace.folder / "published")]
    assert folder["kept_shared"] == 1


def test_dry_run_reports_and_changes_nothing(workspace):
    publish(
        workspace, "expired.jpg", server_now(workspace) - datetime.timedelta(days=1)
    )

    summary = purge(workspace, dry_run=True)

    assert summary.details["tables"]["published_file"] == {"would_delete": 1}
    folder = summary.details["folders"][str(workspace.folder / "published")]
    assert folder["would_delete"] == 1
    assert rows() == ["expired.jpg"]
    assert published(workspace, "expired.jpg")


def test_cli_boundary_under_tokyo_time(workspace):
    now = server_now(workspace)
    publish(workspace, "expired.jpg", now - datetime.timedelta(minutes=2))
    publish(workspace, "later.jpg", now + datetime.timedelta(minutes=5))

    code, summary = run_cli_json(workspace, "purge-expired-published")

    assert code == 0, summary
    assert rows() == ["later.jpg"]
    assert not published(workspace, "expired.jpg")


def test_small_batches_cover_every_row(workspace):
    now = server_now(workspace)
    for number in range(23):
        expires_at = now - datetime.timedelta(hours=1) if number % 3 else None
        publish(workspace, f"many/{number}.jpg", expires_at)
    settings = with_settings(workspace, purge_expired_published__batch_size=4)

    summary = purge(workspace, settings)

    assert summary.exit_code == 0
    assert len(rows()) == 8
    assert summary.details["tables"]["published_file"]["deleted"] == 15
