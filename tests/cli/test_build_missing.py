"""precache and build-missing end to end through the CLI, on real photographs."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from damjobs.db import models
from tests.helpers import cli_environment, make_workspace, real_photos

DEFINITIONS = """
[[setting]]
name = "thumb"
output_format = "webp"
auto_cache = true
steps = [{ kind = "resize", width = 320 }]

[[setting]]
name = "square"
output_format = "jpeg"
auto_cache = true
steps = [{ kind = "canvas", width = 400, height = 400 }, { kind = "quality", quality = 80 }]
"""


def pick_photos(count):
    """Return `count` photographs: JPEG, PNG with alpha and WebP first, smallest first."""
    photos = sorted(real_photos(), key=lambda path: path.stat().st_size)
    chosen = []
    for suffix in (".jpg", ".png", ".webp"):
        chosen += [p for p in photos if p.suffix == suffix][:1]
    chosen += [p for p in photos if p not in chosen]

    return chosen[:count]


def copy_photo(photo, target, full_size):
    """Copy a photograph, or a copy at most 1024 pixels wide that keeps its EXIF."""
    if full_size:
        shutil.copy(photo, target)
        return
    with Image.open(photo) as image:
        exif = image.getexif()
        image.thumbnail((1024, 1024))
        image.save(
            target, exif=exif, **({"quality": 90} if image.format == "JPEG" else {})
        )


# A lossless copy at up to 3000 pixels: each photograph is decoded at nearly full size and
# encoded as a large PNG, which takes about a second on one core.
SLOW_DEFINITIONS = (
    DEFINITIONS
    + """
