"""rebuild-index: rebuild the search index of the files from the database, then swap.

`plan_rebuild` decides from the cluster's state (pure, tested without a server);
`run` carries the plan out through `damjobs.search.rebuild`, or only reports it for
--dry-run. Searches use the alias, which keeps pointing at the old index until the new
one is complete and verified.
"""

import dataclasses
import datetime
import logging
from typing import Any

from damjobs import runner
from damjobs.search import client as search_client
from damjobs.search import documents, indices, source
from damjobs.search.admin import AliasState, IndexAdmin
from damjobs.search.rebuild import Rebuild, RebuildSettings, RebuildStopped

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
    """rebuild-index takes no options of its own."""


@dataclasses.dataclass(frozen=True)
class RebuildPlan:
    """The decisions a rebuild makes before it loads anything."""

    alias: str
    new_index: str
    current: tuple[str, ...]
    delete_first: tuple[str, ...]


def plan_rebuild(state: AliasState, now: datetime.datetime) -> RebuildPlan:
    """
    Name the new index and list the leftovers to delete first: loading indices of
    failed or killed runs that the alias does not use.
    """
    cleanup = indices.plan_cleanup(state.managed, keep_old=len(state.managed))

    return RebuildPlan(
        alias=state.alias,
        new_index=indices.new_index_name(state.alias, now),
        current=state.targets,
        delete_first=cleanup.partial,
    )


def sample_document() -> dict[str, Any] | None:
    """Return the document of the file with the lowest id, or None without files."""
    records = source.read_records_after(0, 1, source.FolderTree()).records

    return documents.build_document(records[0]) if records else None


def run(context: runner.RunContext, options: Options) -> dict[str, Any]:
    """Rebuild the index behind the configured alias; return the summary details."""
    settings = context.settings
    rebuild_settings = RebuildSettings.from_settings(settings)
    client = search_client.make_client(
        settings, pool_size=rebuild_settings.bulk_concurrency + 2
    )
    admin = IndexAdmin(client, settings["index.alias"])
    plan = plan_rebuild(admin.state(), datetime.datetime.now(datetime.UTC))
    details: dict[str, Any] = {
        "alias": plan.alias,
        "index": plan.new_index,
        "previous": list(plan.current),
        "deleted_leftovers": list(plan.delete_first),
    }

    if context.dry_run:
        files = source.count_files()
        context.set_total(files)
        details.update(files=files, swapped=False, sample_document=sample_document())
        logger.info(
            "dry run: would index %d files into %s and point %s at it (now: %s)",
            files,
            plan.new_index,
            plan.alias,
            ", ".join(plan.current) or "no index",
        )
        if plan.delete_first and context.running_elsewhere:
            # One of the `loading` indices belongs to the running rebuild.
            details["deleted_leftovers"] = []
            logger.info(
                "dry run: %s are loading indices; the running rebuild uses one of them",
                ", ".join(plan.delete_first),
            )
        elif plan.delete_first:
            logger.info(
                "dry run: would delete leftover indices %s",
                ", ".join(plan.delete_first),
            )
        return details

    if plan.delete_first:
        logger.info(
            "deleting leftover indices of earlier runs: %s",
            ", ".join(plan.delete_first),
        )
        admin.delete(plan.delete_first)
    rebuild = Rebuild(context, client, admin, plan.new_index, rebuild_settings)
    try:
        details.update(rebuild.run(plan.current))
    except RebuildStopped:
        context.left = max(0, (context.total or 0) - context.processed)
        details.update(swapped=False)
        logger.warning(
            "rebuild stopped before the swap; %s keeps its current index", plan.alias
        )

    return details
