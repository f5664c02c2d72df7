"""Importing files and loading definitions into the DAM tables."""

import os
import shutil

import pytest

from damjobs import content
from damjobs.db import models
from damjobs.errors import DefinitionError, StorageError
from tests.helpers import make_workspace, real_photos


@pytest.fixture
def workspace(tmp_path, database_url):
    return make_workspace(tmp_path / "ws", database_url)


def photo_folder(tmp_path, count=2):
    folder = tmp_path / "incoming"
    folder.mkdir()
    for photo in sorted(real_photos(), key=lambda p: p.stat().st_size)[:count]:
        shutil.copy(photo, folder / photo.name)
    return folder


def test_import_records_format_size_and_checksum(tmp_path, workspace):
    folder = photo_folder(tmp_path, count=1)

    counts = content.import_folder(workspace.database, workspace.settings, folder, "in")

    row = models.File.get()
    assert counts.added == 1
    assert row.path.startswith("in/")
    assert row.is_transformable
    assert row.width > 0
    assert len(row.checksum) == 64
    assert (workspace.originals / row.path).is_file()


def test_import_reads_exif_attributes(tmp_path, workspace):
    photos = [p for p in real_photos() if p.suffix == ".jpg"]
    folder = tmp_path / "incoming"
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)

    content.import_folder(workspace.database, workspace.settings, folder, "in")

    names = {
        a.name for a in models.Attribute.select().where(models.Attribute.kind == "exif")
    }
    assert "Model" in names


def test_reimport_of_changed_file_raises_version(tmp_path, workspace):
    folder = photo_folder(tmp_path, count=1)
    content.import_folder(workspace.database, workspace.settings, folder, "in")
    changed = next(folder.iterdir())
    changed.write_bytes(changed.read_bytes() + b"\0")

    counts = content.import_folder(workspace.database, workspace.settings, folder, "in")

    assert counts.updated == 1
    assert models.File.get().version == 2


def test_import_skips_name_that_is_not_utf8(tmp_path, workspace):
    folder = photo_folder(tmp_path, count=1)
    photo = next(folder.iterdir())
    shutil.copy(photo, os.path.join(os.fsencode(folder), b"bad\xff\xfename.jpg"))

    counts = content.import_folder(workspace.database, workspace.settings, folder, "in")

    assert counts.added == 1
    assert counts.skipped == 1
    assert models.File.select().count() == 1


def write_definitions(tmp_path, text):
    path = tmp_path / "definitions.toml"
    path.write_text(text)
    return path


def definition_problems(tmp_path, workspace, text):
    """Load definitions that must be rejected and return the DefinitionError message."""
    path = write_definitions(tmp_path, text)
    with pytest.raises(DefinitionError) as raised:
        content.load_definitions(workspace.database, path)

    return raised.value.message


def test_import_into_missing_originals_root_fails_once(tmp_path, workspace):
    folder = photo_folder(tmp_path)
    shutil.rmtree(workspace.settings["paths.originals_root"])

    with pytest.raises(StorageError) as raised:
        content.import_folder(workspace.database, workspace.settings, folder, None)

    assert "(paths.originals_root) is not a folder" in raised.value.message
    assert models.File.select().count() == 0


def test_define_lists_every_problem_and_writes_nothing(tmp_path, workspace):
    message = definition_problems(
        tmp_path,
        workspace,
        '[[setting]]\nname = "a"\nsteps = [{ kind = "resize" }]\n'
        '[[setting]]\nname = "b"\noutput_format = "bmp"\n'
        '[[cropping]]\nfile = "nope.jpg"\nname = "c"\nx = 0\ny = 0\nwidth = 1\nheight = 1\n',
    )

    assert "resize" in message
    assert "'bmp'" in message
    assert "'nope.jpg' is not an imported file" in message
    assert models.PredefinedSetting.select().count() == 0


def test_define_rejects_unknown_canvas_colour(tmp_path, workspace):
    message = definition_problems(
        tmp_path,
        workspace,
        '[[setting]]\nname = "boxed"\nsteps = [\n'
        '  { kind = "resize", width = 10 },\n'
        '  { kind = "canvas", width = 20, height = 20, background = "whit" },\n]\n',
    )

    assert "(boxed): step 2: background 'whit' is not a colour" in message
    assert models.PredefinedSetting.select().count() == 0


def test_define_accepts_named_and_hex_colours(tmp_path, workspace):
    path = write_definitions(
        tmp_path,
        '[[setting]]\nname = "grey"\nsteps = [{ kind = "canvas", width = 20, '
        'height = 20, background = "grey50" }]\n'
        '[[setting]]\nname = "clear"\nsteps = [{ kind = "canvas", width = 20, '
        'height = 20, background = "#ff000080" }]\n'
        '[[setting]]\nname = "dark"\nsteps = [{ kind = "canvas", width = 20, '
        'height = 20, background = "rgb(10, 20, 30)" }]\n',
    )

    content.load_definitions(workspace.database, path)

    assert models.PredefinedSetting.select().count() == 3


def test_define_reports_format_and_step_problems_together(tmp_path, workspace):
    message = definition_problems(
        tmp_path,
        workspace,
        '[[setting]]\nname = "a"\noutput_format = "bmp"\n'
        'steps = [{ kind = "resise", width = 10 }, { kind = "quality", quality = 101 }]\n',
    )

    assert "'bmp'" in message
    assert "resise" in message
    assert "101" in message


def test_define_rejects_duplicate_setting_names(tmp_path, workspace):
    message = definition_problems(
        tmp_path,
        workspace,
        '[[setting]]\nname = "a"\nsteps = [{ kind = "resize", width = 10 }]\n'
        '[[setting]]\nname = "a"\nsteps = [{ kind = "resize", width = 20 }]\n',
    )

    assert "more than one [[setting]] named 'a'" in message


def test_changed_steps_raise_version_but_auto_cache_does_not(tmp_path, workspace):
    base = '[[setting]]\nname = "a"\nauto_cache = {auto}\nsteps = [{{ kind = "resize", width = {w} }}]\n'
    content.load_definitions(
        workspace.database, write_definitions(tmp_path, base.format(auto="true", w=10))
    )

    content.load_definitions(
        workspace.database, write_definitions(tmp_path, base.format(auto="false", w=10))
    )
    after_flag = models.PredefinedSetting.get().version
    content.load_definitions(
        workspace.database, write_definitions(tmp_path, base.format(auto="false", w=20))
    )

    assert after_flag == 1
    assert models.PredefinedSetting.get().version == 2
