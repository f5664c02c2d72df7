"""Command-line argument handling before Typer parses them."""

from damjobs.cli import hoist_global_options


def test_global_flags_after_command_move_to_front():
    hoisted = hoist_global_options(["precache", "--prune", "-q", "--config", "a.toml"])

    assert hoisted == ["-q", "--config", "a.toml", "precache", "--prune"]


def test_option_with_equals_moves_whole():
    hoisted = hoist_global_options(["status", "--log-file=/tmp/x.log"])

    assert hoisted == ["--log-file=/tmp/x.log", "status"]


def test_arguments_after_double_dash_stay():
    hoisted = hoist_global_options(["import", "--", "-q"])

    assert hoisted == ["import", "--", "-q"]
