"""Time precache planning on MariaDB: from scratch, with nothing changed, and after a change.

The data are generated inside MariaDB with set-based INSERTs from the SEQUENCE engine:
FILES files (all transformable, a mix of JPEG, PNG and WebP), 5 AutoCache predefined
settings, and FILES / 5 AutoCache croppings (one on every fifth file). With the default
FILES = 1,000,000 that plans 1,000,000 originals + 5,000,000 setting entries + 200,000
croppings + 1,000,000 cropping x setting pairs = 7,200,000 cache entries.

Each precache run is `damjobs precache --json` in its own process. The figures are its
wall time and its peak RSS, which wait4 reports for that process alone, so the memory of
the database server is not included.

Usage: .venv/bin/python benchmarks/precache_planning.py [--files 1000000]
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

from tests.helpers import make_workspace  # noqa: E402

SETTINGS = 5
CROPPING_EVERY = 5
CHANGED_FILES = 1000

# Server configuration for the run. Every variable is dynamic in MariaDB 10.11, so
# benchlib applies them with SET GLOBAL after the test server starts.
SERVER_VARIABLES: dict[str, str | int] = {
    "innodb_buffer_pool_size": 4 * 1024**3,
    "innodb_log_file_size": 2 * 1024**3,
    "innodb_io_capacity": 2000,
    "tmp_table_size": 256 * 1024**2,
    "max_heap_table_size": 256 * 1024**2,
}
"""Added to the test server's options, which already skip the binary log, flush the
redo log once a second (innodb_flush_log_at_trx_commit = 2) and turn off the doublewrite
buffer."""


def generate(server, url: str, files: int) -> float:
    """Fill the damjobs tables of `url` with the benchmark data; return the seconds taken."""
    name = url.rsplit("/", 1)[1]
    connection = server.connect(name)
    started = time.monotonic()
    statements = [
        "INSERT INTO folder (id, parent_id, name, created_at) "
        "VALUES (1, NULL, '', UTC_TIMESTAMP())",
        "INSERT INTO file (folder_id, name, path, extension, format, media_type, size_bytes, "
        "width, height, checksum, is_transformable, version, created_at, updated_at) "
        "SELECT 1, CONCAT('photo-', seq, ELT(seq % 3 + 1, '.jpg', '.png', '.webp')), "
        "CONCAT('photos/', seq DIV 1000, '/photo-', seq, "
        "ELT(seq % 3 + 1, '.jpg', '.png', '.webp')), "
        "ELT(seq % 3 + 1, 'jpg', 'png', 'webp'), ELT(seq % 3 + 1, 'jpeg', 'png', 'webp'), "
        "ELT(seq % 3 + 1, 'image/jpeg', 'image/png', 'image/webp'), 250000, 4000, 3000, "
        f"REPEAT('0', 64), 1, 1, UTC_TIMESTAMP(), UTC_TIMESTAMP() FROM seq_1_to_{files}",
        "INSERT INTO predefined_setting (name, output_format, ttl_days, auto_cache, version, "
        "updated_at) SELECT CONCAT('setting-', seq), ELT(seq, 'webp', 'jpeg', NULL, 'png', "
        f"'jpeg'), NULL, 1, 1, UTC_TIMESTAMP() FROM seq_1_to_{SETTINGS}",
        "INSERT INTO setting_step (setting_id, position, kind, params) "
        "SELECT id, 1, 'resize', CONCAT('{\"width\": ', 100 * id, '}') "
        "FROM predefined_setting",
        "INSERT INTO cropping (file_id, name, x, y, width, height, auto_cache, version, "
        "updated_at) SELECT id, 'square', 0, 0, 1000, 1000, 1, 1, UTC_TIMESTAMP() "
        f"FROM file WHERE id % {CROPPING_EVERY} = 0",
    ]
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    connection.close()
    return time.monotonic() - started


def change_some(server, url: str) -> None:
    """Give CHANGED_FILES files a new version, as an edit of their originals would."""
    connection = server.connect(url.rsplit("/", 1)[1])
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE file SET version = version + 1 WHERE id % 1000 = 7 LIMIT {CHANGED_FILES}"
        )
    connection.close()


def run_precache(config: Path, label: str) -> dict:
    result = benchlib.run_measured(
        benchlib.damjobs_command(config, "precache", "--json"),
        env=benchlib.damjobs_environment(),
    )
    if result.returncode != 0:
        sys.exit(
            f"precache ({label}) failed with {result.returncode}:\n{result.stderr[-3000:]}"
        )
    details = json.loads(result.stdout)["details"]
    counts = {k: v for k, v in details.items() if isinstance(v, int)}
    print(
        f"{label}: {result.seconds:.1f} s, peak RSS {result.max_rss_kib / 1024:.0f} MB, "
        f"counts {counts}"
    )
    return {
        "seconds": result.seconds,
        "rss_mb": result.max_rss_kib / 1024,
        "counts": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/damjobs-bench-precache")
    )
    arguments = parser.parse_args()

    print("machine:")
    benchlib.print_machine()
    print(
        "server variables:", ", ".join(f"{k}={v}" for k, v in SERVER_VARIABLES.items())
    )
    server = benchlib.start_mariadb(SERVER_VARIABLES)
    try:
        url = server.create_database()
        workspace = make_workspace(arguments.work, url)
        workspace.database.close()
        seconds = generate(server, url, arguments.files)
        expected = arguments.files * (1 + SETTINGS) + (
            arguments.files // CROPPING_EVERY
        ) * (1 + SETTINGS)
        print(
            f"generated {arguments.files} files, {SETTINGS} settings, "
            f"{arguments.files // CROPPING_EVERY} croppings in {seconds:.1f} s; "
            f"{expected} entries expected"
        )

        scratch = run_precache(workspace.config_path, "from scratch")
        planned = sum(v for k, v in scratch["counts"].items() if k.startswith("new_"))
        if planned != expected:
            sys.exit(f"precache planned {planned} entries, expected {expected}")
        unchanged = run_precache(workspace.config_path, "nothing changed")
        change_some(server, url)
        changed_files = min(CHANGED_FILES, arguments.files // 1000)
        changed = run_precache(workspace.config_path, f"{changed_files} files changed")
        # Files with id % 1000 = 7 have no cropping, so each has 1 + SETTINGS entries.
        if changed["counts"]["replanned"] != changed_files * (1 + SETTINGS):
            sys.exit(
                f"expected {changed_files * (1 + SETTINGS)} re-planned entries, "
                f"got {changed['counts']}"
            )

        print(
            f"goal from scratch < 60 s: {'met' if scratch['seconds'] < 60 else 'MISSED'}"
        )
        print(
            f"goal nothing changed a few seconds (< 5 s): "
            f"{'met' if unchanged['seconds'] < 5 else 'MISSED'}"
        )
        worst_rss = max(r["rss_mb"] for r in (scratch, unchanged, changed))
        print(
            f"goal RSS < 200 MB: {'met' if worst_rss < 200 else 'MISSED'} "
            f"(worst {worst_rss:.0f} MB)"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
