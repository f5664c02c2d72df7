"""Configuration: one TOML file, an environment override for every key, frozen settings.

Every key is declared once in `KEYS`; the starter file that `damjobs init` writes, the
environment names and the validation all come from that list. Problems are collected and
reported together, each with the file, the key and how to fix it.
"""

import dataclasses
import difflib
import grp
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from damjobs.errors import ConfigError

CONFIG_ENV = "DAMJOBS_CONFIG"
DEFAULT_CONFIG_PATH = Path("/etc/damjobs/damjobs.toml")
ENV_PREFIX = "DAMJOBS__"
OUTPUT_FORMATS = ("jpeg", "png", "webp")


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key: where it lives, its type, its default and its help line."""

    section: str
    name: str
    kind: str  # "str", "int", "float", "bool", "path", "mode"
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    secret: bool = False  # read only from the environment, never from the file
    starter: Any = (
        None  # value written by `damjobs init`, relative to the chosen folder
    )

    @property
    def env_name(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}__{self.name.upper()}"

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def _at_least(minimum: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}"

    return check


def _between(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _database_url(value: Any) -> str | None:
    if re.match(r"^(sqlite:///.+|mysql://[^/]+/\w+)", value) is None:
        return "must look like sqlite:///path/to/file.db or mysql://user@host:3306/database"
    if value.startswith("mysql://") and re.match(r"^mysql://[^/@]*:[^/@]*@", value):
        return (
            "must not contain a password; set it in the environment as "
            "DAMJOBS__DATABASE__PASSWORD"
        )
    return None


def _group(value: Any) -> str | None:
    if value == "":
        return None
    try:
        grp.getgrnam(value)
    except KeyError:
        return 'names no group on this host; create the group or set the key to ""'
    return None


def _search_hosts(value: Any) -> str | None:
    hosts = [host.strip() for host in value.split(",")]
    if not all(re.fullmatch(r"https?://[^/\s]+/?", host) for host in hosts):
        return "must be http:// or https:// URLs without a path, separated by commas"
    if any(re.match(r"https?://[^/@]*:[^/@]*@", host) for host in hosts):
        return "must not contain a password; set DAMJOBS__INDEX__PASSWORD instead"
    return None


def _index_name(value: Any) -> str | None:
    # OpenSearch index and alias names are lowercase and cannot start with -, _ or +.
    if re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,200}", value) is None:
        return "must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


KEYS: tuple[Key, ...] = (
    Key(
        "paths",
        "originals_root",
        "path",
        None,
        "Folder holding the original files.",
        starter="originals",
    ),
    Key(
        "paths",
        "cache_root",
        "path",
        None,
        "Folder that receives the cached files.",
        starter="cache",
    ),
    Key(
        "paths",
        "published_root",
        "path",
        None,
        "Folder holding published copies.",
        starter="published",
    ),
    Key(
        "paths",
        "lock_dir",
        "path",
        Path("/run/lock/damjobs"),
        "Folder for the per-job lock files; must be on a local file system.",
        starter="locks",
    ),
    Key(
        "database",
        "url",
        "str",
        None,
        "sqlite:///relative/or/absolute.db, or mysql://user@host:3306/database.",
        check=_database_url,
        starter="sqlite:///damjobs.db",
    ),
    Key(
        "database",
        "password",
        "str",
        "",
        "MySQL password; set it only in the environment.",
        secret=True,
    ),
    Key(
        "database",
        "connect_timeout_seconds",
        "int",
        10,
        "Seconds to wait for the database server to answer.",
        check=_at_least(1),
    ),
    Key(
        "cache",
        "ttl_days",
        "int",
        30,
        "Days a cached file stays fresh; a predefined setting may override it.",
        check=_at_least(1),
    ),
    Key(
        "cache",
        "default_output_format",
        "str",
        "webp",
        "Output format for a cropping of a source that is not JPEG, PNG or WebP.",
        check=_one_of(*OUTPUT_FORMATS),
    ),
    Key(
        "cache",
        "file_mode",
        "mode",
        0o644,
        "Permission bits of cached files (octal string).",
    ),
    Key(
        "cache",
        "dir_mode",
        "mode",
        0o755,
        "Permission bits of cache folders (octal string).",
    ),
    Key(
        "cache",
        "group",
        "str",
        "",
        'Group that owns cached files, so the web server can read them; "" keeps the default.',
        check=_group,
    ),
    Key(
        "render",
        "workers",
        "int",
        0,
        "Render processes; 0 uses every CPU this process may run on.",
        check=_at_least(0),
    ),
    Key(
        "render",
        "timeout_seconds",
        "float",
        120.0,
        "Seconds one source image may take before its worker is killed.",
        check=_at_least(1),
    ),
    Key(
        "render",
        "images_per_worker",
        "int",
        200,
        "Source images a worker renders before a fresh one replaces it.",
        check=_at_least(1),
    ),
    Key(
        "render",
        "max_width",
        "int",
        16000,
        "Widest source image to decode, in pixels.",
        check=_between(1, 65535),
    ),
    Key(
        "render",
        "max_height",
        "int",
        16000,
        "Tallest source image to decode, in pixels.",
        check=_between(1, 65535),
    ),
    Key(
        "render",
        "max_pixels",
        "int",
        100_000_000,
        "Largest source image to decode, in pixels (width x height).",
        check=_at_least(1),
    ),
    Key(
        "render",
        "default_background",
        "str",
        "white",
        "Colour behind transparent pixels in JPEG output and on canvases; check-config "
        "and the rendering jobs reject a name that ImageMagick does not know.",
    ),
    Key(
        "render",
        "default_quality",
        "int",
        85,
        "JPEG and WebP quality when no step sets one.",
        check=_between(1, 100),
    ),
    Key(
        "render",
        "srgb_profile",
        "path",
        Path("/usr/share/color/icc/ghostscript/srgb.icc"),
        "ICC profile that CMYK and profiled sources are converted to.",
    ),
    Key(
        "render",
        "cmyk_profile",
        "path",
        Path("/usr/share/color/icc/ghostscript/default_cmyk.icc"),
        "ICC profile assumed for CMYK sources that carry none.",
    ),
    Key(
        "jobs",
        "stale_after_minutes",
        "int",
        15,
        "Minutes without a heartbeat after which a run on another host counts as dead.",
        check=_at_least(1),
    ),
    Key(
        "jobs",
        "heartbeat_seconds",
        "int",
        15,
        "Seconds between heartbeats of a run.",
        check=_at_least(1),
    ),
    Key(
        "jobs",
        "max_log_items_per_run",
        "int",
        500,
        "Warnings and errors of one run stored as log items; the rest are counted.",
        check=_at_least(0),
    ),
    Key(
        "purge",
        "lock_wait_timeout_seconds",
        "int",
        5,
        "Seconds a purge batch waits for a row lock before it rolls back and retries.",
        check=_at_least(1),
    ),
    Key(
        "purge",
        "max_attempts",
        "int",
        6,
        "Attempts of one purge batch that hits deadlocks or lock-wait timeouts; the pause "
        "between attempts doubles from 0.2 s up to 5 s.",
        check=_at_least(1),
    ),
    Key(
        "purge_old_logs",
        "max_age_days",
        "int",
        30,
        "Log items older than this many days are deleted; --max-age-days overrides it.",
        check=_at_least(1),
    ),
    Key(
        "purge_old_logs",
        "batch_size",
        "int",
        10000,
        "Rows of the log item table that one committed delete covers at most.",
        check=_between(1, 100000),
    ),
    Key(
        "purge_old_job_statuses",
        "max_age_hours",
        "int",
        24,
        "Job statuses not updated for this many hours are deleted.",
        check=_at_least(1),
    ),
    Key(
        "purge_old_job_statuses",
        "batch_size",
        "int",
        5000,
        "Rows of the job status table that one committed delete covers at most.",
        check=_between(1, 100000),
    ),
    Key(
        "purge_expired_published",
        "grace_minutes",
        "int",
        0,
        "Minutes after its expiry time that a published file is still kept.",
        check=_at_least(0),
    ),
    Key(
        "purge_expired_published",
        "batch_size",
        "int",
        500,
        "Published files whose copies and rows one committed batch deletes at most.",
        check=_between(1, 10000),
    ),
    Key(
        "purge_custom_transformations",
        "grace_minutes",
        "int",
        60,
        "Minutes since its last request, or since its cached file was written, during which "
        "a custom transformation is kept.",
        check=_at_least(0),
    ),
    Key(
        "purge_custom_transformations",
        "batch_size",
        "int",
        200,
        "Custom transformations that one committed batch deletes at most, with their files.",
        check=_between(1, 10000),
    ),
    Key(
        "index",
        "hosts",
        "str",
        "http://localhost:9200",
        "OpenSearch URLs, separated by commas, such as https://search1:9200.",
        check=_search_hosts,
    ),
    Key(
        "index", "user", "str", "", 'User for HTTP basic authentication; "" sends none.'
    ),
    Key(
        "index",
        "password",
        "str",
        "",
        "Password of index.user; set it only in the environment.",
        secret=True,
    ),
    Key(
        "index",
        "verify_certs",
        "bool",
        True,
        "Verify the TLS certificate of an https:// host.",
    ),
    Key(
        "index",
        "ca_file",
        "str",
        "",
        'PEM file of the CA that signed the cluster\'s certificate; "" uses the system CAs.',
    ),
    Key(
        "index",
        "timeout_seconds",
        "float",
        60.0,
        "Seconds to wait for one request to the cluster.",
        check=_at_least(1),
    ),
    Key(
        "index",
        "alias",
        "str",
        "dam-files",
        "Alias that the DAM searches; each rebuild creates ALIAS-<UTC time> behind it.",
        check=_index_name,
    ),
    Key(
        "index",
        "batch_size",
        "int",
        1000,
        "Files read from the database at a time while loading; catch-up passes also send "
        "this many per bulk request.",
        check=_between(1, 50000),
    ),
    Key(
        "index",
        "bulk_concurrency",
        "int",
        2,
        "Bulk requests in flight at once while loading.",
        check=_between(1, 16),
    ),
    Key(
        "index",
        "bulk_max_bytes",
        "int",
        5 * 1024 * 1024,
        "Size of one bulk request while loading, in bytes of UTF-8 JSON; a larger "
        "document goes alone.",
        check=_between(10_000, 100 * 1024 * 1024),
    ),
    Key(
        "index",
        "max_retries",
        "int",
        8,
        "Times a document rejected with HTTP 429 is sent again, with a doubling wait.",
        check=_at_least(0),
    ),
    Key(
        "index",
        "max_failed_documents",
        "int",
        100,
        "Documents that may fail to index before the rebuild gives up without a swap.",
        check=_at_least(0),
    ),
    Key(
        "index",
        "keep_old_indices",
        "int",
        1,
        "Previous indices kept after a swap so that `damjobs index rollback` can return.",
        check=_at_least(0),
    ),
    Key(
        "index",
        "shards",
        "int",
        1,
        "Primary shards of a new index.",
        check=_between(1, 1024),
    ),
    Key(
        "index",
        "replicas",
        "int",
        1,
        "Replicas of an index once loaded; loading runs with none. Set 0 on a "
        "single-node cluster, where a replica has no node and the index stays yellow.",
        check=_at_least(0),
    ),
    Key(
        "index",
        "refresh_interval",
        "str",
        "1s",
        "Refresh interval of an index once loaded, in OpenSearch time units such as 1s.",
    ),
    Key(
        "index",
        "catch_up_slack_seconds",
        "int",
        60,
        "Changes logged this long before a rebuild started are indexed again too, to cover "
        "transactions still open when it started.",
        check=_at_least(0),
    ),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated configuration: `values` maps "section.key" to the typed value."""

    path: Path | None
    values: Mapping[str, Any]

    def __getitem__(self, dotted: str) -> Any:
        return self.values[dotted]


