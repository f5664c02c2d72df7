"""Versioned schema migrations.

A migration is a pair of SQL files in this folder, `NNNN_name.sqlite.sql` and
`NNNN_name.mysql.sql`, applied in version order. An applied migration is never edited:
a schema change gets the next number. `schema_migration` records what has been applied.
"""

import dataclasses
import importlib.resources
import logging
import re

import peewee

from damjobs import db
from damjobs.db import models
from damjobs.errors import RepositoryError, SchemaOutdatedError

logger = logging.getLogger(__name__)

FILE_PATTERN = re.compile(
    r"(?P<version>\d{4})_(?P<name>\w+)\.(?P<dialect>sqlite|mysql)\.sql"
)


@dataclasses.dataclass(frozen=True)
class Migration:
    """One schema version: its number, its name and the SQL per dialect."""

    version: int
    name: str
    sql: dict[str, str]


def load_migrations() -> list[Migration]:
    """Return every migration shipped with damjobs, sorted by version."""
    found: dict[int, Migration] = {}
    for resource in importlib.resources.files(__package__).iterdir():
        match = FILE_PATTERN.fullmatch(resource.name)
        if match is None:
            continue
        version = int(match["version"])
        migration = found.setdefault(version, Migration(version, match["name"], {}))
        migration.sql[match["dialect"]] = resource.read_text(encoding="utf-8")

    return [found[version] for version in sorted(found)]


LATEST_VERSION = max(migration.version for migration in load_migrations())


def current_version(database: peewee.Database) -> int:
    """Return the highest applied migration, or 0 for a database without damjobs tables."""
    if not database.table_exists(models.SchemaMigration._meta.table_name):
        return 0
    value = models.SchemaMigration.select(
        peewee.fn.MAX(models.SchemaMigration.version)
    ).scalar()

    return value or 0


def check_version(database: peewee.Database) -> None:
    """
    Raise SchemaOutdatedError unless the database has exactly the schema this version needs.
    """
    with db.translated_errors("reading the schema version"):
        version = current_version(database)
    if version == LATEST_VERSION:
        return
    if version == 0:
        raise SchemaOutdatedError(
            "the database has no damjobs schema yet", hint="run `damjobs db upgrade`"
        )
    if version < LATEST_VERSION:
        raise SchemaOutdatedError(
            f"the database schema is at version {version}; this damjobs needs version "
            f"{LATEST_VERSION}",
            hint="run `damjobs db upgrade` while no job is running",
        )
    raise SchemaOutdatedError(
        f"the database schema is at version {version}, newer than version {LATEST_VERSION} "
        f"that this damjobs knows",
        hint="install the damjobs release that upgraded the database",
    )


def pending(database: peewee.Database) -> list[Migration]:
    """Return the migrations not yet applied to `database`."""
    version = current_version(database)

    return [migration for migration in load_migrations() if migration.version > version]


def apply(database: peewee.Database, migration: Migration) -> None:
    """
    Apply one migration and record it.

    SQLite runs it in one transaction. MySQL commits each DDL statement on its own, so a
    failure there leaves the statements before it applied; the error names the statement.
    """
    dialect = "mysql" if db.is_mysql(database) else "sqlite"
    statements = [part.strip() for part in migration.sql[dialect].split(";\n")]
    statements = [_strip_comments(part) for part in statements]
    with database.atomic():
        for statement in statements:
            if not statement:
                continue
            try:
                database.execute_sql(statement)
            except peewee.PeeweeException as error:
                raise RepositoryError(
                    f"migration {migration.version:04d} {migration.name} failed: {error}",
                    hint=f"the failing statement was: {statement[:200]}",
                ) from error
        models.SchemaMigration.insert(
            version=migration.version, name=migration.name, applied_at=db.now(database)
        ).execute()
    logger.info("applied schema migration %04d %s", migration.version, migration.name)


def _strip_comments(statement: str) -> str:
    lines = [
        line for line in statement.splitlines() if not line.lstrip().startswith("--")
    ]

    return "\n".join(lines).strip()
