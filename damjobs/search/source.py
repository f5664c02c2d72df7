"""Read files and their related rows from the database for indexing.

Files are read in keyset batches (`id > last ORDER BY id LIMIT n`), so memory depends on
the batch size and not on the number of files. One query returns each file with its
descriptions, tags, attributes and croppings aggregated into JSON text, because PyMySQL
decodes one row per file in less time than the ~6 rows per file of one query per table.
"""

import collections
import dataclasses
import datetime
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import peewee
from peewee import SQL, fn

from damjobs import db
from damjobs.db import models
from damjobs.search.documents import CroppingRow, FileRecord, FileRow, ancestor_chain

logger = logging.getLogger(__name__)

FILE_COLUMNS = (
    models.File.id,
    models.File.folder,
    models.File.name,
    models.File.extension,
    models.File.format,
    models.File.media_type,
    models.File.size_bytes,
    models.File.width,
    models.File.height,
    models.File.is_transformable,
    models.File.version,
    models.File.created_at,
    models.File.updated_at,
)

# The columns of a cropping in the order of CroppingRow's fields.
CROPPING_COLUMNS = (
    models.Cropping.id,
    models.Cropping.name,
    models.Cropping.x,
    models.Cropping.y,
    models.Cropping.width,
    models.Cropping.height,
    models.Cropping.auto_cache,
)

# Folder parents cached across batches; the cache is emptied when it grows past this
# many folders, which bounds memory on a tree of any size.
MAX_CACHED_FOLDERS = 200_000


class FolderTree:
    """Folder parents read on demand, to compute each file's ancestor chain."""

    def __init__(self) -> None:
        self._parents: dict[int, int | None] = {}
        self._reported: set[int] = set()

    def chains(self, folder_ids: Iterable[int]) -> dict[int, tuple[int, ...]]:
        """
        Return the ancestor chain of each folder. A folder deleted meanwhile is left out,
        and so is a folder in a broken tree, with a warning.
        """
        wanted = set(folder_ids)
        if len(self._parents) > MAX_CACHED_FOLDERS:
            self._parents.clear()
        missing = {folder for folder in wanted if folder not in self._parents}
        while missing:
            rows = db.tuple_rows(
                models.Folder.select(models.Folder.id, models.Folder.parent).where(
                    models.Folder.id.in_(list(missing))
                )
            )
            loaded = {folder_id: parent_id for folder_id, parent_id in rows}
            self._parents.update(loaded)
            # Folders that no longer exist are not in `loaded`, so they are not asked
            # for again, and each round reads only parents not yet cached.
            missing = {
                parent
                for parent in loaded.values()
                if parent is not None and parent not in self._parents
            }
        chains = {}
        for folder_id in wanted:
            try:
                chains[folder_id] = ancestor_chain(folder_id, self._parents)
            except ValueError as error:
                if folder_id in self._parents and folder_id not in self._reported:
                    # The folder exists, so its tree is broken: a cycle or a lost parent.
                    self._reported.add(folder_id)
                    logger.warning(
                        "%s; the files in folder %d are indexed without "
                        "folder_ancestor_ids, so filters by an ancestor miss them",
                        error,
                        folder_id,
                    )
                continue

        return chains


def raw_rows(query: peewee.Query) -> list[tuple[Any, ...]]:
    """
    Run `query` and return the driver's rows without peewee's per-field conversion,
    which took about half the read time in benchmarks/rebuild_index.py. documents.py
    accepts the raw values: times as text on SQLite, booleans as 0 or 1.
    """
    return list(models.database_proxy.obj.execute(query).fetchall())


def count_files() -> int:
    return models.File.select().count()


def _rows_as_json(*columns: Any) -> peewee.Function:
    """
    Aggregate the rows of a correlated subquery into the JSON text `[count, rows]`,
    where `rows` lists each row as an array of `columns` (or is null when there are none).

    The count lets the reader detect a list that the server cut short. MariaDB cuts
    JSON_ARRAYAGG at group_concat_max_len bytes and only adds a warning.
    """
    if isinstance(models.database_proxy.obj, peewee.SqliteDatabase):
        return fn.json_array(
            fn.COUNT(SQL("*")), fn.json_group_array(fn.json_array(*columns))
        )

    return fn.JSON_ARRAY(fn.COUNT(SQL("*")), fn.JSON_ARRAYAGG(fn.JSON_ARRAY(*columns)))


