"""A throw-away single-node OpenSearch for the test session.

scripts/install-system-deps unpacks the minimal OpenSearch distribution (no security
plugin, so plain HTTP without login) into a cache folder. Each start copies it into a
temporary folder, because the node writes its data, logs and keystore below its home.
OpenSearch does not run as root, so a root test run starts it as an unprivileged user.

NOTE: the minimal distribution has one module, transport-netty4. Checked on 2.19.6:
indexing, bulk and search work, but _delete_by_query and _reindex (module reindex),
painless scripts (lang-painless) and filters such as asciifolding (analysis-common)
fail with HTTP 400. Maven Central has no zip of those modules for 2.19.6.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import ServiceStartError, find_free_port, read_log_tail, stop_process

logger = logging.getLogger(__name__)

# Keep these in step with scripts/install-system-deps.
OPENSEARCH_VERSION = "2.19.6"
HOME_VARIABLE = "DAMJOBS_TEST_OPENSEARCH_HOME"
USER_VARIABLE = "DAMJOBS_TEST_OPENSEARCH_USER"
DEFAULT_USER = "damjobs-opensearch"
COMPLETE_MARKER = ".damjobs-unpacked"

CLUSTER_NAME = "damjobs-test"
# A fixed heap of 1 GiB keeps the node's memory use predictable next to MariaDB and the
# tests.
JAVA_OPTIONS = "-Xms1g -Xmx1g"
# Generous, because a start took about 5 s in scripts/test on a 2-core, 24 GiB machine
# with Java 17.
START_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 60.0

# Requests to the node must never go through an HTTP proxy from the environment.
_direct_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def default_distribution_dir() -> Path:
    """Return the folder that scripts/install-system-deps unpacks OpenSearch into."""
    configured = os.environ.get(HOME_VARIABLE)
    if configured:
        return Path(configured)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "damjobs-test" / f"opensearch-{OPENSEARCH_VERSION}"


def find_java_home() -> Path:
    """Return the JDK that runs OpenSearch: OPENSEARCH_JAVA_HOME, else `java` on PATH.

    JAVA_HOME is deliberately not used, because it may name a JDK that is too new:
    OpenSearch 2.19 needs the Java security manager, which Java 24 disabled (JEP 486).
    """
    configured = os.environ.get("OPENSEARCH_JAVA_HOME")
    if configured:
        return Path(configured)
    java = shutil.which("java")
    if java is None:
        raise ServiceStartError(
            "java not found on PATH, so OpenSearch cannot start; install Java 17 "
            "or 21, or set OPENSEARCH_JAVA_HOME to a JDK folder."
        )
    # /usr/bin/java is a chain of symbolic links into the JDK's bin folder.
    return Path(java).resolve().parent.parent


def _find_run_as_user() -> pwd.struct_passwd | None:
    """Return the user that runs OpenSearch, or None to run it as the current user."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(USER_VARIABLE) or DEFAULT_USER
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise ServiceStartError(
            f"user {name!r} not found; OpenSearch does not run as root, so run "
            f"scripts/install-system-deps to create it or set {USER_VARIABLE}."
        ) from None
    if user.pw_uid == 0:
        raise ServiceStartError(
            f"user {name!r} has uid 0, but OpenSearch needs an unprivileged user; "
            f"set {USER_VARIABLE} to another user."
        )
    return user


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for folder, subfolders, files in os.walk(root):
        for name in subfolders + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


