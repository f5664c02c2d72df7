"""Compare the render rate of rebuild-expired with that of build-missing.

Usage: .venv/bin/python benchmarks/rebuild_expired_rate.py [--rounds 3] [--work DIR]

Each round renders the same corpus twice on one SQLite workspace: build-missing into an
empty cache, then rebuild-expired after every entry's expiry is moved into the past. Both
use the same definitions, workers and photographs (all of scripts/fetch-photos). The rate
is processed entries divided by the run's own duration from its --json summary. The goal
is a rebuild-expired rate within 10 % of build-missing's.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

from tests.helpers import PHOTO_CACHE, make_workspace  # noqa: E402

DEFINITIONS = benchlib.REPOSITORY / "docs" / "examples" / "definitions.toml"


def run_json(workspace_config: Path, *arguments: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "damjobs",
            "--config",
            str(workspace_config),
            *arguments,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"damjobs {' '.join(arguments)} failed: {done.stderr}")

    return json.loads(done.stdout.strip().splitlines()[-1])


def one_round(work: Path, number: int) -> tuple[float, float, int]:
    folder = work / f"round-{number}"
    workspace = make_workspace(folder, f"sqlite:///{folder / 'dam.db'}")
    config = str(workspace.config_path)
    for arguments in (
        ("import", str(PHOTO_CACHE), "--into", "photos"),
        ("define", str(DEFINITIONS)),
        ("-q", "precache"),
    ):
        subprocess.run(
            [sys.executable, "-m", "damjobs", "--config", config, *arguments],
            check=True,
        )

    built = run_json(workspace.config_path, "build-missing", "--json")
    workspace.database.execute_sql(
        "UPDATE cache_entry SET expires_at = '2000-01-01 00:00:00' WHERE state = 'built'"
    )
    rebuilt = run_json(workspace.config_path, "rebuild-expired", "--json")
    shutil.rmtree(folder)

    return (
        built["processed"] / built["duration_seconds"],
        rebuilt["processed"] / rebuilt["duration_seconds"],
        built["processed"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    arguments = parser.parse_args()
    work = arguments.work or Path(tempfile.mkdtemp(prefix="damjobs-bench-"))

    print("machine:")
    benchlib.print_machine()
    build_rates, rebuild_rates = [], []
    for number in range(1, arguments.rounds + 1):
        build_rate, rebuild_rate, entries = one_round(work, number)
        build_rates.append(build_rate)
        rebuild_rates.append(rebuild_rate)
        print(
            f"round {number}: {entries} entries, build-missing {build_rate:.2f}/s, "
            f"rebuild-expired {rebuild_rate:.2f}/s"
        )

    build = statistics.median(build_rates)
    rebuild = statistics.median(rebuild_rates)
    ratio = rebuild / build
    verdict = "met" if abs(ratio - 1) <= 0.10 else "missed"
    print(f"median: build-missing {build:.2f}/s, rebuild-expired {rebuild:.2f}/s")
    print(
        f"rebuild-expired / build-missing = {ratio:.3f} (goal 0.90 to 1.10: {verdict})"
    )


if __name__ == "__main__":
    main()
