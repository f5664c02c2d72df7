"""Compare damjobs build-missing with two bare ways of rendering the same derivatives.

Every approach renders the same four derivatives of every real photograph, auto-oriented:
  thumb   resize to 320 px wide, WebP quality 80
  square  fit into an 800x800 white canvas (no enlarging), JPEG quality 85, 300 DPI
  large   resize to 1200 px wide, JPEG quality 85
  crop    the centre half of the image (a cropping), then the thumb steps

(A) damjobs build-missing on SQLite with workers = CPUs, a fresh cache each round.
(a) one ImageMagick `convert-im6.q16` process per derivative with a `jpeg:size` hint,
    run by `xargs -P <CPUs>`.
(b) a process pool of bare Wand code that decodes each photograph once (with the same
    hint rule) and renders the four derivatives from clones, without a database.

Usage: .venv/bin/python benchmarks/render_throughput.py [--rounds 3] [--work DIR]
The photographs come from `bash scripts/fetch-photos`.
"""

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

from tests.helpers import make_workspace, real_photos  # noqa: E402

CPUS = len(os.sched_getaffinity(0))
DEFINITIONS = """
[[setting]]
name = "thumb"
output_format = "webp"
auto_cache = true
steps = [{ kind = "resize", width = 320 }, { kind = "quality", quality = 80 }]

[[setting]]
name = "square"
output_format = "jpeg"
auto_cache = true
steps = [
  { kind = "canvas", width = 800, height = 800, background = "white" },
  { kind = "dpi", dpi = 300 },
  { kind = "quality", quality = 85 },
]

[[setting]]
name = "large"
output_format = "jpeg"
auto_cache = true
steps = [{ kind = "resize", width = 1200 }, { kind = "quality", quality = 85 }]
"""


def prepare_damjobs(work: Path, photos: list[Path]) -> tuple[Path, Path, list[dict]]:
    """Import the photographs, define the derivatives and plan them with precache."""
    shutil.rmtree(work, ignore_errors=True)
    source = work / "photos"
    source.mkdir(parents=True)
    for photo in photos:
        shutil.copy2(photo, source / photo.name)
    database_path = work / "damjobs.db"
    workspace = make_workspace(work / "workspace", f"sqlite:///{database_path}")
    workspace.database.close()
    config = workspace.config_path
    environment = benchlib.damjobs_environment()

    def cli(*arguments: str) -> None:
        subprocess.run(
            benchlib.damjobs_command(config, *arguments),
            env=environment,
            check=True,
            capture_output=True,
        )

    cli("import", str(source), "--into", "photos")
    with sqlite3.connect(database_path) as connection:
        files = [
            {
                "id": row[0],
                "path": row[1],
                "format": row[2],
                "width": row[3],
                "height": row[4],
            }
            for row in connection.execute(
                "SELECT id, path, format, width, height FROM file ORDER BY id"
            )
        ]
    croppings = "".join(
        f'\n[[cropping]]\nfile = "{f["path"]}"\nname = "centre"\nx = {f["width"] // 4}\n'
        f"y = {f['height'] // 4}\nwidth = {f['width'] // 2}\nheight = {f['height'] // 2}\n"
        "auto_cache = true\n"
        for f in files
    )
    definitions = work / "definitions.toml"
    definitions.write_text(DEFINITIONS + croppings)
    cli("define", str(definitions))
    cli("precache")
    # Keep exactly the four derivatives: drop byte copies, croppings alone, and the
    # cropping paired with any setting but thumb.
    with sqlite3.connect(database_path) as connection:
        connection.execute(
            "DELETE FROM cache_entry WHERE output_format = 'original' "
            "OR (cropping_id <> 0 AND setting_id = 0) "
            "OR (cropping_id <> 0 AND setting_id <> "
            "(SELECT id FROM predefined_setting WHERE name = 'thumb'))"
        )
        count = connection.execute("SELECT COUNT(*) FROM cache_entry").fetchone()[0]
    if count != 4 * len(files):
        sys.exit(f"expected {4 * len(files)} planned entries, found {count}")
    return config, database_path, files


