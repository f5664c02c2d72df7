"""A throw-away MariaDB server for the test session.

The server gets its own data folder, socket, pid file and port. It reads no option
file (`--no-defaults`), so neither /etc/mysql nor a running server changes it.
Its root account has no password and accepts connections from 127.0.0.1 only.
"""

from __future__ import annotations

import itertools
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from . import ServiceStartError, find_free_port, read_log_tail, stop_process

logger = logging.getLogger(__name__)

# Debian 12's mariadb-server installs both names. mysqld is the one older releases have.
SERVER_PROGRAMS = ("mariadbd", "mysqld")
INSTALL_DB_PROGRAMS = ("mariadb-install-db", "mysql_install_db")
# Account that mariadbd switches to when started as root, because it rejects root.
SERVER_USER = "mysql"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


def _find_program(names: tuple[str, ...]) -> str:
    # mariadbd is in /usr/sbin, which is not on PATH for every user.
    search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    for name in names:
        found = shutil.which(name, path=search_path)
        if found:
            return found
    raise ServiceStartError(
        f"MariaDB program not found (looked for {', '.join(names)}); "
        "run scripts/install-system-deps to install mariadb-server."
    )


class MariaDBServer:
    """A MariaDB server on 127.0.0.1 that lives in a temporary folder until `stop()`."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._base_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._database_numbers = itertools.count(1)

    @property
    def error_log(self) -> Path:
        assert self._base_dir is not None, "the server has not been started"
        return self._base_dir / "error.log"

    def start(self) -> None:
        """Initialise a data folder, start the server and wait for connections."""
        server_program = _find_program(SERVER_PROGRAMS)
        install_db_program = _find_program(INSTALL_DB_PROGRAMS)
        self._base_dir = Path(tempfile.mkdtemp(prefix="damjobs-mariadb-"))
        data_dir = self._base_dir / "data"

        user_options: list[str] = []
        if os.geteuid() == 0:
            user_options = [f"--user={SERVER_USER}"]
            self._give_base_dir_to_server_user()

        started = time.monotonic()
        self._install_db(install_db_program, data_dir, user_options)

        self.port = find_free_port()
        command = [
            server_program,
            "--no-defaults",
            *user_options,
            f"--datadir={data_dir}",
            f"--tmpdir={self._base_dir}",
            f"--socket={self._base_dir / 'mysqld.sock'}",
            f"--pid-file={self._base_dir / 'mysqld.pid'}",
            f"--log-error={self.error_log}",
            f"--bind-address={self.host}",
            f"--port={self.port}",
            "--skip-name-resolve",
            # Debian's /etc/mysql config sets utf8mb4, which --no-defaults skips.
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            # Durability settings that slow tests down and protect nothing a test keeps.
            "--skip-log-bin",
            "--innodb-flush-log-at-trx-commit=2",
            "--innodb-doublewrite=0",
            "--innodb-buffer-pool-size=128M",
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_ready()
        logger.info(
            "MariaDB started on %s:%d in %.1f s (data in %s)",
            self.host,
            self.port,
            time.monotonic() - started,
            data_dir,
        )

    def _give_base_dir_to_server_user(self) -> None:
        assert self._base_dir is not None
        try:
            server_user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise ServiceStartError(
                f"user {SERVER_USER!r} not found, but mariadbd needs it when the "
                "tests run as root; run scripts/install-system-deps to install "
                "mariadb-server."
            ) from None
        os.chown(self._base_dir, server_user.pw_uid, server_user.pw_gid)

    def _install_db(
        self, program: str, data_dir: Path, user_options: list[str]
    ) -> None:
        assert self._base_dir is not None
        install_log = self._base_dir / "install-db.log"
        command = [
            program,
            "--no-defaults",
            *user_options,
            f"--datadir={data_dir}",
            # Without this, root@localhost gets unix_socket authentication only, and TCP
            # clients could not log in as root.
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        with install_log.open("wb") as log_file:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            log_tail = read_log_tail(install_log)
            self.stop()
            raise ServiceStartError(
                f"{program} failed with exit code {result.returncode}.\n"
                f"Command: {' '.join(command)}\n"
                f"Last lines of {install_log}:\n{log_tail}"
            )

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            exit_code = self._process.poll()
            if exit_code is not None:
                self._fail_start(
                    f"mariadbd exited with code {exit_code} during start-up"
                )
            try:
                connection = pymysql.connect(
                    host=self.host, port=self.port, user="root", connect_timeout=2
                )
            except pymysql.err.OperationalError as error:
                last_error = error
                time.sleep(0.2)
                continue
            connection.close()
            return
        self._fail_start(
            f"mariadbd did not accept connections on {self.host}:{self.port} within "
            f"{START_TIMEOUT_SECONDS:.0f} s (last error: {last_error})"
        )

    def _fail_start(self, reason: str) -> None:
        log_tail = read_log_tail(self.error_log)
        error_log = self.error_log
        self.stop()
        raise ServiceStartError(f"{reason}.\nLast lines of {error_log}:\n{log_tail}")

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        """Open a pymysql connection as root, to `database` when given."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user="root",
            database=database,
            charset="utf8mb4",
            autocommit=True,
        )

    def create_database(self) -> str:
        """Create an empty database with a new name and return its URL."""
        name = f"damjobs_test_{next(self._database_numbers)}"
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE `{name}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
        finally:
            connection.close()
        return f"mysql://root@{self.host}:{self.port}/{name}"

    def drop_database(self, url: str) -> None:
        """Drop the database of a URL from `create_database`, if it still exists."""
        name = url.rsplit("/", 1)[1]
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            connection.close()

    def stop(self) -> None:
        """Stop the server and remove its data folder. Safe to call more than once."""
        if self._process is not None:
            stop_process(self._process, STOP_TIMEOUT_SECONDS)
            self._process = None
        if self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None
