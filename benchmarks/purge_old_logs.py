"""Benchmark purge-old-logs on MariaDB: delete rate, slowest batch, concurrent writer waits.

Fills the log item table with old rows, then runs the purge through the runner as the CLI
does. Meanwhile a second connection inserts fresh log items one at a time. The script
prints the delete rate, the slowest batch and the writer's longest single insert.

    python benchmarks/purge_old_logs.py                    # starts a throw-away MariaDB
    python benchmarks/purge_old_logs.py --url mysql://root@127.0.0.1:3306/damjobs_bench

The database named by --url is migrated, and its log items are deleted. The password, if
any, is read from DAMJOBS__DATABASE__PASSWORD.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from damjobs import db, runner  # noqa: E402
from damjobs.db import models  # noqa: E402
from damjobs.jobs import JOBS, purge_old_logs  # noqa: E402
from damjobs.output import OutputOptions  # noqa: E402
from tests.helpers import make_workspace, with_settings  # noqa: E402
from tests.services.mariadb import MariaDBServer  # noqa: E402


def fill(database, rows: int) -> float:
    """Insert `rows` log items created 60 days ago; return the seconds it took."""
    started = time.monotonic()
    chunk = 100_000
    done = 0
    while done < rows:
        count = min(chunk, rows - done)
        # seq_1_to_N is MariaDB's Sequence storage engine, so the rows never leave the server.
        database.execute_sql(
            "INSERT INTO log_item (created_at, level, job, message) "
            "SELECT UTC_TIMESTAMP() - INTERVAL 60 DAY, 'info', 'benchmark', "
            f"CONCAT('benchmark row ', seq) FROM seq_1_to_{count}"
        )
        done += count

    return time.monotonic() - started


class Writer(threading.Thread):
    """Insert fresh log items in autocommit mode and record the longest insert."""

    def __init__(self, url: str, password: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.password = password
        self.stopped = threading.Event()
        self.inserts = 0
        self.longest = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        database = db.make_database(self.url, self.password)
        database.connect()
        try:
            while not self.stopped.is_set():
                started = time.monotonic()
                try:
                    database.execute_sql(
                        "INSERT INTO log_item (created_at, level, message) "
                        "VALUES (UTC_TIMESTAMP(), 'info', 'concurrent writer')"
                    )
                except Exception as error:  # noqa: BLE001 - reported at the end
                    self.errors.append(str(error))
                self.longest = max(self.longest, time.monotonic() - started)
                self.inserts += 1
                time.sleep(0.002)
        finally:
            database.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", help="mysql:// URL of a database to use; default: start one"
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="old rows to purge")
    parser.add_argument("--batch-size", type=int, default=10_000, help="rows per batch")
    arguments = parser.parse_args()

    server = None
    url = arguments.url
    if url is None:
        server = MariaDBServer()
        server.start()
        url = server.create_database()
    password = os.environ.get("DAMJOBS__DATABASE__PASSWORD", "")
    try:
        with tempfile.TemporaryDirectory() as folder:
            workspace = make_workspace(Path(folder) / "ws", url)
            database = workspace.database
            models.LogItem.delete().execute()
            fill_seconds = fill(database, arguments.rows)
            print(f"filled {arguments.rows} old rows in {fill_seconds:.1f} s")
            settings = with_settings(
                workspace, purge_old_logs__batch_size=arguments.batch_size
            )
            writer = Writer(url, password)
            writer.start()
            time.sleep(0.5)
            started = time.monotonic()
            summary = runner.run_job(
                JOBS["purge-old-logs"],
                settings,
                database,
                runner.RunOptions(),
                purge_old_logs.Options(),
                OutputOptions(verbosity=-1),
            )
            elapsed = time.monotonic() - started
            time.sleep(0.5)
            writer.stopped.set()
            writer.join(10)
            deleted = summary.details["tables"]["log_item"].get("deleted", 0)
            left = (
                models.LogItem.select().where(models.LogItem.job == "benchmark").count()
            )
            print(
                f"exit code {int(summary.exit_code)}; deleted {deleted} rows, {left} old rows left"
            )
            print(f"purge: {elapsed:.2f} s, {deleted / elapsed:,.0f} rows/s")
            print(
                f"slowest batch: {summary.details['slowest_batch_seconds']:.3f} s "
                f"(batch size {arguments.batch_size})"
            )
            print(
                f"concurrent writer: {writer.inserts} inserts, longest insert "
                f"{writer.longest:.3f} s, {len(writer.errors)} errors"
            )
            for error in writer.errors[:5]:
                print(f"  writer error: {error}")
            database.close()
    finally:
        if server is not None:
            server.drop_database(url)
            server.stop()

    return 0


if __name__ == "__main__":
    sys.exit(main())
