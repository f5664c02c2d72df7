"""The CLI's error messages, exit codes and admin commands."""

import json
import subprocess
import sys

import pymysql

from damjobs import db
from damjobs.db import models
from tests.helpers import cli_environment, make_workspace, run_cli


def test_missing_config_exits_2_with_hint(tmp_path):
    done = run_cli("--config", str(tmp_path / "absent.toml"), "precache")

    assert done.returncode == 2
    assert "no configuration file there" in done.stderr
    assert "damjobs init" in done.stderr


def test_invalid_config_lists_problems(tmp_path):
    path = tmp_path / "damjobs.toml"
    path.write_text('[cache]\nttl_days = "soon"\n')

    done = run_cli("--config", str(path), "build-missing")

    assert done.returncode == 2
    assert "cache.ttl_days = 'soon' must be a whole number" in done.stderr
    assert "[paths] originals_root is missing" in done.stderr


def test_init_then_check_config_succeeds(tmp_path):
    init = run_cli("init", str(tmp_path / "dam"))
    check = run_cli("--config", str(tmp_path / "dam" / "damjobs.toml"), "check-config")

    assert init.returncode == 0, init.stderr
    assert check.returncode == 0, check.stdout
    assert "schema: version" in check.stdout


def test_check_config_reports_unknown_colour(tmp_path):
    run_cli("init", str(tmp_path / "dam"))

    check = run_cli(
        "--config",
        str(tmp_path / "dam" / "damjobs.toml"),
        "check-config",
        env={
            **cli_environment(),
            "DAMJOBS__RENDER__DEFAULT_BACKGROUND": "nosuchcolour",
        },
    )

    assert check.returncode == 2
    assert "render.default_background: nosuchcolour: not a colour" in check.stdout


def test_check_config_notes_pixels_beyond_imagemagick_memory(tmp_path):
    run_cli("init", str(tmp_path / "dam"))
    config = str(tmp_path / "dam" / "damjobs.toml")
    small = {**cli_environment(), "DAMJOBS__RENDER__MAX_PIXELS": "1000000"}
    large = {**cli_environment(), "DAMJOBS__RENDER__MAX_PIXELS": "100000000"}

    quiet = run_cli("--config", config, "check-config", env=small)
    noted = run_cli("--config", config, "check-config", env=large)

    assert quiet.returncode == 0, quiet.stdout
    assert "imagemagick limits: memory" in quiet.stdout
    assert "render.max_pixels" not in quiet.stdout
    assert noted.returncode == 0, noted.stdout
    assert (
        "render.max_pixels: 100000000: note: an image of that size needs 762 MiB"
        in (noted.stdout)
    )


def test_check_config_keeps_exit_code_when_reader_leaves(tmp_path):
    run_cli("init", str(tmp_path / "dam"))
    environment = {
        **cli_environment(),
        "DAMJOBS__PATHS__ORIGINALS_ROOT": str(tmp_path / "missing"),
    }
    check = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "damjobs",
            "--config",
            str(tmp_path / "dam" / "damjobs.toml"),
            "check-config",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )
    # Read one line and close the pipe, as `check-config | head -1` does.
    first_line = check.stdout.readline()
    check.stdout.close()
    check.wait(timeout=120)

    assert first_line.startswith(b"configuration:")
    assert check.returncode == 1


def test_init_rejects_a_file_path(tmp_path):
    (tmp_path / "damjobs.toml").write_text("")

    done = run_cli("init", str(tmp_path / "damjobs.toml"))

    assert done.returncode == 2
    assert "is a file, but init needs a folder" in done.stderr
    assert "unexpected error" not in done.stderr


def test_init_refuses_to_overwrite(tmp_path):
    run_cli("init", str(tmp_path / "dam"))

    done = run_cli("init", str(tmp_path / "dam"))

    assert done.returncode == 2
    assert "--force" in done.stderr


def test_job_on_empty_database_asks_for_upgrade(tmp_path):
    run_cli("init", str(tmp_path / "dam"))
    config_path = tmp_path / "dam" / "damjobs.toml"
    (tmp_path / "dam" / "damjobs.db").unlink()

    done = run_cli("--config", str(config_path), "precache")
    upgrade = run_cli("--config", str(config_path), "db", "upgrade")
    again = run_cli("--config", str(config_path), "precache")

    assert done.returncode == 1
    assert "damjobs db upgrade" in done.stderr
    assert upgrade.returncode == 0
    assert again.returncode == 0, again.stderr