[[setting]]
name = "large-png"
output_format = "png"
auto_cache = true
steps = [{ kind = "resize", width = 3000 }]
"""
)


def prepare(
    tmp_path, database_url, photo_count=3, full_size=False, definitions=DEFINITIONS
):
    workspace = make_workspace(tmp_path / "ws", database_url)
    source = tmp_path / "photos"
    source.mkdir()
    for photo in pick_photos(photo_count):
        copy_photo(photo, source / photo.name, full_size)
    definitions_path = tmp_path / "definitions.toml"
    definitions_path.write_text(definitions)
    for arguments in (
        ("import", str(source), "--into", "photos"),
        ("define", str(definitions_path)),
        ("-q", "precache"),
    ):
        done = workspace.cli(*arguments)
        assert done.returncode == 0, done.stderr

    return workspace


def summary_of(done):
    return json.loads(done.stdout.strip().splitlines()[-1])


def visible_cache_files(workspace):
    return sorted(
        path
        for path in workspace.cache.rglob("*")
        if path.is_file() and ".damjobs" not in str(path.relative_to(workspace.cache))
    )


def test_build_missing_renders_every_entry(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url)

    done = workspace.cli("build-missing", "--json")

    summary = summary_of(done)
    assert done.returncode == 0, done.stderr
    assert summary["processed"] == 9
    assert summary["failed"] == 0
    assert (
        models.CacheEntry.select().where(models.CacheEntry.state != "built").count()
        == 0
    )
    assert len(visible_cache_files(workspace)) == 9


def test_rendered_files_have_expected_sizes(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url, photo_count=1)
    workspace.cli("build-missing")

    sizes = {}
    for entry in models.CacheEntry.select():
        with Image.open(workspace.cache / entry.path) as image:
            sizes[entry.output_format] = (image.format, image.size[0])

    assert sizes["webp"] == ("WEBP", 320)
    assert sizes["jpeg"] == ("JPEG", 400)
    assert sizes["original"][0] == "JPEG"


def test_second_run_renders_nothing(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url)
    workspace.cli("build-missing")

    summary = summary_of(workspace.cli("build-missing", "--json"))

    assert summary["processed"] == 0


def test_file_deleted_from_disk_is_rendered_again(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url)
    workspace.cli("build-missing")
    entry = (
        models.CacheEntry.select()
        .where(models.CacheEntry.output_format == "webp")
        .first()
    )
    (workspace.cache / entry.path).unlink()

    summary = summary_of(workspace.cli("build-missing", "--json"))

    assert summary["processed"] == 1
    assert (workspace.cache / entry.path).is_file()


def test_empty_file_is_rendered_again(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url, photo_count=1)
    workspace.cli("build-missing")
    entry = (
        models.CacheEntry.select()
        .where(models.CacheEntry.output_format == "jpeg")
        .first()
    )
    (workspace.cache / entry.path).write_bytes(b"")

    summary = summary_of(workspace.cli("build-missing", "--json"))

    assert summary["processed"] == 1
    assert (workspace.cache / entry.path).stat().st_size > 0


def test_bad_original_fails_only_its_entries(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url)
    broken = models.File.select().where(models.File.format == "jpeg").first()
    path = workspace.originals / broken.path
    path.write_bytes(path.read_bytes()[:600])

    done = workspace.cli("build-missing", "--json")

    summary = summary_of(done)
    assert done.returncode == 4
    assert summary["failed"] == 3
    assert summary["processed"] == 9
    failed = models.CacheEntry.select().where(models.CacheEntry.state == "failed")
    assert {entry.file_id for entry in failed} == {broken.id}
    assert {entry.failure for entry in failed} == {"corrupt"}


def test_failed_entries_wait_for_retry_failed(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url, photo_count=1)
    photo = models.File.get()
    original = (workspace.originals / photo.path).read_bytes()
    (workspace.originals / photo.path).write_bytes(original[:600])
    workspace.cli("build-missing")
    (workspace.originals / photo.path).write_bytes(original)

    plain = summary_of(workspace.cli("build-missing", "--json"))
    retried = summary_of(workspace.cli("build-missing", "--retry-failed", "--json"))

    assert plain["processed"] == 0
    assert retried["processed"] == 3
    assert retried["failed"] == 0


def test_limit_stops_with_work_left(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url)

    done = workspace.cli("build-missing", "--limit", "4", "--json")

    summary = summary_of(done)
    assert done.returncode == 0
    assert summary["processed"] == 4
    assert summary["left"] == 5


def test_dry_run_lists_and_writes_nothing(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url)

    done = workspace.cli("build-missing", "--dry-run")

    assert done.returncode == 0
    assert len([line for line in done.stdout.splitlines() if "-> " in line]) == 9
    assert visible_cache_files(workspace) == []


def test_precache_then_run_queued_builds(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url, photo_count=1)

    done = workspace.cli("-q", "run-queued")

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    status = (
        models.JobStatus.select().where(models.JobStatus.job == "build-missing").get()
    )
    assert status.trigger == "queued"
    assert status.state == "succeeded"


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def running(workspace):
    return (
        models.JobSlot.select()
        .where(
            (models.JobSlot.job == "build-missing")
            & (models.JobSlot.state == "running")
        )
        .exists()
    )


def built_count():
    return models.CacheEntry.select().where(models.CacheEntry.state == "built").count()


@pytest.fixture
def slow_workspace(tmp_path, database_url, monkeypatch):
    """A workspace with enough work that a run takes several seconds on one worker."""
    monkeypatch.setenv("DAMJOBS__RENDER__WORKERS", "1")
    return prepare(
        tmp_path,
        database_url,
        photo_count=8,
        full_size=True,
        definitions=SLOW_DEFINITIONS,
    )


def test_second_start_exits_3_naming_holder(slow_workspace):
    first = slow_workspace.popen("build-missing")
    try:
        assert wait_for(lambda: running(slow_workspace))
        # Both start at once, so that the first run is still busy for either of them.
        second = slow_workspace.popen("build-missing")
        quiet = slow_workspace.popen("-q", "build-missing", "--json")
        _out, second_stderr = second.communicate(timeout=120)
        quiet_stdout, quiet_stderr = quiet.communicate(timeout=120)
        still_running = first.poll() is None
    finally:
        first.communicate(timeout=300)

    assert still_running, "the first run ended before the second starts were checked"
    assert second.returncode == 3
    assert "already running" in second_stderr
    assert f"pid {first.pid}" in second_stderr
    assert len(second_stderr.strip().splitlines()) == 1
    assert quiet.returncode == 3
    assert quiet_stderr == ""
    assert json.loads(quiet_stdout)["state"] == "already_running"
    assert first.returncode == 0


def test_sigterm_cancels_and_releases(slow_workspace):
    run = slow_workspace.popen("build-missing")
    assert wait_for(lambda: running(slow_workspace))

    run.send_signal(signal.SIGTERM)
    run.wait(timeout=120)

    status = (
        models.JobStatus.select().where(models.JobStatus.job == "build-missing").get()
    )
    assert run.returncode == 130
    assert status.state == "cancelled"
    assert (
        models.JobSlot.select().where(models.JobSlot.job == "build-missing").count()
        == 0
    )
    assert [p for p in slow_workspace.cache.rglob("*.damjobs-tmp-*")] == []


def test_sigkill_leaves_no_partial_file_and_next_run_finishes(slow_workspace):
    run = slow_workspace.popen("build-missing")
    assert wait_for(lambda: built_count() >= 2)

    run.kill()
    run.wait(timeout=30)
    time.sleep(0.5)
    for path in visible_cache_files(slow_workspace):
        with Image.open(path) as image:
            image.load()

    done = slow_workspace.cli("build-missing", "--json")

    assert done.returncode == 0, done.stderr
    assert (
        models.CacheEntry.select().where(models.CacheEntry.state != "built").count()
        == 0
    )
    assert list(slow_workspace.cache.rglob(".damjobs-tmp-*")) == []


def import_one(tmp_path, database_url, photo):
    workspace = make_workspace(tmp_path / "ws", database_url)
    source = tmp_path / "one"
    source.mkdir()
    shutil.copy(photo, source / photo.name)
    definitions = tmp_path / "definitions.toml"
    definitions.write_text(DEFINITIONS)
    for arguments in (
        ("import", str(source)),
        ("define", str(definitions)),
        ("precache",),
    ):
        assert workspace.cli(*arguments).returncode == 0

    return workspace


def rendered(workspace, output_format):
    entry = models.CacheEntry.get(models.CacheEntry.output_format == output_format)
    return Image.open(workspace.cache / entry.path)


def test_exif_orientation_is_applied(tmp_path, database_url):
    photo = min(
        (p for p in real_photos() if p.suffix == ".jpg"), key=lambda p: p.stat().st_size
    )
    rotated = tmp_path / "rotated.jpg"
    with Image.open(photo) as original:
        exif = original.getexif()
        exif[0x0112] = (
            6  # EXIF Orientation: the stored image must be turned 90 degrees clockwise
        )
        original.save(rotated, quality=92, exif=exif)
    workspace = import_one(tmp_path, database_url, rotated)

    workspace.cli("build-missing")

    with Image.open(photo) as original, rendered(workspace, "webp") as thumb:
        assert thumb.size[0] == 320
        assert thumb.size[1] == round(320 * original.size[0] / original.size[1])


def test_transparent_png_is_flattened_on_white(tmp_path, database_url):
    photo = next(p for p in real_photos() if p.name == "Gulp.png")
    with Image.open(photo) as source:
        corner_alpha = source.convert("RGBA").getpixel((0, 0))[3]
    workspace = import_one(tmp_path, database_url, photo)

    workspace.cli("build-missing")

    with rendered(workspace, "jpeg") as square:
        corner = square.convert("RGB").getpixel((0, 0))
    assert corner_alpha <= 5
    assert min(corner) >= 250


def test_missing_original_is_retried_next_run(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url, photo_count=2)
    photo = models.File.get(models.File.format == "jpeg")
    kept = tmp_path / "kept.jpg"
    shutil.move(workspace.originals / photo.path, kept)

    first = workspace.cli("build-missing", "--json")
    shutil.move(kept, workspace.originals / photo.path)
    second = workspace.cli("build-missing", "--json")

    assert first.returncode == 4
    assert summary_of(first)["failed"] == 3
    assert second.returncode == 0
    assert summary_of(second)["processed"] == 3
    assert (
        models.CacheEntry.select().where(models.CacheEntry.state != "built").count()
        == 0
    )


def test_empty_originals_root_fails_run_not_entries(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url, photo_count=1)
    empty = tmp_path / "unmounted"
    empty.mkdir()

    done = workspace.cli(
        "build-missing",
        env={**cli_environment(), "DAMJOBS__PATHS__ORIGINALS_ROOT": str(empty)},
    )

    assert done.returncode == 1
    assert "is empty, but the database lists files" in done.stderr
    assert (
        models.CacheEntry.select().where(models.CacheEntry.state == "failed").count()
        == 0
    )


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_unknown_default_background_stops_before_claim(tmp_path, database_url, dry_run):
    workspace = prepare(tmp_path, database_url, photo_count=1)
    runs_before = models.JobStatus.select().count()

    done = workspace.cli(
        "build-missing",
        *(["--dry-run"] if dry_run else []),
        env={**cli_environment(), "DAMJOBS__RENDER__DEFAULT_BACKGROUND": "whit"},
    )

    assert done.returncode == 2
    assert "render.default_background = 'whit' is not a colour" in done.stderr
    assert "hint: use a name that `convert -list color` prints" in done.stderr
    assert models.JobStatus.select().count() == runs_before
    assert models.JobSlot.get(models.JobSlot.job == "build-missing").state == "enqueued"


def test_dry_run_json_is_one_object(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url, photo_count=1)

    done = workspace.cli("build-missing", "--dry-run", "--json")

    assert json.loads(done.stdout)["details"]["would_render"] == 3


def test_listing_into_closed_pipe_ends_quietly(tmp_path, database_url):
    workspace = prepare(tmp_path, database_url, photo_count=1)
    listing = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "damjobs",
            "--config",
            str(workspace.config_path),
            "build-missing",
            "--dry-run",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(),
    )
    listing.stdout.close()  # the reader is gone before the first line is written

    stderr = listing.stderr.read()
    listing.wait(timeout=60)

    assert listing.returncode == 0
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
