"""Reading files with their related rows for the index, on SQLite and MariaDB."""

import logging

import pytest

from damjobs.db import models
from damjobs.search import documents, source
from tests.helpers import make_workspace
from tests.integration.search.conftest import add_file, add_folder, tag_file

# Text that JSON must escape, characters outside the Basic Multilingual Plane, and a
# line separator that JavaScript treats as a line break.
TEXT_TO_ESCAPE = (
    'quote " backslash \\ tab \t newline \n emoji \U0001f4f7 separator \u2028'
)


@pytest.fixture
def database(tmp_path, database_url):
    return make_workspace(tmp_path / "ws", database_url).database


def add_related_rows(file_id, *, descriptions=0, tags=0, attributes=0, croppings=0):
    for number in range(descriptions):
        models.FileDescription.insert(
            file=file_id, language=f"l{number}", text=f"{TEXT_TO_ESCAPE} {number}"
        ).execute()
    for number in range(tags):
        tag_file(file_id, f"tag {number} {TEXT_TO_ESCAPE}")
    for number in range(attributes):
        models.Attribute.insert(
            file=file_id, kind="exif", name=f"Name{number}", value=f"{number}.5"
        ).execute()
    for number in range(croppings):
        models.Cropping.insert(
            file=file_id,
            name=f"crop {number}",
            x=number,
            y=2 * number,
            width=100 + number,
            height=50,
            auto_cache=number % 2 == 0,
            updated_at=models.File.get_by_id(file_id).updated_at,
        ).execute()


def documents_per_table(file_ids):
    """Build the documents from rows read with one query per table, for comparison."""
    files = [
        record.file
        for record in source.read_records(file_ids, source.FolderTree()).records
    ]
    records = source.load_records(files, source.FolderTree())

    return [documents.build_document(record) for record in records]


def make_files():
    root = add_folder("")
    child = add_folder("child", parent=root)
    bare = add_file(child, "bare.jpg", width=None, height=None)
    full = add_file(child, f"{TEXT_TO_ESCAPE}.jpg")
    add_related_rows(full, descriptions=3, tags=4, attributes=5, croppings=2)
    single = add_file(root, "single.png")
    add_related_rows(single, descriptions=1, tags=1, attributes=1, croppings=1)

    return [bare, full, single]


def test_one_query_matches_per_table_reads(database):
    file_ids = make_files()

    records = source.read_records(file_ids, source.FolderTree()).records

    assert [documents.build_document(record) for record in records] == (
        documents_per_table(file_ids)
    )


def test_related_rows_are_complete(database):
    file_ids = make_files()

    full = source.read_records([file_ids[1]], source.FolderTree()).records[0]

    assert full.file.name == f"{TEXT_TO_ESCAPE}.jpg"
    assert full.descriptions["l2"] == f"{TEXT_TO_ESCAPE} 2"
    assert sorted(full.tags)[3] == f"tag 3 {TEXT_TO_ESCAPE}"
    assert len(full.attributes) == 5
    croppings = sorted(full.croppings, key=lambda cropping: cropping.id)
    assert [bool(cropping.auto_cache) for cropping in croppings] == [True, False]
    assert len(full.folder_ancestor_ids) == 1


def test_batches_cover_every_file_once_in_id_order(database):
    file_ids = make_files()
    file_ids += [add_file(add_folder("more"), f"extra-{n}.jpg") for n in range(4)]

    batches = list(source.iter_record_batches(2, source.FolderTree()))

    assert [len(batch.records) for batch in batches] == [2, 2, 2, 1]
    assert [record.file.id for batch in batches for record in batch.records] == sorted(
        file_ids
    )


def test_deleted_files_are_left_out(database):
    file_ids = make_files()
    models.File.delete().where(models.File.id == file_ids[0]).execute()

    records = source.read_records(file_ids, source.FolderTree()).records

    assert [record.file.id for record in records] == file_ids[1:]


@pytest.mark.mariadb
def test_cut_short_aggregates_read_again(tmp_path, mariadb_url, caplog):
    make_workspace(tmp_path / "ws", mariadb_url)
    file_ids = make_files()
    expected = documents_per_table(file_ids)
    # JSON_ARRAYAGG stops at group_concat_max_len bytes with only a warning.
    models.database_proxy.obj.execute_sql("SET SESSION group_concat_max_len = 40")

    with caplog.at_level(logging.INFO, logger="damjobs.search.source"):
        records = source.read_records(file_ids, source.FolderTree()).records

    assert [documents.build_document(record) for record in records] == expected
    assert "read table by table" in caplog.text


@pytest.mark.parametrize(
    "text",
    [
        '[3, [["a"], ["b"]]]',  # valid JSON that lacks a row
        '[2, [["a"], ["b',  # cut inside a value
        "[1, null]",  # rows counted but missing altogether
        None,
    ],
)
def test_incomplete_aggregates_rejected(text):
    assert source.decode_aggregate(text) is None


def test_empty_aggregates_give_no_rows():
    assert source.decode_aggregate("[0, null]") == []
    assert source.decode_aggregate("[0, []]") == []


def test_unreadable_rows_fail_only_their_file(tmp_path):
    make_workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'damjobs.db'}")
    file_ids = make_files()
    database = models.database_proxy.obj
    # JSON cannot hold a BLOB, and text that is not UTF-8 cannot be decoded.
    database.execute_sql(
        "INSERT INTO file_description (file_id, language, text) VALUES (?, 'b', ?)",
        (file_ids[0], b"hello"),
    )
    database.execute_sql(
        "INSERT INTO file_description (file_id, language, text) "
        "VALUES (?, 'u', CAST(x'41ff42' AS TEXT))",
        (file_ids[2],),
    )

    batch = source.read_records(file_ids, source.FolderTree())

    assert [record.file.id for record in batch.records] == [file_ids[1]]
    assert [file_id for file_id, _reason in batch.unreadable] == [
        file_ids[0],
        file_ids[2],
    ]
    assert "JSON cannot hold BLOB values" in batch.unreadable[0][1]


def test_folder_cycle_is_logged(database, caplog):
    top = add_folder("top")
    middle = add_folder("middle", parent=top)
    bottom = add_folder("bottom", parent=middle)
    models.Folder.update(parent=bottom).where(models.Folder.id == top).execute()
    file_id = add_file(bottom, "looped.jpg")
    folders = source.FolderTree()

    with caplog.at_level(logging.WARNING, logger="damjobs.search.source"):
        first = source.read_records([file_id], folders).records[0]
        source.read_records([file_id], folders)

    assert first.folder_ancestor_ids == ()
    assert caplog.text.count(f"folder {bottom} has a cycle in its parents") == 1
