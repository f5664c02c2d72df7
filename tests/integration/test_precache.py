"""precache planning on SQLite and MariaDB: the four parts, re-planning, obsolete, prune."""

import json

import pytest

from damjobs import db, runner
from damjobs.db import models
from damjobs.jobs import JOBS, precache
from damjobs.output import OutputOptions
from tests.helpers import make_workspace


@pytest.fixture
def workspace(tmp_path, database_url):
    return make_workspace(tmp_path / "ws", database_url)


def add_file(database, path, fmt="jpeg", transformable=True):
    now = db.now(database)
    folder = models.Folder.get_or_none(models.Folder.name == "")
    if folder is None:
        folder = models.Folder.create(
            parent=None, name="", created_at=db.server_now(database)
        )
    return models.File.insert(
        folder=folder,
        name=path,
        path=path,
        extension=path.rsplit(".", 1)[-1],
        format=fmt,
        media_type="image/jpeg",
        size_bytes=1,
        width=100,
        height=100,
        checksum="0" * 64,
        is_transformable=transformable,
        created_at=now,
        updated_at=now,
    ).execute()


def add_setting(database, name, auto_cache=True, output_format="webp"):
    setting_id = models.PredefinedSetting.insert(
        name=name,
        output_format=output_format,
        auto_cache=auto_cache,
        updated_at=db.now(database),
    ).execute()
    models.SettingStep.insert(
        setting=setting_id, position=1, kind="resize", params=json.dumps({"width": 10})
    ).execute()
    return setting_id


def add_cropping(database, file_id, name="square", auto_cache=True):
    return models.Cropping.insert(
        file=file_id,
        name=name,
        x=0,
        y=0,
        width=10,
        height=10,
        auto_cache=auto_cache,
        updated_at=db.now(database),
    ).execute()


def run_precache(workspace, prune=False, dry_run=False):
    return runner.run_job(
        JOBS["precache"],
        workspace.settings,
        workspace.database,
        runner.RunOptions(dry_run=dry_run),
        precache.Options(prune=prune),
        OutputOptions(),
    )


def keys(state=None):
    query = models.CacheEntry.select()
    if state is not None:
        query = query.where(models.CacheEntry.state == state)
    return sorted(
        (e.file_id, e.cropping_id, e.setting_id, e.output_format) for e in query
    )


def test_plans_all_four_parts(workspace):
    database = workspace.database
    photo = add_file(database, "a.jpg")
    pdf = add_file(database, "b.pdf", fmt="pdf", transformable=False)
    thumb = add_setting(database, "thumb")
    add_setting(database, "manual-only", auto_cache=False)
    square = add_cropping(database, photo)
    add_cropping(database, photo, name="not-cached", auto_cache=False)

    summary = run_precache(workspace)

    assert summary.exit_code == 0
    assert keys() == sorted(
        [
            (photo, 0, 0, "original"),
            (pdf, 0, 0, "original"),
            (photo, square, 0, "jpeg"),
            (photo, 0, thumb, "webp"),
            (photo, square, thumb, "webp"),
        ]
    )


def test_cropping_of_non_derivable_source_takes_default_format(workspace):
    gif = add_file(workspace.database, "anim.gif", fmt="gif")
    square = add_cropping(workspace.database, gif)

    run_precache(workspace)

    assert (gif, square, 0, "webp") in keys()


def test_setting_without_format_keeps_png_source_format(workspace):
    png = add_file(workspace.database, "a.png", fmt="png")
    setting = add_setting(workspace.database, "plain", output_format=None)

    run_precache(workspace)

    assert (png, 0, setting, "png") in keys()


def test_second_run_plans_nothing_new(workspace):
    add_file(workspace.database, "a.jpg")
    add_setting(workspace.database, "thumb")
    run_precache(workspace)

    summary = run_precache(workspace)

    assert summary.details["new_original"] == 0
    assert summary.details["new_setting"] == 0
    assert summary.details["replanned"] == 0


def test_new_file_version_replans_built_entry_in_place(workspace):
    photo = add_file(workspace.database, "a.jpg")
    run_precache(workspace)
    models.CacheEntry.update(state="built", path="aa/bb/old.jpg").execute()
    entry_id = models.CacheEntry.get().id

    models.File.update(version=2).where(models.File.id == photo).execute()
    run_precache(workspace)

    entry = models.CacheEntry.get_by_id(entry_id)
    assert entry.state == "expected"
    assert entry.file_version == 2
    assert entry.path == "aa/bb/old.jpg"


