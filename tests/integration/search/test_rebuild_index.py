"""rebuild-index against the session's OpenSearch node, on SQLite and MariaDB."""

import datetime
import json
import os
import threading
import time

import pytest

from damjobs import db, runner
from damjobs.db import models
from damjobs.jobs import JOBS, rebuild_index
from damjobs.output import OutputOptions
from damjobs.search import indices, source
from damjobs.search.admin import IndexAdmin
from tests.integration.search.conftest import (
    add_file,
    add_folder,
    add_many_files,
    make_search_workspace,
    tag_file,
)


def rebuild(workspace, dry_run=False):
    return runner.run_job(
        JOBS["rebuild-index"],
        workspace.settings,
        workspace.database,
        runner.RunOptions(dry_run=dry_run),
        rebuild_index.Options(),
        OutputOptions(),
    )


def alias_targets(client, alias):
    return sorted(client.indices.get_alias(name=alias))


def test_rebuild_documents_and_mapping(workspace, search_client):
    root = add_folder("")
    holiday = add_folder("holiday", root)
    beach = add_folder("beach", holiday)
    photo = add_file(beach, "Sunset.JPG", width=800, height=600)
    pdf = add_file(
        root,
        "manual.pdf",
        format="pdf",
        media_type="application/pdf",
        width=None,
        height=None,
        is_transformable=False,
    )
    tag_file(photo, "summer")
    tag_file(photo, "sea")
    models.FileDescription.insert(
        file=photo, language="en", text="Red sky over the sea"
    ).execute()
    models.FileDescription.insert(
        file=photo, language="da", text="Rød himmel"
    ).execute()
    models.Attribute.insert(
        file=photo, kind="exif", name="FNumber", value="2.8"
    ).execute()
    models.Attribute.insert(
        file=photo, kind="user", name="Photographer", value="Ada"
    ).execute()
    models.Cropping.insert(
        file=photo,
        name="square",
        x=0,
        y=0,
        width=600,
        height=600,
        auto_cache=True,
        updated_at=models.File.get_by_id(photo).updated_at,
    ).execute()

    summary = rebuild(workspace)

    assert summary.exit_code == 0, summary
    assert summary.details["swapped"] is True
    assert summary.processed == 2
    index = summary.details["index"]
    assert alias_targets(search_client, workspace.alias) == [index]
    document = search_client.get(index=workspace.alias, id=str(photo))["_source"]
    assert document["name"] == "Sunset.JPG"
    assert document["extension"] == "jpg"
    assert document["folder_id"] == beach
    assert document["folder_ancestor_ids"] == [root, holiday]
    assert document["tags"] == ["sea", "summer"]
    assert {"language": "da", "text": "Rød himmel"} in document["descriptions"]
    assert {
        "kind": "exif",
        "name": "FNumber",
        "value": "2.8",
        "number": 2.8,
    } in document["attributes"]
    assert document["croppings"][0]["name"] == "square"
    assert (
        search_client.get(index=workspace.alias, id=str(pdf))["_source"]["width"]
        is None
    )

    mapping = search_client.indices.get_mapping(index=index)[index]["mappings"]
    assert mapping["dynamic"] == "strict"
    assert mapping["_meta"]["damjobs"]["state"] == "complete"
    settings = search_client.indices.get_settings(index=index)[index]["settings"][
        "index"
    ]
    assert settings["refresh_interval"] == "1s"
    assert settings["number_of_replicas"] == "0"

    hits = search_client.search(
        index=workspace.alias,
        body={
            "query": {
                "nested": {
                    "path": "descriptions",
                    "query": {"match": {"descriptions.text": "sky"}},
                }
            }
        },
    )
    assert [hit["_id"] for hit in hits["hits"]["hits"]] == [str(photo)]


def test_second_rebuild_swaps_and_keeps_one(workspace, search_client):
    folder = add_folder("")
    add_many_files(folder, 20)

    first = rebuild(workspace)
    second = rebuild(workspace)
    third = rebuild(workspace)

    assert third.exit_code == 0
    assert alias_targets(search_client, workspace.alias) == [third.details["index"]]
    assert third.details["previous"] == [second.details["index"]]
    assert third.details["deleted_indices"] == [first.details["index"]]
    remaining = sorted(search_client.indices.get(index=f"{workspace.alias}-*"))
    assert remaining == sorted([second.details["index"], third.details["index"]])
    assert search_client.count(index=workspace.alias)["count"] == 20


def test_dry_run_changes_nothing(workspace, search_client):
    add_file(add_folder(""), "a.jpg")

    summary = rebuild(workspace, dry_run=True)

    assert summary.exit_code == 0
    assert summary.details["files"] == 1
    assert summary.details["sample_document"]["name"] == "a.jpg"
    assert not search_client.indices.exists_alias(name=workspace.alias)
    assert search_client.indices.get(index=f"{workspace.alias}-*") == {}


