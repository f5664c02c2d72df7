"""Helpers shared by the damjobs benchmarks: machine facts, timed runs, RSS, MariaDB.

The benchmarks import this module by putting their own folder on sys.path, so they run
as plain scripts: `.venv/bin/python benchmarks/<name>.py`.
"""

import dataclasses
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

IMAGEMAGICK_CONVERT = "/usr/bin/convert-im6.q16"
"""ImageMagick 6's own convert. The first `convert` on PATH may be another program."""


def machine_summary() -> dict[str, str]:
    """Return the facts that a benchmark record needs about this machine."""
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    debian = Path("/etc/debian_version").read_text().strip()

    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": cpu_model,
        "memory": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "debian": debian,
        "python": platform.python_version(),
        "imagemagick": _first_line([IMAGEMAGICK_CONVERT, "-version"]),
        "mariadb": _first_line([_mariadbd(), "--version"]),
    }


def print_machine() -> None:
    for key, value in machine_summary().items():
        print(f"  {key}: {value}")


def _mariadbd() -> str:
    for candidate in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld"):
        if os.path.exists(candidate):
            return candidate
    return "mariadbd"


def _first_line(command: list[str]) -> str:
    try:
        output = subprocess.run(
            command, capture_output=True, text=True, check=False
        ).stdout
    except OSError as error:
        return f"not available ({error})"
    return output.strip().splitlines()[0] if output.strip() else "unknown"


def check_imagemagick() -> None:
    """Exit with a message unless IMAGEMAGICK_CONVERT is ImageMagick."""
    line = _first_line([IMAGEMAGICK_CONVERT, "-version"])
    if "ImageMagick" not in line:
        sys.exit(f"{IMAGEMAGICK_CONVERT} -version printed {line!r}, not ImageMagick")


def median(values: list[float]) -> float:
    return statistics.median(values)


def damjobs_command(config_path: Path, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "damjobs", "--config", str(config_path), *arguments]


def damjobs_environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAMJOBS")}
    environment["NO_COLOR"] = "1"
    environment["PYTHONPATH"] = str(REPOSITORY)
    return environment


def process_tree_rss_kib(pid: int) -> int:
    """Return the summed VmRSS of `pid` and all of its descendants, in KiB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        total += _rss_kib(current)
        pending.extend(children.get(current, []))
    return total


def _rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


@dataclasses.dataclass
class RunResult:
    """One timed subprocess run."""

    returncode: int
    seconds: float
    stdout: str
    stderr: str
    max_rss_kib: int
    """Peak RSS of the started process itself (not its children), from wait4."""
    tree_rss_samples: list[tuple[float, int]]
    """(seconds since start, summed RSS in KiB of the process and its children)."""


def run_measured(
    command: list[str], env: dict[str, str] | None = None, sample_seconds: float = 0.0
) -> RunResult:
    """
    Run `command`, wait for it, and return its wall time and peak RSS.

    With `sample_seconds` > 0 a thread also samples the RSS of the whole process tree
    at that interval, which covers render workers that wait4 does not count.
    """
    stdout_path = Path(f"/tmp/damjobs-bench-{os.getpid()}.out")
    stderr_path = Path(f"/tmp/damjobs-bench-{os.getpid()}.err")
    samples: list[tuple[float, int]] = []
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
        finished = threading.Event()

        def sample() -> None:
            while not finished.wait(sample_seconds):
                samples.append(
                    (time.monotonic() - started, process_tree_rss_kib(process.pid))
                )

        sampler = None
        if sample_seconds > 0:
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        finished.set()
        if sampler is not None:
            sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
    result = RunResult(
        process.returncode,
        seconds,
        stdout_path.read_text(errors="replace"),
        stderr_path.read_text(errors="replace"),
        usage.ru_maxrss,
        samples,
    )
    stdout_path.unlink(missing_ok=True)
    stderr_path.unlink(missing_ok=True)
    return result


def start_mariadb(global_variables: dict[str, str | int]):
    """
    Start the throw-away test MariaDB, then apply `global_variables` with SET GLOBAL.

    Every variable used by the benchmarks is dynamic in MariaDB 10.11, so this gives the
    same server as passing them on its command line.
    """
    from tests.services.mariadb import MariaDBServer  # noqa: PLC0415

    server = MariaDBServer()
    server.start()
    connection = server.connect()
    try:
        with connection.cursor() as cursor:
            for name, value in global_variables.items():
                cursor.execute(f"SET GLOBAL {name} = {value}")
    finally:
        connection.close()
    return server