def find_config_path(option: Path | None, environ: Mapping[str, str]) -> Path:
    """Return the config path from `--config`, else DAMJOBS_CONFIG, else the default path."""
    if option is not None:
        return option
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])

    return DEFAULT_CONFIG_PATH


def load(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """
    Read the TOML file at `path`, apply environment overrides and validate every key.

    Raise ConfigError listing every problem at once.
    """
    environ = os.environ if environ is None else environ
    if not path.is_file():
        raise ConfigError(
            [f"{path}: no configuration file there"],
            hint=f"run `damjobs init DIR` to write a starter file, then point --config or "
            f"{CONFIG_ENV} at it",
        )
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: cannot read: {error}"]) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: invalid TOML: {error}"]) from error

    return parse(document, path, environ)


def parse(
    document: Mapping[str, Any], path: Path, environ: Mapping[str, str]
) -> Settings:
    """Validate a parsed TOML document plus environment overrides into Settings."""
    problems = _unknown_keys(document, path) + _unknown_env(environ)
    values: dict[str, Any] = {}
    base = path.parent.resolve()
    for key in KEYS:
        raw, origin = _raw_value(key, document, path, environ, problems)
        if raw is None:
            if key.default is None:
                problems.append(
                    f"{path}: [{key.section}] {key.name} is missing; {key.help.lower()} "
                    f"Add it to the file or set {key.env_name}."
                )
            values[key.dotted] = key.default
            continue
        value, problem = _convert(key, raw, base, origin.startswith("environment"))
        if problem is None and key.check is not None:
            problem = key.check(value)
        if problem is not None:
            problems.append(f"{origin}: {key.dotted} = {_masked(raw)!r} {problem}")
        values[key.dotted] = value

    problems += _cross_key_problems(values, path)
    if problems:
        raise ConfigError(problems)
    values["database.url"] = _absolute_sqlite_url(values["database.url"], base)

    return Settings(path=path, values=values)


