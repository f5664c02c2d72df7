"""The explicit mapping and settings of a files index.

Dynamic mapping is strict, so a document with an unknown field is rejected instead of
adding a field whose type OpenSearch guesses. Only analyzers and filters of the OpenSearch
core are used (standard analyzer, lowercase filter), because the minimal distribution
has no analysis-common module.
"""

from typing import Any

from damjobs.search.documents import MAX_KEYWORD_LENGTH

# Bump this when the mapping changes, so `index status` shows which indices are older.
MAPPING_VERSION = 1

_KEYWORD = {"type": "keyword", "ignore_above": MAX_KEYWORD_LENGTH}
_LOWERCASE_KEYWORD = {
    "type": "keyword",
    "ignore_above": MAX_KEYWORD_LENGTH,
    "normalizer": "lowercase_keyword",
}
_TEXT_WITH_KEYWORD = {
    "type": "text",
    "analyzer": "standard",
    "fields": {"keyword": _KEYWORD, "lowercase": _LOWERCASE_KEYWORD},
}

PROPERTIES: dict[str, Any] = {
    "id": {"type": "long"},
    "name": _TEXT_WITH_KEYWORD,
    "extension": _LOWERCASE_KEYWORD,
    "format": _KEYWORD,
    "media_type": _KEYWORD,
    "size_bytes": {"type": "long"},
    "width": {"type": "integer"},
    "height": {"type": "integer"},
    "pixels": {"type": "long"},
    "is_transformable": {"type": "boolean"},
    "version": {"type": "integer"},
    "folder_id": {"type": "long"},
    "folder_ancestor_ids": {"type": "long"},
    "created_at": {"type": "date", "format": "strict_date_time_no_millis"},
    "updated_at": {"type": "date", "format": "strict_date_time_no_millis"},
    "descriptions": {
        "type": "nested",
        "properties": {
            "language": _LOWERCASE_KEYWORD,
            "text": {"type": "text", "analyzer": "standard"},
        },
    },
    "description_languages": _LOWERCASE_KEYWORD,
    "tags": {**_KEYWORD, "fields": {"lowercase": _LOWERCASE_KEYWORD}},
    "attributes": {
        "type": "nested",
        "properties": {
            "kind": _KEYWORD,
            "name": _KEYWORD,
            "value": _TEXT_WITH_KEYWORD,
            "number": {"type": "double"},
        },
    },
    "croppings": {
        "type": "nested",
        "properties": {
            "id": {"type": "long"},
            "name": _KEYWORD,
            "x": {"type": "integer"},
            "y": {"type": "integer"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "auto_cache": {"type": "boolean"},
        },
    },
    "cropping_count": {"type": "integer"},
}


# OpenSearch's default translog durability: fsync before a write request returns.
DEFAULT_TRANSLOG_DURABILITY = "request"


def index_body(
    shards: int,
    meta: dict[str, Any],
    refresh_interval: str = "-1",
    replicas: int = 0,
    translog_durability: str = "async",
) -> dict[str, Any]:
    """
    Return the body that creates a files index.

    The defaults are the load settings: no refresh, no replicas and a translog that is
    written to disk every 5 s instead of before each bulk response. Losing the last
    seconds in a node crash is harmless during a load, because a failed request or the
    count check then fails the run and the alias stays on the old index. `meta` goes into the mapping's `_meta`, where
    damjobs marks its own indices.
    """
    return {
        "settings": {
            "index": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": refresh_interval,
                "translog": {"durability": translog_durability},
            },
            "analysis": {
                "normalizer": {
                    "lowercase_keyword": {"type": "custom", "filter": ["lowercase"]},
                },
            },
        },
        "mappings": {
            "dynamic": "strict",
            "_meta": meta,
            "properties": PROPERTIES,
        },
    }