def test_changes_during_rebuild_are_indexed(workspace, search_client, monkeypatch):
    folder = add_folder("")
    other = add_folder("other")
    add_many_files(folder, 200)
    ids = sorted(row.id for row in models.File.select(models.File.id))
    tagged, removed, moved_folder_file = ids[0], ids[1], ids[2]
    models.File.update(folder=other).where(
        models.File.id == moved_folder_file
    ).execute()
    original = source.read_records_after
    calls = []

    def read_and_change(last_id, limit, folders):
        calls.append(last_id)
        if len(calls) == 3:
            # Files of the first batch are in the new index already by now.
            tag_file(tagged, "changed-meanwhile")
            models.File.delete().where(models.File.id == removed).execute()
            models.Folder.update(parent=folder).where(
                models.Folder.id == other
            ).execute()
            add_file(folder, "late.jpg")
        return original(last_id, limit, folders)

    monkeypatch.setattr(source, "read_records_after", read_and_change)

    summary = rebuild(workspace)

    assert summary.exit_code == 0, summary
    assert summary.details["removed_meanwhile"] == 1
    document = search_client.get(index=workspace.alias, id=str(tagged))["_source"]
    assert document["tags"] == ["changed-meanwhile"]
    assert not search_client.exists(index=workspace.alias, id=str(removed))
    moved = search_client.get(index=workspace.alias, id=str(moved_folder_file))[
        "_source"
    ]
    assert moved["folder_ancestor_ids"] == [folder]
    assert search_client.count(index=workspace.alias)["count"] == 200


def test_searches_answer_throughout_rebuild(tmp_path, opensearch_url, search_client):
    workspace = make_search_workspace(
        tmp_path / "ws",
        f"sqlite:///{tmp_path / 'ws' / 'damjobs.db'}",
        opensearch_url,
        batch_size=20,
        bulk_concurrency=1,
    )
    folder = add_folder("")
    add_many_files(folder, 1500)
    assert rebuild(workspace).exit_code == 0
    problems, answers = [], []
    done = threading.Event()

    def search_all_the_time():
        while not done.is_set():
            try:
                total = search_client.count(index=workspace.alias)["count"]
                hits = search_client.search(index=workspace.alias, body={"size": 1})
                answers.append(total)
                if total != 1500 or not hits["hits"]["hits"]:
                    problems.append(f"count {total}, hits {len(hits['hits']['hits'])}")
            except Exception as error:  # noqa: BLE001 - every failure is what this test counts
                problems.append(repr(error))
            time.sleep(0.01)

    searcher = threading.Thread(target=search_all_the_time)
    searcher.start()
    try:
        summary = rebuild(workspace)
        summary_again = rebuild(workspace)
    finally:
        done.set()
        searcher.join()
        search_client.indices.delete(
            index=f"{workspace.alias}-*", ignore_unavailable=True
        )

    assert summary.exit_code == 0
    assert summary_again.exit_code == 0
    assert problems == []
    assert len(answers) > 20


def sqlite_search_workspace(tmp_path, opensearch_url, **index_values):
    """Return a search workspace on a new SQLite database with these [index] values."""
    return make_search_workspace(
        tmp_path / "ws",
        f"sqlite:///{tmp_path / 'ws' / 'damjobs.db'}",
        opensearch_url,
        **index_values,
    )


def count_then_delete(client, alias):
    """Return the document count behind `alias`, then delete the alias's indices."""
    count = client.count(index=alias)["count"]
    client.indices.delete(index=f"{alias}-*")
    return count


@pytest.fixture
def sqlite_workspace(tmp_path, opensearch_url, search_client):
    workspace = make_search_workspace(
        tmp_path / "ws",
        f"sqlite:///{tmp_path / 'ws' / 'damjobs.db'}",
        opensearch_url,
        batch_size=10,
        bulk_concurrency=1,
        max_failed_documents=1,
    )
    yield workspace
    search_client.indices.delete(index=f"{workspace.alias}-*", ignore_unavailable=True)


def test_failed_document_exits_4(sqlite_workspace, search_client):
    folder = add_folder("")
    add_file(folder, "fine.jpg")
    # 3,000,000,000 does not fit the integer field `width`, so the document is rejected.
    broken = add_file(folder, "huge.jpg", width=3_000_000_000)

    result = sqlite_workspace.cli("rebuild-index", "--json")

    assert result.returncode == 4, result.stderr
    assert f"file {broken} could not be indexed" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["failed"] == 1
    assert summary["details"]["swapped"] is True
    assert search_client.count(index=sqlite_workspace.alias)["count"] == 1


