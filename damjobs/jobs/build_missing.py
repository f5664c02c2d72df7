"""build-missing: render every planned cache entry whose file is absent, empty or never built.

Entries are read in keyset batches grouped by source file, so each original is decoded
once for all of its missing entries. Built entries are checked on disk, which finds files
that someone deleted. Failed entries are retried only with --retry-failed.
"""

import dataclasses
import logging
import os
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


def needs_render(entry: sources.EntryRow, cache_root: Path, retry_failed: bool) -> bool:
    """Return True when the entry must be rendered: never built, or its file is gone or empty."""
    if entry.state == "expected":
        return True
    if entry.state == "failed":
        return retry_failed
    if entry.state != "built" or not entry.path:
        return entry.state == "built"

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
    states = ("expected", "built", "failed") if options.retry_failed else ("expected", "built")
    planned = 0
    for file_row, entries in sources.iter_entry_groups(context.database, states):
        if context.stop:
            return
        missing = [e for e in entries if needs_render(e, cache_root, options.retry_failed)]
        if not missing:
            continue
        limit = context.options.limit
        if limit is not None:
            room = limit - planned
            if room <= 0:
                context.stop.request("--limit reached")
                return
            missing = missing[:room]
        planned += len(missing)
        job, broken = catalog.source_job(file_row, missing)
        if recorder is not None:
            recorder.expect(file_row, missing)
            if broken:
                recorder.fail_unrenderable(broken)
        if job.copies or job.derivatives:
            yield job


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """Render the missing cache entries; return the counts for the summary."""
    settings = context.settings
    cache_root: Path = settings["paths.cache_root"]
    catalog = sources.Catalog(context.database, settings)
    context.set_total(sources.count_entries(context.database, ("expected",)))
    if context.dry_run:
        return _list_work(context, iter_work(context, options, catalog, None))

    cache_root.mkdir(parents=True, exist_ok=True)
    cache.sweep_temp_files(cache_root, max(3600.0, 2 * settings["render.timeout_seconds"]))
    recorder = sources.ResultRecorder(context, catalog)
    sources.render_jobs(context, iter_work(context, options, catalog, recorder), recorder)
    context.left = sources.count_entries(context.database, ("expected",))

    return {"rendered": recorder.rendered, "failed_by_class": dict(recorder.failed_by_class)}


def _list_work(
    context: runner.RunContext, jobs: Iterator[render_types.SourceJob]
) -> dict[str, Any]:
    would_render = 0
    for job in jobs:
        for target in [*job.copies, *job.derivatives]:
            kind = "copy" if isinstance(target, render_types.CopyTarget) else "render"
            print(f"{kind}\tfile {job.file_id}\tentry {target.entry_id}\t{job.relative_path}"
                  f"\t-> {os.path.relpath(target.target, context.settings['paths.cache_root'])}")
            would_render += 1
    logger.info("dry run: would render %d cache entries", would_render)

    return {"would_render": would_render}
