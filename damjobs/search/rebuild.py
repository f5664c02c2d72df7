"""Rebuild the files index aside and swap the alias to it in one atomic update.

The steps: create a timestamped index with load settings (no refresh, no replicas,
asynchronous translog) and stream every file into it in keyset batches. Then restore the
settings, index again what changed meanwhile, refresh and verify the document count. Finally mark the index complete,
move the alias, index once more what changed during the swap, and delete old indices.

Until the alias moves, searches keep using the old index. When a step fails, the new index
is deleted, and if even that fails, the next run deletes it.
"""

import dataclasses
import datetime
import logging
import time
from collections.abc import Iterator
from typing import Any

from opensearchpy import OpenSearch

from damjobs import db, runner
from damjobs.errors import SearchError
from damjobs.search import bulk, documents, indices, source
from damjobs.search.admin import IndexAdmin
from damjobs.search.client import translated_errors

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RebuildSettings:
    """The `[index]` settings that a rebuild uses."""

    batch_size: int
    bulk_concurrency: int
    bulk_max_bytes: int
    max_retries: int
    max_failed_documents: int
    keep_old_indices: int
    shards: int
    replicas: int
    refresh_interval: str
    catch_up_slack_seconds: int

    @classmethod
    def from_settings(cls, settings: Any) -> "RebuildSettings":
        return cls(
            **{
                field.name: settings[f"index.{field.name}"]
                for field in dataclasses.fields(cls)
            }
        )


class RebuildStopped(Exception):
    """The run was asked to stop before the swap."""


@dataclasses.dataclass
class Counters:
    loaded: int = 0
    caught_up: int = 0
    removed_meanwhile: int = 0
    retried: int = 0
    net_documents: int = 0


def build_actions(
    batch: source.RecordBatch,
) -> tuple[list[bulk.Action], bulk.BulkOutcome]:
    """
    Return the index actions of a batch's records, and an outcome whose failures are
    the batch's unreadable files plus the records whose document cannot be built.
    """
    failed = bulk.BulkOutcome(failures=list(batch.unreadable))
    actions = []
    for record in batch.records:
        try:
            document = documents.build_document(record)
        except (TypeError, ValueError, AttributeError) as error:
            # A value of an unexpected type, such as bytes from an SQLite BLOB.
            failed.failures.append(
                (record.file.id, f"its document cannot be built: {error!r}")
            )
            continue
        actions.append(bulk.Action(record.file.id, document))

    return actions, failed


