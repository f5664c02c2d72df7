"""rebuild-expired on SQLite and MariaDB with the real render pool: what it rebuilds, the new
expiry, and a reader that keeps opening a file while it is replaced."""

import datetime
import shutil
import threading

import pytest

from damjobs import cache
from damjobs.db import models
from damjobs.jobs import build_missing, precache, rebuild_expired
from tests.helpers import make_workspace, real_photos, with_settings
from tests.purge_support import (
    add_folder_and_file,
    run_cli_json,
    run_in_process,
    server_now,
)

DEFINITIONS = """
[[setting]]
name = "small"
output_format = "webp"
auto_cache = true
ttl_days = 7
steps = [{ kind = "resize", width = 64 }]
"""


@pytest.fixture
def workspace(tmp_path, database_url):
    workspace = make_workspace(tmp_path / "ws", database_url)
    source = tmp_path / "photos"
    source.mkdir()
    for photo in real_photos()[:2]:
        shutil.copy(photo, source / photo.name)
    definitions = tmp_path / "definitions.toml"
    definitions.write_text(DEFINITIONS, encoding="utf-8")
    for arguments in (("import", str(source)), ("define", str(definitions))):
        completed = workspace.cli(*arguments)
        assert completed.returncode == 0, completed.stderr
    settings = with_settings(workspace, render__workers=2)
    run_in_process(workspace, "precache", precache.Options())
    built = run_in_process(
        workspace, "build-missing", build_missing.Options(), settings
    )
    assert built.exit_code == 0, built.message
    return workspace


def expire(entry_ids, when):
    models.CacheEntry.update(expires_at=when).where(
        models.CacheEntry.id.in_(entry_ids)
    ).execute()


def entries():
    return list(models.CacheEntry.select().order_by(models.CacheEntry.id))


def test_rebuilds_expired_entries_only(workspace):
    now = server_now(workspace)
    all_entries = entries()
    expired, fresh = all_entries[:2], all_entries[2:]
    expire([entry.id for entry in expired], now - datetime.timedelta(seconds=5))
    expire([entry.id for entry in fresh], now + datetime.timedelta(minutes=5))
    fresh_before = {
        entry.id: (entry.built_at, entry.expires_at)
        for entry in entries()
        if entry.id in {fresh_entry.id for fresh_entry in fresh}
    }
    (workspace.cache / expired[0].path).unlink()
    settings = with_settings(workspace, render__workers=2)

    summary = run_in_process(
        workspace, "rebuild-expired", rebuild_expired.Options(), settings
    )

    assert summary.exit_code == 0, summary.message
    assert summary.details["rebuilt"] == 2
    assert summary.details["missing_files"] == 1
    after = {entry.id: entry for entry in entries()}
    for entry in expired:
        rebuilt = after[entry.id]
        assert rebuilt.state == "built"
        assert rebuilt.expires_at > now
        assert cache.file_size(workspace.cache, rebuilt.path) > 0
    for entry_id, (built_at, expires_at) in fresh_before.items():
        assert after[entry_id].built_at == built_at
        assert after[entry_id].expires_at == expires_at


def test_new_expiry_uses_setting_ttl(workspace):
    derived = models.CacheEntry.get(models.CacheEntry.setting_id > 0)
    expire([derived.id], server_now(workspace) - datetime.timedelta(days=1))
    settings = with_settings(workspace, render__workers=1)

    run_in_process(workspace, "rebuild-expired", rebuild_expired.Options(), settings)

    rebuilt = models.CacheEntry.get_by_id(derived.id)
    assert rebuilt.expires_at - rebuilt.built_at == datetime.timedelta(days=7)


def test_custom_entries_are_never_rebuilt(workspace):
    now = server_now(workspace)
    file_id = add_folder_and_file(workspace, models.File.get().path)
    custom_id = models.CustomTransformation.insert(
        file=file_id,
        params="{}",
        output_format="png",
        created_at=now,
        last_requested_at=now,
    ).execute()
    models.CacheEntry.insert(
        file_id=file_id,
        custom_id=custom_id,
        output_format="png",
        state="built",
        file_version=1,
        path="cu/st/custom.png",
        planned_at=now,
        built_at=now,
        expires_at=now - datetime.timedelta(days=1),
    ).execute()
    expire(
        [entry.id for entry in entries() if entry.custom_id == 0],
        now + datetime.timedelta(days=1),
    )

    summary = run_in_process(
        workspace, "rebuild-expired", rebuild_expired.Options(), dry_run=True
    )

    assert summary.details["would_rebuild"] == 0
    assert summary.total == 0


def test_reader_never_sees_missing_or_partial_file(workspace):
    now = server_now(workspace)
    target = models.CacheEntry.get(models.CacheEntry.setting_id > 0)
    path = workspace.cache / target.path
    old_bytes = b"RIFF" + b"old complete file" * 1000
    path.write_bytes(old_bytes)
    expire([entry.id for entry in entries()], now - datetime.timedelta(seconds=5))
    stop = threading.Event()
    reads = []
    problems = []

    def read_repeatedly():
        while not stop.is_set():
            try:
                reads.append(path.read_bytes())
            except FileNotFoundError:
                problems.append("missing")

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    try:
        code, summary = run_cli_json(workspace, "rebuild-expired")
    finally:
        stop.set()
        reader.join(10)
    new_bytes = path.read_bytes()

    assert code == 0, summary
    assert problems == []
    assert new_bytes != old_bytes
    assert new_bytes[:4] == b"RIFF"
    partial = [data for data in reads if data not in (old_bytes, new_bytes)]
    assert partial == []
    assert reads.count(old_bytes) > 0
