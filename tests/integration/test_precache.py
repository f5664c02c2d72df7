"""precache planning on SQLite and MariaDB: the four parts, re-planning, obsolete, prune,
and skipping the plan when nothing changed."""

import json

import peewee
import pytest

from damjobs import db, runner
from damjobs.db import models
from damjobs.jobs import JOBS, precache
from damjobs.output import OutputOptions
from tests.helpers import make_workspace, with_settings


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


def run_precache(workspace, prune=False, dry_run=False, full=False, settings=None):
    return runner.run_job(
        JOBS["precache"],
        settings or workspace.settings,
        workspace.database,
        runner.RunOptions(dry_run=dry_run),
        precache.Options(prune=prune, full=full),
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


PLAN_COUNT_NAMES = (
    "obsolete",
    "replanned",
    "new_original",
    "new_cropping",
    "new_setting",
    "new_cropping_setting",
)


def test_unchanged_run_skips_planning(workspace):
    photo = add_file(workspace.database, "a.jpg")
    add_setting(workspace.database, "thumb")
    add_cropping(workspace.database, photo)
    first = run_precache(workspace)

    summary = run_precache(workspace)

    assert first.details["skipped_unchanged"] is False
    assert summary.exit_code == 0
    assert summary.details["skipped_unchanged"] is True
    for name in PLAN_COUNT_NAMES:
        assert summary.details[name] == 0, name
    assert summary.details["expected_total"] == 4


def test_unchanged_run_does_not_replan_deleted_entry(workspace):
    photo = add_file(workspace.database, "a.jpg")
    add_setting(workspace.database, "thumb")
    run_precache(workspace)
    models.CacheEntry.delete().where(
        (models.CacheEntry.file_id == photo)
        & (models.CacheEntry.output_format == "original")
    ).execute()

    skipped = run_precache(workspace)

    assert skipped.details["skipped_unchanged"] is True
    assert (photo, 0, 0, "original") not in keys()

    full = run_precache(workspace, full=True)

    assert full.details["skipped_unchanged"] is False
    assert full.details["new_original"] == 1
    assert (photo, 0, 0, "original") in keys()


def test_plan_keeps_only_highest_change_row(workspace):
    add_file(workspace.database, "a.jpg")
    add_file(workspace.database, "b.jpg")
    add_setting(workspace.database, "thumb")
    highest = models.PlanChange.select(peewee.fn.MAX(models.PlanChange.id)).scalar()

    run_precache(workspace)

    assert [row.id for row in models.PlanChange.select()] == [highest]
    state = models.PlanState.get()
    assert state.last_change_id == highest
    assert state.default_output_format == "webp"
    assert state.planned_at is not None


def test_first_run_on_empty_database_records_plan(workspace):
    first = run_precache(workspace)
    second = run_precache(workspace)

    assert first.details["skipped_unchanged"] is False
    assert models.PlanState.get().last_change_id == 0
    assert second.details["skipped_unchanged"] is True


def add_second_file(workspace, ids):
    add_file(workspace.database, "b.jpg")


def bump_file_version(workspace, ids):
    models.File.update(version=models.File.version + 1).where(
        models.File.id == ids["photo"]
    ).execute()


def turn_cropping_auto_cache_off(workspace, ids):
    models.Cropping.update(auto_cache=False).where(
        models.Cropping.id == ids["cropping"]
    ).execute()


def delete_setting(workspace, ids):
    models.PredefinedSetting.delete().where(
        models.PredefinedSetting.id == ids["setting"]
    ).execute()


@pytest.mark.parametrize(
    ("change", "count_name", "expected_count"),
    [
        (add_second_file, "new_original", 1),
        (bump_file_version, "replanned", 4),
        (turn_cropping_auto_cache_off, "obsolete", 2),
        (delete_setting, "obsolete", 2),
    ],
    ids=["new-file", "version-bump", "cropping-auto-cache-off", "setting-deleted"],
)
def test_change_after_plan_triggers_full_plan(
    workspace, change, count_name, expected_count
):
    photo = add_file(workspace.database, "a.jpg")
    ids = {
        "photo": photo,
        "setting": add_setting(workspace.database, "thumb"),
        "cropping": add_cropping(workspace.database, photo),
    }
    run_precache(workspace)
    assert run_precache(workspace).details["skipped_unchanged"] is True

    change(workspace, ids)
    summary = run_precache(workspace)

    assert summary.details["skipped_unchanged"] is False
    assert summary.details[count_name] == expected_count
    assert run_precache(workspace).details["skipped_unchanged"] is True


def test_default_format_change_triggers_full_plan(workspace):
    gif = add_file(workspace.database, "anim.gif", fmt="gif")
    square = add_cropping(workspace.database, gif)
    run_precache(workspace)
    png_default = with_settings(workspace, cache__default_output_format="png")

    summary = run_precache(workspace, settings=png_default)

    assert summary.details["skipped_unchanged"] is False
    assert summary.details["obsolete"] == 1
    assert summary.details["new_cropping"] == 1
    assert (gif, square, 0, "png") in keys("expected")
    assert models.PlanState.get().default_output_format == "png"
    again = run_precache(workspace, settings=png_default)
    assert again.details["skipped_unchanged"] is True


def test_change_during_plan_is_planned_next_run(workspace, monkeypatch):
    add_file(workspace.database, "a.jpg")
    run_precache(workspace)
    real_plan = precache.plan
    added = []

    def plan_then_add_file(context):
        counts = real_plan(context)
        added.append(add_file(context.database, "during.jpg"))
        return counts

    monkeypatch.setattr(precache, "plan", plan_then_add_file)
    run_precache(workspace, full=True)
    monkeypatch.setattr(precache, "plan", real_plan)

    assert (added[0], 0, 0, "original") not in keys()
    summary = run_precache(workspace)
    assert summary.details["skipped_unchanged"] is False
    assert summary.details["new_original"] == 1
    assert (added[0], 0, 0, "original") in keys()


def test_change_row_below_recorded_id_triggers_plan(workspace):
    # A MariaDB transaction can commit a change with a lower id after a change with a
    # higher id was committed and planned. An insert with an explicit id
    # simulates that change.
    add_file(workspace.database, "a.jpg")
    add_file(workspace.database, "b.jpg")
    run_precache(workspace)
    below_recorded = (
        models.PlanChange.select(peewee.fn.MIN(models.PlanChange.id)).scalar() - 1
    )
    models.PlanChange.insert(
        id=below_recorded, changed_at=db.now(workspace.database)
    ).execute()

    summary = run_precache(workspace)

    assert summary.details["skipped_unchanged"] is False
    assert [row.id for row in models.PlanChange.select()] == [below_recorded + 1]


def test_late_change_deleted_unseen_is_logged_again(workspace):
    add_file(workspace.database, "a.jpg")
    add_file(workspace.database, "b.jpg")
    first_id = models.PlanChange.select(peewee.fn.MIN(models.PlanChange.id)).scalar()
    models.PlanChange.delete().where(models.PlanChange.id == first_id).execute()
    log = precache.read_change_log(workspace.database)
    # A change that commits after the log was read, with a lower id than its maximum.
    models.PlanChange.insert(
        id=first_id, changed_at=db.now(workspace.database)
    ).execute()

    precache.record_plan(workspace.database, log, "webp")

    remaining = [row.id for row in models.PlanChange.select()]
    assert log.max_id in remaining
    assert max(remaining) > log.max_id
    assert first_id not in remaining


def test_dry_run_leaves_plan_state_and_changes(workspace):
    add_file(workspace.database, "a.jpg")
    change_rows = models.PlanChange.select().count()

    summary = run_precache(workspace, dry_run=True)

    assert summary.details["skipped_unchanged"] is False
    assert summary.details["new_original"] == 1
    assert models.PlanState.select().count() == 0
    assert models.PlanChange.select().count() == change_rows


def test_dry_run_after_unchanged_plan_reports_skip(workspace):
    photo = add_file(workspace.database, "a.jpg")
    run_precache(workspace)
    models.CacheEntry.delete().where(models.CacheEntry.file_id == photo).execute()
    state_before = models.PlanState.get()

    skipped = run_precache(workspace, dry_run=True)
    full = run_precache(workspace, dry_run=True, full=True)

    assert skipped.details["skipped_unchanged"] is True
    assert skipped.details["new_original"] == 0
    assert full.details["skipped_unchanged"] is False
    assert full.details["new_original"] == 1
    assert models.PlanState.get().planned_at == state_before.planned_at
    assert models.CacheEntry.select().count() == 0