def _records_query() -> peewee.Select:
    """Select the `file` columns plus, per file, its related rows as JSON text."""
    descriptions = models.FileDescription.select(
        _rows_as_json(models.FileDescription.language, models.FileDescription.text)
    ).where(models.FileDescription.file == models.File.id)
    tags = (
        models.FileTag.select(_rows_as_json(models.Tag.name))
        .join(models.Tag)
        .where(models.FileTag.file == models.File.id)
    )
    attributes = models.Attribute.select(
        _rows_as_json(
            models.Attribute.kind, models.Attribute.name, models.Attribute.value
        )
    ).where(models.Attribute.file == models.File.id)
    croppings = models.Cropping.select(_rows_as_json(*CROPPING_COLUMNS)).where(
        models.Cropping.file == models.File.id
    )

    return models.File.select(*FILE_COLUMNS, descriptions, tags, attributes, croppings)


def decode_aggregate(text: str | bytes | None) -> list[list[Any]] | None:
    """Return the rows of one `[count, rows]` aggregate, or None when some are missing."""
    if text is None:
        return None
    try:
        count, rows = json.loads(text)
    except (ValueError, TypeError):
        return None
    rows = rows or []

    return rows if len(rows) == count else None


def _records_from(rows: list[tuple[Any, ...]], folders: FolderTree) -> list[FileRecord]:
    """
    Build the records of rows from `_records_query`. Files whose related rows came back
    incomplete are read again with one query per table.
    """
    width = len(FILE_COLUMNS)
    files = []
    related = {}
    incomplete = []
    for row in rows:
        file = FileRow(*row[:width])
        files.append(file)
        decoded = [decode_aggregate(text) for text in row[width:]]
        complete = [part for part in decoded if part is not None]
        if len(complete) < len(decoded):
            incomplete.append(file)
            continue
        description_rows, tag_rows, attribute_rows, cropping_rows = complete
        related[file.id] = (
            {language: text for language, text in description_rows},
            tuple(name for (name,) in tag_rows),
            tuple((kind, name, value) for kind, name, value in attribute_rows),
            tuple(CroppingRow(*cropping) for cropping in cropping_rows),
        )
    if incomplete:
        logger.info(
            "the related rows of %d files were read table by table, because the "
            "server returned them incomplete in one query",
            len(incomplete),
        )
        reread = {
            record.file.id: record for record in load_records(incomplete, folders)
        }
    else:
        reread = {}
    chains = folders.chains({file.folder_id for file in files if file.id in related})
    records = []
    for file in files:
        if file.id in reread:
            records.append(reread[file.id])
            continue
        descriptions, tags, attributes, croppings = related[file.id]
        records.append(
            FileRecord(
                file=file,
                folder_ancestor_ids=chains.get(file.folder_id, ()),
                descriptions=descriptions,
                tags=tags,
                attributes=attributes,
                croppings=croppings,
            )
        )

    return records


@dataclasses.dataclass(frozen=True)
class RecordBatch:
    """The records of a batch of files, and the files whose rows could not be read."""

    records: list[FileRecord]
    unreadable: list[tuple[int, str]]  # (file id, reason)
    last_id: int  # the highest file id of the batch, for the next keyset query


# Errors of a query that reads a row the driver or an SQL function cannot handle, such
# as a BLOB in an SQLite text column (JSON cannot hold it) or text that is not UTF-8.
_ROW_ERRORS = (peewee.DatabaseError, sqlite3.DatabaseError, ValueError)


