"""build-missing: render every planned cache entry whose file is absent, empty or never built.

Entries are read in keyset batches grouped by source file, so each original is decoded
once for all of its missing entries. Built entries are checked on disk, which finds files
that someone deleted. Failed entries are retried only with --retry-failed.
"""

import dataclasses
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from damjobs import cache, runner
from damjobs.jobs import sources
from damjobs.render import types as render_types

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
    retry_failed: bool = False


class BuiltFileChecker:
    """
    Sizes of built cache files, for checking many entries quickly.

    It returns the same sizes as `cache.file_size`, except that a symbolic link in place
    of the file, and a path with "." or ".." parts, count as missing, so the entry is
    rendered again. damjobs writes neither. Each existing folder is resolved (symbolic
    links followed, the root checked) once per run, and each file then costs one lstat.
    `cache.file_size` resolves the whole path per entry, one lstat per part, which made
    the check of a large built cache several times slower.
    """

    MAX_CACHED_FOLDERS = 100_000
    """Maximum number of resolved folders kept; the sharded cache layout has 65,536."""

    def __init__(self, cache_root: Path) -> None:
        self.real_root = cache_root.resolve()
        self._folders: dict[str, str | None] = {}

    def size(self, relative: str) -> int | None:
        """Return the size of the regular file `relative` below the root, or None when it
        is missing, not a regular file or outside the root."""
        if not relative or "\x00" in relative or os.path.isabs(relative):
            return None
        folder, _, name = relative.rpartition("/")
        if name in ("", ".", ".."):
            return None
        if folder in self._folders:
            real_folder = self._folders[folder]
        else:
            real_folder = self._resolve_folder(folder)
        if real_folder is None:
            return None
        try:
            status = os.lstat(os.path.join(real_folder, name))
        except OSError:
            return None
        if not stat.S_ISREG(status.st_mode):
            return None

        return status.st_size

    def _resolve_folder(self, folder: str) -> str | None:
        """Return the real path of `folder` below the root, or None when it is missing or
        leaves the root."""
        if len(self._folders) >= self.MAX_CACHED_FOLDERS:
            self._folders.clear()
        parent, _, name = folder.rpartition("/")
        if not folder:
            real_parent: str | None = str(self.real_root)
        elif parent in self._folders:
            real_parent = self._folders[parent]
        else:
            real_parent = self._resolve_folder(parent)
        resolved = None
        if real_parent is not None and name not in (".", ".."):
            resolved = self._real_child(real_parent, name) if folder else real_parent
        # A folder that is missing now may be created by this run's render workers, so
        # only folders that resolved are remembered.
        if resolved is not None:
            self._folders[folder] = resolved

        return resolved

    def _real_child(self, real_parent: str, name: str) -> str | None:
        # A real folder plus a name that is a folder and no link is a real path already,
        # so one lstat settles the usual case. A link is resolved in full and checked.
        child = os.path.join(real_parent, name)
        try:
            status = os.lstat(child)
        except OSError:
            return None
        if stat.S_ISDIR(status.st_mode):
            return child
        if not stat.S_ISLNK(status.st_mode):
            return None
        target = Path(child).resolve()
        if target == self.real_root or self.real_root in target.parents:
            return str(target) if target.is_dir() else None
        return None


def needs_render(
    entry: sources.EntryRow,
    cache_root: Path,
    retry_failed: bool,
    checker: BuiltFileChecker | None = None,
) -> bool:
    """Return True when the entry must be rendered: never built, or its file is gone or empty."""
    if entry.state == "expected":
        return True
    if entry.state == "failed":
        return retry_failed
    if entry.state != "built" or not entry.path:
        return entry.state == "built"

    if checker is not None:
        size = checker.size(entry.path)
    else:
        size = cache.file_size(cache_root, entry.path)

    return size is None or size == 0


def iter_work(
    context: runner.RunContext,
    options: Options,
    catalog: sources.Catalog,
    recorder: sources.ResultRecorder | None,
) -> Iterator[render_types.SourceJob]:
    """
    Yield one SourceJob per original with missing entries, until a stop or --limit.

    Entries that cannot be described (a deleted cropping, invalid steps) are failed
    through `recorder` at once; a dry run passes no recorder and only lists.
    """
    cache_root = context.settings["paths.cache_root"]
    states = (
        ("expected", "built", "failed")
        if options.retry_failed
        else ("expected", "built")
    )
    checker = BuiltFileChecker(cache_root)
    planned = 0
    for file_row, entries in sources.iter_entry_groups(context.database, states):
        if context.stop:
            return
        missing = [
            e
            for e in entries
            if needs_render(e, cache_root, options.retry_failed, checker)
        ]
        if not missing:
            continue
        missing = sources.trim_to_limit(context, missing, planned)
        if not missing:
            return
        planned += len(missing)
        job = sources.prepare_job(catalog, recorder, file_row, missing)
        if job is not None:
            yield job


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """Render the missing cache entries; return the counts for the summary."""
    settings = context.settings
    cache_root: Path = settings["paths.cache_root"]
    catalog = sources.Catalog(context.database, settings)
    context.set_total(sources.count_entries(context.database, ("expected",)))
    sources.check_roots(settings, context.database, context.dry_run)
    if context.dry_run:
        listed = sources.list_work(context, iter_work(context, options, catalog, None))
        logger.info("dry run: would render %d cache entries", listed)
        return {"would_render": listed}

    cache.sweep_temp_files(
        cache_root, max(3600.0, 2 * settings["render.timeout_seconds"])
    )
    recorder = sources.ResultRecorder(context, catalog)
    sources.render_jobs(
        context, iter_work(context, options, catalog, recorder), recorder
    )
    context.left = sources.count_entries(context.database, ("expected",))

    return {
        "rendered": recorder.rendered,
        "failed_by_class": dict(recorder.failed_by_class),
    }
