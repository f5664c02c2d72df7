"""Fixtures for rebuild-index tests: a workspace whose [index] section names a fresh alias
on the session's OpenSearch node, plus helpers that add files with related rows."""

import itertools
import json
import os

import pytest
from opensearchpy import OpenSearch

from damjobs import config, db
from damjobs.db import models
from tests.helpers import make_workspace

_aliases = itertools.count(1)


def unique_alias(prefix="files"):
    return f"{prefix}-{os.getpid()}-{next(_aliases)}"


def make_search_workspace(folder, database_url, opensearch_url, **index_values):
    """Return a workspace whose [index] section uses the test node and a fresh alias."""
    alias = unique_alias()
    values = {
        "hosts": opensearch_url,
        "alias": alias,
        "replicas": 0,
        "batch_size": 50,
        "catch_up_slack_seconds": 5,
        **index_values,
    }
    workspace = make_workspace(folder, database_url)
    lines = []
    section = None
    for line in workspace.config_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            section = line
        name = line.split(" = ", 1)[0]
        if section == "[index]" and name in values:
            line = f"{name} = {json.dumps(values[name])}"
        lines.append(line)
    workspace.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    workspace.settings = config.load(workspace.config_path, {})
    workspace.alias = alias
    return workspace


@pytest.fixture
def search_client(opensearch_url):
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    yield client
    client.close()


@pytest.fixture
def workspace(tmp_path, database_url, opensearch_url, search_client):
    workspace = make_search_workspace(tmp_path / "ws", database_url, opensearch_url)
    yield workspace
    search_client.indices.delete(index=f"{workspace.alias}-*", ignore_unavailable=True)


def add_folder(name, parent=None):
    return models.Folder.insert(
        parent=parent, name=name, created_at=db.now(models.database_proxy.obj)
    ).execute()


def add_file(folder, name, **columns):
    database = models.database_proxy.obj
    values = dict(
        folder=folder,
        name=name,
        path=f"{folder}/{name}",
        extension=name.rsplit(".", 1)[-1],
        format="jpeg",
        media_type="image/jpeg",
        size_bytes=1234,
        width=640,
        height=480,
        checksum="0" * 64,
        is_transformable=True,
        created_at=db.now(database),
        updated_at=db.now(database),
    )
    values.update(columns)
    return models.File.insert(**values).execute()


def add_many_files(folder, count, prefix="photo"):
    database = models.database_proxy.obj
    rows = [
        dict(
            folder=folder,
            name=f"{prefix}-{n}.jpg",
            path=f"{folder}/{prefix}-{n}.jpg",
            extension="jpg",
            format="jpeg",
            media_type="image/jpeg",
            size_bytes=n,
            width=10,
            height=10,
            checksum="0" * 64,
            is_transformable=True,
            created_at=db.now(database),
            updated_at=db.now(database),
        )
        for n in range(count)
    ]
    with database.atomic():
        for start in range(0, count, 500):
            models.File.insert_many(rows[start : start + 500]).execute()


def tag_file(file_id, name):
    tag = models.Tag.get_or_none(models.Tag.name == name)
    tag_id = tag.id if tag else models.Tag.insert(name=name).execute()
    models.FileTag.insert(file=file_id, tag=tag_id).execute()
    return tag_id
