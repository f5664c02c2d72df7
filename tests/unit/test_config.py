"""Configuration loading: defaults, environment overrides, and problems reported at once."""

from pathlib import Path

import pytest

from damjobs import config
from damjobs.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "damjobs.toml"
    path.write_text(text, encoding="utf-8")

    return path


MINIMAL = """
[paths]
originals_root = "originals"
cache_root = "/srv/cache"
published_root = "published"

[database]
url = "sqlite:///dam.db"
"""


def test_starter_file_loads_with_paths_under_folder(tmp_path):
    path = write(tmp_path, config.starter_text(tmp_path))

    settings = config.load(path, {})

    assert settings["paths.cache_root"] == tmp_path / "cache"
    assert settings["database.url"] == f"sqlite:///{tmp_path / 'damjobs.db'}"


def test_relative_paths_resolve_against_config_folder(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    settings = config.load(write(tmp_path, MINIMAL), {})

    assert settings["paths.originals_root"] == tmp_path / "originals"
    assert settings["paths.cache_root"] == Path("/srv/cache")
    assert settings["database.url"] == f"sqlite:///{tmp_path / 'dam.db'}"


def test_defaults_fill_optional_keys(tmp_path):
    settings = config.load(write(tmp_path, MINIMAL), {})

    assert settings["cache.ttl_days"] == 30
    assert settings["cache.file_mode"] == 0o644
    assert settings["render.workers"] == 0


def test_environment_overrides_file(tmp_path):
    environ = {"DAMJOBS__CACHE__TTL_DAYS": "7", "DAMJOBS__CACHE__FILE_MODE": "0640"}

    settings = config.load(write(tmp_path, MINIMAL), environ)

    assert settings["cache.ttl_days"] == 7
    assert settings["cache.file_mode"] == 0o640


def test_password_comes_only_from_environment(tmp_path):
    environ = {"DAMJOBS__DATABASE__PASSWORD": "s3cret"}

    settings = config.load(write(tmp_path, MINIMAL), environ)

    assert settings["database.password"] == "s3cret"


def test_password_in_file_is_rejected(tmp_path):
    path = write(tmp_path, MINIMAL + 'password = "s3cret"\n')

    with pytest.raises(ConfigError) as raised:
        config.load(path, {})

    assert "DAMJOBS__DATABASE__PASSWORD" in raised.value.message


def test_every_problem_reported_at_once(tmp_path):
    text = MINIMAL.replace('url = "sqlite:///dam.db"', 'url = "postgres://x/y"') + (
        '\n[cache]\nttl_day = 3\ndefault_output_format = "gif"\n'
        '\n[render]\nworkers = "four"\n'
    )

    with pytest.raises(ConfigError) as raised:
        config.load(write(tmp_path, text), {"DAMJOBS__RENDER__TIMEOUT_SECONDS": "0"})

    problems = "\n".join(raised.value.problems)
    assert len(raised.value.problems) == 5
    assert "did you mean 'ttl_days'" in problems
    assert "database.url = 'postgres://x/y'" in problems
    assert "render.workers = 'four' must be a whole number" in problems
    assert "environment DAMJOBS__RENDER__TIMEOUT_SECONDS" in problems
    assert "must be one of jpeg, png, webp" in problems


def test_missing_required_key_names_key_and_env(tmp_path):
    text = MINIMAL.replace('cache_root = "/srv/cache"\n', "")

    with pytest.raises(ConfigError) as raised:
        config.load(write(tmp_path, text), {})

    assert "[paths] cache_root is missing" in raised.value.message
    assert "DAMJOBS__PATHS__CACHE_ROOT" in raised.value.message


def test_unknown_environment_key_is_reported(tmp_path):
    with pytest.raises(ConfigError) as raised:
        config.load(write(tmp_path, MINIMAL), {"DAMJOBS__CACHE__TTL_DAY": "3"})

    assert "DAMJOBS__CACHE__TTL_DAY" in raised.value.message


def test_password_in_mysql_url_is_rejected(tmp_path):
    text = MINIMAL.replace("sqlite:///dam.db", "mysql://dam:pw@db:3306/dam")

    with pytest.raises(ConfigError) as raised:
        config.load(write(tmp_path, text), {})

    assert "must not contain a password" in raised.value.message


def test_missing_file_hints_at_init(tmp_path):
    with pytest.raises(ConfigError) as raised:
        config.load(tmp_path / "absent.toml", {})

    assert "damjobs init" in raised.value.hint


def test_invalid_toml_names_file(tmp_path):
    path = write(tmp_path, "[paths\n")

    with pytest.raises(ConfigError) as raised:
        config.load(path, {})

    assert str(path) in raised.value.message


def test_config_path_order(tmp_path):
    option = tmp_path / "a.toml"

    assert config.find_config_path(option, {"DAMJOBS_CONFIG": "/x.toml"}) == option
    assert config.find_config_path(None, {"DAMJOBS_CONFIG": "/x.toml"}) == Path(
        "/x.toml"
    )
    assert config.find_config_path(None, {}) == config.DEFAULT_CONFIG_PATH


def test_starter_text_mentions_every_key(tmp_path):
    text = config.starter_text(tmp_path)

    for key in config.KEYS:
        assert key.name in text, key.dotted


def test_rejected_url_password_is_masked(tmp_path):
    text = MINIMAL.replace("sqlite:///dam.db", "mysql://dam:s3cretPW@db:3306/dam")

    with pytest.raises(ConfigError) as raised:
        config.load(write(tmp_path, text), {})

    assert "s3cretPW" not in raised.value.message
    assert "mysql://dam:***@db:3306/dam" in raised.value.message


def test_heartbeat_must_be_well_below_stale_limit(tmp_path):
    environ = {
        "DAMJOBS__JOBS__HEARTBEAT_SECONDS": "3600",
        "DAMJOBS__JOBS__STALE_AFTER_MINUTES": "1",
    }

    with pytest.raises(ConfigError) as raised:
        config.load(write(tmp_path, MINIMAL), environ)

    assert (
        "jobs.heartbeat_seconds = 3600 must be at most a third" in raised.value.message
    )
