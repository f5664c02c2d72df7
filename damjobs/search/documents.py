"""Search documents: one per file, built from database rows by pure functions.

`mapping.py` declares the same fields for OpenSearch; a test checks that every field a
document can carry is mapped, because the index rejects unmapped fields.
"""

import dataclasses
import datetime
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

# Keyword values longer than this are kept in the source but not indexed, like the
# `ignore_above` of the mapping; the number is in characters.
MAX_KEYWORD_LENGTH = 256


@dataclasses.dataclass(frozen=True)
class FileRow:
    """The columns of one `file` row that go into its document."""

    id: int
    folder_id: int
    name: str
    extension: str
    format: str
    media_type: str
    size_bytes: int
    width: int | None
    height: int | None
    is_transformable: bool
    version: int
    created_at: datetime.datetime | str
    updated_at: datetime.datetime | str


@dataclasses.dataclass(frozen=True)
class CroppingRow:
    """One cropping of a file, in pixels of the auto-oriented image."""

    id: int
    name: str
    x: int
    y: int
    width: int
    height: int
    auto_cache: bool


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """A file with its related rows, as read for one document."""

    file: FileRow
    folder_ancestor_ids: tuple[int, ...] = ()
    descriptions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str, str], ...] = ()  # (kind, name, value)
    croppings: tuple[CroppingRow, ...] = ()


def format_time(value: datetime.datetime | str) -> str:
    """Return a naive UTC time from the database as ISO 8601 with a Z suffix."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)

    return value.isoformat(timespec="seconds") + "Z"


# A decimal number in ASCII digits, as EXIF and user attributes write one. Python's
# float() also accepts "1_000", digits of other scripts, "nan" and "inf".
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def parse_number(text: str) -> float | None:
    """Return `text` as a finite decimal number, or None when it is not one."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)

    return number if math.isfinite(number) else None


def attribute_entry(kind: str, name: str, value: str) -> dict[str, Any]:
    """Return the nested object of one attribute; numeric values also get `number`."""
    entry: dict[str, Any] = {"kind": kind, "name": name, "value": value}
    number = parse_number(value)
    if number is not None:
        entry["number"] = number

    return entry


def build_document(record: FileRecord) -> dict[str, Any]:
    """
    Build the search document of one file.

    Lists are sorted, so the same rows always give the same document. The folder chain
    lists the ancestors from the root down, without the file's own folder, so a
    permission filter can match `folder_id` or any `folder_ancestor_ids`.
    """
    row = record.file
    document: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "extension": row.extension.lower(),
        "format": row.format,
        "media_type": row.media_type,
        "size_bytes": row.size_bytes,
        "width": row.width,
        "height": row.height,
        "is_transformable": bool(row.is_transformable),
        "version": row.version,
        "folder_id": row.folder_id,
        "folder_ancestor_ids": list(record.folder_ancestor_ids),
        "created_at": format_time(row.created_at),
        "updated_at": format_time(row.updated_at),
        "descriptions": [
            {"language": language, "text": text}
            for language, text in sorted(record.descriptions.items())
        ],
        "description_languages": sorted(record.descriptions),
        "tags": sorted(set(record.tags)),
        "attributes": [
            attribute_entry(kind, name, value)
            for kind, name, value in sorted(record.attributes)
        ],
        "croppings": [
            {
                "id": cropping.id,
                "name": cropping.name,
                "x": cropping.x,
                "y": cropping.y,
                "width": cropping.width,
                "height": cropping.height,
                "auto_cache": bool(cropping.auto_cache),
            }
            for cropping in sorted(record.croppings, key=lambda cropping: cropping.id)
        ],
        "cropping_count": len(record.croppings),
    }
    if row.width is not None and row.height is not None:
        document["pixels"] = row.width * row.height

    return document


def ancestor_chain(
    folder_id: int, parents: Mapping[int, int | None]
) -> tuple[int, ...]:
    """
    Return the ancestors of `folder_id` from the root down, not including it.

    `parents` maps a folder id to its parent id (None for a root). Raise ValueError on a
    cycle or on a folder missing from `parents`, because either means a broken tree.
    """
    chain: list[int] = []
    seen = {folder_id}
    if folder_id not in parents:
        raise ValueError(f"folder {folder_id} not found")
    current = parents[folder_id]
    while current is not None:
        if current in seen:
            raise ValueError(
                f"folder {folder_id} has a cycle in its parents at {current}"
            )
        if current not in parents:
            raise ValueError(f"parent folder {current} of folder {folder_id} not found")
        seen.add(current)
        chain.append(current)
        current = parents[current]
    chain.reverse()

    return tuple(chain)


def group_by_file(rows: Iterable[tuple[Any, ...]]) -> dict[int, list[tuple[Any, ...]]]:
    """Group rows whose first column is a file id by that id; the id is dropped."""
    grouped: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(tuple(row[1:]))

    return grouped