@pytest.mark.parametrize("bulk_max_bytes", [1024 * 1024, 20 * 1024 * 1024])
def test_document_too_large_for_one_request_fails_alone(
    tmp_path, opensearch_url, search_client, bulk_max_bytes
):
    # With 20 MiB, the first request contains every document and is sent again in halves.
    workspace = sqlite_search_workspace(
        tmp_path, opensearch_url, bulk_max_bytes=bulk_max_bytes, max_failed_documents=1
    )
    folder = add_folder("")
    for number in range(4):
        add_file(folder, f"fine-{number}.jpg")
    oversized = add_file(folder, "long.jpg")
    # The test node accepts requests of up to 10 MB (http.max_content_length).
    models.FileDescription.insert(
        file=oversized, language="en", text="word " * 2_200_000
    ).execute()

    result = workspace.cli("rebuild-index", "--json")

    count = count_then_delete(search_client, workspace.alias)
    assert result.returncode == 4, result.stderr
    assert f"file {oversized} could not be indexed" in result.stderr
    assert "more than the node accepts in one request" in result.stderr
    # opensearch-py's own line for each rejected request is left to -v.
    assert "[status:413" not in result.stderr
    assert count == 4


def test_unreadable_row_fails_only_its_file(tmp_path, opensearch_url, search_client):
    workspace = sqlite_search_workspace(
        tmp_path, opensearch_url, max_failed_documents=1
    )
    folder = add_folder("")
    add_many_files(folder, 120)
    broken = add_file(folder, "blob.jpg")
    models.database_proxy.obj.execute_sql(
        "INSERT INTO file_description (file_id, language, text) VALUES (?, 'en', ?)",
        (broken, b"\x00\x01"),
    )

    result = workspace.cli("rebuild-index", "--json")

    count = count_then_delete(search_client, workspace.alias)
    assert result.returncode == 4, result.stderr
    assert f"file {broken} could not be indexed" in result.stderr
    assert "its database rows cannot be read" in result.stderr
    assert count == 120


def test_too_many_failures_keep_alias(sqlite_workspace, search_client):
    folder = add_folder("")
    add_file(folder, "fine.jpg")
    assert sqlite_workspace.cli("rebuild-index").returncode == 0
    before = alias_targets(search_client, sqlite_workspace.alias)
    add_file(folder, "huge1.jpg", width=3_000_000_000)
    add_file(folder, "huge2.jpg", width=3_000_000_000)

    result = sqlite_workspace.cli("rebuild-index")

    assert result.returncode == 1, result.stderr
    assert "more than index.max_failed_documents = 1" in result.stderr
    assert alias_targets(search_client, sqlite_workspace.alias) == before
    assert (
        sorted(search_client.indices.get(index=f"{sqlite_workspace.alias}-*")) == before
    )


def test_killed_rebuild_then_new_one(sqlite_workspace, search_client):
    folder = add_folder("")
    # Enough files that the second rebuild is still loading when it is killed.
    add_many_files(folder, 20000)
    assert sqlite_workspace.cli("rebuild-index").returncode == 0
    before = alias_targets(search_client, sqlite_workspace.alias)

    process = sqlite_workspace.popen("rebuild-index")
    deadline = time.monotonic() + 60
    partial = []
    while time.monotonic() < deadline and not partial:
        names = search_client.indices.get(index=f"{sqlite_workspace.alias}-*")
        partial = [name for name in names if name not in before]
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=30)

    assert partial, "the second rebuild never created its index"
    assert process.returncode == -9
    assert alias_targets(search_client, sqlite_workspace.alias) == before
    assert search_client.count(index=sqlite_workspace.alias)["count"] == 20000

    result = sqlite_workspace.cli("rebuild-index", "--json")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["details"]["deleted_leftovers"] == partial
    assert not search_client.indices.exists(index=partial[0])
    assert alias_targets(search_client, sqlite_workspace.alias) == [
        summary["details"]["index"]
    ]
    assert search_client.count(index=sqlite_workspace.alias)["count"] == 20000


