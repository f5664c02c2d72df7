"""Checks that the servers from tests/services start and serve damjobs' clients."""

from __future__ import annotations

import sqlite3
from urllib.parse import urlsplit

import pymysql
import pytest
from opensearchpy import OpenSearch

from tests.services.mariadb import MariaDBServer


def _connect_mysql_url(url: str) -> pymysql.connections.Connection:
    parts = urlsplit(url)
    assert parts.scheme == "mysql"
    return pymysql.connect(
        host=parts.hostname,
        port=parts.port,
        user=parts.username,
        database=parts.path.lstrip("/"),
        charset="utf8mb4",
        autocommit=True,
    )


def _count_tables(url: str) -> int:
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
            return len(rows.fetchall())
        finally:
            connection.close()

    mysql_connection = _connect_mysql_url(url)
    try:
        with mysql_connection.cursor() as cursor:
            return int(cursor.execute("SHOW TABLES"))
    finally:
        mysql_connection.close()


def _create_marker_table(url: str) -> None:
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            connection.execute("CREATE TABLE marker (id INTEGER PRIMARY KEY)")
            connection.commit()
        finally:
            connection.close()
        return

    mysql_connection = _connect_mysql_url(url)
    try:
        with mysql_connection.cursor() as cursor:
            cursor.execute("CREATE TABLE marker (id INTEGER PRIMARY KEY)")
    finally:
        mysql_connection.close()


def test_mariadb_url_round_trip(mariadb_url: str) -> None:
    connection = _connect_mysql_url(mariadb_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE asset (id INTEGER PRIMARY KEY, title VARCHAR(100)) "
                "ENGINE=InnoDB"
            )
            cursor.execute(
                "INSERT INTO asset (id, title) VALUES (%s, %s), (%s, %s)",
                (1, "Zürich harbour", 2, "東京 skyline"),
            )
            cursor.execute("SELECT id, title FROM asset ORDER BY id")
            rows = cursor.fetchall()
    finally:
        connection.close()

    assert rows == ((1, "Zürich harbour"), (2, "東京 skyline"))


def test_mariadb_url_starts_empty(mariadb_url: str) -> None:
    assert _count_tables(mariadb_url) == 0


def test_mariadb_url_gets_marker(
    mariadb_url: str, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("mariadb") is not None
    assert request.node.get_closest_marker("opensearch") is None


def test_database_url_marks_mariadb_only(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    marker = request.node.get_closest_marker("mariadb")

    if database_url.startswith("sqlite:///"):
        assert marker is None
    else:
        assert marker is not None


def test_database_url_databases_independent(
    database_url: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A second database of the same kind, made the way the fixture makes them.
    if database_url.startswith("sqlite:///"):
        other_url = f"sqlite:///{tmp_path_factory.mktemp('other') / 'damjobs.db'}"
    else:
        server: MariaDBServer = request.getfixturevalue("mariadb_server")
        other_url = server.create_database()
        request.addfinalizer(lambda: server.drop_database(other_url))
    assert other_url != database_url

    _create_marker_table(database_url)

    assert _count_tables(database_url) == 1
    assert _count_tables(other_url) == 0


def test_opensearch_url_gets_marker(
    opensearch_url: str, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("opensearch") is not None


def test_opensearch_cluster_health(opensearch_url: str) -> None:
    client = OpenSearch(hosts=[opensearch_url], timeout=30)

    health = client.cluster.health(wait_for_status="yellow")

    assert health["status"] in ("yellow", "green")
    assert health["number_of_nodes"] == 1


def test_opensearch_index_and_search(opensearch_url: str) -> None:
    client = OpenSearch(hosts=[opensearch_url], timeout=30)
    index = "damjobs-test-services"
    client.indices.create(
        index=index,
        body={"settings": {"number_of_shards": 1, "number_of_replicas": 0}},
    )
    try:
        client.index(
            index=index,
            id="asset-1",
            body={"title": "Harbour at dusk", "keywords": ["harbour", "evening"]},
            refresh="wait_for",
        )

        response = client.search(
            index=index, body={"query": {"match": {"title": "harbour"}}}
        )
    finally:
        client.indices.delete(index=index)

    hits = response["hits"]["hits"]
    assert response["hits"]["total"]["value"] == 1
    assert hits[0]["_id"] == "asset-1"
    assert hits[0]["_source"]["title"] == "Harbour at dusk"
