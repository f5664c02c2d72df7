"""The damjobs command line: one subcommand per job plus a few admin commands.

Commands stay thin: they parse options, load the configuration and call into the
runner, the jobs or the content module. `boundary` is the one place that turns
exceptions into an error message, a hint and an exit code.
"""

import dataclasses
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import peewee
import typer

import damjobs
from damjobs import config, db
from damjobs import output as terminal
from damjobs.errors import DamjobsError, JobAlreadyRunningError
from damjobs.exit_codes import ExitCode

logger = logging.getLogger("damjobs.cli")

app = typer.Typer(
    name="damjobs",
    help="Run the background maintenance jobs of a Digital Asset Management system.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclasses.dataclass
class GlobalOptions:
    config_path: Path | None = None
    output: terminal.OutputOptions = dataclasses.field(
        default_factory=terminal.OutputOptions
    )


GLOBAL = GlobalOptions()


def _show_version(value: bool) -> None:
    if value:
        print(f"damjobs {damjobs.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    config_path: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help=f"Configuration file. Default: ${config.CONFIG_ENV}, else "
            f"{config.DEFAULT_CONFIG_PATH}.",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only errors (for cron).")
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="Print more; -vv also prints the SQL."
        ),
    ] = 0,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log-file", help="Also append every message, debug included, here."
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version.",
        ),
    ] = False,
) -> None:
    """Run the background maintenance jobs of a Digital Asset Management system."""
    GLOBAL.config_path = config_path
    GLOBAL.output = terminal.OutputOptions(
        verbosity=-1 if quiet else verbose, log_file=log_file
    )
    try:
        terminal.configure_logging(GLOBAL.output)
    except OSError as error:
        print(
            f"damjobs: error: cannot open the log file {log_file}: {error.strerror}",
            file=sys.stderr,
        )
        print("hint: create its folder or change --log-file", file=sys.stderr)
        raise typer.Exit(ExitCode.USAGE_ERROR) from error


def set_json(json_output: bool) -> None:
    """Switch the summary to JSON on stdout for this command."""
    if json_output:
        GLOBAL.output = dataclasses.replace(GLOBAL.output, json=True)


def load_settings() -> config.Settings:
    """Load the configuration named by the global options and the environment."""

    path = config.find_config_path(GLOBAL.config_path, os.environ)

    return config.load(path)


def open_database(settings: config.Settings) -> peewee.Database:
    return db.open_database(
        settings["database.url"],
        settings["database.password"],
        settings["database.connect_timeout_seconds"],
    )


F = TypeVar("F", bound=Callable[..., Any])


def boundary(command: F) -> F:
    """
    Run a command and turn what it raises into a message and an exit code.

    A command returns its exit code. DamjobsError prints its message and hint; "already
    running" is one warning line that -q hides; anything unexpected prints a traceback
    only with -v, and never local variables.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = command(*args, **kwargs)
        except typer.Exit:
            raise
        except JobAlreadyRunningError as error:
            logger.warning("%s", error.message)
            code = ExitCode.ALREADY_RUNNING
        except DamjobsError as error:
            print(f"damjobs: error: {error.message}", file=sys.stderr)
            if error.hint:
                print(f"hint: {error.hint}", file=sys.stderr)
            code = error.exit_code
        except KeyboardInterrupt:
            print("damjobs: interrupted", file=sys.stderr)
            code = ExitCode.INTERRUPTED
        except BrokenPipeError:
            # The reader of stdout has gone (`damjobs entries | head`): stop quietly, and
            # point stdout at /dev/null so the interpreter's final flush cannot fail too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = ExitCode.SUCCEEDED
        except Exception as error:  # noqa: BLE001 - the one place that catches everything
            print(
                f"damjobs: unexpected error: {type(error).__name__}: {error}",
                file=sys.stderr,
            )
            if GLOBAL.output.verbosity >= 1:
                traceback.print_exception(error, file=sys.stderr)
            else:
                print("hint: run again with -v to see the traceback", file=sys.stderr)
            code = ExitCode.FAILED
        raise typer.Exit(int(code or 0))

    return wrapper  # type: ignore[return-value]


GLOBAL_FLAGS = {"-q", "--quiet", "-v", "-vv", "-vvv", "--verbose"}
GLOBAL_OPTIONS_WITH_VALUE = {"-c", "--config", "--log-file"}


def hoist_global_options(arguments: list[str]) -> list[str]:
    """
    Move global options that follow the command name to the front.

    Operators write `damjobs precache -q` as often as `damjobs -q precache`; both work.
    Arguments after `--` stay where they are.
    """
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument == "--":
            rest += arguments[index:]
            break
        name = argument.split("=", 1)[0]
        if (
            argument in GLOBAL_FLAGS
            or name in GLOBAL_OPTIONS_WITH_VALUE
            and "=" in argument
        ):
            front.append(argument)
        elif argument in GLOBAL_OPTIONS_WITH_VALUE and index + 1 < len(arguments):
            front += arguments[index : index + 2]
            index += 1
        else:
            rest.append(argument)
        index += 1

    return front + rest


def main() -> None:
    """Entry point of the `damjobs` console script."""
    app(args=hoist_global_options(sys.argv[1:]), prog_name="damjobs")


# The command modules register themselves on `app` when imported.
from damjobs.cli import (  # noqa: E402, F401
    admin,
    jobs,
    search_commands,  # noqa: E402, F401
    upkeep_commands,  # noqa: E402, F401
)
