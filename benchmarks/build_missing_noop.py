"""Time build-missing on a large built cache with nothing to do, and its memory over a
long render run.

Part 1: ENTRIES built cache entries (FILES = ENTRIES / 5 files x 5 predefined settings)
are inserted directly in MariaDB, each with its own tiny real WebP file in the sharded
cache layout. `damjobs build-missing` then has nothing to render but must read every
entry and check its file on disk; the figure is entries checked per second.

Part 2: RENDER_ENTRIES entries (RENDER_ENTRIES / 5 small JPEG originals x 5 settings)
are rendered by `damjobs build-missing`, while the RSS of its process and of the whole
process tree (render workers included) is sampled every second.

Usage: .venv/bin/python benchmarks/build_missing_noop.py [--entries 500000]
       [--render-entries 20000]
"""

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

from tests.helpers import make_workspace, real_photos  # noqa: E402

SETTINGS = 5
SERVER_VARIABLES: dict[str, str | int] = {
    "innodb_buffer_pool_size": 2 * 1024**3,
    "innodb_log_file_size": 1024**3,
}
DEFINITIONS = "".join(
    f"""
[[setting]]
name = "small-{number}"
output_format = "{fmt}"
auto_cache = true
steps = [{{ kind = "resize", width = {width} }}]
"""
    for number, (fmt, width) in enumerate(
        [("webp", 32), ("jpeg", 48), ("png", 24), ("jpeg", 40), ("webp", 56)], start=1
    )
)


def cache_path(key: int) -> str:
    """Return the sharded relative path of the benchmark entry `key`."""
    digest = hashlib.sha256(str(key).encode()).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest}.webp"


def tiny_webp(work: Path) -> bytes:
    """Return a 16x16 WebP made from a real photograph."""
    target = work / "tiny.webp"
    benchlib.run_measured(
        [
            benchlib.IMAGEMAGICK_CONVERT,
            f"jpeg:{first_jpeg()}",
            "-resize",
            "16x16!",
            "-strip",
            str(target),
        ]
    )
    return target.read_bytes()


def first_jpeg() -> Path:
    return next(p for p in real_photos() if p.suffix.lower() == ".jpg")


def execute(server, url: str, statements: list[str]) -> None:
    connection = server.connect(url.rsplit("/", 1)[1])
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    connection.close()


def insert_files_and_settings(server, url: str, files: int, folder: str) -> None:
    execute(
        server,
        url,
        [
            "INSERT INTO folder (id, parent_id, name, created_at) "
            "VALUES (1, NULL, '', UTC_TIMESTAMP())",
            "INSERT INTO file (folder_id, name, path, extension, format, media_type, size_bytes, "
            "width, height, checksum, is_transformable, version, created_at, updated_at) "
            f"SELECT 1, CONCAT(seq, '.jpg'), CONCAT('{folder}/', seq, '.jpg'), 'jpg', 'jpeg', "
            "'image/jpeg', 1000, 64, 48, REPEAT('0', 64), 1, 1, UTC_TIMESTAMP(), "
            f"UTC_TIMESTAMP() FROM seq_1_to_{files}",
        ],
    )


def build_noop_cache(server, work: Path, entries: int) -> tuple[Path, int]:
    """Create the built cache of part 1; return the config path and the entry count."""
    files = entries // SETTINGS
    url = server.create_database()
    workspace = make_workspace(work / "noop", url)
    workspace.database.close()
    insert_files_and_settings(server, url, files, "photos")
    execute(
        server,
        url,
        [
            "INSERT INTO predefined_setting (name, output_format, ttl_days, auto_cache, version, "
            "updated_at) SELECT CONCAT('small-', seq), 'webp', NULL, 1, 1, UTC_TIMESTAMP() "
            f"FROM seq_1_to_{SETTINGS}",
            "INSERT INTO setting_step (setting_id, position, kind, params) "
            "SELECT id, 1, 'resize', '{\"width\": 16}' FROM predefined_setting",
            # The key file_id * 10 + setting_id names the cache file of each entry.
            "INSERT INTO cache_entry (file_id, cropping_id, setting_id, custom_id, output_format, "
            "state, file_version, cropping_version, setting_version, path, size_bytes, "
            "planned_at, built_at, expires_at) "
            "SELECT f.id, 0, s.id, 0, 'webp', 'built', 1, 0, 1, "
            "CONCAT(LEFT(SHA2(f.id * 10 + s.id, 256), 2), '/', "
            "SUBSTRING(SHA2(f.id * 10 + s.id, 256), 3, 2), '/', SHA2(f.id * 10 + s.id, 256), "
            "'.webp'), 100, UTC_TIMESTAMP(), UTC_TIMESTAMP(), "
            "UTC_TIMESTAMP() + INTERVAL 30 DAY FROM file f CROSS JOIN predefined_setting s",
        ],
    )
    data = tiny_webp(work)
    cache_root = workspace.cache
    started = time.monotonic()
    for file_id in range(1, files + 1):
        for setting_id in range(1, SETTINGS + 1):
            path = cache_root / cache_path(file_id * 10 + setting_id)
            try:
                path.write_bytes(data)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    print(
        f"wrote {entries} cache files of {len(data)} bytes in "
        f"{time.monotonic() - started:.0f} s"
    )
    return workspace.config_path, entries


