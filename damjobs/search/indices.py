"""Pure decisions about the indices behind an alias: names, cleanup and rollback.

damjobs names each index it creates ALIAS-YYYYMMDD-HHMMSS-mmm (UTC) and marks it in the
mapping's `_meta` with the alias and a state: "loading" until the rebuild has verified
it, then "complete". Only indices with both the name and the mark are ever deleted.
"""

import dataclasses
import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any

META_KEY = "damjobs"
LOADING = "loading"
COMPLETE = "complete"


@dataclasses.dataclass(frozen=True)
class ManagedIndex:
    """An index that a rebuild created for the alias."""

    name: str
    state: str
    behind_alias: bool
    mapping_version: int | None = None
    started_at: str | None = None
    completed_at: str | None = None
    # Closed by hand. An alias on a closed index fails every search, so a rollback never
    # picks it, and cleanup does not delete it either.
    closed: bool = False


@dataclasses.dataclass(frozen=True)
class CleanupPlan:
    """Indices to delete before or after a swap, and the previous indices kept."""

    partial: tuple[str, ...]
    old: tuple[str, ...]
    kept: tuple[str, ...]

    @property
    def doomed(self) -> tuple[str, ...]:
        return self.partial + self.old


def new_index_name(alias: str, now: datetime.datetime) -> str:
    """Return the name of a new index for `alias` created at the UTC time `now`."""
    return f"{alias}-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"


def is_managed_name(alias: str, name: str) -> bool:
    """Return True when `name` has the form of an index that a rebuild made for `alias`."""
    return re.fullmatch(re.escape(alias) + r"-\d{8}-\d{6}-\d{3}", name) is not None


def managed_indices(
    alias: str,
    described: Mapping[str, Any],
    alias_targets: Iterable[str],
    closed: Iterable[str] = (),
) -> list[ManagedIndex]:
    """
    Return the indices of `alias` among `described` (the response of GET INDEX/_mapping),
    oldest first. An index needs the managed name and a `_meta` mark for this alias.
    `closed` names the closed indices.
    """
    targets = set(alias_targets)
    closed_names = set(closed)
    found = []
    for name, body in described.items():
        if not is_managed_name(alias, name):
            continue
        meta = ((body or {}).get("mappings") or {}).get("_meta") or {}
        mark = meta.get(META_KEY)
        if not isinstance(mark, dict) or mark.get("alias") != alias:
            continue
        found.append(
            ManagedIndex(
                name=name,
                state=str(mark.get("state", LOADING)),
                behind_alias=name in targets,
                mapping_version=mark.get("mapping_version"),
                started_at=mark.get("started_at"),
                completed_at=mark.get("completed_at"),
                closed=name in closed_names,
            )
        )

    return sorted(found, key=lambda index: index.name)


def plan_cleanup(
    indices: Iterable[ManagedIndex], keep_old: int, previous_targets: Iterable[str] = ()
) -> CleanupPlan:
    """
    Decide which indices to delete: every loading index that no alias uses (a leftover
    of a failed or killed run), and complete ones beyond `keep_old` that the alias no
    longer points at. The kept ones are `previous_targets` (where the alias pointed
    before a swap, which may be an older index after a rollback), then the newest.
    Closed indices are neither kept nor deleted.

    Callers hold the rebuild-index job slot, so no other rebuild is loading meanwhile.
    """
    partial = []
    previous = []
    for index in indices:
        if index.behind_alias or index.closed:
            continue
        if index.state == COMPLETE:
            previous.append(index.name)
        else:
            partial.append(index.name)
    preferred = set(previous_targets)
    previous.sort(key=lambda name: (name in preferred, name), reverse=True)
    kept = previous[:keep_old]
    old = previous[keep_old:]

    return CleanupPlan(
        partial=tuple(sorted(partial)), old=tuple(sorted(old)), kept=tuple(kept)
    )


def rollback_target(
    indices: Iterable[ManagedIndex], alias_targets: Iterable[str], requested: str | None
) -> str:
    """
    Return the index that a rollback points the alias at.

    Without `requested`, that is the newest complete index older than the oldest index
    the alias now points at (or the newest complete one, when the alias points at none
    of its own). Closed indices are never picked. Raise ValueError with the reason when
    there is none.
    """
    indices = list(indices)
    complete = [i for i in indices if i.state == COMPLETE and not i.closed]
    targets = sorted(alias_targets)
    if requested is not None:
        if any(index.name == requested and index.closed for index in indices):
            raise ValueError(
                f"{requested} is closed, and searches through the alias would fail; "
                f"open it first (POST /{requested}/_open)"
            )
        names = {index.name for index in complete}
        if requested not in names:
            raise ValueError(
                f"{requested} is not a complete index of this alias; "
                f"complete indices: {', '.join(sorted(names)) or 'none'}"
            )
        if requested in targets and len(targets) == 1:
            raise ValueError(f"the alias already points at {requested}")
        return requested

    managed_targets = [name for name in targets if name in {i.name for i in complete}]
    candidates = [index.name for index in complete if index.name not in targets]
    if managed_targets:
        oldest_target = min(managed_targets)
        candidates = [name for name in candidates if name < oldest_target]
    if not candidates:
        raise ValueError("no previous complete index is left to roll back to")

    return max(candidates)
