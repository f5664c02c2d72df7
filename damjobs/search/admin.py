"""Cluster-side operations on the indices behind one alias: inspect, create, swap, delete.

Every method translates client errors into SearchError. The decisions (which index to
delete, which one to roll back to) are pure functions in `damjobs.search.indices`.
"""

import dataclasses
import datetime
import logging
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from damjobs.errors import SearchError, UsageError
from damjobs.search import indices, mapping
from damjobs.search.client import translated_errors

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AliasState:
    """The alias as the cluster reports it: its target indices and the managed ones."""

    alias: str
    targets: tuple[str, ...]
    managed: tuple[indices.ManagedIndex, ...]


def alias_conflict(alias: str) -> SearchError:
    """Return the error for a concrete index that carries the alias's name."""
    migration = (
        f"To migrate, either set index.alias to a new name, run rebuild-index and point the "
        f"DAM at that alias; or snapshot {alias}, delete it by hand and run rebuild-index, "
        "which then creates the alias under that name"
    )

    # The runner logs only the message of a failed job, so it carries the advice too.
    return SearchError(
        f"{alias} is an index, not an alias, so rebuild-index cannot swap it, and damjobs "
        f"never deletes that index. {migration}",
        hint='docs/jobs/rebuild-index.md, "Migrating from a real index named like the '
        'alias", gives both ways step by step',
    )