def _cross_key_problems(values: Mapping[str, Any], path: Path) -> list[str]:
    """Check rules that involve more than one key."""
    heartbeat = values.get("jobs.heartbeat_seconds")
    stale_after = values.get("jobs.stale_after_minutes")
    if not isinstance(heartbeat, int) or not isinstance(stale_after, int):
        return []
    if heartbeat * 3 > stale_after * 60:
        return [
            f"{path}: jobs.heartbeat_seconds = {heartbeat} must be at most a third of "
            f"jobs.stale_after_minutes = {stale_after} (in seconds), or a live run on "
            "another host would look dead; lower the first or raise the second"
        ]

    return []


def _masked(raw: Any) -> Any:
    """Return `raw` with the password of any user:password@ part replaced by ***."""
    if not isinstance(raw, str):
        return raw

    return re.sub(r"//([^/@:\s]*):[^/@\s]*@", r"//\1:***@", raw)


def _absolute_sqlite_url(url: str, base: Path) -> str:
    """Resolve the file of a sqlite:/// URL against the config file's folder."""
    if not url.startswith("sqlite:///"):
        return url

    return "sqlite:///" + str(resolve_path(url.removeprefix("sqlite:///"), base))


def _raw_value(
    key: Key,
    document: Mapping[str, Any],
    path: Path,
    environ: Mapping[str, str],
    problems: list[str],
) -> tuple[Any, str]:
    section = document.get(key.section, {})
    in_file = isinstance(section, Mapping) and key.name in section
    if key.secret and in_file:
        problems.append(
            f"{path}: [{key.section}] {key.name} is a secret and must not be in the file; "
            f"remove it and set {key.env_name} in the environment instead"
        )
    if key.env_name in environ:
        return environ[key.env_name], f"environment {key.env_name}"
    if in_file and not key.secret:
        return section[key.name], f"{path}: [{key.section}]"

    return None, ""


