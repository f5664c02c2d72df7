"""Search documents, index planning and bulk retries, without a server."""

import datetime

import pytest
from opensearchpy import exceptions as opensearch_errors

from damjobs.jobs import rebuild_index
from damjobs.search import bulk, indices, mapping
from damjobs.search import client as search_client
from damjobs.search.admin import AliasState
from damjobs.search.documents import (
    CroppingRow,
    FileRecord,
    FileRow,
    ancestor_chain,
    build_document,
    format_time,
)

CREATED = datetime.datetime(2024, 5, 1, 8, 30, 0)
UPDATED = datetime.datetime(2024, 6, 2, 9, 15, 7)


def file_row(**changes):
    values = dict(
        id=7,
        folder_id=3,
        name="Beach Day.JPG",
        extension="JPG",
        format="jpeg",
        media_type="image/jpeg",
        size_bytes=2048,
        width=640,
        height=480,
        is_transformable=True,
        version=2,
        created_at=CREATED,
        updated_at=UPDATED,
    )
    values.update(changes)
    return FileRow(**values)


def full_record():
    return FileRecord(
        file=file_row(),
        folder_ancestor_ids=(1, 2),
        descriptions={"en": "A beach", "da": "En strand"},
        tags=("summer", "beach", "summer"),
        attributes=(("user", "Photographer", "Ada"), ("exif", "FNumber", "2.8")),
        croppings=(CroppingRow(11, "square", 0, 0, 480, 480, True),),
    )


def test_document_fields():
    document = build_document(full_record())

    assert document["id"] == 7
    assert document["name"] == "Beach Day.JPG"
    assert document["extension"] == "jpg"
    assert document["format"] == "jpeg"
    assert document["size_bytes"] == 2048
    assert document["width"] == 640
    assert document["height"] == 480
    assert document["pixels"] == 640 * 480
    assert document["folder_id"] == 3
    assert document["folder_ancestor_ids"] == [1, 2]
    assert document["created_at"] == "2024-05-01T08:30:00Z"
    assert document["updated_at"] == "2024-06-02T09:15:07Z"
    assert document["is_transformable"] is True
    assert document["version"] == 2


def test_document_related_rows_sorted():
    document = build_document(full_record())

    assert document["descriptions"] == [
        {"language": "da", "text": "En strand"},
        {"language": "en", "text": "A beach"},
    ]
    assert document["description_languages"] == ["da", "en"]
    assert document["tags"] == ["beach", "summer"]
    assert document["attributes"] == [
        {"kind": "exif", "name": "FNumber", "value": "2.8", "number": 2.8},
        {"kind": "user", "name": "Photographer", "value": "Ada"},
    ]
    assert document["croppings"] == [
        {
            "id": 11,
            "name": "square",
            "x": 0,
            "y": 0,
            "width": 480,
            "height": 480,
            "auto_cache": True,
        },
    ]
    assert document["cropping_count"] == 1


def test_document_without_dimensions_or_rows():
    document = build_document(FileRecord(file=file_row(width=None, height=None)))

    assert document["width"] is None
    assert "pixels" not in document
    assert document["tags"] == []
    assert document["descriptions"] == []
    assert document["attributes"] == []
    assert document["croppings"] == []
    assert document["folder_ancestor_ids"] == []


@pytest.mark.parametrize(
    "text",
    ["nan", "inf", "-inf", "1e999", "f/2.8", "", "1_000", "\u0661\u0662", "1.2.3"],
)
def test_attribute_number_only_when_finite(text):
    document = build_document(
        FileRecord(file=file_row(), attributes=(("exif", "x", text),))
    )

    assert "number" not in document["attributes"][0]


@pytest.mark.parametrize(
    ("text", "number"), [("2.8", 2.8), (" -3 ", -3.0), (".5", 0.5), ("1e3", 1000.0)]
)
def test_attribute_number_from_decimal_text(text, number):
    document = build_document(
        FileRecord(file=file_row(), attributes=(("exif", "x", text),))
    )

    assert document["attributes"][0]["number"] == number


