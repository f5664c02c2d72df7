"""What the rendering jobs share: reading cache entries, turning them into render work,
and recording the results.

build-missing and rebuild-expired use it: both read permanent entries in keyset batches,
render them in the same worker pool and record the results the same way.
"""

import collections
import dataclasses
import datetime
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import peewee

from damjobs import cache, db, runner
from damjobs.config import Settings
from damjobs.db import models
from damjobs.errors import ConfigError, DefinitionError, StorageError
from damjobs.render import steps
from damjobs.render import types as render_types

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000
TRANSIENT_FAILURES = ("missing",)
"""Failure classes that leave an entry's state alone, so the next run retries it."""
SAFE_EXTENSION = re.compile(r"[a-z0-9]{1,10}")


@dataclasses.dataclass(frozen=True)
class EntryRow:
    """The columns of a cache entry that rendering needs."""

    id: int
    file_id: int
    cropping_id: int
    setting_id: int
    output_format: str
    state: str
    file_version: int
    cropping_version: int
    setting_version: int
    path: str | None


@dataclasses.dataclass(frozen=True)
class FileRow:
    id: int
    path: str
    extension: str
    is_transformable: bool


ENTRY_COLUMNS = (
    models.CacheEntry.id,
    models.CacheEntry.file_id,
    models.CacheEntry.cropping_id,
    models.CacheEntry.setting_id,
    models.CacheEntry.output_format,
    models.CacheEntry.state,
    models.CacheEntry.file_version,
    models.CacheEntry.cropping_version,
    models.CacheEntry.setting_version,
    models.CacheEntry.path,
)


def count_entries(
    database: peewee.Database, states: Iterable[str], extra_condition: Any = None
) -> int:
    """Return how many permanent entries are in one of `states` (and match `extra_condition`)."""
    condition = models.CacheEntry.state.in_(list(states)) & (
        models.CacheEntry.custom_id == 0
    )
    if extra_condition is not None:
        condition = condition & extra_condition

    return models.CacheEntry.select().where(condition).count()


