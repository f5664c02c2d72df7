"""Throw-away servers for the test suite: MariaDB and a single-node OpenSearch.

Each server listens on 127.0.0.1 only, on a port picked free at start, and keeps its
data in a temporary folder that `stop()` removes.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


class ServiceStartError(RuntimeError):
    """A test server failed to start or did not become ready in time."""


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process may take the port before the server binds it. The window is short,
    and the server then fails to start with a clear error rather than a wrong result.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_log_tail(path: Path, max_lines: int = 40) -> str:
    """Return the last `max_lines` lines of a log file, or a note when it is missing."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(log file {path} was not created)"
    return "\n".join(lines[-max_lines:])


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Send SIGTERM to a server process, and SIGKILL after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
