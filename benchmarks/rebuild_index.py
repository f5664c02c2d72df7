"""Benchmark rebuild-index: documents per second, client memory, searches during the swap.

Fills a MariaDB database with N files (folders, tags, descriptions, attributes and
croppings included), then runs `damjobs rebuild-index` twice as a subprocess against an
OpenSearch node. The first run creates the alias; during the second a thread searches
the alias every 100 ms and counts errors and empty results. The client's RSS is sampled
from /proc every 100 ms.

Without --mariadb-url and --opensearch-url it starts throw-away servers through
tests/services, so scripts/install-system-deps must have run. Example:

    python benchmarks/rebuild_index.py --files 200000
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from opensearchpy import OpenSearch  # noqa: E402

from damjobs import config, db  # noqa: E402
from damjobs.db import migrations  # noqa: E402

FOLDERS = 1000
TAGS = 200
ALIAS = "bench-files"


def fill_database(url: str, files: int) -> None:
    """Create the schema and N files with related rows, using MariaDB's sequence engine."""
    database = db.open_database(url)
    for migration in migrations.pending(database):
        migrations.apply(database, migration)
    run = database.execute_sql
    run(
        "INSERT INTO folder (id, parent_id, name, created_at) VALUES (1, NULL, '', UTC_TIMESTAMP())"
    )
    run(
        f"INSERT INTO folder (id, parent_id, name, created_at) SELECT seq, CASE WHEN seq <= 11 THEN 1 ELSE 2 + MOD(seq, 10) END, "
        f"CONCAT('folder-', seq), UTC_TIMESTAMP() FROM seq_2_to_{FOLDERS}"
    )
    run(
        "INSERT INTO file (id, folder_id, name, path, extension, format, media_type, "
        "size_bytes, width, height, checksum, is_transformable, version, created_at, "
        "updated_at) SELECT seq, 1 + MOD(seq, "
        f"{FOLDERS}), CONCAT('photo-', seq, '.jpg'), CONCAT('p/', seq, '.jpg'), 'jpg', "
        "'jpeg', 'image/jpeg', 100000 + seq, 1920, 1080, REPEAT('0', 64), 1, 1, "
        f"UTC_TIMESTAMP(), UTC_TIMESTAMP() FROM seq_1_to_{files}"
    )
    run(
        f"INSERT INTO tag (id, name) SELECT seq, CONCAT('tag-', seq) FROM seq_1_to_{TAGS}"
    )
    run(
        "INSERT INTO file_tag (file_id, tag_id) SELECT seq, 1 + MOD(seq, "
        f"{TAGS}) FROM seq_1_to_{files}"
    )
    run(
        "INSERT INTO file_tag (file_id, tag_id) SELECT seq, 1 + MOD(seq * 7 + 3, "
        f"{TAGS}) FROM seq_1_to_{files} WHERE MOD(seq * 7 + 3, {TAGS}) <> MOD(seq, {TAGS})"
    )
    run(
        "INSERT INTO file_description (file_id, language, text) SELECT seq, 'en', "
        f"CONCAT('A photograph of item ', seq, ' on a white background') FROM seq_1_to_{files}"
    )
    run(
        "INSERT INTO attribute (file_id, kind, name, value) SELECT seq, 'exif', 'FNumber', "
        f"CAST(1.4 + MOD(seq, 20) / 2 AS CHAR) FROM seq_1_to_{files}"
    )
    run(
        "INSERT INTO attribute (file_id, kind, name, value) SELECT seq, 'user', "
        f"'Photographer', CONCAT('Person ', MOD(seq, 97)) FROM seq_1_to_{files}"
    )
    run(
        "INSERT INTO cropping (file_id, name, x, y, width, height, auto_cache, version, "
        f"updated_at) SELECT seq, 'square', 0, 0, 1080, 1080, 1, 1, UTC_TIMESTAMP() "
        f"FROM seq_1_to_{files} WHERE MOD(seq, 10) = 0"
    )
    # The fill's own change log is not part of what a rebuild on a quiet system reads.
    run("TRUNCATE TABLE search_change")
    database.close()


