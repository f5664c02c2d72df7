"""Database setup: a URL selects MySQL/MariaDB (pymysql) or SQLite.

`open_database` binds the models to a connection; `now` and `server_now` read the
database server's clock, so every host that shares the database agrees on the time.
"""

import datetime
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import peewee
from playhouse.shortcuts import ReconnectMixin

from damjobs.db import models
from damjobs.errors import RepositoryError

logger = logging.getLogger(__name__)

SQLITE_PRAGMAS = (
    ("journal_mode", "wal"),
    ("busy_timeout", 30000),
    ("foreign_keys", 1),
    ("synchronous", "normal"),
)


class ReconnectingMySQLDatabase(ReconnectMixin, peewee.MySQLDatabase):
    """MySQL connection that reconnects once when the server has gone away between queries."""


def open_database(
    url: str, password: str = "", connect_timeout: int = 10
) -> peewee.Database:
    """
    Connect to the database named by `url` and bind every model to it.

    Raise RepositoryError with a hint when the URL is unsupported or the server cannot be
    reached.
    """
    database = make_database(url, password, connect_timeout)
    models.database_proxy.initialize(database)
    try:
        database.connect(reuse_if_open=True)
    except peewee.PeeweeException as error:
        raise RepositoryError(
            f"cannot connect to the database {describe_url(url)}: {error}",
            hint="check database.url, the password in DAMJOBS__DATABASE__PASSWORD and that "
            "the server is running",
        ) from error

    return database


def make_database(
    url: str, password: str = "", connect_timeout: int = 10
) -> peewee.Database:
    """Build an unconnected peewee database for a sqlite:/// or mysql:// URL."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.parent.is_dir():
            raise RepositoryError(
                f"the folder of the SQLite database {path} does not exist",
                hint="create the folder or change database.url",
            )
        return peewee.SqliteDatabase(
            str(path), pragmas=SQLITE_PRAGMAS, timeout=30, autoconnect=False
        )

    match = re.fullmatch(
        r"mysql://(?P<user>[^@/:]+)@(?P<host>[^/:]+)(?::(?P<port>\d+))?/(?P<name>\w+)",
        url,
    )
    if match is None:
        raise RepositoryError(
            f"unsupported database URL {describe_url(url)}",
            hint="use sqlite:///path/to/file.db or mysql://user@host:3306/database",
        )

    return ReconnectingMySQLDatabase(
        match["name"],
        user=match["user"],
        password=password,
        host=match["host"],
        port=int(match["port"] or 3306),
        charset="utf8mb4",
        connect_timeout=connect_timeout,
        autoconnect=False,
        init_command="SET time_zone = '+00:00'",
    )


def describe_url(url: str) -> str:
    """Return the URL with any password masked, for messages."""
    return re.sub(r"//([^/@:]+):[^/@]*@", r"//\1:***@", url)


def is_mysql(database: peewee.Database) -> bool:
    return isinstance(database, peewee.MySQLDatabase)


def now(database: peewee.Database) -> peewee.SQL:
    """Return an SQL expression for the current UTC time on the database server."""
    if is_mysql(database):
        return peewee.SQL("UTC_TIMESTAMP()")

    return peewee.SQL("datetime('now')")


def server_now(database: peewee.Database) -> datetime.datetime:
    """Return the database server's current UTC time as a naive datetime."""
    value = database.execute_sql(f"SELECT {now(database).sql}").fetchone()[0]
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value)

    return value


def tuple_rows(query: peewee.BaseQuery) -> Iterable[tuple[Any, ...]]:
    """
    Return `query` set to yield each row as a tuple of the selected columns.

    peewee's bundled stubs type the rows of `.tuples()` as model instances, so the cast
    gives the real row type. The query runs only when the result is iterated.
    """
    return cast("Iterable[tuple[Any, ...]]", query.tuples())


@contextmanager
def translated_errors(action: str) -> Iterator[None]:
    """Turn peewee errors raised while doing `action` into RepositoryError."""
    try:
        yield
    except peewee.PeeweeException as error:
        raise RepositoryError(f"database error while {action}: {error}") from error
