"""The docs, the crontab example and the help texts stay in step with the code."""

import re

import pytest
from typer.testing import CliRunner

from damjobs import config
from damjobs.cli import app
from damjobs.exit_codes import ExitCode
from damjobs.jobs import JOBS
from tests.helpers import REPOSITORY

DOCS = REPOSITORY / "docs"
runner = CliRunner()


def help_text(*command: str) -> str:
    result = runner.invoke(
        app, [*command, "--help"], env={"NO_COLOR": "1", "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def crontab_commands() -> list[str]:
    lines = (REPOSITORY / "crontab.example").read_text().splitlines()
    return [
        line
        for line in lines
        if line
        and not line.startswith("#")
        and "damjobs" in line
        and "=" not in line.split()[0]
    ]


@pytest.mark.parametrize("name", sorted(JOBS))
def test_job_has_help_with_summary(name):
    text = help_text(name)

    first_words = " ".join(JOBS[name].summary.split()[:4])
    assert first_words in " ".join(text.split())


@pytest.mark.parametrize("name", sorted(JOBS))
def test_job_accepts_dry_run_and_json(name):
    text = help_text(name)

    assert "--dry-run" in text
    assert "--json" in text


@pytest.mark.parametrize("name", sorted(JOBS))
def test_job_has_docs_page(name):
    page = DOCS / "jobs" / f"{name}.md"

    assert page.is_file()
    assert f"# {name}" in page.read_text()


@pytest.mark.parametrize("name", sorted(JOBS))
def test_crontab_lists_exactly_periodic_jobs(name):
    scheduled = any(
        re.search(rf"damjobs .*\b{re.escape(name)}\b", line)
        for line in crontab_commands()
    )

    assert scheduled == JOBS[name].periodic


def test_every_command_has_help():
    text = help_text()
    commands = re.findall(r"^\s{2}([a-z][a-z-]+)\s", text, flags=re.MULTILINE)

    assert set(JOBS) <= set(commands)
    for command in commands:
        assert help_text(command).strip()


def test_exit_codes_page_lists_every_code():
    text = (DOCS / "exit-codes.md").read_text()

    for code in ExitCode:
        assert re.search(
            rf"^\| {code.value} \| {code.name} \|", text, flags=re.MULTILINE
        ), code


def test_configuration_page_lists_every_key():
    text = (DOCS / "configuration.md").read_text()
    embedded = text.split("<!-- keys:start -->\n", 1)[1].split("<!-- keys:end -->", 1)[
        0
    ]

    assert embedded == config.reference_markdown(), (
        "docs/configuration.md is out of date; replace the table between the keys markers "
        "with the output of: python -c 'from damjobs import config; "
        'print(config.reference_markdown(), end="")\''
    )


def test_readme_names_both_commands():
    text = (REPOSITORY / "README.md").read_text()

    assert "scripts/demo" in text
    assert "scripts/test" in text
    assert "scripts/test" in (REPOSITORY / ".ci" / "run").read_text()


def test_version_option():
    result = runner.invoke(app, ["--version"])

    assert result.exit_code == 0
    assert result.output.startswith("damjobs ")