class IndexAdmin:
    """The indices of one alias on one cluster."""

    def __init__(self, client: OpenSearch, alias: str) -> None:
        self.client = client
        self.alias = alias

    def alias_targets(self) -> tuple[str, ...]:
        """Return the indices the alias points at; raise SearchError if it is an index."""
        with translated_errors(f"reading the alias {self.alias}"):
            if self.client.indices.exists_alias(name=self.alias):
                response = self.client.indices.get_alias(name=self.alias)
                return tuple(sorted(response))
            if self.client.indices.exists(index=self.alias):
                raise alias_conflict(self.alias)

        return ()

    def state(self) -> AliasState:
        targets = self.alias_targets()
        with translated_errors(f"listing the indices of {self.alias}"):
            described = self.client.indices.get_mapping(
                index=f"{self.alias}-*",
                allow_no_indices=True,
                ignore_unavailable=True,
                expand_wildcards="all",
            )
            rows = self.client.cat.indices(
                index=f"{self.alias}-*",
                format="json",
                h="index,status",
                expand_wildcards="all",
            )
        closed = [row["index"] for row in rows if row.get("status") == "close"]
        managed = indices.managed_indices(self.alias, described, targets, closed)

        return AliasState(self.alias, targets, tuple(managed))

    def create(self, name: str, shards: int, started_at: datetime.datetime) -> None:
        """Create `name` with the load settings and mark it as loading."""
        meta = self._meta(indices.LOADING, started_at=started_at)
        body = mapping.index_body(shards, meta)
        with translated_errors(f"creating the index {name}"):
            self.client.indices.create(index=name, body=body)
        logger.info("created index %s", name)

    def mark_complete(self, name: str, started_at: datetime.datetime) -> None:
        meta = self._meta(
            indices.COMPLETE,
            started_at=started_at,
            completed_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
        )
        with translated_errors(f"marking the index {name} complete"):
            self.client.indices.put_mapping(index=name, body={"_meta": meta})

    def _meta(self, state: str, **times: datetime.datetime) -> dict[str, Any]:
        mark: dict[str, Any] = {
            "alias": self.alias,
            "state": state,
            "mapping_version": mapping.MAPPING_VERSION,
        }
        for key, value in times.items():
            mark[key] = value.isoformat(timespec="seconds") + "Z"

        return {indices.META_KEY: mark}

    def apply_settings(self, name: str, refresh_interval: str, replicas: int) -> None:
        """Give `name` its settings for searching, replacing the load settings."""
        body = {
            "index": {
                "refresh_interval": refresh_interval,
                "number_of_replicas": replicas,
                "translog.durability": mapping.DEFAULT_TRANSLOG_DURABILITY,
            }
        }
        with translated_errors(f"changing the settings of {name}"):
            self.client.indices.put_settings(index=name, body=body)

    def refresh(self, name: str) -> None:
        with translated_errors(f"refreshing {name}"):
            self.client.indices.refresh(index=name)

    def count(self, name: str) -> int:
        with translated_errors(f"counting the documents of {name}"):
            return int(self.client.count(index=name)["count"])

    def point_alias(self, new: str, old: tuple[str, ...]) -> None:
        """Move the alias from `old` to `new` in one atomic update."""
        actions: list[dict[str, Any]] = [{"add": {"index": new, "alias": self.alias}}]
        actions += [
            {"remove": {"index": name, "alias": self.alias}}
            for name in old
            if name != new
        ]
        with translated_errors(f"pointing the alias {self.alias} at {new}"):
            self.client.indices.update_aliases(body={"actions": actions})
        logger.info(
            "alias %s now points at %s (was %s)",
            self.alias,
            new,
            ", ".join(old) or "none",
        )

    def delete(self, names: tuple[str, ...]) -> list[str]:
        """Delete managed indices one by one; return the names that could not be deleted."""
        failed = []
        for name in names:
            if not indices.is_managed_name(self.alias, name):
                raise AssertionError(
                    f"refusing to delete {name}, which damjobs did not create"
                )
            try:
                self.client.indices.delete(index=name)
                logger.info("deleted index %s", name)
            except os_errors.NotFoundError:
                continue
            except os_errors.OpenSearchException as error:
                logger.warning("could not delete index %s: %s", name, error)
                failed.append(name)

        return failed

    def statistics(
        self, names: tuple[str, ...], closed: frozenset[str] = frozenset()
    ) -> dict[str, dict[str, Any]]:
        """
        Return documents, store size and health of each index, by name. The documents of
        a `closed` index cannot be counted and are None.
        """
        if not names:
            return {}
        with translated_errors("reading index statistics"):
            rows = self.client.cat.indices(
                index=",".join(names),
                format="json",
                h="index,health,store.size,creation.date.string",
                bytes="b",
            )

        return {
            row["index"]: {
                "health": row.get("health"),
                "documents": None
                if row["index"] in closed
                else self._file_count(row["index"]),
                "size_bytes": int(row["store.size"]) if row.get("store.size") else None,
                "created": row.get("creation.date.string"),
            }
            for row in rows
        }

    def _file_count(self, name: str) -> int | None:
        """
        Return the number of file documents in `name`, or None when it cannot be counted.
        The `docs.count` of `_cat/indices` is higher, because it also counts each nested
        description, attribute and cropping as a document.
        """
        try:
            return int(self.client.count(index=name)["count"])
        except os_errors.OpenSearchException as error:
            logger.warning("could not count the documents of %s: %s", name, error)
            return None

    def status(self) -> dict[str, Any]:
        """Return the alias's targets and every managed index with its statistics."""
        state = self.state()
        names = tuple(sorted({i.name for i in state.managed} | set(state.targets)))
        closed = frozenset(i.name for i in state.managed if i.closed)
        statistics = self.statistics(names, closed)
        listed = []
        for name in names:
            managed = next((i for i in state.managed if i.name == name), None)
            listed.append(
                {
                    "name": name,
                    "behind_alias": name in state.targets,
                    "state": managed.state if managed else "not created by damjobs",
                    "closed": managed.closed if managed else False,
                    "mapping_version": managed.mapping_version if managed else None,
                    "completed_at": managed.completed_at if managed else None,
                    **statistics.get(name, {}),
                }
            )

        return {"alias": self.alias, "targets": list(state.targets), "indices": listed}

    def rollback(self, requested: str | None) -> tuple[tuple[str, ...], str]:
        """Point the alias at the previous complete index; return (old targets, new)."""
        state = self.state()
        try:
            target = indices.rollback_target(state.managed, state.targets, requested)
        except ValueError as error:
            if requested is not None:
                raise UsageError(
                    f"cannot roll back {self.alias} to {requested}: {error}",
                    hint="`damjobs index status` lists the indices; name a complete, "
                    "open one that the alias does not point at",
                ) from error
            raise SearchError(
                f"cannot roll back {self.alias}: {error}",
                hint="`damjobs index status` lists the indices; keep more of them with "
                "index.keep_old_indices",
            ) from error
        self.point_alias(target, state.targets)

        return state.targets, target