def read_records_after(last_id: int, limit: int, folders: FolderTree) -> RecordBatch:
    """Return the records of up to `limit` files with ids above `last_id`, in id order."""
    query = (
        _records_query()
        .where(models.File.id > last_id)
        .order_by(models.File.id)
        .limit(limit)
    )
    try:
        records = _records_from(raw_rows(query), folders)
    except _ROW_ERRORS as error:
        ids = [
            file_id
            for (file_id,) in db.tuple_rows(
                models.File.select(models.File.id)
                .where(models.File.id > last_id)
                .order_by(models.File.id)
                .limit(limit)
            )
        ]
        return _read_one_by_one(ids, folders, error, last_id)

    return RecordBatch(records, [], records[-1].file.id if records else last_id)


def iter_record_batches(batch_size: int, folders: FolderTree) -> Iterator[RecordBatch]:
    """Yield the records of every file in id order, `batch_size` files at a time."""
    last_id = 0
    while True:
        batch = read_records_after(last_id, batch_size, folders)
        if batch.last_id == last_id:
            return
        yield batch
        last_id = batch.last_id


def read_records(file_ids: Iterable[int], folders: FolderTree) -> RecordBatch:
    """Return the records of the files of `file_ids` that still exist, in id order."""
    ids = sorted(set(file_ids))
    if not ids:
        return RecordBatch([], [], 0)
    query = _records_query().where(models.File.id.in_(ids)).order_by(models.File.id)
    try:
        records = _records_from(raw_rows(query), folders)
    except _ROW_ERRORS as error:
        return _read_one_by_one(ids, folders, error, 0)

    return RecordBatch(records, [], ids[-1])


def _read_one_by_one(
    ids: list[int], folders: FolderTree, error: Exception, last_id: int
) -> RecordBatch:
    """
    Read the files of a batch whose query failed one at a time, so that a row the
    database cannot return fails only its own file. Raise `error` again when the
    database fails a trivial query too, because then no file can be read.
    `last_id` is the batch's `last_id` when `ids` is empty.
    """
    database = models.database_proxy.obj
    try:
        database.execute_sql("SELECT 1").fetchall()
    except _ROW_ERRORS:
        raise error from None
    logger.warning(
        "reading %d files at once failed (%s); reading them one at a time",
        len(ids),
        error,
    )
    records = []
    unreadable = []
    for file_id in ids:
        query = _records_query().where(models.File.id == file_id)
        try:
            records += _records_from(raw_rows(query), folders)
        except _ROW_ERRORS as file_error:
            unreadable.append(
                (
                    file_id,
                    f"its database rows cannot be read: {file_error}; look for a value "
                    "that is not UTF-8 text in its rows of file, file_description, tag, "
                    "attribute and cropping",
                )
            )

    return RecordBatch(records, unreadable, ids[-1] if ids else last_id)


def load_records(files: list[FileRow], folders: FolderTree) -> list[FileRecord]:
    """
    Return the files with their related rows, read with one query per table. Slower than
    `read_records`, which needs one query; used for the files whose related rows that
    query could not return whole.
    """
    if not files:
        return []
    ids = [row.id for row in files]
    first, last = ids[0], ids[-1]
    if last - first < 4 * len(ids):
        # A range reads faster than IN (...). Rows of ids between those of `files` are
        # read too but never used, so a range only pays off when the ids are dense.
        def of_batch(field: peewee.Field) -> Any:
            return field.between(first, last)
    else:

        def of_batch(field: peewee.Field) -> Any:
            return field.in_(ids)

    descriptions: dict[int, dict[str, str]] = collections.defaultdict(dict)
    query: peewee.Query = models.FileDescription.select(
        models.FileDescription.file,
        models.FileDescription.language,
        models.FileDescription.text,
    ).where(of_batch(models.FileDescription.file))
    for file_id, language, text in raw_rows(query):
        descriptions[file_id][language] = text

    tags: dict[int, list[str]] = collections.defaultdict(list)
    query = (
        models.FileTag.select(models.FileTag.file, models.Tag.name)
        .join(models.Tag)
        .where(of_batch(models.FileTag.file))
    )
    for file_id, name in raw_rows(query):
        tags[file_id].append(name)

    attributes: dict[int, list[tuple[str, str, str]]] = collections.defaultdict(list)
    query = models.Attribute.select(
        models.Attribute.file,
        models.Attribute.kind,
        models.Attribute.name,
        models.Attribute.value,
    ).where(of_batch(models.Attribute.file))
    for file_id, kind, name, value in raw_rows(query):
        attributes[file_id].append((kind, name, value))

    croppings: dict[int, list[CroppingRow]] = collections.defaultdict(list)
    query = models.Cropping.select(models.Cropping.file, *CROPPING_COLUMNS).where(
        of_batch(models.Cropping.file)
    )
    for file_id, *cropping in raw_rows(query):
        croppings[file_id].append(CroppingRow(*cropping))

    chains = folders.chains({row.folder_id for row in files})
    records = []
    for row in files:
        records.append(
            FileRecord(
                file=row,
                folder_ancestor_ids=chains.get(row.folder_id, ()),
                descriptions=descriptions.get(row.id, {}),
                tags=tuple(tags.get(row.id, ())),
                attributes=tuple(attributes.get(row.id, ())),
                croppings=tuple(croppings.get(row.id, ())),
            )
        )

    return records


