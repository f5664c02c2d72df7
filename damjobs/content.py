"""Getting content into the DAM tables: import a folder of files, load definitions.

`import_folder` registers every regular file below a folder as a DAM file (format,
dimensions, SHA-256 checksum, EXIF attributes), copying it under the originals root when
it lies elsewhere. `load_definitions` reads predefined settings and croppings from TOML.
"""

import dataclasses
import hashlib
import json
import logging
import mimetypes
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

import peewee

from damjobs import cache, db
from damjobs.config import Settings
from damjobs.db import models
from damjobs.errors import DefinitionError, StorageError, UsageError
from damjobs.render import steps

logger = logging.getLogger(__name__)

TRANSFORMABLE_FORMATS = ("jpeg", "png", "gif", "webp", "tiff")
PROBE_MAX_BYTES = 256 * 1024 * 1024
MEDIA_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "tiff": "image/tiff",
}


@dataclasses.dataclass
class ImportCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0


def import_folder(
    database: peewee.Database, settings: Settings, source: Path, into: str | None
) -> ImportCounts:
    """
    Register every regular file below `source` as a DAM file and return the counts.

    A `source` inside the originals root is registered in place. Any other folder is
    copied below the originals root, into `into` (default: the folder's own name).
    Hidden files and symbolic links are skipped.
    """
    from damjobs.render import probe  # noqa: PLC0415 - loads Wand only when importing

    originals_root: Path = settings["paths.originals_root"].resolve()
    if not originals_root.is_dir():
        raise StorageError(
            f"the originals root {originals_root} (paths.originals_root) is not a folder",
            hint="create it, mount the share, or correct paths.originals_root",
        )
    source = source.resolve()
    if not source.is_dir():
        raise UsageError(
            f"{source} is not a folder", hint="name a folder of images to import"
        )
    in_place = source == originals_root or originals_root in source.parents
    if in_place:
        destination = source
    else:
        name = into if into is not None else source.name
        try:
            destination = cache.resolve_inside(originals_root, name)
        except cache.PathOutsideRootError as error:
            raise UsageError(
                error.message, hint="give --into a path inside the root"
            ) from error

    counts = ImportCounts()
    for path in sorted(_regular_files(source, counts)):
        target = destination / path.relative_to(source)
        relative = target.relative_to(originals_root).as_posix()
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            counts.skipped += 1
            logger.warning(
                "skipped %r: the file name is not valid UTF-8; rename the file",
                str(path),
            )
            continue
        try:
            if not in_place:
                _copy_atomically(path, target, originals_root)
            outcome = _register(
                database, originals_root, relative, target, probe.probe_file
            )
        except (OSError, peewee.PeeweeException) as error:
            counts.failed += 1
            logger.error("cannot import %r: %s", str(path), error)
            continue
        setattr(counts, outcome, getattr(counts, outcome) + 1)
        logger.debug("%s %s", outcome, relative)

    return counts


def _regular_files(source: Path, counts: ImportCounts) -> list[Path]:
    found = []
    for folder, subfolders, names in os.walk(source):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in names:
            path = Path(folder) / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                counts.skipped += 1
                logger.info(
                    "skipped %s: hidden, a symbolic link or not a regular file", path
                )
                continue
            found.append(path)

    return found


def _copy_atomically(source: Path, target: Path, root: Path) -> None:
    cache.make_parent_folders(target, root, cache.FileOwnership())
    temp = target.with_name(cache.temp_name(target.name))
    shutil.copyfile(source, temp)
    os.replace(temp, target)


def _register(
    database: peewee.Database, root: Path, relative: str, path: Path, probe_file: Any
) -> str:
    checksum, size = _checksum(path)
    existing = models.File.get_or_none(models.File.path == relative)
    if existing is not None and existing.checksum == checksum:
        return "unchanged"

    head = path.read_bytes() if size <= PROBE_MAX_BYTES else _read_head(path)
    found = probe_file(head)
    fmt = found.format or (path.suffix.lower().lstrip(".") or "binary")
    now = db.now(database)
    values = {
        "name": path.name,
        "extension": path.suffix.lower().lstrip("."),
        "format": fmt[:16],
        "media_type": MEDIA_TYPES.get(fmt)
        or mimetypes.guess_type(path.name)[0]
        or "application/octet-stream",
        "size_bytes": size,
        "width": found.width,
        "height": found.height,
        "checksum": checksum,
        "is_transformable": found.format in TRANSFORMABLE_FORMATS,
        "updated_at": now,
    }
    with database.atomic():
        if existing is None:
            folder = _folder_for(database, Path(relative).parent)
            file_id = models.File.insert(
                folder=folder, path=relative, created_at=now, version=1, **values
            ).execute()
            outcome = "added"
        else:
            file_id = existing.id
            models.File.update(version=models.File.version + 1, **values).where(
                models.File.id == file_id
            ).execute()
            outcome = "updated"
        models.Attribute.delete().where(
            (models.Attribute.file == file_id) & (models.Attribute.kind == "exif")
        ).execute()
        rows = [
            {"file": file_id, "kind": "exif", "name": name[:191], "value": value}
            for name, value in sorted(found.exif.items())
        ]
        if rows:
            models.Attribute.insert_many(rows).execute()

    return outcome