def iter_entry_groups(
    database: peewee.Database,
    states: Iterable[str],
    extra_condition: Any = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[tuple[FileRow, list[EntryRow]]]:
    """
    Yield (file, its permanent entries in `states`) in file id order, reading keyset
    batches so memory stays flat however many entries exist.

    A batch that ends inside one file's entries is cut before that file, which the next
    batch then reads whole.
    """
    last_file_id = 0
    state_list = list(states)
    permanent = models.CacheEntry.custom_id == 0
    if extra_condition is not None:
        permanent = permanent & extra_condition
    while True:
        # One query per state walks the (state, file_id) index in order and stops after
        # one batch. A single query over all states made the database sort every
        # remaining row for each batch (MariaDB 10.11 and SQLite both did), so a run over
        # N entries took time proportional to N squared.
        rows: list[tuple[Any, ...]] = []
        cutoff = None
        for state in state_list:
            state_rows = list(
                db.tuple_rows(
                    models.CacheEntry.select(*ENTRY_COLUMNS)
                    .where(
                        permanent
                        & (models.CacheEntry.state == state)
                        & (models.CacheEntry.file_id > last_file_id)
                    )
                    .order_by(models.CacheEntry.file_id, models.CacheEntry.id)
                    .limit(batch_size)
                )
            )
            rows += state_rows
            if len(state_rows) == batch_size:
                # Rows of this state beyond this file id were not read.
                batch_end = state_rows[-1][1]
                cutoff = batch_end if cutoff is None else min(cutoff, batch_end)
        if not rows:
            return
        entries = sorted((EntryRow(*row) for row in rows), key=_file_and_entry_id)
        if cutoff is not None:
            # Only files before the cutoff were read whole in every state.
            complete = [entry for entry in entries if entry.file_id < cutoff]
            if complete:
                entries = complete
            else:
                # One file has more entries than a batch holds: read all of them at once.
                entries = [
                    EntryRow(*row)
                    for row in db.tuple_rows(
                        models.CacheEntry.select(*ENTRY_COLUMNS)
                        .where(
                            permanent
                            & models.CacheEntry.state.in_(state_list)
                            & (models.CacheEntry.file_id == cutoff)
                        )
                        .order_by(models.CacheEntry.id)
                    )
                ]

        grouped: dict[int, list[EntryRow]] = collections.defaultdict(list)
        for entry in entries:
            grouped[entry.file_id].append(entry)
        files = _load_files(list(grouped))
        for file_id, group in grouped.items():
            if file_id in files:
                yield files[file_id], group
        last_file_id = entries[-1].file_id


def _file_and_entry_id(entry: EntryRow) -> tuple[int, int]:
    return entry.file_id, entry.id


def _load_files(file_ids: list[int]) -> dict[int, FileRow]:
    query = models.File.select(
        models.File.id,
        models.File.path,
        models.File.extension,
        models.File.is_transformable,
    ).where(models.File.id.in_(file_ids))

    return {row[0]: FileRow(*row) for row in db.tuple_rows(query)}


class Catalog:
    """Definitions of croppings, settings and merge resources, loaded once per run."""

    def __init__(self, database: peewee.Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.cache_root: Path = settings["paths.cache_root"]
        self._settings: dict[int, tuple[tuple[steps.Step, ...], int | None]] = {}
        self._broken_settings: dict[int, str] = {}
        self._resource_paths: dict[int, str] = {}

    def setting_steps(self, setting_id: int) -> tuple[steps.Step, ...]:
        """Return the parsed steps of a setting; raise DefinitionError if they are invalid."""
        if setting_id in self._broken_settings:
            raise DefinitionError(self._broken_settings[setting_id])
        if setting_id not in self._settings:
            self._load_setting(setting_id)

        return self._settings[setting_id][0]

    def setting_ttl_days(self, setting_id: int) -> int | None:
        if setting_id and setting_id in self._settings:
            return self._settings[setting_id][1]
        return None

    def _load_setting(self, setting_id: int) -> None:
        setting = models.PredefinedSetting.get_or_none(
            models.PredefinedSetting.id == setting_id
        )
        if setting is None:
            self._broken_settings[setting_id] = (
                f"predefined setting {setting_id} no longer exists"
            )
            raise DefinitionError(self._broken_settings[setting_id])
        rows = (
            models.SettingStep.select()
            .where(models.SettingStep.setting == setting_id)
            .order_by(models.SettingStep.position)
        )
        try:
            parsed = steps.parse_steps(
                [{"kind": row.kind, **json.loads(row.params)} for row in rows]
            )
        except (DefinitionError, ValueError) as error:
            message = f"predefined setting {setting.name!r} has invalid steps: {error}"
            self._broken_settings[setting_id] = message
            raise DefinitionError(message) from error
        self._settings[setting_id] = (parsed, setting.ttl_days)

    def crop_step(self, cropping_id: int) -> steps.Step:
        cropping = models.Cropping.get_or_none(models.Cropping.id == cropping_id)
        if cropping is None:
            raise DefinitionError(f"cropping {cropping_id} no longer exists")

        return steps.parse_steps(
            [
                {
                    "kind": "crop",
                    "x": cropping.x,
                    "y": cropping.y,
                    "width": cropping.width,
                    "height": cropping.height,
                }
            ]
        )[0]

    def resource_path(self, file_id: int) -> str | None:
        if file_id not in self._resource_paths:
            row = models.File.get_or_none(models.File.id == file_id)
            if row is None:
                return None
            self._resource_paths[file_id] = row.path

        return self._resource_paths[file_id]

    def relative_target(self, file_row: FileRow, entry: EntryRow) -> str:
        """Return the cache path of `entry`, relative to the cache root."""
        key: dict[str, int | str] = {
            "file": entry.file_id,
            "cropping": entry.cropping_id,
            "setting": entry.setting_id,
            "format": entry.output_format,
            "file_version": entry.file_version,
            "cropping_version": entry.cropping_version,
            "setting_version": entry.setting_version,
        }
        if entry.output_format == "original":
            extension = file_row.extension.lower()
            if not SAFE_EXTENSION.fullmatch(extension):
                extension = "bin"
        else:
            extension = cache.EXTENSIONS[entry.output_format]

        return cache.entry_relative_path(key, extension)

    def source_job(
        self, file_row: FileRow, entries: list[EntryRow]
    ) -> tuple[render_types.SourceJob, list[tuple[EntryRow, str]]]:
        """
        Build the render work for one original.

        Return the job plus the entries that cannot even be described (a deleted cropping,
        invalid steps) with their reason; those fail without rendering.
        """
        copies = []
        derivatives = []
        broken = []
        resources: dict[int, str] = {}
        for entry in entries:
            target = self.cache_root / self.relative_target(file_row, entry)
            if entry.output_format == "original":
                copies.append(render_types.CopyTarget(entry.id, target))
                continue
            try:
                crop = self.crop_step(entry.cropping_id) if entry.cropping_id else None
                chain = self.setting_steps(entry.setting_id) if entry.setting_id else ()
            except DefinitionError as error:
                broken.append((entry, error.message))
                continue
            for step in chain:
                if isinstance(step, steps.Merge):
                    path = self.resource_path(step.resource_file_id)
                    if path is not None:
                        resources[step.resource_file_id] = path
            derivatives.append(
                render_types.Derivative(
                    entry.id, crop, chain, entry.output_format, target
                )
            )

        job = render_types.SourceJob(
            file_id=file_row.id,
            relative_path=file_row.path,
            transformable=file_row.is_transformable,
            copies=tuple(copies),
            derivatives=tuple(derivatives),
            resources=resources,
        )

        return job, broken


def render_jobs(
    context: runner.RunContext,
    jobs: Iterator[render_types.SourceJob],
    recorder: "ResultRecorder",
) -> None:
    """
    Render `jobs` in a render pool and record each result as it arrives.

    When the run must stop, the pool takes no new jobs, and the jobs in flight finish and
    are recorded.
    """
    from damjobs.render import pool  # noqa: PLC0415 - keeps Wand out of dry runs

    with pool.RenderPool(render_settings(context.settings)) as render_pool:
        for job, results in render_pool.run(_stoppable(jobs, context, render_pool)):
            recorder.record(job, results)


def _stoppable(
    jobs: Iterator[render_types.SourceJob], context: runner.RunContext, render_pool: Any
) -> Iterator[render_types.SourceJob]:
    """Pass jobs through to the pool, and tell the pool to stop when the run must stop."""
    for job in jobs:
        if context.stop:
            break
        yield job
    if context.stop:
        render_pool.stop()


def trim_to_limit(
    context: runner.RunContext, entries: list[EntryRow], taken: int
) -> list[EntryRow]:
    """
    Return the part of `entries` that still fits under --limit after `taken` entries.

    When nothing fits, request the run to stop and return an empty list.
    """
    limit = context.options.limit
    if limit is None:
        return entries
    room = limit - taken
    if room <= 0:
        context.stop.request("--limit reached")
        return []

    return entries[:room]


def prepare_job(
    catalog: "Catalog",
    recorder: "ResultRecorder | None",
    file_row: FileRow,
    entries: list[EntryRow],
) -> render_types.SourceJob | None:
    """
    Build the render work for one original and register its entries with `recorder`.

    Entries that cannot be described (a deleted cropping, invalid steps) fail at once
    through `recorder`; a dry run passes no recorder. Return None when nothing is left
    to render.
    """
    job, broken = catalog.source_job(file_row, entries)
    if recorder is not None:
        recorder.expect(file_row, entries)
        if broken:
            recorder.fail_unrenderable(broken)
    if job.copies or job.derivatives:
        return job

    return None


def check_roots(settings: Settings, database: peewee.Database, dry_run: bool) -> None:
    """
    Raise StorageError when the originals root is unusable or the cache root cannot be
    a folder, before any entry is touched.

    An originals root that is missing, not a folder or empty while the database lists
    files looks like an unmounted share: rendering then would fail every entry.
    """
    originals: Path = settings["paths.originals_root"]
    if not originals.is_dir():
        raise StorageError(
            f"the originals root {originals} is not a folder",
            hint="mount or create it, or correct paths.originals_root",
        )
    with os.scandir(originals) as listing:
        empty = next(listing, None) is None
    if empty and models.File.select().exists():
        raise StorageError(
            f"the originals root {originals} is empty, but the database lists files",
            hint="check that the share holding the originals is mounted",
        )
    cache_root: Path = settings["paths.cache_root"]
    if dry_run:
        return
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"cannot use the cache root {cache_root}: {error.strerror}",
            hint="make it a writable folder or correct paths.cache_root",
        ) from error


def printable(text: str) -> str:
    """Return `text` with control characters escaped, so a file name cannot forge lines."""
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def list_work(
    context: runner.RunContext, jobs: Iterable[render_types.SourceJob]
) -> int:
    """
    Print one line per entry that a dry run would render and return how many there are.

    With --json only the count goes into the summary, so stdout stays one JSON object.
    """
    cache_root = context.settings["paths.cache_root"]
    listed = 0
    for job in jobs:
        targets: list[render_types.CopyTarget | render_types.Derivative] = [
            *job.copies,
            *job.derivatives,
        ]
        for target in targets:
            listed += 1
            if context.output.json:
                continue
            kind = "copy" if isinstance(target, render_types.CopyTarget) else "render"
            relative = os.path.relpath(target.target, cache_root)
            print(
                f"{kind}\tfile {job.file_id}\tentry {target.entry_id}\t"
                f"{printable(job.relative_path)}\t-> {relative}"
            )

    return listed


def check_render_settings(settings: Settings) -> None:
    """Raise ConfigError when ImageMagick does not know render.default_background."""
    from damjobs.render import wand_setup  # noqa: PLC0415 - loads Wand only to render

    background = settings["render.default_background"]
    if not wand_setup.is_known_colour(background):
        raise ConfigError(
            [
                f"render.default_background = {background!r} is not a colour "
                "ImageMagick knows"
            ],
            hint=steps.COLOUR_HINT,
        )


def render_settings(settings: Settings) -> render_types.RenderSettings:
    """Build the renderer's settings from the configuration."""
    group = settings["cache.group"]
    gid = None
    if group:
        import grp  # noqa: PLC0415

        gid = grp.getgrnam(group).gr_gid
    workers = settings["render.workers"] or len(os.sched_getaffinity(0))
    cache_root: Path = settings["paths.cache_root"]

    return render_types.RenderSettings(
        originals_root=settings["paths.originals_root"],
        cache_root=cache_root,
        ownership=cache.FileOwnership(
            file_mode=settings["cache.file_mode"],
            dir_mode=settings["cache.dir_mode"],
            gid=gid,
        ),
        max_width=settings["render.max_width"],
        max_height=settings["render.max_height"],
        max_pixels=settings["render.max_pixels"],
        default_background=settings["render.default_background"],
        default_quality=settings["render.default_quality"],
        default_output_format=settings["cache.default_output_format"],
        timeout_seconds=settings["render.timeout_seconds"],
        workers=workers,
        images_per_worker=settings["render.images_per_worker"],
        srgb_profile=_existing(settings["render.srgb_profile"]),
        cmyk_profile=_existing(settings["render.cmyk_profile"]),
        temp_root=cache_root / ".damjobs-work",
    )


def _existing(path: Path) -> Path | None:
    if path.is_file():
        return path
    logger.warning(
        "ICC profile %s not found; colour conversion falls back to formulas", path
    )
    return None


class ResultRecorder:
    """Store render results on their cache entries and count them for the run."""

    def __init__(self, context: runner.RunContext, catalog: Catalog) -> None:
        self.context = context
        self.catalog = catalog
        self.rendered = 0
        self.failed_by_class: collections.Counter[str] = collections.Counter()
        self._pending: dict[int, tuple[EntryRow, str]] = {}

    def expect(self, file_row: FileRow, entries: Iterable[EntryRow]) -> None:
        """Remember the entries of a submitted job with their target paths."""
        for entry in entries:
            self._pending[entry.id] = (
                entry,
                self.catalog.relative_target(file_row, entry),
            )

    def fail_unrenderable(self, broken: list[tuple[EntryRow, str]]) -> None:
        results = [
            render_types.EntryResult(entry.id, None, "render_failed", reason)
            for entry, reason in broken
        ]
        for entry, _reason in broken:
            self._pending.setdefault(entry.id, (entry, ""))
        self._store(results, file_id=broken[0][0].file_id if broken else None)

    def record(
        self, job: render_types.SourceJob, results: list[render_types.EntryResult]
    ) -> None:
        self._store(results, file_id=job.file_id)

    def _store(
        self, results: list[render_types.EntryResult], file_id: int | None
    ) -> None:
        database = self.context.database
        now = db.server_now(database)
        stale_files = []
        with db.translated_errors("recording render results"), database.atomic():
            for result in results:
                entry, relative = self._pending.pop(result.entry_id)
                if result.failure is None:
                    stale_files += self._store_success(entry, relative, result, now)
                else:
                    self._store_failure(entry, result, file_id)
        for relative in stale_files:
            try:
                cache.delete_inside(self.catalog.cache_root, relative)
            except Exception as error:  # noqa: BLE001 - a leftover old file is only logged
                logger.warning(
                    "cannot delete the replaced cache file %s: %s", relative, error
                )

    def _store_success(
        self,
        entry: EntryRow,
        relative: str,
        result: render_types.EntryResult,
        now: datetime.datetime,
    ) -> list[str]:
        ttl_days = (
            self.catalog.setting_ttl_days(entry.setting_id)
            or self.context.settings["cache.ttl_days"]
        )
        updated = (
            models.CacheEntry.update(
                state="built",
                path=relative,
                size_bytes=result.size_bytes,
                built_at=now,
                expires_at=now + datetime.timedelta(days=ttl_days),
                failure=None,
                error=None,
            )
            .where(_unchanged(entry))
            .execute()
        )
        self.context.count(processed=1)
        self.rendered += 1
        if updated == 0:
            # precache re-planned or removed the entry while it rendered, so the new file
            # belongs to versions that are no longer expected. A re-planned entry keeps its
            # path and serves that file until build-missing renders the new versions, so a
            # path that the row still records stays.
            current = models.CacheEntry.get_or_none(models.CacheEntry.id == entry.id)
            if current is not None and current.path == relative:
                logger.info(
                    "cache entry %d changed while rendering; its file stays", entry.id
                )
                return []
            logger.info(
                "cache entry %d changed while rendering; its file is discarded",
                entry.id,
            )
            return [relative]
        if entry.path and entry.path != relative:
            return [entry.path]

        return []

    def _store_failure(
        self, entry: EntryRow, result: render_types.EntryResult, file_id: int | None
    ) -> None:
        # A missing original is usually a storage problem (an unmounted share, a file
        # restored later), so its entries keep their state and the next run tries again;
        # a built entry keeps serving its old file meanwhile.
        state = entry.state if result.failure in TRANSIENT_FAILURES else "failed"
        models.CacheEntry.update(
            state=state, failure=result.failure, error=result.message[:2000]
        ).where(_unchanged(entry)).execute()
        self.context.count(processed=1, failed=1)
        self.failed_by_class[result.failure or "render_failed"] += 1
        logger.error(
            "cache entry %d of file %d failed (%s): %s",
            entry.id,
            entry.file_id,
            result.failure,
            result.message,
            extra={"file_id": file_id},
        )


def _unchanged(entry: EntryRow) -> Any:
    """Condition that matches the entry only while it still has the versions read earlier."""
    return (
        (models.CacheEntry.id == entry.id)
        & (models.CacheEntry.file_version == entry.file_version)
        & (models.CacheEntry.cropping_version == entry.cropping_version)
        & (models.CacheEntry.setting_version == entry.setting_version)
        & (models.CacheEntry.state != "obsolete")
    )
