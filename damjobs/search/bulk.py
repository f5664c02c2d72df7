"""Bulk indexing with per-item checks, retries of rejected items and bounded concurrency.

A bulk response with HTTP 200 can still report failed items, so every item's status is
read. Items rejected with 429, because the node's write queue is full, are sent again after
a doubling wait. Any other item failure is reported with its file id.
"""

import concurrent.futures
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from damjobs.errors import SearchError
from damjobs.search import client as search_client

logger = logging.getLogger(__name__)

INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class Action:
    """One bulk operation: index a document, or delete the document of a file."""

    file_id: int
    document: dict[str, Any] | None  # None deletes

    def encode(self, quoted_index: str) -> "EncodedAction":
        """Encode this operation as NDJSON lines; `quoted_index` is the JSON-quoted name."""
        operation = "delete" if self.document is None else "index"
        header = f'{{"{operation}": {{"_index": {quoted_index}, "_id": "{self.file_id}"}}}}\n'
        if self.document is None:
            return EncodedAction(self.file_id, True, header.encode())
        body = json.dumps(self.document, ensure_ascii=False, separators=(",", ":"))

        return EncodedAction(self.file_id, False, f"{header}{body}\n".encode())


@dataclasses.dataclass(frozen=True)
class EncodedAction:
    """A bulk operation as the UTF-8 NDJSON lines sent to the cluster."""

    file_id: int
    is_delete: bool
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def encode_or_fail(
    action: Action, quoted_index: str, outcome: "BulkOutcome"
) -> EncodedAction | None:
    """Return `action` encoded, or None after adding it to `outcome.failures`."""
    try:
        return action.encode(quoted_index)
    except (TypeError, ValueError) as error:
        outcome.failures.append(
            (action.file_id, f"the document cannot be encoded as JSON: {error}")
        )
        return None


def encode_all(
    actions: list[Action], index: str, outcome: "BulkOutcome"
) -> list[EncodedAction]:
    """Encode `actions`; those that cannot be encoded go to `outcome.failures`."""
    quoted_index = json.dumps(index)
    encoded = (encode_or_fail(action, quoted_index, outcome) for action in actions)

    return [action for action in encoded if action is not None]


@dataclasses.dataclass
class BulkOutcome:
    """Counts of one or more bulk requests by result, with (file id, reason) per failure."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    not_found: int = 0
    retried: int = 0
    failures: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    @property
    def indexed(self) -> int:
        return self.created + self.updated

    @property
    def net_documents(self) -> int:
        """Change in the index's document count caused by these requests."""
        return self.created - self.deleted

    def add(self, other: "BulkOutcome") -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        self.not_found += other.not_found
        self.retried += other.retried
        self.failures.extend(other.failures)


def backoff_seconds(attempt: int) -> float:
    """Return the wait before retry `attempt` (1, 2, ...): doubling, capped, with jitter."""
    base = min(MAX_BACKOFF_SECONDS, INITIAL_BACKOFF_SECONDS * 2 ** (attempt - 1))

    return base * random.uniform(0.75, 1.0)


def item_reason(result: dict[str, Any]) -> str:
    error = result.get("error")
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}"

    return str(error or f"HTTP {result.get('status')}")


def send(
    client: OpenSearch,
    index: str,
    actions: list[Action],
    max_retries: int,
    sleep: Callable[[float], None] = time.sleep,
) -> BulkOutcome:
    """
    Send `actions` to `index` and return what happened to each item.

    Items rejected with 429, and whole requests rejected with 429, are sent again up to
    `max_retries` times. Raise SearchError when a whole request fails otherwise.
    """
    outcome = BulkOutcome()
    encoded = encode_all(actions, index, outcome)
    outcome.add(send_encoded(client, index, encoded, max_retries, sleep))

    return outcome


def send_encoded(
    client: OpenSearch,
    index: str,
    actions: list[EncodedAction],
    max_retries: int,
    sleep: Callable[[float], None] = time.sleep,
) -> BulkOutcome:
    """Send already encoded `actions`, with the same retries and checks as `send`."""
    outcome = BulkOutcome()
    pending = actions
    attempt = 0
    while pending:
        body = b"".join(action.data for action in pending)
        try:
            response = client.bulk(body=body)
        except os_errors.TransportError as error:
            if error.status_code == 413:
                outcome.add(_send_halves(client, index, pending, max_retries, sleep))
                return outcome
            if error.status_code == 429 and attempt < max_retries:
                attempt += 1
                outcome.retried += len(pending)
                logger.warning(
                    "bulk request of %d items rejected with HTTP 429; retry %d of %d",
                    len(pending),
                    attempt,
                    max_retries,
                )
                sleep(backoff_seconds(attempt))
                continue
            with search_client.translated_errors(f"sending a bulk request to {index}"):
                raise
        rejected = []
        for action, item in zip(pending, response["items"], strict=True):
            result = item.get("index") or item.get("delete") or {}
            status = result.get("status", 0)
            if status == 429 and attempt < max_retries:
                rejected.append(action)
            elif status >= 300 and not (action.is_delete and status == 404):
                outcome.failures.append((action.file_id, item_reason(result)))
            elif result.get("result") == "created":
                outcome.created += 1
            elif result.get("result") == "updated":
                outcome.updated += 1
            elif result.get("result") == "deleted":
                outcome.deleted += 1
            else:
                outcome.not_found += 1
        if rejected:
            attempt += 1
            outcome.retried += len(rejected)
            logger.info(
                "%d items rejected with HTTP 429; retry %d of %d",
                len(rejected),
                attempt,
                max_retries,
            )
            sleep(backoff_seconds(attempt))
        pending = rejected

    return outcome


