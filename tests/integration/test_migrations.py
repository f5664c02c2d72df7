"""The migrations build exactly the schema the models describe, on SQLite and MariaDB."""

import pytest

from damjobs import db
from damjobs.db import migrations, models
from damjobs.errors import SchemaOutdatedError


def test_migrated_columns_match_models(database_url):
    database = db.open_database(database_url)
    for migration in migrations.pending(database):
        migrations.apply(database, migration)

    for model in models.ALL_MODELS:
        table = model._meta.table_name
        columns = {column.name for column in database.get_columns(table)}
        expected = {field.column_name for field in model._meta.sorted_fields}
        assert columns == expected, table


def test_migrated_indexes_match_models(database_url):
    database = db.open_database(database_url)
    for migration in migrations.pending(database):
        migrations.apply(database, migration)

    for model in models.ALL_MODELS:
        table = model._meta.table_name
        found = {
            (tuple(index.columns), index.unique)
            for index in database.get_indexes(table)
            if index.name != "PRIMARY"
        }
        for index in model._meta.fields_to_index():
            columns = tuple(field.column_name for field in index._expressions)
            assert (columns, index._unique) in found, (table, columns)


def test_empty_database_asks_for_upgrade(database_url):
    database = db.open_database(database_url)

    with pytest.raises(SchemaOutdatedError) as raised:
        migrations.check_version(database)

    assert "damjobs db upgrade" in raised.value.hint


def test_newer_schema_is_reported(database_url):
    database = db.open_database(database_url)
    for migration in migrations.pending(database):
        migrations.apply(database, migration)
    models.SchemaMigration.insert(
        version=migrations.LATEST_VERSION + 1,
        name="future",
        applied_at=db.now(database),
    ).execute()

    with pytest.raises(SchemaOutdatedError) as raised:
        migrations.check_version(database)

    assert "newer" in raised.value.message


def test_upgrade_twice_applies_nothing_second_time(database_url):
    database = db.open_database(database_url)
    for migration in migrations.pending(database):
        migrations.apply(database, migration)

    assert migrations.pending(database) == []
    assert migrations.current_version(database) == migrations.LATEST_VERSION