def _checksum(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)

    return digest.hexdigest(), size


def _read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(64 * 1024)


def _folder_for(database: peewee.Database, relative_folder: Path) -> int:
    """Return the id of the folder row for a relative folder path, creating the chain."""
    parent_id = _root_folder()
    for part in relative_folder.parts:
        row = models.Folder.get_or_none(
            (models.Folder.parent == parent_id) & (models.Folder.name == part)
        )
        if row is None:
            parent_id = models.Folder.insert(
                parent=parent_id, name=part, created_at=db.now(database)
            ).execute()
        else:
            parent_id = row.id

    return parent_id


def _root_folder() -> int:
    row = models.Folder.get_or_none(
        models.Folder.parent.is_null() & (models.Folder.name == "")
    )
    if row is not None:
        return row.id

    return models.Folder.insert(
        parent=None, name="", created_at=db.now(models.database_proxy.obj)
    ).execute()


# --- definitions ------------------------------------------------------------------------


@dataclasses.dataclass
class DefinitionCounts:
    settings_added: int = 0
    settings_changed: int = 0
    settings_unchanged: int = 0
    croppings_added: int = 0
    croppings_changed: int = 0
    croppings_unchanged: int = 0


def load_definitions(database: peewee.Database, path: Path) -> DefinitionCounts:
    """
    Create or update the predefined settings and croppings described in a TOML file.

    Every entry is validated first and all problems are reported together; nothing is
    written unless the whole file is valid. A changed output (steps, format, rectangle)
    raises the version, so precache plans the affected entries again.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"cannot read definitions from {path}: {error}") from error

    unknown = set(document) - {"setting", "cropping"}
    problems = [
        f"{path}: unknown table [[{name}]]; expected [[setting]] or [[cropping]]"
        for name in sorted(unknown)
    ]
    settings = [
        _check_setting(item, number, path, problems)
        for number, item in enumerate(document.get("setting", []), start=1)
    ]
    croppings = [
        _check_cropping(item, number, path, problems)
        for number, item in enumerate(document.get("cropping", []), start=1)
    ]
    problems += _duplicates(path, "setting", [(s["name"],) for s in settings])
    problems += _duplicates(
        path, "cropping", [(c["file"], c["name"]) for c in croppings if c["file"]]
    )
    if problems:
        raise DefinitionError(
            "invalid definitions:\n"
            + "\n".join(f"  - {problem}" for problem in problems),
            hint="fix the listed entries; nothing was changed",
        )

    counts = DefinitionCounts()
    with database.atomic():
        for setting in settings:
            _store_setting(database, setting, counts)
        for cropping in croppings:
            _store_cropping(database, cropping, counts)

    return counts


def _duplicates(path: Path, table: str, keys: list[tuple[Any, ...]]) -> list[str]:
    """Return a problem for each key that more than one entry of `table` uses."""
    seen: set[tuple[Any, ...]] = set()
    problems = []
    for key in keys:
        if key in seen:
            problems.append(
                f"{path}: more than one [[{table}]] named {key[-1]!r}; each entry would "
                "overwrite the one before, so keep one"
            )
        seen.add(key)

    return problems


def _check_setting(
    item: dict[str, Any], number: int, path: Path, problems: list[str]
) -> dict[str, Any]:
    where = f"{path}: [[setting]] number {number}"
    allowed = {"name", "output_format", "auto_cache", "ttl_days", "steps"}
    for key in sorted(set(item) - allowed):
        problems.append(
            f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}"
        )
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: name must be a non-empty string")
    output_format = item.get("output_format")
    if output_format is not None:
        try:
            steps.parse_output_format(output_format)
        except DefinitionError as error:
            problems.append(f"{where} ({name}): {error.message}")
    parsed: tuple[steps.Step, ...] = ()
    try:
        raw_steps = [
            _resolve_resource(dict(step), where) for step in item.get("steps", [])
        ]
        parsed = steps.parse_steps(raw_steps)
    except DefinitionError as error:
        problems.append(f"{where} ({name}): {error.message}")
    else:
        for step_number, step in enumerate(parsed, start=1):
            background = getattr(step, "background", None)
            if background is not None and not _is_known_colour(background):
                problems.append(
                    f"{where} ({name}): step {step_number}: background "
                    f"{background!r} is not a colour ImageMagick knows; "
                    f"{steps.COLOUR_HINT}"
                )
    ttl_days = item.get("ttl_days")
    if ttl_days is not None and (not isinstance(ttl_days, int) or ttl_days < 1):
        problems.append(
            f"{where} ({name}): ttl_days must be a whole number of at least 1"
        )
    auto_cache = item.get("auto_cache", False)
    if not isinstance(auto_cache, bool):
        problems.append(f"{where} ({name}): auto_cache must be true or false")

    return {
        "name": name,
        "output_format": item.get("output_format"),
        "ttl_days": ttl_days,
        "auto_cache": auto_cache,
        "steps": [steps.step_to_dict(step) for step in parsed],
    }


def _is_known_colour(value: str) -> bool:
    from damjobs.render import wand_setup  # noqa: PLC0415 - loads Wand only when needed

    return wand_setup.is_known_colour(value)


def _resolve_resource(step: dict[str, Any], where: str) -> dict[str, Any]:
    """Replace a merge step's `resource` path by the id of that DAM file."""
    if step.get("kind") != "merge" or "resource" not in step:
        return step
    resource = step.pop("resource")
    row = models.File.get_or_none(models.File.path == resource)
    if row is None:
        raise DefinitionError(
            f"merge resource {resource!r} is not an imported file; import it first "
            f"(paths are relative to the originals root)"
        )
    step["resource_file_id"] = row.id

    return step