def test_dry_run_beside_running_rebuild_keeps_its_index(
    sqlite_workspace, search_client
):
    folder = add_folder("")
    add_file(folder, "a.jpg")
    # The slot of a live rebuild (this process) and the index it is loading.
    loading = indices.new_index_name(
        sqlite_workspace.alias, datetime.datetime.now(datetime.UTC)
    )
    IndexAdmin(search_client, sqlite_workspace.alias).create(
        loading, 1, datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    )
    database = models.database_proxy.obj
    models.JobSlot.insert(
        job="rebuild-index",
        state="running",
        status_id=1,
        host=runner.HOST,
        pid=os.getpid(),
        updated_at=db.now(database),
    ).execute()

    result = sqlite_workspace.cli("rebuild-index", "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    assert "rebuild-index is already running" in result.stderr
    assert json.loads(result.stdout)["details"]["deleted_leftovers"] == []
    assert search_client.indices.exists(index=loading)


def test_rollback_and_status(sqlite_workspace, search_client):
    folder = add_folder("")
    described = add_file(folder, "a.jpg")
    # Nested objects are documents to Lucene, but the status counts files.
    models.FileDescription.insert(file=described, language="en", text="a").execute()
    models.Attribute.insert(file=described, kind="user", name="n", value="v").execute()
    first = json.loads(sqlite_workspace.cli("rebuild-index", "--json").stdout)[
        "details"
    ]["index"]
    add_file(folder, "b.jpg")
    second = json.loads(sqlite_workspace.cli("rebuild-index", "--json").stdout)[
        "details"
    ]["index"]

    result = sqlite_workspace.cli("index", "rollback")

    assert result.returncode == 0, result.stderr
    assert f"now points at {first}" in result.stdout
    assert alias_targets(search_client, sqlite_workspace.alias) == [first]
    assert search_client.count(index=sqlite_workspace.alias)["count"] == 1
    status = json.loads(sqlite_workspace.cli("index", "status", "--json").stdout)
    assert status["targets"] == [first]
    by_name = {index["name"]: index for index in status["indices"]}
    assert by_name[first]["documents"] == 1
    assert by_name[second]["documents"] == 2
    assert by_name[second]["behind_alias"] is False

    again = sqlite_workspace.cli("index", "rollback")
    assert again.returncode == 1
    assert "no previous complete index" in again.stderr
    back = sqlite_workspace.cli("index", "rollback", "--to", second)
    assert back.returncode == 0, back.stderr
    assert alias_targets(search_client, sqlite_workspace.alias) == [second]


def test_rebuild_after_rollback_keeps_rolled_back_index(
    sqlite_workspace, search_client
):
    folder = add_folder("")
    add_file(folder, "a.jpg")
    first = json.loads(sqlite_workspace.cli("rebuild-index", "--json").stdout)[
        "details"
    ]["index"]
    second = json.loads(sqlite_workspace.cli("rebuild-index", "--json").stdout)[
        "details"
    ]["index"]
    assert sqlite_workspace.cli("index", "rollback").returncode == 0

    third = json.loads(sqlite_workspace.cli("rebuild-index", "--json").stdout)[
        "details"
    ]

    assert third["previous"] == [first]
    assert third["deleted_indices"] == [second]
    assert search_client.indices.exists(index=first)


def test_closed_index_listed_not_rolled_back(sqlite_workspace, search_client):
    folder = add_folder("")
    add_file(folder, "a.jpg")
    first = json.loads(sqlite_workspace.cli("rebuild-index", "--json").stdout)[
        "details"
    ]["index"]
    assert sqlite_workspace.cli("rebuild-index").returncode == 0
    search_client.indices.close(index=first)

    status = json.loads(sqlite_workspace.cli("index", "status", "--json").stdout)
    rollback = sqlite_workspace.cli("index", "rollback")
    named = sqlite_workspace.cli("index", "rollback", "--to", first)

    listed = {index["name"]: index for index in status["indices"]}
    assert listed[first]["closed"] is True
    assert listed[first]["documents"] is None
    assert rollback.returncode == 1
    assert "no previous complete index" in rollback.stderr
    assert named.returncode == 2
    assert f"{first} is closed" in named.stderr


def test_index_with_alias_name_is_kept(sqlite_workspace, search_client):
    add_file(add_folder(""), "a.jpg")
    search_client.indices.create(index=sqlite_workspace.alias)
    try:
        result = sqlite_workspace.cli("rebuild-index")

        assert result.returncode == 1
        assert f"{sqlite_workspace.alias} is an index, not an alias" in result.stderr
        assert "To migrate" in result.stderr
        assert search_client.indices.exists(index=sqlite_workspace.alias)
    finally:
        search_client.indices.delete(index=sqlite_workspace.alias)


def test_max_runtime_keeps_alias(sqlite_workspace, search_client):
    folder = add_folder("")
    add_many_files(folder, 100)
    assert sqlite_workspace.cli("rebuild-index").returncode == 0
    before = alias_targets(search_client, sqlite_workspace.alias)

    result = sqlite_workspace.cli("rebuild-index", "--max-runtime", "0.001", "--json")

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["details"]["swapped"] is False
    assert summary["left"] == 100
    assert alias_targets(search_client, sqlite_workspace.alias) == before
    assert (
        sorted(search_client.indices.get(index=f"{sqlite_workspace.alias}-*")) == before
    )