class Rebuild:
    """One rebuild of the index behind `admin.alias` into the new index `index`."""

    def __init__(
        self,
        context: runner.RunContext,
        client: OpenSearch,
        admin: IndexAdmin,
        index: str,
        options: RebuildSettings,
    ) -> None:
        self.context = context
        self.client = client
        self.admin = admin
        self.index = index
        self.options = options
        self.folders = source.FolderTree()
        self.counters = Counters()
        # At most max_failed_documents + 1 ids, because the run stops beyond that.
        self.failed_ids: set[int] = set()

    # --- the whole run ------------------------------------------------------------------

    def run(self, old_targets: tuple[str, ...]) -> dict[str, Any]:
        """Build the new index and swap the alias to it; return the summary details."""
        database = self.context.database
        slack = datetime.timedelta(seconds=self.options.catch_up_slack_seconds)
        started_at = db.server_now(database)
        source.delete_changes_before(database, started_at - slack)
        self.admin.create(self.index, self.options.shards, started_at)
        load_started = time.monotonic()
        try:
            try:
                self.load_all()
                load_seconds = time.monotonic() - load_started
                since = started_at - slack
                for _pass in range(2):
                    pass_started = db.server_now(database)
                    self.catch_up(since)
                    since = pass_started - slack
            finally:
                self._restore_settings()
            self.verify_count()
            self.admin.mark_complete(self.index, started_at)
        except BaseException:
            self._abandon()
            raise
        self.admin.point_alias(self.index, old_targets)

        final_started = db.server_now(database)
        self.catch_up(since, live=True)
        source.delete_changes_before(database, final_started - slack)
        removed = self._delete_old_indices(old_targets)

        return {
            "alias": self.admin.alias,
            "index": self.index,
            "previous": list(old_targets),
            "swapped": True,
            "documents": self.counters.net_documents,
            "caught_up": self.counters.caught_up,
            "removed_meanwhile": self.counters.removed_meanwhile,
            "retried_429": self.counters.retried,
            "deleted_indices": removed,
            "load_seconds": round(load_seconds, 3),
            "documents_per_second": round(
                self.counters.loaded / max(load_seconds, 1e-6), 1
            ),
        }

    # --- loading ------------------------------------------------------------------------

    def load_all(self) -> None:
        """Stream every file into the new index; raise RebuildStopped on a stop request."""
        self.context.set_total(source.count_files())
        loader = bulk.BulkLoader(
            self.client,
            self.index,
            self.options.bulk_concurrency,
            self.options.max_retries,
            self._loaded,
            self.options.bulk_max_bytes,
        )
        try:
            batches = source.iter_record_batches(self.options.batch_size, self.folders)
            for batch in batches:
                if self.context.stop:
                    raise RebuildStopped(self.context.stop.reason)
                actions, failed = build_actions(batch)
                self._record(failed)
                loader.submit(actions)
            loader.drain()
        finally:
            loader.close()

    def _loaded(self, sent: int, outcome: bulk.BulkOutcome) -> None:
        self._record(outcome)
        self.counters.loaded += outcome.indexed
        self.context.count(processed=sent - len(outcome.failures))

    def _record(self, outcome: bulk.BulkOutcome) -> None:
        """Count an outcome and report its failed items; stop when too many failed."""
        self.counters.retried += outcome.retried
        self.counters.net_documents += outcome.net_documents
        for file_id, reason in outcome.failures:
            # A file that failed in the load fails again when a catch-up pass sends it.
            if file_id in self.failed_ids:
                continue
            self.failed_ids.add(file_id)
            self.context.count(failed=1)
            logger.error(
                "file %d could not be indexed in %s: %s",
                file_id,
                self.index,
                reason,
                extra={"file_id": file_id},
            )
        if len(self.failed_ids) > self.options.max_failed_documents:
            raise SearchError(
                f"{len(self.failed_ids)} documents failed to index, more than "
                f"index.max_failed_documents = {self.options.max_failed_documents}; the alias "
                f"stays on its current index",
                hint="the errors above name the files and the reasons",
            )

    # --- changes made during the rebuild ------------------------------------------------

    def catch_up(self, since: datetime.datetime, live: bool = False) -> None:
        """
        Index again every file whose change was logged at or after `since`, and delete the
        documents of files that no longer exist. A changed folder stands for every file
        under it, in the database and in the index.
        """
        self.admin.refresh(self.index)
        batch_size = self.options.batch_size
        # Cached parents may predate a folder move, so each pass reads them afresh.
        self.folders = source.FolderTree()
        for file_ids, folder_ids in source.iter_changes(since, batch_size):
            if folder_ids:
                self.folders = source.FolderTree()
                subtree = source.folder_subtree(folder_ids)
                for ids in source.iter_file_ids_in_folders(subtree, batch_size):
                    self._index_again(ids)
                for ids in self._indexed_ids_under(folder_ids | subtree):
                    self._index_again(ids)
            ordered = sorted(file_ids)
            for start in range(0, len(ordered), batch_size):
                self._index_again(ordered[start : start + batch_size])
        if live:
            logger.info("indexed again the files changed during the swap")

    def _index_again(self, file_ids: list[int]) -> None:
        batch = source.read_records(file_ids, self.folders)
        # An unreadable file still exists, so its document must not be deleted.
        present = {record.file.id for record in batch.records}
        present |= {file_id for file_id, _reason in batch.unreadable}
        actions, outcome = build_actions(batch)
        actions += [
            bulk.Action(file_id, None) for file_id in file_ids if file_id not in present
        ]
        # Sent one request at a time, so two changes of one file arrive in order.
        outcome.add(
            bulk.send(self.client, self.index, actions, self.options.max_retries)
        )
        self.counters.caught_up += len(batch.records)
        self.counters.removed_meanwhile += outcome.deleted
        self._record(outcome)

    def _indexed_ids_under(self, folder_ids: set[int]) -> Iterator[list[int]]:
        """Yield the file ids that the new index lists under `folder_ids`, in batches."""
        folder_list = sorted(folder_ids)
        query = {
            "bool": {
                "should": [
                    {"terms": {"folder_id": folder_list}},
                    {"terms": {"folder_ancestor_ids": folder_list}},
                ],
                "minimum_should_match": 1,
            }
        }
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "query": query,
                "size": self.options.batch_size,
                "sort": [{"id": "asc"}],
                "_source": False,
            }
            if after is not None:
                body["search_after"] = after
            with translated_errors(
                f"searching {self.index} for files under changed folders"
            ):
                hits = self.client.search(index=self.index, body=body)["hits"]["hits"]
            if not hits:
                return
            yield [int(hit["_id"]) for hit in hits]
            after = hits[-1]["sort"]

    # --- settings, verification, cleanup ------------------------------------------------

    def _restore_settings(self) -> None:
        try:
            self.admin.apply_settings(
                self.index, self.options.refresh_interval, self.options.replicas
            )
        except SearchError as error:
            logger.error(
                "could not restore the settings of %s: %s", self.index, error.message
            )
            raise

    def verify_count(self) -> None:
        self.admin.refresh(self.index)
        counted = self.admin.count(self.index)
        if counted != self.counters.net_documents:
            raise SearchError(
                f"{self.index} contains {counted} documents, but the bulk responses created "
                f"{self.counters.net_documents}; the alias stays on its current index",
                hint="check the cluster's logs, then run rebuild-index again",
            )
        logger.info("%s contains %d documents, as expected", self.index, counted)

    def _abandon(self) -> None:
        failed = self.admin.delete((self.index,))
        if failed:
            logger.warning(
                "the partial index %s is left; the next rebuild deletes it", self.index
            )

    def _delete_old_indices(self, previous_targets: tuple[str, ...]) -> list[str]:
        state = self.admin.state()
        plan = indices.plan_cleanup(
            state.managed, self.options.keep_old_indices, previous_targets
        )
        failed = self.admin.delete(plan.doomed)

        return [name for name in plan.doomed if name not in failed]