def _convert(key: Key, raw: Any, base: Path, from_env: bool) -> tuple[Any, str | None]:
    try:
        if key.kind == "str":
            return (raw, None) if isinstance(raw, str) else (raw, "must be a string")
        if key.kind == "int":
            if isinstance(raw, bool) or not (isinstance(raw, int) or from_env):
                return raw, "must be a whole number"
            return int(raw), None
        if key.kind == "float":
            if isinstance(raw, bool) or not (isinstance(raw, (int, float)) or from_env):
                return raw, "must be a number"
            return float(raw), None
        if key.kind == "bool":
            if isinstance(raw, bool):
                return raw, None
            if from_env and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
                return raw.lower() in ("true", "1", "yes"), None
            return raw, "must be true or false"
        if key.kind == "mode":
            if not isinstance(raw, str) or re.fullmatch(r"0?[0-7]{3,4}", raw) is None:
                return raw, 'must be an octal string such as "0644"'
            return int(raw, 8), None
        if key.kind == "path":
            if not isinstance(raw, str) or not raw:
                return raw, "must be a non-empty path string"
            return resolve_path(raw, base), None
    except ValueError:
        return raw, {"int": "must be a whole number", "float": "must be a number"}[
            key.kind
        ]

    raise AssertionError(f"unknown key kind {key.kind}")


