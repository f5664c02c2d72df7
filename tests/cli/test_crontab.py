"""Every line of crontab.example runs as written, silently, on a real workspace."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPOSITORY, cli_environment, make_workspace, real_photos

CRON_FIELD = re.compile(r"^(\*|\d+)(-\d+)?(/\d+)?(,(\d+)(-\d+)?)*$")


def cron_lines() -> list[tuple[list[str], str]]:
    """Return (five time fields, command) for every job line of crontab.example."""
    jobs = []
    for line in (REPOSITORY / "crontab.example").read_text().splitlines():
        if not line.strip() or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 6)
        jobs.append((fields[:5], fields[6]))
    return jobs


def test_crontab_has_valid_schedules():
    lines = cron_lines()

    assert len(lines) >= 3
    for times, _command in lines:
        assert all(CRON_FIELD.match(field) for field in times), times


@pytest.mark.parametrize(
    "job",
    [
        "precache",
        "build-missing",
        "rebuild-expired",
        "purge-old-logs",
        "purge-old-job-statuses",
    ],
)
def test_help_cron_line_matches_crontab(job):
    done = subprocess.run(
        [sys.executable, "-m", "damjobs", job, "--help"],
        capture_output=True,
        text=True,
        env={**cli_environment(), "COLUMNS": "200"},
        check=True,
    )
    example = re.search(r"Example cron line: (.+)", done.stdout)

    assert example is not None, done.stdout
    *times, command = example[1].split(None, 5)
    assert any(
        line_times == times and line_command.split(";")[-1].strip().startswith(command)
        for line_times, line_command in cron_lines()
    ), example[1]


@pytest.fixture
def workspace(tmp_path):
    workspace = make_workspace(
        tmp_path / "ws", f"sqlite:///{tmp_path / 'ws' / 'dam.db'}"
    )
    source = tmp_path / "photos"
    source.mkdir()
    photo = min(
        (p for p in real_photos() if p.suffix == ".jpg"), key=lambda p: p.stat().st_size
    )
    shutil.copy(photo, source / photo.name)
    assert workspace.cli("import", str(source)).returncode == 0

    return workspace


@pytest.mark.parametrize("command", [command for _times, command in cron_lines()])
def test_crontab_line_runs_quietly(workspace, tmp_path, command):
    env_file = tmp_path / "env"
    env_file.write_text(
        "DAMJOBS__DATABASE__PASSWORD=\nexport DAMJOBS__DATABASE__PASSWORD\n"
    )
    environ = cli_environment()
    environ["DAMJOBS_CONFIG"] = str(workspace.config_path)
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ['PATH']}"
    shell_command = command.replace("/etc/damjobs/env", str(env_file))

    done = subprocess.run(
        ["sh", "-c", shell_command],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == ""
