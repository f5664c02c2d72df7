"""Fixtures that give tests real databases and a real OpenSearch node.

The servers start on first use, once per test session, so a run that requests none of
these fixtures starts no server. A server that fails to start is an error in every test
that requests it, never a skip: scripts/install-system-deps installs what they need.

Tests that use a server get the `mariadb` or `opensearch` marker, so `-m "not mariadb"`
and `-m "not opensearch"` leave them out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.mariadb import MariaDBServer
from tests.services.opensearch import OpenSearchNode

# Fixtures whose tests get a marker of the same meaning. database_url marks its MariaDB
# case through pytest.param instead, because it requests the server only in that case.
_MARKER_BY_FIXTURE = {
    "mariadb_server": "mariadb",
    "opensearch_server": "opensearch",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixture_names = getattr(item, "fixturenames", ())
        for fixture_name, marker in _MARKER_BY_FIXTURE.items():
            if fixture_name in fixture_names:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """A MariaDB server on 127.0.0.1 for the whole session. Root has no password."""
    server = MariaDBServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def opensearch_server() -> Iterator[OpenSearchNode]:
    """A single-node OpenSearch cluster on 127.0.0.1, shared by the whole session."""
    node = OpenSearchNode()
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def opensearch_url(opensearch_server: OpenSearchNode) -> str:
    """Base URL of the session's OpenSearch node, such as http://127.0.0.1:9200."""
    return opensearch_server.url


@pytest.fixture
def mariadb_url(mariadb_server: MariaDBServer) -> Iterator[str]:
    """URL of a new, empty MariaDB database, dropped after the test."""
    url = mariadb_server.create_database()
    yield url
    mariadb_server.drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a new, empty database: an SQLite file, then a MariaDB database.

    Each test that requests it runs once per database kind, with the ids
    `[sqlite]` and `[mariadb]`.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'damjobs.db'}"
        return

    server: MariaDBServer = request.getfixturevalue("mariadb_server")
    url = server.create_database()
    yield url
    server.drop_database(url)
