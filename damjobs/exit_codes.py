"""The process exit codes of every damjobs command.

docs/exit-codes.md lists the same codes for operators; a test keeps the two in step.
"""

import enum


class ExitCode(enum.IntEnum):
    """Exit status of one damjobs command."""

    SUCCEEDED = 0
    FAILED = 1
    USAGE_ERROR = 2
    ALREADY_RUNNING = 3
    ITEMS_FAILED = 4
    INTERRUPTED = 130