def run_build_missing(
    config: Path, sample_seconds: float = 0.0
) -> tuple[dict, benchlib.RunResult]:
    result = benchlib.run_measured(
        benchlib.damjobs_command(config, "build-missing", "--json"),
        env=benchlib.damjobs_environment(),
        sample_seconds=sample_seconds,
    )
    if result.returncode not in (0,):
        sys.exit(
            f"build-missing failed with {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return json.loads(result.stdout), result


def build_render_set(server, work: Path, entries: int) -> Path:
    """Create part 2: small JPEG originals whose setting entries are all expected."""
    files = entries // SETTINGS
    url = server.create_database()
    workspace = make_workspace(work / "render", url)
    workspace.database.close()
    small = work / "small.jpg"
    benchlib.run_measured(
        [
            benchlib.IMAGEMAGICK_CONVERT,
            f"jpeg:{first_jpeg()}",
            "-resize",
            "64x48!",
            "-quality",
            "85",
            str(small),
        ]
    )
    folder = workspace.originals / "small"
    folder.mkdir(parents=True)
    for number in range(1, files + 1):
        shutil.copyfile(small, folder / f"{number}.jpg")
    insert_files_and_settings(server, url, files, "small")
    definitions = work / "definitions.toml"
    definitions.write_text(DEFINITIONS)
    environment = benchlib.damjobs_environment()
    for arguments in (("define", str(definitions)), ("precache",)):
        result = benchlib.run_measured(
            benchlib.damjobs_command(workspace.config_path, *arguments), env=environment
        )
        if result.returncode != 0:
            sys.exit(f"{arguments[0]} failed:\n{result.stderr[-3000:]}")
    # Only the derivatives are measured, so the byte copies of the originals go.
    execute(server, url, ["DELETE FROM cache_entry WHERE output_format = 'original'"])
    return workspace.config_path


def describe_memory(result: benchlib.RunResult) -> None:
    samples = result.tree_rss_samples
    if not samples:
        print("  no RSS samples")
        return
    quarter = max(1, len(samples) // 4)
    first = [rss for _, rss in samples[:quarter]]
    last = [rss for _, rss in samples[-quarter:]]
    print(f"  main process peak RSS {result.max_rss_kib / 1024:.0f} MB (wait4)")
    print(
        f"  process tree RSS: min {min(r for _, r in samples) / 1024:.0f} MB, "
        f"max {max(r for _, r in samples) / 1024:.0f} MB, "
        f"mean of first quarter {sum(first) / len(first) / 1024:.0f} MB, "
        f"mean of last quarter {sum(last) / len(last) / 1024:.0f} MB"
    )
    step = max(1, len(samples) // 12)
    timeline = ", ".join(f"{t:.0f}s {rss / 1024:.0f}" for t, rss in samples[::step])
    print(f"  timeline (seconds, tree RSS MB): {timeline}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--render-entries", type=int, default=20_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/damjobs-bench-noop"))
    arguments = parser.parse_args()
    benchlib.check_imagemagick()

    print("machine:")
    benchlib.print_machine()
    print(
        "server variables:", ", ".join(f"{k}={v}" for k, v in SERVER_VARIABLES.items())
    )
    shutil.rmtree(arguments.work, ignore_errors=True)
    arguments.work.mkdir(parents=True)
    server = benchlib.start_mariadb(SERVER_VARIABLES)
    try:
        if arguments.entries:
            config, entries = build_noop_cache(
                server, arguments.work, arguments.entries
            )
            for attempt in (1, 2):
                summary, result = run_build_missing(config)
                rendered = summary["details"]["rendered"]
                print(
                    f"nothing to do, run {attempt}: {entries} entries checked in "
                    f"{result.seconds:.1f} s = {entries / result.seconds:,.0f} entries/s, "
                    f"{rendered} rendered, peak RSS {result.max_rss_kib / 1024:.0f} MB"
                )
                if rendered:
                    sys.exit(
                        "build-missing rendered entries in a cache that was complete"
                    )
        if arguments.render_entries:
            config = build_render_set(server, arguments.work, arguments.render_entries)
            summary, result = run_build_missing(config, sample_seconds=1.0)
            rendered = summary["details"]["rendered"]
            print(
                f"render run: {rendered} entries rendered in {result.seconds:.0f} s "
                f"= {rendered / result.seconds:.0f} entries/s, "
                f"failed {summary['failed']}"
            )
            describe_memory(result)
    finally:
        server.stop()
        shutil.rmtree(arguments.work, ignore_errors=True)


if __name__ == "__main__":
    main()
