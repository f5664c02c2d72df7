"""The OpenSearch client built from the `[index]` configuration, with error translation.

Every request that damjobs makes runs inside `translated_errors`, which turns the
client's exceptions into SearchError with the original as its cause.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from damjobs import config
from damjobs.errors import SearchError

logger = logging.getLogger(__name__)


def connection_options(settings: config.Settings, pool_size: int = 4) -> dict[str, Any]:
    """Return the keyword arguments of `OpenSearch(...)` for the configured cluster."""
    hosts = [host.strip().rstrip("/") for host in settings["index.hosts"].split(",")]
    options: dict[str, Any] = {
        "hosts": hosts,
        "timeout": settings["index.timeout_seconds"],
        # The transport retries timeouts and these gateway errors on another host;
        # HTTP 429 is retried per document by the bulk loader instead.
        "max_retries": 3,
        "retry_on_timeout": True,
        "retry_on_status": (502, 503, 504),
        "pool_maxsize": pool_size,
        "http_compress": False,
    }
    if settings["index.user"]:
        options["http_auth"] = (settings["index.user"], settings["index.password"])
    if any(host.startswith("https://") for host in hosts):
        options["verify_certs"] = settings["index.verify_certs"]
        options["ssl_show_warn"] = settings["index.verify_certs"]
        if settings["index.ca_file"]:
            base = settings.path.parent if settings.path is not None else None
            ca_file = settings["index.ca_file"]
            if base is not None:
                ca_file = str(config.resolve_path(ca_file, base.resolve()))
            options["ca_certs"] = ca_file

    return options


def make_client(settings: config.Settings, pool_size: int = 4) -> OpenSearch:
    """Build an OpenSearch client for the configured cluster; no request is sent yet."""
    return OpenSearch(**connection_options(settings, pool_size))


def describe_error(error: os_errors.OpenSearchException) -> str:
    """Return a one-line description of a client error with the server's reason."""
    if isinstance(error, os_errors.ConnectionTimeout):
        return f"timed out: {error.info}"
    if isinstance(error, os_errors.ConnectionError):
        return f"connection failed: {error.info}"
    if isinstance(error, os_errors.TransportError):
        reason = error.error
        info = error.info
        if isinstance(info, dict):
            cause = info.get("error")
            if isinstance(cause, dict):
                reason = f"{cause.get('type', reason)}: {cause.get('reason', '')}"
        return f"HTTP {error.status_code} {reason}"

    return f"{type(error).__name__}: {error}"


def hint_for(error: os_errors.OpenSearchException) -> str:
    if isinstance(error, os_errors.SSLError):
        return "check index.verify_certs and index.ca_file"
    if isinstance(error, os_errors.ConnectionError):
        return "check index.hosts and that the cluster is running"
    if isinstance(
        error, (os_errors.AuthenticationException, os_errors.AuthorizationException)
    ):
        return "check index.user, DAMJOBS__INDEX__PASSWORD and the user's permissions"
    if isinstance(error, os_errors.SerializationError):
        # The response was not JSON, such as an HTML page from a proxy or another service.
        return (
            "check that index.hosts names an OpenSearch node, not a proxy page or "
            "another service"
        )

    return ""


@contextmanager
def translated_errors(action: str) -> Iterator[None]:
    """Turn OpenSearch client errors raised while doing `action` into SearchError."""
    try:
        yield
    except os_errors.OpenSearchException as error:
        raise SearchError(
            f"OpenSearch request failed while {action}: {describe_error(error)}",
            hint=hint_for(error),
        ) from error
