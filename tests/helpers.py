"""Shared test helpers: a damjobs workspace on a real database, images, and the CLI."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import peewee

from damjobs import config, db
from damjobs.db import migrations

REPOSITORY = Path(__file__).resolve().parent.parent
PHOTO_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "damjobs-test"
    / "photos"
)


@dataclasses.dataclass
class Workspace:
    """A config file, its folders and a migrated database, as `damjobs init` makes them."""

    folder: Path
    config_path: Path
    settings: config.Settings
    database: peewee.Database

    @property
    def originals(self) -> Path:
        return self.folder / "originals"

    @property
    def cache(self) -> Path:
        return self.folder / "cache"

    def cli(
        self, *arguments: str, timeout: float = 300, **kwargs: object
    ) -> subprocess.CompletedProcess:
        """Run `damjobs --config <this config> ARGUMENTS` in a subprocess."""
        return run_cli(
            "--config", str(self.config_path), *arguments, timeout=timeout, **kwargs
        )

    def popen(self, *arguments: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "damjobs",
                "--config",
                str(self.config_path),
                *arguments,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_environment(),
        )


def cli_environment() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DAMJOBS")}
    environ["NO_COLOR"] = "1"
    environ["PYTHONPATH"] = str(REPOSITORY)

    return environ


def run_cli(
    *arguments: str, timeout: float = 300, **kwargs: object
) -> subprocess.CompletedProcess:
    """Run the damjobs CLI in a subprocess and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "damjobs", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kwargs.pop("env", None) or cli_environment(),
        **kwargs,
    )


def make_workspace(folder: Path, database_url: str, extra: str = "") -> Workspace:
    """Write a starter config under `folder` that uses `database_url`, and migrate it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("originals", "cache", "published", "locks"):
        (folder / name).mkdir(exist_ok=True)
    text = config.starter_text(folder)
    lines = []
    for line in text.splitlines():
        if line.startswith("url = "):
            line = f'url = "{database_url}"'
        lines.append(line)
    text = "\n".join(lines) + "\n"
    config_path = folder / "damjobs.toml"
    config_path.write_text(text + extra, encoding="utf-8")
    settings = config.load(config_path, {})
    database = db.open_database(settings["database.url"])
    for migration in migrations.pending(database):
        migrations.apply(database, migration)

    return Workspace(folder, config_path, settings, database)


def with_settings(workspace: Workspace, **changes: object) -> config.Settings:
    """Return the workspace settings with "section__key" values replaced."""
    values = dict(workspace.settings.values)
    for name, value in changes.items():
        values[name.replace("__", ".")] = value

    return config.Settings(workspace.settings.path, values)


def real_photos() -> list[Path]:
    """Return the real photographs that scripts/install-system-deps unpacked."""
    photos = sorted(
        p
        for p in PHOTO_CACHE.rglob("*")
        if p.suffix.lower() in (".jpg", ".png", ".webp")
    )
    if not photos:
        raise RuntimeError(
            f"no photographs in {PHOTO_CACHE}; run scripts/install-system-deps first"
        )

    return photos