def _check_cropping(
    item: dict[str, Any], number: int, path: Path, problems: list[str]
) -> dict[str, Any]:
    where = f"{path}: [[cropping]] number {number}"
    allowed = {"file", "name", "x", "y", "width", "height", "auto_cache"}
    for key in sorted(set(item) - allowed):
        problems.append(
            f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}"
        )
    file_row = models.File.get_or_none(models.File.path == item.get("file", ""))
    if file_row is None:
        problems.append(
            f"{where}: file {item.get('file')!r} is not an imported file; give its path "
            "relative to the originals root"
        )
    try:
        crop = steps.parse_steps(
            [
                {
                    "kind": "crop",
                    **{k: item.get(k) for k in "xy"},
                    "width": item.get("width"),
                    "height": item.get("height"),
                }
            ]
        )
    except DefinitionError as error:
        problems.append(f"{where} ({item.get('name')}): {error.message}")
        crop = ()
    if not isinstance(item.get("name"), str) or not item.get("name"):
        problems.append(f"{where}: name must be a non-empty string")
    if not isinstance(item.get("auto_cache", False), bool):
        problems.append(f"{where}: auto_cache must be true or false")

    return {
        "file": file_row.id if file_row else None,
        "name": item.get("name"),
        "auto_cache": item.get("auto_cache", False),
        **(steps.step_to_dict(crop[0]) if crop else {}),
    }


def _store_setting(
    database: peewee.Database, item: dict[str, Any], counts: DefinitionCounts
) -> None:
    now = db.now(database)
    row = models.PredefinedSetting.get_or_none(
        models.PredefinedSetting.name == item["name"]
    )
    if row is None:
        setting_id = models.PredefinedSetting.insert(
            name=item["name"],
            output_format=item["output_format"],
            ttl_days=item["ttl_days"],
            auto_cache=item["auto_cache"],
            version=1,
            updated_at=now,
        ).execute()
        _store_steps(setting_id, item["steps"])
        counts.settings_added += 1
        return

    old_steps = [
        {"kind": step.kind, **json.loads(step.params)}
        for step in row.steps.order_by(models.SettingStep.position)
    ]
    output_changed = (
        old_steps != item["steps"] or row.output_format != item["output_format"]
    )
    other_changed = (
        row.ttl_days != item["ttl_days"] or row.auto_cache != item["auto_cache"]
    )
    if not output_changed and not other_changed:
        counts.settings_unchanged += 1
        return
    models.PredefinedSetting.update(
        output_format=item["output_format"],
        ttl_days=item["ttl_days"],
        auto_cache=item["auto_cache"],
        version=models.PredefinedSetting.version + (1 if output_changed else 0),
        updated_at=now,
    ).where(models.PredefinedSetting.id == row.id).execute()
    if output_changed:
        models.SettingStep.delete().where(
            models.SettingStep.setting == row.id
        ).execute()
        _store_steps(row.id, item["steps"])
    counts.settings_changed += 1


def _store_steps(setting_id: int, chain: list[dict[str, Any]]) -> None:
    rows = [
        {
            "setting": setting_id,
            "position": position,
            "kind": step["kind"],
            "params": json.dumps(
                {k: v for k, v in step.items() if k != "kind"}, sort_keys=True
            ),
        }
        for position, step in enumerate(chain, start=1)
    ]
    if rows:
        models.SettingStep.insert_many(rows).execute()


def _store_cropping(
    database: peewee.Database, item: dict[str, Any], counts: DefinitionCounts
) -> None:
    now = db.now(database)
    rectangle = {key: item[key] for key in ("x", "y", "width", "height")}
    row = models.Cropping.get_or_none(
        (models.Cropping.file == item["file"]) & (models.Cropping.name == item["name"])
    )
    if row is None:
        models.Cropping.insert(
            file=item["file"],
            name=item["name"],
            auto_cache=item["auto_cache"],
            version=1,
            updated_at=now,
            **rectangle,
        ).execute()
        counts.croppings_added += 1
        return

    changed = any(getattr(row, key) != value for key, value in rectangle.items())
    if not changed and row.auto_cache == item["auto_cache"]:
        counts.croppings_unchanged += 1
        return
    models.Cropping.update(
        auto_cache=item["auto_cache"],
        version=models.Cropping.version + (1 if changed else 0),
        updated_at=now,
        **rectangle,
    ).where(models.Cropping.id == row.id).execute()
    counts.croppings_changed += 1
