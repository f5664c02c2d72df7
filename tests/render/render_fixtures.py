"""Helpers for the render tests: settings on temporary roots, ImageMagick fixtures."""

import os
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

from damjobs import cache
from damjobs.render.types import (
    EntryResult,
    RenderSettings,
)

# The first `convert` on PATH may not be ImageMagick, so call IM6's binary by path.
CONVERT = "/usr/bin/convert-im6.q16"
ICC_FOLDER = Path("/usr/share/color/icc/ghostscript")


def convert(*args: str | Path) -> None:
    """Run ImageMagick's convert and fail the test with its stderr when it fails."""
    # Drop damjobs's policy, which this process exported and which forbids xc: and
    # gradient:, because the fixtures are made with them.
    environment = {
        key: value
        for key, value in os.environ.items()
        if key != "MAGICK_CONFIGURE_PATH"
    }
    completed = subprocess.run(
        [CONVERT, *map(str, args)], capture_output=True, text=True, env=environment
    )
    assert completed.returncode == 0, completed.stderr


def add_png_chunk(data: bytes, chunk_type: bytes, payload: bytes) -> bytes:
    """Return PNG bytes with a chunk inserted after IHDR, which ends at byte 33."""
    chunk = struct.pack(">I", len(payload)) + chunk_type + payload
    chunk += struct.pack(">I", zlib.crc32(chunk_type + payload))
    return data[:33] + chunk + data[33:]


def make_settings(tmp_path: Path, **overrides: object) -> RenderSettings:
    originals = tmp_path / "originals"
    cache_root = tmp_path / "cache"
    originals.mkdir(exist_ok=True)
    cache_root.mkdir(exist_ok=True)
    values: dict[str, object] = {
        "originals_root": originals,
        "cache_root": cache_root,
        "ownership": cache.FileOwnership(),
        "max_width": 10000,
        "max_height": 10000,
        "max_pixels": 40_000_000,
        "default_background": "white",
        "default_quality": 85,
        "default_output_format": "webp",
        "timeout_seconds": 30.0,
        "workers": 2,
        "images_per_worker": 50,
        "srgb_profile": ICC_FOLDER / "srgb.icc",
        "cmyk_profile": ICC_FOLDER / "default_cmyk.icc",
        "temp_root": tmp_path / "magick-temp",
    }
    values.update(overrides)
    return RenderSettings(**values)  # type: ignore[arg-type]


Renderer = Callable[..., list[EntryResult]]
"""The `render` fixture: render one original and return its entry results."""
