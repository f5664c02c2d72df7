"""Exceptions that damjobs raises on purpose, each with a message and a hint.

The CLI boundary turns them into one error line, one hint line and an exit code.
"""

from damjobs.exit_codes import ExitCode


class DamjobsError(Exception):
    """Root of every error that damjobs reports to the user."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(DamjobsError):
    """The configuration file or an environment override is invalid."""

    exit_code = ExitCode.USAGE_ERROR

    def __init__(self, problems: list[str], hint: str = "") -> None:
        message = "invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(message, hint)
        self.problems = problems


class UsageError(DamjobsError):
    """A command-line argument or an input file given on the command line is invalid."""

    exit_code = ExitCode.USAGE_ERROR


class DefinitionError(UsageError):
    """A predefined setting, cropping or transformation step is invalid."""


class RepositoryError(DamjobsError):
    """The database failed, or its schema does not match this version of damjobs."""


class SchemaOutdatedError(RepositoryError):
    """The database schema is older than this version of damjobs expects."""


class StorageError(DamjobsError):
    """A root folder or cache file cannot be read or written."""


class PathOutsideRootError(StorageError):
    """A path from the database leaves the configured root folder."""


class JobAlreadyRunningError(DamjobsError):
    """Another process has claimed the slot of this job."""

    exit_code = ExitCode.ALREADY_RUNNING


class RenderError(DamjobsError):
    """Rendering one cache entry failed."""


class SearchError(DamjobsError):
    """The search cluster failed, rejected a request or holds an index that blocks the job."""