class OpenSearchNode:
    """A single-node OpenSearch cluster on 127.0.0.1 that lives until `stop()`."""

    def __init__(self, distribution_dir: Path | None = None) -> None:
        self.distribution_dir = distribution_dir or default_distribution_dir()
        self.host = "127.0.0.1"
        self.http_port = 0
        self.transport_port = 0
        self._base_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the node's REST API, such as http://127.0.0.1:9200."""
        return f"http://{self.host}:{self.http_port}"

    def start(self) -> None:
        """Copy the distribution, start the node and wait for health yellow or green."""
        if not (self.distribution_dir / COMPLETE_MARKER).is_file():
            raise ServiceStartError(
                f"OpenSearch {OPENSEARCH_VERSION} not found in "
                f"{self.distribution_dir}; run scripts/install-system-deps to fetch "
                "and unpack it."
            )
        java_home = find_java_home()
        run_as_user = _find_run_as_user()

        started = time.monotonic()
        self._base_dir = Path(tempfile.mkdtemp(prefix="damjobs-opensearch-"))
        home = self._base_dir / "opensearch"
        shutil.copytree(self.distribution_dir, home, symlinks=True)
        (self._base_dir / "tmp").mkdir()
        self.http_port = find_free_port()
        self.transport_port = find_free_port()
        self._write_config(home)
        if run_as_user is not None:
            _chown_tree(self._base_dir, run_as_user.pw_uid, run_as_user.pw_gid)

        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self._base_dir),
            "OPENSEARCH_JAVA_HOME": str(java_home),
            "OPENSEARCH_JAVA_OPTS": JAVA_OPTIONS,
            "OPENSEARCH_TMPDIR": str(self._base_dir / "tmp"),
        }
        # None keeps the current user, group and supplementary groups.
        uid = gid = None
        extra_groups: list[int] | None = None
        if run_as_user is not None:
            uid, gid, extra_groups = run_as_user.pw_uid, run_as_user.pw_gid, []
        with self.console_log.open("wb") as console:
            self._process = subprocess.Popen(
                [str(home / "bin" / "opensearch")],
                cwd=home,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                user=uid,
                group=gid,
                extra_groups=extra_groups,
            )
        self._wait_for_health()
        logger.info(
            "OpenSearch started at %s in %.1f s (home %s)",
            self.url,
            time.monotonic() - started,
            home,
        )

    @property
    def console_log(self) -> Path:
        assert self._base_dir is not None, "the node has not been started"
        return self._base_dir / "console.log"

    @property
    def server_log(self) -> Path:
        assert self._base_dir is not None, "the node has not been started"
        return self._base_dir / "opensearch" / "logs" / f"{CLUSTER_NAME}.log"

    def _write_config(self, home: Path) -> None:
        settings = {
            "cluster.name": CLUSTER_NAME,
            "node.name": "damjobs-test-node",
            "discovery.type": "single-node",
            "network.host": self.host,
            "http.port": self.http_port,
            "transport.port": self.transport_port,
            # Without this, a nearly full disk makes every index read-only and the tests
            # fail for a reason unrelated to damjobs.
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,
            # Below the default 100mb, so that a test can send a document too large for
            # one request without writing 100 MB. index.bulk_max_bytes stays below it.
            "http.max_content_length": "10mb",
        }
        # JSON is valid YAML, and json.dumps quotes every value correctly for it.
        lines = [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
        (home / "config" / "opensearch.yml").write_text("\n".join(lines) + "\n")

    def _wait_for_health(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last_error = "no response yet"
        while time.monotonic() < deadline:
            exit_code = self._process.poll()
            if exit_code is not None:
                self._fail_start(
                    f"OpenSearch exited with code {exit_code} during start-up"
                )
            try:
                status = self.cluster_health()["status"]
            except (OSError, ValueError, KeyError) as error:
                last_error = str(error)
            else:
                if status in ("yellow", "green"):
                    return
                last_error = f"cluster health is {status}"
            time.sleep(1.0)
        self._fail_start(
            f"OpenSearch at {self.url} did not reach cluster health yellow within "
            f"{START_TIMEOUT_SECONDS:.0f} s (last check: {last_error})"
        )

    def cluster_health(self) -> dict[str, object]:
        """Return the decoded response of GET /_cluster/health."""
        with _direct_opener.open(f"{self.url}/_cluster/health", timeout=5) as response:
            result: dict[str, object] = json.load(response)
        return result

    def _fail_start(self, reason: str) -> None:
        console_log, server_log = self.console_log, self.server_log
        message = (
            f"{reason}.\n"
            f"Last lines of {console_log}:\n{read_log_tail(console_log)}\n"
            f"Last lines of {server_log}:\n{read_log_tail(server_log)}"
        )
        self.stop()
        raise ServiceStartError(message)

    def stop(self) -> None:
        """Stop the node and remove its folder. Safe to call more than once."""
        if self._process is not None:
            stop_process(self._process, STOP_TIMEOUT_SECONDS)
            self._process = None
        if self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None