def run_damjobs(
    config: Path, database_path: Path, cache_root: Path
) -> tuple[float, int]:
    shutil.rmtree(cache_root, ignore_errors=True)
    with sqlite3.connect(database_path) as connection:
        connection.execute(
            "UPDATE cache_entry SET state = 'expected', path = NULL, size_bytes = NULL, "
            "built_at = NULL, expires_at = NULL"
        )
    result = benchlib.run_measured(
        benchlib.damjobs_command(config, "build-missing", "--json"),
        env=benchlib.damjobs_environment(),
    )
    if result.returncode != 0:
        sys.exit(
            f"build-missing failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    summary = json.loads(result.stdout)
    return result.seconds, summary["details"]["rendered"]


# The derivative definitions below restate DEFINITIONS for the two baselines.
DERIVATIVES = ("thumb", "square", "large", "crop")


def needed_scale(name: str, width: int, height: int) -> float:
    """Return the decode scale that derivative `name` needs from a width x height source."""
    if name == "thumb":
        return 320 / width
    if name == "square":
        return min(1.0, 800 / width, 800 / height)
    if name == "large":
        return 1200 / width
    return 320 / (width // 2)


def hint_for(scale: float, width: int, height: int) -> tuple[int, int] | None:
    """Return a jpeg:size hint that makes libjpeg decode at a scale of at least `scale`."""
    if scale > 0.5 or min(width, height) < 64:
        return None
    denominator = min(8, math.floor(1 / scale))
    return width // denominator, height // denominator


def convert_arguments(name: str, file: dict, source: Path, target: Path) -> list[str]:
    """Return the convert-im6.q16 arguments that render one derivative."""
    arguments = []
    hint = hint_for(
        needed_scale(name, file["width"], file["height"]), file["width"], file["height"]
    )
    if file["format"] == "jpeg" and hint is not None:
        arguments += ["-define", f"jpeg:size={hint[0]}x{hint[1]}"]
    arguments += [f"{file['format']}:{source}", "-auto-orient", "-strip"]
    if name == "thumb":
        arguments += ["-resize", "320x", "-quality", "80"]
    elif name == "square":
        arguments += [
            "-resize",
            "800x800>",
            "-background",
            "white",
            "-gravity",
            "center",
            "-extent",
            "800x800",
            "-units",
            "PixelsPerInch",
            "-density",
            "300",
        ]
    elif name == "large":
        arguments += ["-resize", "1200x", "-quality", "85"]
    else:
        # A percentage crop picks the same region at whatever scale libjpeg decoded.
        arguments += [
            "-gravity",
            "center",
            "-crop",
            "50%x50%+0+0",
            "+repage",
            "-resize",
            "320x",
            "-quality",
            "80",
        ]
    if name in ("square", "large"):
        arguments += [
            "-background",
            "white",
            "-alpha",
            "remove",
            "-alpha",
            "off",
            "-quality",
            "85",
        ]
    extension = "webp" if name in ("thumb", "crop") else "jpg"
    arguments.append(str(target / f"{file['id']}-{name}.{extension}"))
    return arguments


def run_shell_pipeline(
    files: list[dict], source: Path, target: Path, work: Path
) -> float:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    lines = [
        " ".join(
            convert_arguments(name, file, source / Path(file["path"]).name, target)
        )
        for file in files
        for name in DERIVATIVES
    ]
    command_file = work / "convert-commands.txt"
    command_file.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    subprocess.run(
        [
            "xargs",
            "-P",
            str(CPUS),
            "-L",
            "1",
            "-a",
            str(command_file),
            benchlib.IMAGEMAGICK_CONVERT,
        ],
        check=True,
        env={**os.environ, "MAGICK_THREAD_LIMIT": "1"},
    )
    seconds = time.monotonic() - started
    produced = len(list(target.iterdir()))
    if produced != len(lines):
        sys.exit(f"the shell pipeline wrote {produced} files, expected {len(lines)}")
    return seconds


def bare_wand_render(task: tuple[dict, str, str]) -> int:
    """Decode one photograph once and write its four derivatives; return the count."""
    from wand.color import Color  # noqa: PLC0415
    from wand.image import Image  # noqa: PLC0415

    file, source, target = task
    width, height = file["width"], file["height"]
    data = Path(source).read_bytes()
    image = Image()
    scale = max(needed_scale(name, width, height) for name in DERIVATIVES)
    hint = hint_for(scale, width, height)
    if file["format"] == "jpeg" and hint is not None:
        image.options["jpeg:size"] = f"{hint[0]}x{hint[1]}"
    image.read(blob=data, format=file["format"])
    image.auto_orient()
    image.strip()
    ratio_x, ratio_y = image.width / width, image.height / height
    for name in DERIVATIVES:
        with image.clone() as clone:
            output_format, quality = "jpeg", 85
            if name == "crop":
                clone.crop(
                    round(width // 4 * ratio_x),
                    round(height // 4 * ratio_y),
                    width=round(width // 2 * ratio_x),
                    height=round(height // 2 * ratio_y),
                )
                clone.reset_coords()
            if name in ("thumb", "crop"):
                clone.resize(320, max(1, round(clone.height * 320 / clone.width)))
                output_format, quality = "webp", 80
                result = clone
            elif name == "large":
                clone.resize(1200, max(1, round(height * 1200 / width)))
                result = clone
            else:
                fit = min(1.0, 800 / width, 800 / height)
                clone.resize(max(1, round(width * fit)), max(1, round(height * fit)))
                result = Image(width=800, height=800, background=Color("white"))
                result.composite(
                    clone, left=(800 - clone.width) // 2, top=(800 - clone.height) // 2
                )
                result.units = "pixelsperinch"
                result.resolution = (300, 300)
            if output_format == "jpeg" and result.alpha_channel:
                result.background_color = Color("white")
                result.alpha_channel = "remove"
                result.alpha_channel = "off"
            result.compression_quality = quality
            extension = "webp" if output_format == "webp" else "jpg"
            Path(target, f"{file['id']}-{name}.{extension}").write_bytes(
                result.make_blob(output_format)
            )
            if result is not clone:
                result.close()
    image.close()
    return len(DERIVATIVES)


def run_bare_wand(files: list[dict], source: Path, target: Path) -> float:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    tasks = [
        (file, str(source / Path(file["path"]).name), str(target)) for file in files
    ]
    # Wand reads MAGICK_THREAD_LIMIT when the spawned workers import it.
    os.environ["MAGICK_THREAD_LIMIT"] = "1"
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(CPUS) as pool:
        done = sum(pool.imap_unordered(bare_wand_render, tasks, chunksize=1))
    seconds = time.monotonic() - started
    if done != 4 * len(files):
        sys.exit(
            f"the Wand pool rendered {done} derivatives, expected {4 * len(files)}"
        )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/damjobs-bench-render"))
    arguments = parser.parse_args()
    benchlib.check_imagemagick()

    photos = real_photos()
    print(f"machine ({CPUS} worker processes everywhere):")
    benchlib.print_machine()
    config, database_path, files = prepare_damjobs(arguments.work, photos)
    derivatives = 4 * len(files)
    source = arguments.work / "photos"
    print(
        f"corpus: {len(files)} photographs, "
        f"{sum(p.stat().st_size for p in photos) / 1e6:.0f} MB, {derivatives} derivatives"
    )

    rates: dict[str, list[float]] = {"A": [], "a": [], "b": []}
    for round_number in range(1, arguments.rounds + 1):
        seconds, rendered = run_damjobs(
            config, database_path, arguments.work / "workspace" / "cache"
        )
        if rendered != derivatives:
            sys.exit(
                f"build-missing rendered {rendered} entries, expected {derivatives}"
            )
        rates["A"].append(derivatives / seconds)
        seconds_a = run_shell_pipeline(
            files, source, arguments.work / "out-convert", arguments.work
        )
        rates["a"].append(derivatives / seconds_a)
        seconds_b = run_bare_wand(files, source, arguments.work / "out-wand")
        rates["b"].append(derivatives / seconds_b)
        print(
            f"round {round_number}: (A) damjobs {rates['A'][-1]:.2f}/s ({seconds:.1f} s), "
            f"(a) convert+xargs {rates['a'][-1]:.2f}/s ({seconds_a:.1f} s), "
            f"(b) bare Wand pool {rates['b'][-1]:.2f}/s ({seconds_b:.1f} s)"
        )

    a_rate, shell_rate, wand_rate = (benchlib.median(rates[k]) for k in ("A", "a", "b"))
    print(
        f"median derivatives/s over {arguments.rounds} rounds: (A) {a_rate:.2f}, "
        f"(a) {shell_rate:.2f}, (b) {wand_rate:.2f}"
    )
    print(
        f"A/a = {a_rate / shell_rate:.2f} (goal >= 1.5): "
        f"{'met' if a_rate / shell_rate >= 1.5 else 'MISSED'}"
    )
    print(
        f"A/b = {a_rate / wand_rate:.2f} (goal >= 0.85): "
        f"{'met' if a_rate / wand_rate >= 0.85 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