def wait_for_innodb_background_work(url: str, max_seconds: float = 120.0) -> float:
    """
    Wait until InnoDB has written the fill's dirty pages and purged its undo history, or
    until neither number fell for 10 s, so that the first rebuild does not share the CPU
    with that work. Return the seconds waited.
    """
    database = db.open_database(url)
    started = time.monotonic()
    readings: list[tuple[int, int]] = []
    while time.monotonic() - started < max_seconds:
        status = dict(
            database.execute_sql(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ("
                "'Innodb_buffer_pool_pages_dirty', 'Innodb_history_list_length')"
            ).fetchall()
        )
        dirty = int(status.get("Innodb_buffer_pool_pages_dirty", 0))
        history = int(status.get("Innodb_history_list_length", 0))
        readings.append((dirty, history))
        if dirty < 100 and history < 1000:
            break
        if len(readings) > 5:
            dirty_fell = min(d for d, _h in readings[-5:]) < readings[-6][0]
            history_fell = min(h for _d, h in readings[-5:]) < readings[-6][1]
            if not dirty_fell and not history_fell:
                break
        time.sleep(2.0)
    database.close()

    return time.monotonic() - started


def write_config(
    folder: Path, database_url: str, opensearch_url: str, args: argparse.Namespace
) -> Path:
    text = config.starter_text(folder)
    values = {
        "url": json.dumps(database_url),
        "hosts": json.dumps(opensearch_url),
        "alias": json.dumps(ALIAS),
        "replicas": "0",
        "batch_size": str(args.batch_size),
        "bulk_concurrency": str(args.concurrency),
        "bulk_max_bytes": str(args.bulk_max_bytes),
    }
    lines = []
    for line in text.splitlines():
        name = line.split(" = ", 1)[0]
        if name in values:
            line = f"{name} = {values[name]}"
        lines.append(line)
    path = folder / "damjobs.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("originals", "cache", "published", "locks"):
        (folder / name).mkdir(exist_ok=True)

    return path


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def index_settings(client: OpenSearch, alias: str) -> dict[str, tuple[str, str, str]]:
    """Return (refresh interval, replicas, translog durability) of each index of `alias`."""
    response = client.indices.get_settings(
        index=f"{alias}-*",
        name="index.refresh_interval,index.number_of_replicas,index.translog.durability",
        include_defaults=True,
        flat_settings=True,
        allow_no_indices=True,
    )
    found = {}
    for name, body in response.items():
        values = {**body.get("defaults", {}), **body.get("settings", {})}
        found[name] = (
            values.get("index.refresh_interval", "?"),
            values.get("index.number_of_replicas", "?"),
            values.get("index.translog.durability", "?"),
        )

    return found


def run_rebuild(
    config_path: Path, client: OpenSearch, alias: str
) -> tuple[dict, int, float, set[tuple[str, str, str]]]:
    """
    Run rebuild-index once. Return its summary, the peak RSS in KiB, the seconds and the
    settings seen on the new index while it loaded, read every 2 s.
    """
    before = set(index_settings(client, alias))
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "damjobs",
            "--config",
            str(config_path),
            "-q",
            "rebuild-index",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPOSITORY,
    )
    peak = 0
    load_settings = set()
    next_check = started + 2.0
    while process.poll() is None:
        peak = max(peak, rss_kib(process.pid))
        if time.monotonic() >= next_check:
            next_check += 2.0
            for name, values in index_settings(client, alias).items():
                if name not in before:
                    load_settings.add(values)
        time.sleep(0.1)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"rebuild-index exited {process.returncode}:\n{stderr}")

    return json.loads(stdout), peak, time.monotonic() - started, load_settings


class Searcher(threading.Thread):
    """Search the alias every `interval` seconds; count errors and empty results."""

    def __init__(self, url: str, alias: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.client = OpenSearch(hosts=[url], timeout=10)
        self.alias = alias
        self.interval = interval
        self.stopped = threading.Event()
        self.searches = self.errors = self.empty = 0
        self.slowest = 0.0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            started = time.monotonic()
            try:
                response = self.client.search(
                    index=self.alias,
                    body={"query": {"match": {"tags": "tag-7"}}, "size": 10},
                )
                if not response["hits"]["hits"]:
                    self.empty += 1
            except Exception:  # noqa: BLE001 - every failure is what the benchmark counts
                self.errors += 1
            self.searches += 1
            self.slowest = max(self.slowest, time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="Files to create.")
    parser.add_argument(
        "--mariadb-url", help="Empty MariaDB database to fill, mysql://..."
    )
    parser.add_argument(
        "--opensearch-url", help="OpenSearch node, such as http://127.0.0.1:9200"
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="index.batch_size")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="index.bulk_concurrency"
    )
    parser.add_argument(
        "--bulk-max-bytes",
        type=int,
        default=5 * 1024 * 1024,
        help="index.bulk_max_bytes",
    )
    parser.add_argument(
        "--interval", type=float, default=0.1, help="Seconds between searches."
    )
    args = parser.parse_args()

    servers = []
    database_url = args.mariadb_url
    opensearch_url = args.opensearch_url
    try:
        if database_url is None:
            from tests.services.mariadb import MariaDBServer  # noqa: PLC0415

            mariadb = MariaDBServer()
            mariadb.start()
            servers.append(mariadb)
            database_url = mariadb.create_database()
        if opensearch_url is None:
            from tests.services.opensearch import OpenSearchNode  # noqa: PLC0415

            node = OpenSearchNode()
            node.start()
            servers.append(node)
            opensearch_url = node.url

        started = time.monotonic()
        fill_database(database_url, args.files)
        print(
            f"filled {args.files} files in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        waited = wait_for_innodb_background_work(database_url)
        print(f"waited {waited:.1f} s for InnoDB to flush and purge", flush=True)
        with tempfile.TemporaryDirectory(prefix="damjobs-bench-") as folder:
            config_path = write_config(Path(folder), database_url, opensearch_url, args)
            client = OpenSearch(hosts=[opensearch_url], timeout=30)
            runs = [
                (
                    "first rebuild (creates the alias)",
                    *run_rebuild(config_path, client, ALIAS),
                )
            ]
            searcher = Searcher(opensearch_url, ALIAS, args.interval)
            searcher.start()
            runs.append(
                (
                    "second rebuild (swaps under searches)",
                    *run_rebuild(config_path, client, ALIAS),
                )
            )
            searcher.stopped.set()
            searcher.join()
            final_settings = index_settings(client, ALIAS)
    finally:
        for server in reversed(servers):
            server.stop()

    for label, summary, peak, seconds, load_settings in runs:
        details = summary["details"]
        print(
            f"{label}: {details['documents']} documents, load {details['load_seconds']:.1f} s "
            f"at {details['documents_per_second']:.0f} documents/s, whole run {seconds:.1f} s, "
            f"client peak RSS {peak / 1024:.0f} MiB, retried 429 {details['retried_429']}"
        )
        print(
            "  settings seen while loading (refresh interval, replicas, translog "
            f"durability): {sorted(load_settings)}"
        )
    print(f"settings after the runs: {final_settings}")
    print(
        f"searches during the second rebuild: {searcher.searches}, errors {searcher.errors}, "
        f"empty results {searcher.empty}, slowest {searcher.slowest * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