def iter_changes(
    since: datetime.datetime, batch_size: int
) -> Iterator[tuple[set[int], set[int]]]:
    """
    Yield (file ids, folder ids) of the changes logged at or after `since`, in batches
    in log order. A file or folder changed twice may appear in two batches.
    """
    last_id = 0
    while True:
        rows = list(
            db.tuple_rows(
                models.SearchChange.select(
                    models.SearchChange.id,
                    models.SearchChange.file_id,
                    models.SearchChange.folder_id,
                )
                .where(
                    (models.SearchChange.changed_at >= since)
                    & (models.SearchChange.id > last_id)
                )
                .order_by(models.SearchChange.id)
                .limit(batch_size)
            )
        )
        if not rows:
            return
        files = {file_id for _id, file_id, _folder in rows if file_id is not None}
        folders = {folder for _id, _file, folder in rows if folder is not None}
        yield files, folders
        last_id = rows[-1][0]


def folder_subtree(folder_ids: Iterable[int]) -> set[int]:
    """Return the given folders that still exist plus all folders below them."""
    found: set[int] = set()
    frontier = set(folder_ids)
    existing = (
        {
            folder_id
            for (folder_id,) in db.tuple_rows(
                models.Folder.select(models.Folder.id).where(
                    models.Folder.id.in_(list(frontier))
                )
            )
        }
        if frontier
        else set()
    )
    found |= existing
    frontier = existing
    while frontier:
        children = {
            folder_id
            for (folder_id,) in db.tuple_rows(
                models.Folder.select(models.Folder.id).where(
                    models.Folder.parent.in_(list(frontier))
                )
            )
        }
        frontier = children - found
        found |= frontier

    return found


def iter_file_ids_in_folders(
    folder_ids: set[int], batch_size: int
) -> Iterator[list[int]]:
    """Yield the ids of the files directly in `folder_ids`, in keyset batches."""
    if not folder_ids:
        return
    last_id = 0
    while True:
        ids = [
            file_id
            for (file_id,) in db.tuple_rows(
                models.File.select(models.File.id)
                .where(
                    models.File.folder.in_(list(folder_ids))
                    & (models.File.id > last_id)
                )
                .order_by(models.File.id)
                .limit(batch_size)
            )
        ]
        if not ids:
            return
        yield ids
        last_id = ids[-1]


def delete_changes_before(database: peewee.Database, before: datetime.datetime) -> int:
    """Delete change rows logged before `before` in short batches; return how many."""
    deleted = 0
    while True:
        with db.translated_errors("deleting old search changes"), database.atomic():
            ids = [
                change_id
                for (change_id,) in db.tuple_rows(
                    models.SearchChange.select(models.SearchChange.id)
                    .where(models.SearchChange.changed_at < before)
                    .order_by(models.SearchChange.id)
                    .limit(5000)
                )
            ]
            if not ids:
                return deleted
            deleted += (
                models.SearchChange.delete()
                .where(models.SearchChange.id.in_(ids))
                .execute()
            )