def resolve_path(raw: str, base: Path) -> Path:
    """Resolve a path from the file against the config file's folder, expanding `~`."""
    expanded = Path(raw).expanduser()

    return expanded if expanded.is_absolute() else base / expanded


def _unknown_keys(document: Mapping[str, Any], path: Path) -> list[str]:
    known = {(key.section, key.name) for key in KEYS}
    sections = {key.section for key in KEYS}
    problems = []
    for section, table in document.items():
        if section not in sections:
            problems.append(
                f"{path}: unknown section [{section}]{_suggest(section, sections)}"
            )
            continue
        if not isinstance(table, Mapping):
            problems.append(f"{path}: {section} must be a table such as [{section}]")
            continue
        names = {name for sec, name in known if sec == section}
        for name in table:
            if (section, name) not in known:
                problems.append(
                    f"{path}: unknown key {name!r} in [{section}]{_suggest(name, names)}"
                )

    return problems


def _unknown_env(environ: Mapping[str, str]) -> list[str]:
    names = {key.env_name for key in KEYS}
    problems = []
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in names:
            problems.append(f"environment {name}: unknown key{_suggest(name, names)}")

    return problems


def _suggest(word: str, choices: set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)

    return f"; did you mean {close[0]!r}?" if close else ""


def starter_text(folder: Path) -> str:
    """Return a commented starter configuration whose paths lie under `folder`."""
    lines = [
        "# damjobs configuration.",
        "# Every key can be overridden in the environment as DAMJOBS__SECTION__KEY.",
        "# Relative paths are resolved against the folder of this file.",
    ]
    section = None
    for key in KEYS:
        if key.section != section:
            section = key.section
            lines += ["", f"[{section}]"]
        lines.append(f"# {key.help}")
        if key.secret:
            lines.append(
                f"# Set {key.env_name} in the environment; never write it here."
            )
            continue
        value = key.starter if key.starter is not None else key.default
        if key.starter is not None and key.kind == "path":
            value = str(folder / key.starter)
        elif key.dotted == "database.url":
            value = f"sqlite:///{folder / 'damjobs.db'}"
        lines.append(f"{key.name} = {_toml_literal(key, value)}")

    return "\n".join(lines) + "\n"


def _toml_literal(key: Key, value: Any) -> str:
    if key.kind == "mode":
        return f'"{value:04o}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)

    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def reference_markdown() -> str:
    """Return the Markdown table of every key that docs/configuration.md embeds."""
    rows = [
        "| key | environment variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for key in KEYS:
        if key.secret:
            default = "(environment only)"
        elif key.default is None:
            default = "required"
        else:
            default = f"`{_toml_literal(key, key.default)}`"
        rows.append(f"| `{key.dotted}` | `{key.env_name}` | {default} | {key.help} |")

    return "\n".join(rows) + "\n"