def test_time_formats():
    assert format_time("2024-01-02 03:04:05") == "2024-01-02T03:04:05Z"
    assert (
        format_time(datetime.datetime(2024, 1, 2, 3, 4, 5, 999))
        == "2024-01-02T03:04:05Z"
    )
    aware = datetime.datetime(
        2024, 1, 2, 5, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert format_time(aware) == "2024-01-02T03:04:05Z"


def test_every_document_field_is_mapped():
    document = build_document(full_record())
    properties = mapping.PROPERTIES

    assert set(document) <= set(properties)
    for nested in ("descriptions", "attributes", "croppings"):
        nested_fields = set().union(*(entry.keys() for entry in document[nested]))
        assert nested_fields <= set(properties[nested]["properties"]), nested


def test_mapping_is_strict():
    body = mapping.index_body(shards=1, meta={})

    assert body["mappings"]["dynamic"] == "strict"
    assert body["settings"]["index"]["refresh_interval"] == "-1"
    assert body["settings"]["index"]["number_of_replicas"] == 0


def test_ancestor_chain_root_first():
    parents = {1: None, 2: 1, 3: 2}

    assert ancestor_chain(3, parents) == (1, 2)
    assert ancestor_chain(1, parents) == ()


def test_ancestor_chain_cycle_and_gap():
    with pytest.raises(ValueError, match="cycle"):
        ancestor_chain(1, {1: 2, 2: 1})
    with pytest.raises(ValueError, match="not found"):
        ancestor_chain(3, {3: 9})


# --- index names, cleanup and rollback ----------------------------------------------------


def managed(name, state=indices.COMPLETE, behind=False, closed=False):
    return indices.ManagedIndex(
        name=name, state=state, behind_alias=behind, closed=closed
    )


def test_index_name_is_managed():
    name = indices.new_index_name(
        "dam-files", datetime.datetime(2024, 3, 4, 5, 6, 7, 891000)
    )

    assert name == "dam-files-20240304-050607-891"
    assert indices.is_managed_name("dam-files", name)
    assert not indices.is_managed_name("dam", name)
    assert not indices.is_managed_name("dam-files", "dam-files")
    assert not indices.is_managed_name("dam-files", "dam-files-backup")


def test_managed_indices_need_mark():
    described = {
        "a-20240101-000000-000": {
            "mappings": {"_meta": {"damjobs": {"alias": "a", "state": "complete"}}}
        },
        "a-20240102-000000-000": {"mappings": {}},
        "a-20240103-000000-000": {"mappings": {"_meta": {"damjobs": {"alias": "b"}}}},
        "a-other": {"mappings": {"_meta": {"damjobs": {"alias": "a"}}}},
    }

    found = indices.managed_indices("a", described, ["a-20240101-000000-000"])

    assert [index.name for index in found] == ["a-20240101-000000-000"]
    assert found[0].behind_alias


def test_cleanup_keeps_newest_old_indices():
    listed = [
        managed("a-20240101-000000-000"),
        managed("a-20240102-000000-000"),
        managed("a-20240103-000000-000"),
        managed("a-20240104-000000-000", state=indices.LOADING),
        managed("a-20240105-000000-000", behind=True),
    ]

    plan = indices.plan_cleanup(listed, keep_old=1)

    assert plan.partial == ("a-20240104-000000-000",)
    assert plan.old == ("a-20240101-000000-000", "a-20240102-000000-000")
    assert plan.kept == ("a-20240103-000000-000",)


def test_cleanup_never_touches_alias_target():
    plan = indices.plan_cleanup(
        [managed("a-20240105-000000-000", indices.LOADING, True)], 0
    )

    assert plan.doomed == ()


def test_rollback_picks_previous_complete():
    listed = [
        managed("a-20240101-000000-000"),
        managed("a-20240102-000000-000", state=indices.LOADING),
        managed("a-20240103-000000-000", behind=True),
        managed("a-20240104-000000-000"),
    ]

    target = indices.rollback_target(listed, ["a-20240103-000000-000"], None)

    assert target == "a-20240101-000000-000"


def test_rollback_without_previous_fails():
    with pytest.raises(ValueError, match="no previous"):
        indices.rollback_target(
            [managed("a-20240101-000000-000", behind=True)],
            ["a-20240101-000000-000"],
            None,
        )


def test_rollback_to_named_index():
    listed = [
        managed("a-20240101-000000-000"),
        managed("a-20240102-000000-000", behind=True),
    ]

    assert (
        indices.rollback_target(
            listed, ["a-20240102-000000-000"], "a-20240101-000000-000"
        )
        == "a-20240101-000000-000"
    )
    with pytest.raises(ValueError, match="not a complete index"):
        indices.rollback_target(listed, [], "unrelated")


def test_plan_rebuild_deletes_only_leftovers():
    state = AliasState(
        alias="a",
        targets=("a-20240102-000000-000",),
        managed=(
            managed("a-20240101-000000-000"),
            managed("a-20240102-000000-000", behind=True),
            managed("a-20240103-000000-000", state=indices.LOADING),
        ),
    )

    plan = rebuild_index.plan_rebuild(state, datetime.datetime(2024, 2, 1, 0, 0, 0))

    assert plan.new_index == "a-20240201-000000-000"
    assert plan.delete_first == ("a-20240103-000000-000",)
    assert plan.current == ("a-20240102-000000-000",)


# --- bulk responses -------------------------------------------------------------------------


class ScriptedClient:
    """Returns the prepared bulk responses in order and records each request body."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.bodies = []

    def bulk(self, body):
        self.bodies.append(body)
        return self.responses.pop(0)


def item(status, result=None, error=None, op="index"):
    entry = {"status": status}
    if result:
        entry["result"] = result
    if error:
        entry["error"] = error
    return {op: entry}


def test_bulk_retries_429_items_only():
    client = ScriptedClient(
        [
            {
                "errors": True,
                "items": [
                    item(201, "created"),
                    item(429, error={"type": "es_rejected_execution_exception"}),
                ],
            },
            {"errors": False, "items": [item(201, "created")]},
        ]
    )
    actions = [bulk.Action(1, {"id": 1}), bulk.Action(2, {"id": 2})]

    outcome = bulk.send(
        client, "i", actions, max_retries=3, sleep=lambda _seconds: None
    )

    assert outcome.created == 2
    assert outcome.retried == 1
    assert outcome.failures == []
    assert b'"_id": "2"' in client.bodies[1]
    assert b'"_id": "1"' not in client.bodies[1]


def test_bulk_reports_failed_item_with_file_id():
    client = ScriptedClient(
        [
            {
                "errors": True,
                "items": [
                    item(
                        400,
                        error={
                            "type": "mapper_parsing_exception",
                            "reason": "bad width",
                        },
                    ),
                    item(404, "not_found", op="delete"),
                ],
            },
        ]
    )
    actions = [bulk.Action(5, {"id": 5}), bulk.Action(6, None)]

    outcome = bulk.send(
        client, "i", actions, max_retries=3, sleep=lambda _seconds: None
    )

    assert outcome.failures == [(5, "mapper_parsing_exception: bad width")]
    assert outcome.not_found == 1


def test_bulk_gives_up_after_max_retries():
    rejected = {"errors": True, "items": [item(429, error={"type": "rejected"})]}
    client = ScriptedClient([rejected, rejected, rejected])

    outcome = bulk.send(
        client,
        "i",
        [bulk.Action(9, {"id": 9})],
        max_retries=2,
        sleep=lambda _seconds: None,
    )

    assert len(client.bodies) == 3
    assert outcome.failures == [(9, "rejected: ")]


def test_closed_indices_left_alone():
    listed = [
        managed("a-20240101-000000-000"),
        managed("a-20240102-000000-000", closed=True),
        managed("a-20240103-000000-000", state=indices.LOADING, closed=True),
        managed("a-20240104-000000-000", behind=True),
    ]

    plan = indices.plan_cleanup(listed, keep_old=0)
    target = indices.rollback_target(listed, ["a-20240104-000000-000"], None)

    assert plan.doomed == ("a-20240101-000000-000",)
    assert target == "a-20240101-000000-000"
    with pytest.raises(ValueError, match="is closed"):
        indices.rollback_target(listed, [], "a-20240102-000000-000")


def test_cleanup_keeps_index_alias_left_over_newer_ones():
    listed = [
        managed("a-20240101-000000-000"),
        managed("a-20240102-000000-000"),
        managed("a-20240103-000000-000", behind=True),
    ]

    plan = indices.plan_cleanup(
        listed, keep_old=1, previous_targets=["a-20240101-000000-000"]
    )

    assert plan.kept == ("a-20240101-000000-000",)
    assert plan.old == ("a-20240102-000000-000",)


def test_non_json_answer_hints_at_index_hosts():
    error = opensearch_errors.SerializationError(
        "Unknown mimetype, unable to deserialize: text/html"
    )

    assert "index.hosts" in search_client.hint_for(error)