def test_failed_entry_is_replanned_when_source_changes(workspace):
    photo = add_file(workspace.database, "a.jpg")
    run_precache(workspace)
    models.CacheEntry.update(state="failed", failure="corrupt", error="bad").execute()

    models.File.update(version=2).where(models.File.id == photo).execute()
    run_precache(workspace)

    entry = models.CacheEntry.get()
    assert entry.state == "expected"
    assert entry.failure is None


def test_auto_cache_off_makes_entries_obsolete(workspace):
    add_file(workspace.database, "a.jpg")
    setting = add_setting(workspace.database, "thumb")
    run_precache(workspace)

    models.PredefinedSetting.update(auto_cache=False).where(
        models.PredefinedSetting.id == setting
    ).execute()
    summary = run_precache(workspace)

    assert summary.details["obsolete"] == 1
    assert [k[2] for k in keys("obsolete")] == [setting]


def test_auto_cache_on_again_revives_obsolete_entry(workspace):
    add_file(workspace.database, "a.jpg")
    setting = add_setting(workspace.database, "thumb")
    run_precache(workspace)
    models.PredefinedSetting.update(auto_cache=False).execute()
    run_precache(workspace)

    models.PredefinedSetting.update(auto_cache=True).execute()
    run_precache(workspace)

    assert keys("obsolete") == []
    assert len(keys("expected")) == 2
    assert setting in [k[2] for k in keys("expected")]


def test_deleted_file_makes_entries_obsolete(workspace):
    photo = add_file(workspace.database, "a.jpg")
    run_precache(workspace)

    models.File.delete().where(models.File.id == photo).execute()
    run_precache(workspace)

    assert keys("obsolete") == [(photo, 0, 0, "original")]


def test_prune_deletes_obsolete_entries_and_files(workspace):
    photo = add_file(workspace.database, "a.jpg")
    run_precache(workspace)
    cached = workspace.cache / "aa" / "x.jpg"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"old")
    models.CacheEntry.update(state="built", path="aa/x.jpg").execute()
    models.File.delete().where(models.File.id == photo).execute()

    summary = run_precache(workspace, prune=True)

    assert summary.details["pruned_entries"] == 1
    assert not cached.exists()
    assert models.CacheEntry.select().count() == 0


def test_prune_refuses_path_outside_cache_root(workspace):
    photo = add_file(workspace.database, "a.jpg")
    run_precache(workspace)
    victim = workspace.folder / "keep.txt"
    victim.write_text("stays")
    models.CacheEntry.update(state="built", path="../keep.txt").execute()
    models.File.delete().where(models.File.id == photo).execute()

    summary = run_precache(workspace, prune=True)

    assert victim.exists()
    assert summary.details["prune_failed"] == 1
    assert summary.exit_code == 4


def test_dry_run_counts_and_changes_nothing(workspace):
    add_file(workspace.database, "a.jpg")
    add_setting(workspace.database, "thumb")

    summary = run_precache(workspace, dry_run=True)

    assert summary.details["new_original"] == 1
    assert summary.details["new_setting"] == 1
    assert models.CacheEntry.select().count() == 0
    assert models.JobSlot.select().count() == 0


def test_enqueues_build_missing(workspace):
    add_file(workspace.database, "a.jpg")

    run_precache(workspace)

    slot = models.JobSlot.get(models.JobSlot.job == "build-missing")
    assert slot.state == "enqueued"


def test_running_build_missing_gets_rerun_request(workspace):
    claim = runner.claim(
        workspace.settings, workspace.database, "build-missing", "manual"
    )

    run_precache(workspace)

    slot = models.JobSlot.get(models.JobSlot.job == "build-missing")
    assert slot.state == "running"
    assert slot.rerun_requested
    runner.release(workspace.database, claim)


def test_prune_dry_run_counts_entries_planning_would_obsolete(workspace):
    photo = add_file(workspace.database, "a.jpg")
    add_setting(workspace.database, "thumb")
    run_precache(workspace)
    models.File.delete().where(models.File.id == photo).execute()

    summary = run_precache(workspace, prune=True, dry_run=True)

    assert summary.details["pruned_entries"] == 2
    assert models.CacheEntry.select().count() == 2


def test_prune_keeps_file_another_entry_uses(workspace):
    first = add_file(workspace.database, "a.jpg")
    add_file(workspace.database, "b.jpg")
    run_precache(workspace)
    shared = workspace.cache / "aa" / "shared.jpg"
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"still served")
    models.CacheEntry.update(state="built", path="aa/shared.jpg").execute()
    models.File.delete().where(models.File.id == first).execute()

    summary = run_precache(workspace, prune=True)

    assert summary.details["pruned_entries"] == 1
    assert shared.exists()