def test_upgrade_refused_while_job_runs(tmp_path, database_url):
    workspace = make_workspace(tmp_path / "ws", database_url)
    models.SchemaMigration.delete().where(models.SchemaMigration.version > 1).execute()
    status_id = models.JobStatus.insert(
        job="precache",
        state="running",
        trigger="manual",
        updated_at=db.now(workspace.database),
    ).execute()
    models.JobSlot.insert(
        job="precache",
        state="running",
        status_id=status_id,
        host="elsewhere",
        pid=1,
        updated_at=db.now(workspace.database),
    ).execute()

    done = workspace.cli("db", "upgrade")

    assert done.returncode == 1
    assert "jobs are running: precache" in done.stderr


def test_unknown_option_is_usage_error(tmp_path):
    done = run_cli("precache", "--no-such-option")

    assert done.returncode == 2


def test_invalid_max_runtime_names_value(tmp_path):
    workspace = make_workspace(
        tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'dam.db'}"
    )

    done = workspace.cli("precache", "--max-runtime", "soon")

    assert done.returncode == 2
    assert "invalid --max-runtime 'soon'" in done.stderr


def test_enqueue_and_status_json(tmp_path, database_url):
    workspace = make_workspace(tmp_path / "ws", database_url)

    enqueue = workspace.cli("enqueue", "build-missing")
    status = workspace.cli("status", "--json")

    report = json.loads(status.stdout)
    assert enqueue.returncode == 0
    assert report["jobs"]["build-missing"]["slot"]["state"] == "enqueued"
    assert report["jobs"]["precache"]["slot"] is None


def test_enqueue_unknown_job_is_usage_error(tmp_path):
    workspace = make_workspace(
        tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'dam.db'}"
    )

    done = workspace.cli("enqueue", "defrag")

    assert done.returncode == 2
    assert "unknown job 'defrag'" in done.stderr


def test_unexpected_error_hides_traceback_without_verbose(tmp_path):
    workspace = make_workspace(
        tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'dam.db'}"
    )
    workspace.database.execute_sql("DROP TABLE cache_entry")

    quiet = workspace.cli("entries")
    verbose = workspace.cli("-v", "entries")

    assert quiet.returncode == 1
    assert "Traceback" not in quiet.stderr
    assert "run again with -v" in quiet.stderr
    assert "Traceback" in verbose.stderr


def test_log_file_records_debug(tmp_path):
    workspace = make_workspace(
        tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'dam.db'}"
    )
    log_file = tmp_path / "run.log"

    done = workspace.cli("-q", "--log-file", str(log_file), "precache")

    assert done.returncode == 0
    assert done.stderr == ""
    assert "precache started" in log_file.read_text()


def test_mysql_connection_survives_server_kill(mariadb_url):
    database = db.open_database(mariadb_url)
    connection_id = database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
    host, port = mariadb_url.split("@")[1].split("/")[0].split(":")
    killer = pymysql.connect(host=host, port=int(port), user="root")
    with killer.cursor() as cursor:
        cursor.execute(f"KILL CONNECTION {int(connection_id)}")
    killer.close()

    value = database.execute_sql("SELECT 1").fetchone()[0]

    assert value == 1


def test_upgrade_reports_newer_schema(tmp_path):
    workspace = make_workspace(
        tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'dam.db'}"
    )
    models.SchemaMigration.insert(
        version=99, name="future", applied_at=db.now(workspace.database)
    ).execute()

    done = workspace.cli("db", "upgrade")

    assert done.returncode == 1
    assert "newer than version" in done.stderr


def test_unwritable_log_file_is_usage_error(tmp_path):
    workspace = make_workspace(
        tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'dam.db'}"
    )

    done = workspace.cli("--log-file", str(tmp_path / "absent" / "x.log"), "status")

    assert done.returncode == 2
    assert "cannot open the log file" in done.stderr
    assert "Traceback" not in done.stderr


def test_cache_root_that_is_a_file_fails_cleanly(tmp_path):
    workspace = make_workspace(
        tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'dam.db'}"
    )
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    environ = {**cli_environment(), "DAMJOBS__PATHS__CACHE_ROOT": str(not_a_folder)}

    done = workspace.cli("build-missing", env=environ)

    assert done.returncode == 1
    assert "cannot use the cache root" in done.stderr
    assert "Traceback" not in done.stderr


def test_printable_escapes_control_characters():
    from damjobs.jobs.sources import printable

    assert printable("evil\nINFO forged\tline") == "evil\\nINFO forged\\tline"