def _send_halves(
    client: OpenSearch,
    index: str,
    actions: list[EncodedAction],
    max_retries: int,
    sleep: Callable[[float], None],
) -> BulkOutcome:
    """
    Send a request that the node rejected as too large (HTTP 413) in two halves, and so
    on down to single documents. A single document that is still too large is a failed
    item, so one oversized document does not fail the whole run.
    """
    size = sum(action.size for action in actions)
    if len(actions) == 1:
        outcome = BulkOutcome()
        outcome.failures.append(
            (
                actions[0].file_id,
                f"the document is {size} bytes, more than the node accepts in one "
                "request (its http.max_content_length)",
            )
        )
        return outcome
    logger.warning(
        "bulk request of %d items and %d bytes rejected with HTTP 413 as too large; "
        "sending it in two halves",
        len(actions),
        size,
    )
    half = len(actions) // 2
    outcome = send_encoded(client, index, actions[:half], max_retries, sleep)
    outcome.add(send_encoded(client, index, actions[half:], max_retries, sleep))

    return outcome


class BulkLoader:
    """
    Send bulk requests of about `max_bytes` from a few threads while the caller reads
    the next batch.

    Submitted actions are encoded to UTF-8 at once and collected until they fill a
    request of `max_bytes`, so requests keep that size whatever the batch size and
    document size. A single action larger than `max_bytes` goes alone. At most
    `concurrency` requests are in flight. `submit` waits for the oldest one when all are
    busy, so at most `concurrency + 1` requests' worth of encoded data plus one batch
    are in memory.
    """

    def __init__(
        self,
        client: OpenSearch,
        index: str,
        concurrency: int,
        max_retries: int,
        on_done: Callable[[int, BulkOutcome], None],
        max_bytes: int,
    ) -> None:
        self.client = client
        self.index = index
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.on_done = on_done
        self.max_bytes = max_bytes
        self._quoted_index = json.dumps(index)
        self._collected: list[EncodedAction] = []
        self._collected_bytes = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="bulk"
        )
        self._in_flight: list[tuple[int, concurrent.futures.Future[BulkOutcome]]] = []

    def submit(self, actions: list[Action]) -> None:
        """Encode `actions` and send every request of `max_bytes` that they fill."""
        unencodable = BulkOutcome()
        for action in actions:
            encoded = encode_or_fail(action, self._quoted_index, unencodable)
            if encoded is None:
                continue
            if (
                self._collected
                and self._collected_bytes + encoded.size > self.max_bytes
            ):
                self._dispatch()
            self._collected.append(encoded)
            self._collected_bytes += encoded.size
        if unencodable.failures:
            self.on_done(len(unencodable.failures), unencodable)

    def drain(self) -> None:
        """Send what is collected, wait for every request in flight and report it."""
        if self._collected:
            self._dispatch()
        while self._in_flight:
            self._finish_oldest()

    def close(self) -> None:
        """Wait for the requests in flight without reporting them, then stop the threads."""
        for _count, future in self._in_flight:
            future.cancel()
        self._in_flight.clear()
        self._collected.clear()
        self._executor.shutdown(wait=True)

    def _dispatch(self) -> None:
        while len(self._in_flight) >= self.concurrency:
            self._finish_oldest()
        request, self._collected, self._collected_bytes = self._collected, [], 0
        future = self._executor.submit(
            send_encoded, self.client, self.index, request, self.max_retries
        )
        self._in_flight.append((len(request), future))

    def _finish_oldest(self) -> None:
        count, future = self._in_flight.pop(0)
        try:
            outcome = future.result()
        except SearchError:
            self.close()
            raise
        self.on_done(count, outcome)


def describe_failures(failures: list[tuple[int, str]], limit: int = 5) -> str:
    shown = ", ".join(
        f"file {file_id}: {reason}" for file_id, reason in failures[:limit]
    )
    more = len(failures) - limit

    return shown + (f" and {more} more" if more > 0 else "")
